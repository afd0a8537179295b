"""Several cameras, one part: one verdict per trigger combining every view, a missing or late view NG with its
fault (never OK), the views of one package inspected in one backend call, per-view PLC bits, one traceability row
per part plus one per view, and the config/CLI that builds it. In-memory PLC and queue cameras here; real GigE
cameras and every PLC protocol: tests/test_multiview_gige.py."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from plc_peers import BLOB_IMG, DARK_IMG, FAST_LINK, MemoryAdapter, QueueSource, wait_for

from edge_ad.cli.main import main
from edge_ad.errors import ConfigError
from edge_ad.plc.inspector import Inspector, View
from edge_ad.plc.link import PlcLink
from edge_ad.plc.signals import result_signals
from edge_ad.runtime import Detector
from edge_ad.station.event import RecordBuilder, judge
from edge_ad.station.record import DefectCode, ViewVerdict
from edge_ad.station.recorders import event_dict
from edge_ad.traceability.store import TraceRecorder, TraceStore


class CountingDetector:
    """A Detector wrapper that counts backend calls (one predict_batch = one backend call)."""

    def __init__(self, det: Detector) -> None:
        self.det, self.calls, self.images = det, 0, 0

    @property
    def package(self) -> Any:
        return self.det.package

    @property
    def threshold(self) -> float:
        return self.det.threshold

    @property
    def sensitivity(self) -> float:
        return self.det.sensitivity

    @sensitivity.setter
    def sensitivity(self, value: float) -> None:
        self.det.sensitivity = value

    def predict(self, image: Any, frame: dict[str, Any] | None = None) -> Any:
        return self.predict_batch([image], [frame])[0]

    def predict_batch(self, images: list[Any], frames: list[Any] | None = None, errors: str = "raise") -> Any:
        self.calls += 1
        self.images += len(images)
        return self.det.predict_batch(images, frames, errors=errors)

    def close(self) -> None:
        self.det.close()


class ListRecorder:
    """Keeps every event."""

    def __init__(self, into: list[Any]) -> None:
        self.into = into

    def open(self) -> None:
        """Nothing to open."""

    def write(self, event: Any) -> None:
        self.into.append(event)

    def close(self) -> None:
        """Nothing to close."""


def _station(det: Any, n: int, **kw: Any) -> tuple[Inspector, list[QueueSource], MemoryAdapter]:
    cams = [QueueSource() for _ in range(n)]
    mem = MemoryAdapter()
    views = [View(f"cam{i + 1}", c) for i, c in enumerate(cams)]
    insp = Inspector(det, views, PlcLink(mem, **FAST_LINK), poll_s=0.002, backend="onnxruntime", **kw)
    return insp, cams, mem


def test_one_verdict_per_trigger_from_every_view_in_one_backend_call(detector: Detector) -> None:
    counting = CountingDetector(detector)
    events: list[Any] = []
    insp, cams, mem = _station(counting, 3, budget_ms=2000.0, recorder=ListRecorder(events))
    plc = mem.program()
    cases = [(1, (DARK_IMG, DARK_IMG, DARK_IMG)), (2, (DARK_IMG, BLOB_IMG, DARK_IMG)),
             (3, (BLOB_IMG, DARK_IMG, BLOB_IMG))]
    with insp:
        wait_for(lambda: mem.get("Ready"), what="Ready")
        for part, images in cases:
            for cam, img in zip(cams, images):
                cam.push(img)
            n = len(plc.results)
            plc.trigger(part)
            plc.run_until(lambda n=n: len(plc.results) > n, what=f"part {part}")
            wait_for(lambda: mem.get("Ready") and not mem.get("TriggerAck"), what="Ready again")
    got = {r["PartIdEcho"]: r for r in plc.results}
    assert (got[1]["OK"], got[1]["ViewNG"], got[1]["ViewFault"]) == (True, 0, 0)
    assert (got[2]["NG"], got[2]["DefectCode"], got[2]["ViewNG"]) == (True, DefectCode.ANOMALY, 0b010)
    assert (got[2]["ViewDefectCode1"], got[2]["ViewDefectCode2"]) == (0, DefectCode.ANOMALY)
    assert (got[3]["NG"], got[3]["ViewNG"], got[3]["ViewFault"]) == (True, 0b101, 0)
    assert counting.calls == 3 and counting.images == 9  # one backend call per part, all views in it
    assert [len(e.views) for e in events] == [3, 3, 3]
    assert [v.name for v in events[1].views] == ["cam1", "cam2", "cam3"]
    assert events[1].image is events[1].views[1].image  # the deciding (first NG) view stands for the part
    doc = event_dict(events[2])
    assert [v["decision"] for v in doc["views"]] == ["NG", "OK", "NG"] and doc["decision"] == "NG"
    assert all({"preprocess", "infer", "postprocess"} <= set(v["timings"]) for v in doc["views"])  # per stage


def test_a_missing_view_is_ng_with_its_fault_within_the_budget(detector: Detector) -> None:
    insp, cams, mem = _station(detector, 2, budget_ms=1500.0, view_window_ms=150.0)
    plc = mem.program()
    with insp:
        wait_for(lambda: mem.get("Ready"), what="Ready")
        cams[0].push(DARK_IMG)  # camera 2 delivers nothing
        plc.trigger(7)
        plc.run_until(lambda: plc.results, what="part 7")
        res = plc.results[-1]
        assert (res["OK"], res["NG"], res["Late"], res["DefectCode"]) == (False, True, False, DefectCode.NO_IMAGE)
        assert (res["ViewNG"], res["ViewFault"], res["ViewDefectCode1"], res["ViewDefectCode2"]) == (
            0b10, 0b10, 0, DefectCode.NO_IMAGE)
        assert insp.stats.views_missing == {"cam2": 1}
        assert mem.get("Fault") and insp.faults()[0].name == "SOURCE"  # camera 2 is down: a station fault
        wait_for(lambda: mem.get("Ready") and not mem.get("TriggerAck"), what="Ready again")
        for cam in cams:  # camera 2 is back: the fault clears with its next frame
            cam.push(DARK_IMG)
        plc.trigger(8)
        plc.run_until(lambda: len(plc.results) == 2, what="part 8")
        assert plc.results[-1]["OK"] and plc.results[-1]["ViewFault"] == 0
        wait_for(lambda: not mem.get("Fault"), what="SOURCE fault cleared")


def test_a_bad_frame_in_one_view_fails_that_view_only(detector: Detector) -> None:
    insp, cams, mem = _station(detector, 2, budget_ms=2000.0)
    plc = mem.program()
    with insp:
        wait_for(lambda: mem.get("Ready"), what="Ready")
        cams[0].push(DARK_IMG)
        cams[1].push(None, error="corrupt frame")
        plc.trigger(9)
        plc.run_until(lambda: plc.results, what="part 9")
    res = plc.results[-1]
    assert (res["NG"], res["DefectCode"], res["ViewFault"], res["ViewDefectCode2"]) == (
        True, DefectCode.INSPECTION_ERROR, 0b10, DefectCode.INSPECTION_ERROR)


def test_camera_trigger_pairs_frames_and_times_out_a_silent_view(detector: Detector) -> None:
    insp, cams, mem = _station(detector, 2, trigger="camera", budget_ms=2000.0, view_window_ms=200.0)
    plc = mem.program()
    with insp:
        for cam in cams:
            cam.push(DARK_IMG)
        plc.run_until(lambda: plc.results, what="paired part")
        assert plc.results[-1]["OK"] and plc.results[-1]["ViewFault"] == 0
        cams[0].push(BLOB_IMG)  # only camera 1 fires: after the window the part goes out without view 2
        t0 = time.monotonic()
        plc.run_until(lambda: len(plc.results) == 2, what="part without view 2")
        assert time.monotonic() - t0 >= 0.15
        res = plc.results[-1]
        assert (res["NG"], res["ViewNG"], res["ViewFault"], res["ViewDefectCode1"]) == (
            True, 0b11, 0b10, DefectCode.ANOMALY)


def test_traceability_one_row_per_part_and_one_per_view(detector: Detector, tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "t.db", station="st1")
    insp, cams, mem = _station(detector, 2, budget_ms=2000.0, view_window_ms=150.0, recorder=TraceRecorder(store))
    plc = mem.program()
    with insp:
        wait_for(lambda: mem.get("Ready"), what="Ready")
        for part, images in ((1, (DARK_IMG, BLOB_IMG)), (2, (DARK_IMG, None)), (3, (DARK_IMG, DARK_IMG))):
            for cam, img in zip(cams, images):
                if img is not None:
                    cam.push(img)
            n = len(plc.results)
            plc.trigger(part)
            plc.run_until(lambda n=n: len(plc.results) > n, what=f"part {part}")
            wait_for(lambda: mem.get("Ready") and not mem.get("TriggerAck"), what="Ready again")
    store.close()
    with TraceStore(tmp_path / "t.db", station="st1") as s:
        rows = s.query()
        assert [(r["part_id"], r["decision"], r["views"]) for r in rows] == [(1, "NG", 2), (2, "FAILED", 2),
                                                                              (3, "OK", 2)]
        views = s.views_of(rows[1]["id"])
        assert [(v["view_name"], v["decision"], v["defect_code"]) for v in views] == [
            ("cam1", "OK", 0), ("cam2", "FAILED", int(DefectCode.NO_IMAGE))]
        ng = s.query_views("cam2", decisions=["NG"])
        assert [(v["part_id"], v["part_decision"]) for v in ng] == [(1, "NG")]
        assert s.image_file(rows[0]) is not None  # the NG view's picture, kept for the part
        assert len(s.query_views("cam1")) == 3


def test_combine_never_says_ok_for_a_faulted_or_empty_part() -> None:
    b = RecordBuilder()
    ok = ViewVerdict("a", True, DefectCode.OK, 0.1, 0.1, 0)
    assert b.combine([ok, ok], part_id=1, inspection_ms=1.0, recipe=1).ok
    missing = judge(None, "b")
    rec = b.combine([ok, missing], part_id=1, inspection_ms=1.0, recipe=1)
    assert not rec.ok and rec.defect_code == DefectCode.NO_IMAGE and rec.anomaly_score == 1.0
    assert not b.combine([], part_id=1, inspection_ms=1.0, recipe=1).ok
    wire = result_signals(rec)
    assert (wire["OK"], wire["ViewNG"], wire["ViewFault"], wire["ViewDefectCode2"]) == (False, 2, 2, 4)
    single = result_signals(b.failsafe(DefectCode.LATE, part_id=2, inspection_ms=1.0, recipe=1, late=True))
    assert (single["ViewNG"], single["ViewFault"], single["ViewDefectCode1"]) == (1, 1, DefectCode.LATE)
    nan = judge(type("R", (), {"fault": None, "error": None, "score": float("nan"), "normalized_score": 0.1})(), "c")
    assert nan.defect_code == DefectCode.INSPECTION_ERROR and not nan.ok


@pytest.mark.parametrize(("doc", "match"), [
    ({"views": [{"name": "a"}]}, r"views\[0\]\.source: expected a non-empty string"),
    ({"views": [{"name": "a", "source": "x"}, {"name": "a", "source": "y"}]}, "'a' is used twice"),
    ({"views": [{"name": "a", "source": "x", "lens": 2}]}, r"unknown key\(s\) \['lens'\]"),
    ({"views": [{"name": f"v{i}", "source": "x"} for i in range(9)]}, "expected 1..8 views"),
    ({"views": [{"name": "a", "source": "x"}], "source": "y"}, "either source"),
    ({"views": [{"name": "a", "source": "x"}], "view_window_ms": 300}, "view_window_ms: expected less than"),
    ({"views": "cam"}, "views: expected a list"),
])
def test_bad_views_name_the_field(doc: dict[str, Any], match: str, tmp_path: Path) -> None:
    from edge_ad.station.config import StationConfig

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=match):
        StationConfig.resolve(None, path)


def test_inspector_refuses_bad_views(detector: Detector) -> None:
    with pytest.raises(ConfigError, match="unique non-empty names"):
        Inspector(detector, [View("a", QueueSource()), View("a", QueueSource())], PlcLink(MemoryAdapter()))
    with pytest.raises(ConfigError, match="view_window_ms"):
        Inspector(detector, [View("a", QueueSource())], PlcLink(MemoryAdapter()), budget_ms=100.0,
                  view_window_ms=100.0)


def _folders(tmp_path: Path, n: int) -> list[Path]:
    import cv2

    out = []
    for v in range(2):
        d = tmp_path / f"view{v}"
        d.mkdir()
        for i in range(n):
            cv2.imwrite(str(d / f"{i:03d}.png"), BLOB_IMG if (v == 1 and i % 3 == 0) else DARK_IMG)
        out.append(d)
    return out


def test_serve_with_two_views_from_the_command_line(package: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """`serve --view a=DIR --view b=DIR` (free trigger, stop at the end): one row per part, two view rows each."""
    from plc_peers import free_port

    a, b = _folders(tmp_path, 9)
    db = tmp_path / "trace.db"
    rc = main(["serve", str(package), "--view", f"top={a}", "--view", f"side={b}", "--plc",
               f"modbus://127.0.0.1:{free_port()}", "--trigger", "free", "--stop-at-end", "--no-ack",
               "--hold-ms", "0", "--budget-ms", "5000", "--db", str(db), "--status-every-s", "0",
               "--results-log", str(tmp_path / "r.jsonl"), "--backend", "onnxruntime"])
    assert rc == 0, capsys.readouterr().err
    with TraceStore(db) as s:
        rows = s.query()
        assert len(rows) == 9 and all(r["views"] == 2 for r in rows)
        assert [r["decision"] for r in rows] == ["NG" if i % 3 == 0 else "OK" for i in range(9)]
        side = s.query_views("side", decisions=["NG"])
        assert len(side) == 3 and not s.query_views("top", decisions=["NG"])
    lines = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [[v["name"] for v in x["views"]] for x in lines] == [["top", "side"]] * 9
    capsys.readouterr()
    assert main(["results", "query", str(db), "--view-name", "side", "--decision", "NG", "--json"]) == 0
    out = capsys.readouterr()
    got = json.loads(out.out)
    assert len(got) == 3 and {r["view_name"] for r in got} == {"side"} and {r["part_decision"] for r in got} == {"NG"}
    assert "3 view row(s): OK 0, NG 3" in out.err
    assert main(["results", "export", str(db), "--view-name", "top", "--csv", str(tmp_path / "top.csv")]) == 0
    assert len((tmp_path / "top.csv").read_text().splitlines()) == 10  # header + 9 parts


def test_run_with_two_sources_feeds_the_same_recorders(package: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """`run --view a=DIR --view b=DIR`: one pipeline per camera, every frame of both in one database."""
    a, b = _folders(tmp_path, 6)
    db = tmp_path / "run.db"
    rc = main(["run", str(package), "--view", f"top={a}", "--view", f"side={b}", "--db", str(db),
               "--status-every-s", "0", "--backend", "onnxruntime", "--json"])
    assert rc == 0, capsys.readouterr().err
    final = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")][-1]
    assert final["results_out"] == 12 and set(final["views"]) == {"top", "side"}
    with TraceStore(db) as s:
        rows = s.query()
        assert sorted(r["source"] for r in rows) == ["side"] * 6 + ["top"] * 6
        assert sum(r["decision"] == "NG" for r in rows) == 2


def test_view_rows_survive_a_reopen_and_old_databases_migrate(tmp_path: Path) -> None:
    """A version-3 database (before views) is migrated in place: its rows stay, views come empty."""
    import sqlite3

    from edge_ad.traceability.store import MIGRATIONS

    path = tmp_path / "old.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for stmt in (s for m in MIGRATIONS[:3] for s in m):
        con.execute(stmt)
    con.execute("INSERT INTO schema_version VALUES (3)")
    con.execute("INSERT INTO inspections (time, station, seq, part_id, decision, defect_code, late) VALUES "
                "(?, 'st', 1, 5, 'OK', 0, 0)", (time.time(),))
    con.commit()
    con.close()
    with TraceStore(path) as s:
        rows = s.query()
        assert [(r["part_id"], r["views"]) for r in rows] == [(5, None)] and s.views_of(rows[0]["id"]) == []


def test_views_sharing_the_package_set_the_tensorrt_engine_batch(package: Path, monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    """On TensorRT the engine must take every shared view's inputs in one call; elsewhere nothing changes (so
    `backend: auto` can still pick OpenVINO), and an explicit batch or a view with its own package is respected."""
    import edge_ad.runtime.trt as trt
    from edge_ad.services import views_engine_batch
    from edge_ad.station.config import StationConfig

    views = [{"name": "a", "source": "x/"}, {"name": "b", "source": "y/"}, {"name": "c", "source": "z/",
                                                                           "package": str(package)}]
    cfg = StationConfig(package=str(package), views=views)
    monkeypatch.setattr(trt, "tensorrt_available", lambda: False)
    assert views_engine_batch(cfg).batch is None
    monkeypatch.setattr(trt, "tensorrt_available", lambda: True)
    assert views_engine_batch(cfg).batch == 2  # two views share the station package, one tile each
    assert views_engine_batch(cfg.with_(batch=8)).batch == 8
    assert views_engine_batch(cfg.with_(backend="onnxruntime")).batch is None
