"""GigE Vision end to end over the real protocol (GVCP + GVSP on 127.0.0.1) with Aravis' fake camera process:
>= 100 frames through a model package with every frame accounted for, kill/restart reconnect with the gap reported,
software trigger, serial check, and `edge-ad run` stopping cleanly on SIGINT.

Needs `aravis-tools` and `gir1.2-aravis-0.8` (apt) and PyGObject (pip); skipped with the reason otherwise."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gige_peers import FAKE, HAVE_ARAVIS, SERIAL, FakeCamera, _gvcp_bound

from edge_ad.pipeline import stream
from edge_ad.sources import Backoff, SourceError
from edge_ad.sources.aravis import GigESource

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (FAKE and HAVE_ARAVIS), reason="needs aravis-tools, gir1.2-aravis-0.8, PyGObject")]


@pytest.fixture
def camera() -> Iterator[FakeCamera]:
    if _gvcp_bound():
        pytest.fail("UDP 127.0.0.1:3956 is already in use (another fake camera running?)")
    cam = FakeCamera()
    cam.start()
    try:
        yield cam
    finally:
        cam.kill()


URI = f"gige://{SERIAL}@127.0.0.1?roi=0,0,320,240&fps=100&packet_size=8000&pixel_format=BayerRG8"


def test_stream_150_frames_every_frame_accounted(camera: FakeCamera, package: Path) -> None:
    pipe = stream(package, URI, policy="latest", max_frames=150)
    watchdog = threading.Timer(30.0, pipe.stop)
    watchdog.start()
    try:
        results = list(pipe)
    finally:
        watchdog.cancel()
    s = pipe.stats.snapshot()
    assert s["frames_in"] == 150, s
    assert s["frames_in"] == s["results_out"] + s["dropped"] and len(results) == s["results_out"] >= 100
    assert s["failed"] == 0 and all(r.error is None for r in results)
    seqs = [r.frame["seq"] for r in results]
    assert seqs == sorted(set(seqs)) and seqs[-1] == 149
    f = results[-1].frame
    assert f["pixel_format"] == "BayerRG8" and (f["width"], f["height"]) == (320, 240)
    assert f["source_id"].startswith("gige://") and f["camera_timestamp_ns"] > 0
    ids = [r.frame["frame_id"] for r in results[:20]]
    assert len(set(ids)) == 20  # the camera's own block ids
    assert results[-1].anomaly_map.shape == (240, 320)


def test_kill_and_restart_reconnects_and_reports_the_gap(camera: FakeCamera, package: Path) -> None:
    src = GigESource(f"{SERIAL}@127.0.0.1", roi=(0, 0, 320, 240), frame_rate=50, packet_size=8000,
                     stall_timeout_s=0.5, backoff=Backoff(initial_s=0.1, max_s=0.5))
    pipe = stream(package, src, policy="latest")
    watchdog = threading.Timer(40.0, pipe.stop)  # bound: ends the test even if the camera never comes back
    watchdog.start()
    restart = threading.Timer(1.5, camera.start)
    results, after_gap, gap = [], 0, None
    try:
        for r in pipe:
            results.append(r)
            if len(results) == 40:
                camera.kill()
                restart.start()
            if r.frame.get("gap"):
                gap = r.frame["gap"]
            if gap is not None:
                after_gap += 1
                if after_gap == 30:
                    pipe.stop()
    finally:
        watchdog.cancel()
        restart.cancel()
    assert gap is not None, f"no gap reported after {len(results)} results"
    assert after_gap >= 30, "the stream did not resume"
    assert gap["seconds_down"] >= 1.4 and gap["frames_lost"] >= 40, gap  # ~1.5 s at 50 fps
    s = pipe.stats.snapshot()
    assert s["gaps"] == 1 and s["frames_lost"] == gap["frames_lost"]
    assert s["frames_in"] == s["results_out"] + s["dropped"]
    assert src.gaps and src.gaps[0].frames_lost == gap["frames_lost"]


def test_software_trigger_and_serial_check(camera: FakeCamera) -> None:
    with pytest.raises(SourceError, match=f"has serial '{SERIAL}', expected 'WRONG'"):
        GigESource("WRONG@127.0.0.1").open()
    src = GigESource(f"{SERIAL}@127.0.0.1", roi=(0, 0, 64, 48), pixel_format="Mono8", trigger="software",
                     stall_timeout_s=0.3)
    with src:
        assert src.read(timeout=0.6) is None and src.read(timeout=0.3) is None  # no trigger, no frame, no reconnect
        frames = []
        for _ in range(3):
            src.trigger()
            f = src.read(timeout=2.0)
            assert f is not None
            frames.append(f)
        assert src.read(timeout=0.3) is None
    assert [f.image.shape for f in frames] == [(48, 64, 3)] * 3 and frames[0].pixel_format == "Mono8"
    assert src.gaps == [] and src.info["serial"] == SERIAL
    with pytest.raises(SourceError, match="pixel_format: the camera offers"):
        GigESource("127.0.0.1", pixel_format="BGR8").open()
    with pytest.raises(SourceError, match="trigger"):
        GigESource("127.0.0.1", trigger="Line7").open()
    with pytest.raises(SourceError, match="frame_rate"):
        GigESource("127.0.0.1", frame_rate=5000).open()


def test_cli_run_prints_status_and_stops_on_sigint(camera: FakeCamera, package: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "edge_ad.cli.main", "run", str(package), "--source", URI.replace("fps=100", "fps=50"),
           "--status-every-s", "0.5", "--json", "--save-ng", str(tmp_path / "ng")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).parent.parent)
    try:
        lines: list[dict] = []
        deadline = time.monotonic() + 30
        assert proc.stdout is not None
        while len(lines) < 3 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(json.loads(line))
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert len(lines) == 3 and lines[-1]["results_out"] > 0 and lines[-1]["fps"] > 10, lines
    final = json.loads(out.strip().splitlines()[-1])
    assert final["final"] and final["frames_in"] == final["results_out"] + final["dropped"] > lines[-1]["results_out"]
    assert "SIGINT: stopping" in err
