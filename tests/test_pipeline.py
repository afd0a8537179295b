"""The threaded pipeline on folder sources with the tiny fixture package: equality with Detector.predict, bad frames,
policies and accounting, stop/signal handling, sinks (callback, rotating JSONL, NG folder retention), the CLI."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from runtime_fixtures import blob_image

from edge_ad.cli.main import main
from edge_ad.errors import ConfigError
from edge_ad.pipeline import Pipeline, run, stream
from edge_ad.runtime.detector import Detector
from edge_ad.runtime.result import Result
from edge_ad.sources.folder import FolderSource
from edge_ad.sources.frame import Gap
from edge_ad.station.recorders import JsonlRecorder, NGFolderRecorder


def _parts(folder: Path, n: int, ng_every: int = 2) -> Path:
    """n images; every `ng_every`-th has the bright blob (NG), the others are dark (OK)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = blob_image() if i % ng_every == 0 else blob_image(box=(0, 0, 1, 1))
        cv2.imwrite(str(folder / f"{i:04d}.png"), img)
    return folder


class SlowBackend:
    """Wraps a backend and sleeps per call: a model slower than the camera."""

    def __init__(self, inner: Any, delay_s: float, fail_on: int | None = None) -> None:
        self.inner, self.delay_s, self.fail_on, self.calls = inner, delay_s, fail_on, 0
        self.input_hw, self.name, self.providers = inner.input_hw, inner.name, inner.providers

    def close(self) -> None:
        self.inner.close()

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        time.sleep(self.delay_s)
        if self.calls == self.fail_on:
            raise RuntimeError("device lost")
        return self.inner.run(batch)


def test_stream_results_equal_detector_predict(package: Path, tmp_path: Path) -> None:
    folder = _parts(tmp_path / "in", 8)
    det = Detector.load(package)
    results = list(stream(det, str(folder), policy="all"))
    assert len(results) == 8
    for r in results:
        ref = det.predict(r.frame["file"])
        assert r.score == pytest.approx(ref.score, abs=1e-6) and r.status == ref.status
        assert len(r.regions) == len(ref.regions) and r.anomaly_map.shape == (200, 300)
        assert r.timings["latency"] >= r.timings["infer"] > 0
    assert [r.status for r in results] == ["NG", "OK"] * 4
    assert [r.frame["seq"] for r in results] == list(range(8))


def test_bad_frames_yield_error_results_and_the_stream_goes_on(package: Path, tmp_path: Path) -> None:
    folder = _parts(tmp_path / "in", 4)
    (folder / "0001b.png").write_bytes((folder / "0001.png").read_bytes()[:100])  # truncated
    (folder / "0002b.jpg").write_bytes(b"garbage")  # unreadable
    cv2.imwrite(str(folder / "0003b.png"), np.zeros((50, 60, 3), np.uint8))  # wrong size
    pipe = stream(package, str(folder), policy="all", expect_size=(200, 300))
    results = list(pipe)
    status = {Path(r.frame["file"]).name: r for r in results}
    assert len(results) == 7
    assert status["0001b.png"].status == "ERROR" and "truncated PNG" in status["0001b.png"].error
    assert status["0002b.jpg"].status == "ERROR" and "not an image" in status["0002b.jpg"].error
    assert status["0002b.jpg"].fault == "FRAME"
    assert "expected 300x200, got 60x50" in status["0003b.png"].error
    assert [status[f"{i:04d}.png"].status for i in range(4)] == ["NG", "OK", "NG", "OK"]
    s = pipe.stats.snapshot()
    assert (s["frames_in"], s["results_out"], s["failed"], s["ng"], s["ok"]) == (7, 7, 3, 2, 2)


def test_backend_failure_fails_that_frame_only(package: Path, tmp_path: Path) -> None:
    det = Detector.load(package)
    det.backend = SlowBackend(det.backend, 0.0, fail_on=3)  # type: ignore[assignment]
    results = list(stream(det, str(_parts(tmp_path / "in", 6)), policy="all"))
    assert [r.status for r in results] == ["NG", "OK", "ERROR", "OK", "NG", "OK"]
    assert "inference failed: device lost" in results[2].error


@pytest.mark.parametrize("policy", ["latest", "all"])
def test_policies_account_for_every_frame(package: Path, tmp_path: Path, policy: str) -> None:
    det = Detector.load(package)
    det.backend = SlowBackend(det.backend, 0.01)  # type: ignore[assignment]
    folder = _parts(tmp_path / "in", 40)
    pipe = stream(det, FolderSource(folder), policy=policy, queue_size=1)  # the source is much faster than 100 fps
    results = list(pipe)
    s = pipe.stats.snapshot()
    assert s["frames_in"] == 40 and s["frames_in"] == s["results_out"] + s["dropped"]
    assert len(results) == s["results_out"]
    seqs = [r.frame["seq"] for r in results]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    if policy == "all":
        assert s["dropped"] == 0 and seqs == list(range(40))
    else:
        assert s["dropped"] > 10 and seqs[-1] == 39  # the newest frame is always inspected
    assert s["latency_p50_ms"] > 0 and s["latency_p99_ms"] >= s["latency_p50_ms"]


def test_default_policy_inspects_every_replayed_frame_and_drops_are_never_silent(
        package: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import edge_ad
    from edge_ad.pipeline.stream import default_policy
    from edge_ad.sources.opencv import VideoStreamSource

    det = Detector.load(package)
    det.backend = SlowBackend(det.backend, 0.01)  # type: ignore[assignment]
    folder = _parts(tmp_path / "in", 6)
    pipe = edge_ad.stream(det, str(folder))  # default policy: a folder is a replay
    assert pipe.policy == "all"
    assert [r.frame["seq"] for r in pipe] == list(range(6)) and pipe.dropped == 0
    assert default_policy(VideoStreamSource(0)) == "latest" and VideoStreamSource.live
    # a camera-like (live) source under `latest`: drops are counted, logged once, and reported on results
    caplog.set_level("WARNING", logger="edge_ad.pipeline.stream")
    pipe = stream(det, FolderSource(_parts(tmp_path / "many", 40)), policy="latest", queue_size=1)
    results = list(pipe)
    assert pipe.dropped > 10 and pipe.dropped == pipe.stats.snapshot()["dropped"]
    assert sum(r.frame.get("dropped_before", 0) for r in results) == pipe.dropped
    assert len([m for m in caplog.messages if "drops the oldest" in m]) == 1


class GappySource(FolderSource):
    """A folder played as a camera that had an outage (3 frames lost) just before every 7th frame."""

    def _grab(self, timeout: float) -> Any:
        frame = super()._grab(timeout)
        if frame is not None and frame.seq % 7 == 3:
            frame.gap = Gap(seconds_down=0.1, frames_lost=3, reason=f"outage before {frame.seq}", reconnects=1)
        return frame


def test_policy_latest_carries_a_camera_gap_to_the_next_delivered_frame(package: Path, tmp_path: Path) -> None:
    det = Detector.load(package)
    det.backend = SlowBackend(det.backend, 0.01)  # type: ignore[assignment]
    pipe = stream(det, GappySource(_parts(tmp_path / "in", 40)), policy="latest", queue_size=1)
    results = list(pipe)
    s = pipe.stats.snapshot()
    assert s["dropped"] > 10  # frames that carried a gap were dropped too ...
    gaps = [r.frame["gap"] for r in results if "gap" in r.frame]
    assert sum(g["frames_lost"] for g in gaps) == 3 * 6  # ... yet every outage reaches a result
    assert sum(g["reconnects"] for g in gaps) == 6 and s["frames_lost"] == 18
    assert any("carried_from_seq" in g for g in gaps)


def test_stop_drains_and_leaving_the_loop_stops_threads(package: Path, tmp_path: Path) -> None:
    folder = _parts(tmp_path / "in", 5)
    pipe = stream(package, FolderSource(folder, loop=True, rate=200.0), policy="all")
    n = 0
    for _ in pipe:
        n += 1
        if n == 20:
            pipe.stop()
        assert n < 200, "stop() did not end the stream"
    s = pipe.stats.snapshot()
    assert s["frames_in"] == s["results_out"] == n and n >= 20
    assert not any(t.is_alive() for t in pipe._threads)
    pipe2 = stream(package, FolderSource(folder, loop=True), policy="latest")
    for k, _ in enumerate(pipe2):
        if k == 3:
            break
    assert not any(t.is_alive() for t in pipe2._threads)


def test_callback_form_and_sigint_stop_gracefully(package: Path, tmp_path: Path) -> None:
    folder = _parts(tmp_path / "in", 4)
    seen: list[tuple[str, tuple[int, ...]]] = []
    stats = run(package, str(folder), on_result=lambda r, img: seen.append((r.status, img.shape)), policy="all")
    assert seen == [("NG", (200, 300, 3)), ("OK", (200, 300, 3))] * 2 and stats["results_out"] == 4
    before = signal.getsignal(signal.SIGINT)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        t0 = time.monotonic()
        stats = run(package, FolderSource(folder, loop=True, rate=100.0), on_result=lambda r, i: None,
                    max_frames=1000)  # bound: ~10 s if the signal were ignored
    finally:
        timer.cancel()
    assert time.monotonic() - t0 < 5
    assert 10 < stats["results_out"] < 500 and stats["frames_in"] == stats["results_out"] + stats["dropped"]
    assert signal.getsignal(signal.SIGINT) is before


def test_failing_sink_is_counted_and_the_stream_goes_on(package: Path, tmp_path: Path) -> None:
    def bad(r: Result, img: np.ndarray | None) -> None:
        raise OSError("disk full")

    stats = run(package, str(_parts(tmp_path / "in", 3)), on_result=bad, policy="all", handle_signals=False)
    assert stats["results_out"] == 3 and stats["record_errors"] == 3


def test_jsonl_sink_rotates(package: Path, tmp_path: Path) -> None:
    log_path = tmp_path / "log" / "results.jsonl"
    sink = JsonlRecorder(log_path, max_bytes=2048, backups=2)
    run(package, str(_parts(tmp_path / "in", 30)), recorders=[sink], policy="all", handle_signals=False)
    files = sorted(p.name for p in log_path.parent.iterdir())
    assert files == ["results.jsonl", "results.jsonl.1", "results.jsonl.2"]
    lines = [json.loads(line) for p in log_path.parent.iterdir() for line in p.read_text().splitlines()]
    assert all(p.stat().st_size <= 2048 for p in log_path.parent.iterdir())
    assert {d["status"] for d in lines} == {"OK", "NG"} and all("frame" in d and "time" in d for d in lines)
    seqs = [d["frame"]["seq"] for d in lines]
    assert len(set(seqs)) == len(seqs) and max(seqs) == 29  # the newest lines are kept, the oldest rotated out
    with pytest.raises(ConfigError, match="max_bytes"):
        JsonlRecorder(tmp_path / "x.jsonl", max_bytes=10)


def test_ng_sink_saves_images_overlays_and_keeps_a_limit(package: Path, tmp_path: Path) -> None:
    out = tmp_path / "ng"
    out.mkdir()
    (out / "20000101T000000_000000_7_image.jpg").write_bytes(b"old run")  # counts towards the limit
    (out / "20000101T000000_000000_7.json").write_text("{}")
    (out / "notes.txt").write_text("not ours")
    sink = NGFolderRecorder(out, keep=3)
    run(package, str(_parts(tmp_path / "in", 12)), recorders=[sink], policy="all", handle_signals=False)
    assert sink.saved == 6
    jsons = sorted(out.glob("*.json"))
    assert len(jsons) == 3 and not (out / "20000101T000000_000000_7_image.jpg").exists()
    assert (out / "notes.txt").exists()
    for j in jsons:
        stem = j.name[:-5]
        assert json.loads(j.read_text())["status"] == "NG"
        img = cv2.imread(str(out / f"{stem}_image.jpg"))
        overlay = cv2.imread(str(out / f"{stem}_overlay.jpg"))
        assert img.shape == overlay.shape == (200, 300, 3) and not np.array_equal(img, overlay)
    assert sorted(json.loads(j.read_text())["frame"]["seq"] for j in jsons) == [6, 8, 10]


def test_pipeline_option_errors(package: Path, tmp_path: Path) -> None:
    folder = _parts(tmp_path / "in", 1)
    for kw, msg in [({"policy": "newest"}, "policy"), ({"queue_size": 0}, "queue_size"),
                    ({"max_frames": 0}, "max_frames"), ({"max_batch": 0}, "max_batch")]:
        with pytest.raises(ConfigError, match=msg):
            Pipeline(package, str(folder), **kw)
    with pytest.raises(ConfigError, match="output=False"):
        list(Pipeline(package, str(folder), output=False))


def test_cli_run_on_a_folder(package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _parts(tmp_path / "in", 6)
    rc = main(["run", str(package), "--source", str(folder), "--policy", "all", "--save-ng", str(tmp_path / "ng"),
               "--results-log", str(tmp_path / "r.jsonl"), "--json", "--max-frames", "5"])
    assert rc == 0
    final = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert final["final"] and (final["frames_in"], final["results_out"], final["ng"]) == (5, 5, 3)
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 5
    assert len(list((tmp_path / "ng").glob("*.json"))) == 3
    rc = main(["run", str(package), "--source", str(folder), "--source-option", "rate=oops"])
    assert rc == 2 and "rate='oops'" in capsys.readouterr().err


def test_cli_run_with_traceability_and_the_hmi(package: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """`edge-ad run` gets the station services too: one row per result, the HMI up while it runs."""
    from plc_peers import free_port

    from edge_ad.traceability import open_readonly

    pytest.importorskip("uvicorn")
    folder = _parts(tmp_path / "in", 6)
    db = tmp_path / "run.db"
    rc = main(["run", str(package), "--source", str(folder), "--policy", "all", "--max-frames", "6",
               "--db", str(db), "--station", "bench-2", "--ui", f"127.0.0.1:{free_port()}"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "edge-ad run: HMI on http://127.0.0.1:" in err
    with open_readonly(db) as st:
        rows = st.query()
    assert len(rows) == 6 and [r["decision"] for r in rows].count("NG") == 3
    assert {r["station"] for r in rows} == {"bench-2"} and all(r["model"] for r in rows)


def test_record_builder_is_fail_safe_and_the_pipeline_view_takes_sensitivity(package: Path) -> None:
    import math

    from edge_ad.errors import ConfigError
    from edge_ad.pipeline.stream import PipelineView
    from edge_ad.runtime import Detector
    from edge_ad.runtime.result import Result
    from edge_ad.station.event import RecordBuilder, part_id_of
    from edge_ad.station.record import DefectCode

    b = RecordBuilder()
    bad = b.verdict(Result.failed("unreadable", frame={"seq": 7}), part_id=part_id_of({"seq": 7}), inspection_ms=1.0,
                    recipe=1)
    assert (bad.ok, bad.defect_code, bad.part_id, bad.anomaly_score, bad.seq) == (
        False, DefectCode.INSPECTION_ERROR, 7, 1.0, 1)
    nan = b.verdict(Result(score=math.nan, normalized_score=math.nan, is_anomalous=False), part_id=0,
                    inspection_ms=1.0, recipe=1)
    assert nan.ok is False and nan.defect_code == DefectCode.INSPECTION_ERROR and nan.seq == 2
    with Detector.load(package, backend="onnxruntime") as det:
        pipe = Pipeline(det, str(_parts(package.parent / "view_in", 2)), output=False)
        view = PipelineView(pipe)
        view.set_sensitivity(2.0)
        snap = view.snapshot()
        assert det.sensitivity == 2.0 == snap.sensitivity and snap.plc_connected is False and snap.record_errors == 0
        with pytest.raises(ConfigError, match="sensitivity"):
            view.set_sensitivity(0)
        with pytest.raises(ConfigError, match="recipe"):
            view.request_recipe(2)

