"""The station core: one StationConfig behind `serve`, `run` and station.yaml (flag > file > default, even when a
flag repeats its default), and both schedulers writing the same outputs for the same frames."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import cv2
import pytest
import yaml
from plc_peers import BLOB_IMG, DARK_IMG, free_port

from edge_ad.cli.main import main
from edge_ad.station.config import RUN, SERVE, StationConfig

ROOT = Path(__file__).resolve().parents[1]
FIELDS = {f.name: f for f in dataclasses.fields(StationConfig)}
#: valid values for the fields whose values are constrained (choices, URLs)
CHOICES = {"backend": ("auto", "onnxruntime"), "precision": ("fp16", "int8"),
           "trigger": ("plc", "camera"), "policy": ("latest", "all"),
           "ui": ("127.0.0.1:8080", "127.0.0.1:8081"), "drift_ng_rate": (0.02, 0.05),
           "rollback_max_ng_rate": (0.3, 0.5), "rollback_max_fault_rate": (0.05, 0.1)}


def _values(name: str) -> tuple[Any, Any, list[str]]:
    """(value in the file, value of the flag, the flag's argv) with the flag repeating the default where there is
    one, so the test proves 'given' is not 'differs from the default'."""
    f = FIELDS[name]
    kind, flag = f.metadata["kind"], f.metadata["flag"] or "--" + name.replace("_", "-")
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    if name in CHOICES:
        a, b = CHOICES[name]
        file_v, flag_v = (b, a) if default == a else (a, b)
    elif kind is bool:
        flag_v = flag != "--no-ack"
        return not flag_v, flag_v, [flag]
    elif kind is dict:
        if name == "recipes":
            return {2: "pkg-b"}, {3: "pkg-c"}, [flag, "3=pkg-c"]
        return {"fps": "1"}, {"fps": "2"}, [flag, "fps=2"]
    elif kind is list and name == "views":
        view = {"package": None, "source_options": {}}
        return [{"name": "top", "source": "a/", **view}], [{"name": "side", "source": "b/", **view}], [flag, "side=b/"]
    elif kind is list:
        return ["a.pem"], ["b.pem"], [flag, "b.pem"]
    elif kind is str:
        file_v, flag_v = f"file-{name}", f"flag-{name}"
    elif default is None:
        file_v, flag_v = kind(3), kind(5)
    else:
        file_v, flag_v = kind(default + 2 if name != "sensitivity" else 2.0), default
    return file_v, flag_v, [flag, str(flag_v)]


def _print_config(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict[str, Any]:
    assert main(argv) == 0, capsys.readouterr().err
    doc = yaml.safe_load(capsys.readouterr().out)
    assert isinstance(doc, dict)
    return doc


@pytest.mark.parametrize("command", [SERVE, RUN])
def test_a_flag_wins_over_the_file_even_when_it_repeats_the_default(
        command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = [n for n, f in FIELDS.items() if command in f.metadata["commands"] and n != "package"]
    assert len(names) > 20
    for name in names:
        file_v, flag_v, argv = _values(name)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({name: file_v}))
        assert _print_config(capsys, [command, "--config", str(path), "--print-config"])[name] == file_v, name
        assert _print_config(capsys, [command, "--config", str(path), *argv, "--print-config"])[name] == flag_v, name
    # the positional package too
    path = tmp_path / "package.yaml"
    path.write_text("package: from-file\n")
    assert _print_config(capsys, [command, "from-flag", "--config", str(path), "--print-config"])["package"] == \
        "from-flag"


def test_the_issue_example_and_the_sample_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sample = yaml.safe_load((ROOT / "samples" / "station.yaml").read_text())
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump({**sample, "budget_ms": 500}))
    got = _print_config(capsys, ["serve", "--config", str(path), "--budget-ms", "200", "--print-config"])
    assert got["budget_ms"] == 200.0 and got["station"] == "line3-st7" and got["retention_days"] == 90.0
    got = _print_config(capsys, ["run", "--config", str(ROOT / "samples" / "station.yaml"), "--print-config"])
    assert got["station"] == "line3-st7" and got["mqtt_topic"] == "acme/plant1/line3/st7"
    assert StationConfig.resolve(None, ROOT / "samples" / "station.yaml") == StationConfig(**got)  # it round-trips


@pytest.mark.parametrize(("doc", "match"), [
    ({"budget_ms": -1}, "budget_ms: expected a number > 0"), ({"trigger": "sometimes"}, "trigger: expected one of"),
    ({"retention": {"weeks": 2}}, "retention.weeks: unknown key"), ({"db": "a", "database": {"url": "b"}}, "twice"),
    ({"recipes": {1: "x"}}, "recipes: expected N: PACKAGE"), ({"result_queue": 1.5}, "expected an integer"),
    ({"sensitivity": 1e-300}, None), ({"sensitivity": 0}, "sensitivity: expected a number in"),
])
def test_bad_files_name_the_key(doc: dict[str, Any], match: str | None, tmp_path: Path) -> None:
    from edge_ad.errors import ConfigError

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    if match is None:
        StationConfig.resolve(None, path)
    else:
        with pytest.raises(ConfigError, match=match):
            StationConfig.resolve(None, path)


def test_serve_and_run_write_identical_rows_for_the_same_frames(package: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The same folder through `serve` (PLC handshake, free trigger) and `run` (pipeline): every output row is the
    same but for the times; the JSONL logs and NG folders hold the same verdicts."""
    from edge_ad.traceability import open_readonly

    images = tmp_path / "images"
    images.mkdir()
    for i, img in enumerate((BLOB_IMG, DARK_IMG, BLOB_IMG, DARK_IMG, BLOB_IMG)):
        cv2.imwrite(str(images / f"{i:02d}.png"), img)
    common = ["--source", str(images), "--backend", "onnxruntime", "--status-every-s", "0", "--station", "st"]
    out = {}
    for cmd in ("serve", "run"):
        d = tmp_path / cmd
        extra = ["--plc", f"modbus://127.0.0.1:{free_port()}", "--trigger", "free", "--no-ack", "--hold-ms", "0",
                 "--stop-at-end", "--duration-s", "60"] if cmd == "serve" else []
        rc = main([cmd, str(package), *common, *extra, "--db", str(d / "t.db"), "--results-log", str(d / "r.jsonl"),
                   "--save-ng", str(d / "ng"), "--keep-ok-every", "1"])
        assert rc == 0, capsys.readouterr().err
        with open_readonly(d / "t.db") as st:
            rows = st.query()
        volatile = {"id", "time", "inspection_ms", "timings"}
        lines = [json.loads(x) for x in (d / "r.jsonl").read_text().splitlines()]
        out[cmd] = ([{k: v for k, v in r.items() if k not in volatile} for r in rows],
                    [{k: x[k] for k in ("seq", "part_id", "decision", "score", "model", "package_digest", "source")}
                     for x in lines], sorted(p.name.split("_", 2)[2] for p in (d / "ng").glob("*.json")))
    assert len(out["serve"][0]) == 5 and [r["decision"] for r in out["serve"][0]] == ["NG", "OK", "NG", "OK", "NG"]
    assert out["serve"] == out["run"]
