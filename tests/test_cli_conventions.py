"""CLI conventions, one meaning each: --json [PATH] everywhere (stdout stays parseable), -v/-q after the command,
a flag typo shows that command's usage with a suggestion, documented exit codes (3 = refused by a gate), and
packages/datasets created with the umask's permissions (secrets 0600)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from runtime_fixtures import build_package

from edge_ad.cli import main as cli
from edge_ad.cli.main import build_parser, main
from edge_ad.errors import GateError


def _subparsers() -> dict[str, object]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return dict(action.choices)  # type: ignore[attr-defined]


def test_json_has_one_spelling() -> None:
    subs = _subparsers()
    nested = {f"{n} {m}": p for n, sp in subs.items() for a in sp._actions  # type: ignore[attr-defined]
              if a.__class__.__name__ == "_SubParsersAction" for m, p in a.choices.items()}
    with_json = []
    for name, p in {**subs, **nested}.items():
        for a in p._actions:  # type: ignore[attr-defined]
            if "--json" in a.option_strings:
                assert (a.nargs, a.const) == ("?", "-"), f"{name}: --json must be --json [PATH]"
                with_json.append(name)
    assert {"bench", "build", "doctor", "eval", "export", "models", "results query", "run", "serve", "verify",
            "weights list"} <= set(with_json)


def _all_parsers() -> dict[str, object]:
    subs = _subparsers()
    nested = {f"{n} {m}": p for n, sp in subs.items() for a in sp._actions  # type: ignore[attr-defined]
              if a.__class__.__name__ == "_SubParsersAction" for m, p in a.choices.items()}
    return {**subs, **nested}


#: what a flag may be, whichever command has it: a path or text is one kind of value
_TEXT = {"None", "str", "Path"}


def test_one_flag_one_type_and_meaning_in_every_command() -> None:
    """A flag name has one action, value type, arity and destination everywhere; a short flag is the same long one
    everywhere; and the drifts once found stay gone (--n/--max for "how many" is --limit; benchmark runs are --runs,
    never --iters, which counts optimiser steps; a CUDA index is --gpu, a torch device --device)."""
    seen: dict[str, dict[tuple[str, str, str, str], list[str]]] = {}
    shorts: dict[str, set[str]] = {}
    for name, p in _all_parsers().items():
        for a in p._actions:  # type: ignore[attr-defined]
            if a.__class__.__name__ == "_SubParsersAction":
                continue
            kind = getattr(a.type, "__name__", str(a.type))
            key = (a.__class__.__name__, "text" if kind in _TEXT else kind, str(a.nargs), a.dest)
            for o in a.option_strings:
                seen.setdefault(o, {}).setdefault(key, []).append(name)
            longs = [o for o in a.option_strings if o.startswith("--")]
            for o in a.option_strings:
                if not o.startswith("--"):
                    shorts.setdefault(o, set()).update(longs)
    assert {o: kinds for o, kinds in seen.items() if len(kinds) > 1} == {}
    assert {o: longs for o, longs in shorts.items() if len(longs) > 1} == {}
    assert set(shorts) == {"-h", "-v", "-q"}
    assert not {"--n", "--max", "--json-status", "--queue", "--queue-size", "--duration", "--status-every"} & set(seen)
    iters = {n for n, p in _all_parsers().items() for a in p._actions  # type: ignore[attr-defined]
             if "--iters" in a.option_strings}
    assert iters == {"train", "demo"}  # optimiser steps
    device = {n for n, p in _all_parsers().items() for a in p._actions  # type: ignore[attr-defined]
              if "--device" in a.option_strings}
    assert device == {"train", "eval"}  # a torch device; CUDA indices are --gpu


def test_json_to_stdout_keeps_stdout_parseable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--json"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)[0]["name"] and "trainable" in out.err  # the table went to stderr


def test_log_flags_after_the_command_and_typos(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "-q"]) == 0 and main(["models", "-vv"]) == 0 and main(["-q", "models"]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["predict", "pkg", "x.png", "--treshold", "0.5"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "usage: edge-ad predict" in err and "did you mean --threshold?" in err


def test_exit_codes(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def refuse(_args: object) -> int:
        raise GateError("int8 conversion refused by the accuracy gate")

    monkeypatch.setattr("edge_ad.cli.models.run", refuse)
    assert main(["models"]) == 3 and "refused" in capsys.readouterr().err
    assert "3  refused by an accuracy gate" in cli.EXIT_CODES and "1  done, but some inputs failed" in cli.EXIT_CODES


def test_created_files_follow_the_umask(tmp_path: Path) -> None:
    from edge_ad.data.synth import generate
    from edge_ad.runtime.signing import keygen

    old = os.umask(0o022)
    try:
        pkg = build_package(tmp_path / "pkg")
        generate(tmp_path / "data", categories=["pcb"], per_category=1, size=64, seed=0)
        priv, pub = keygen(tmp_path / "k.pem")
    finally:
        os.umask(old)

    def mode(p: Path) -> int:
        return stat.S_IMODE(p.stat().st_mode)

    assert mode(pkg) == 0o755 and mode(pkg / "manifest.json") == 0o644 and mode(pkg / "model.onnx") == 0o644
    assert mode(tmp_path / "data") == 0o755 and mode(pub) == 0o644 and mode(priv) == 0o600
