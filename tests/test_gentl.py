"""GenTL through harvesters with the simulator producer genicam 1.6.0 ships (viky.cti: 3 devices, 400x400 RGBa8).

Skipped with the reason when harvesters/genicam or viky.cti are missing (pip install harvesters genicam==1.6.0)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from runtime_fixtures import build_package

from edge_ad.pipeline import stream
from edge_ad.sources import SourceError, open_source
from edge_ad.sources.gentl import GenTLSource

genicam = pytest.importorskip("genicam", reason="pip install harvesters genicam==1.6.0")
pytest.importorskip("harvesters.core", reason="pip install harvesters")
CTI = Path(genicam.__file__).parent / "viky.cti"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CTI.is_file(), reason=f"{CTI} missing (genicam 1.6.0 ships it)")]


def test_lists_devices_and_streams_rgba8_as_bgr() -> None:
    src = GenTLSource(CTI, serial="1")
    with src:
        assert [d["serial"] for d in src.info["devices"]] == ["0", "1", "2"]
        frames = []
        for f in src:
            frames.append(f)
            if len(frames) == 3:
                break
    f = frames[-1]
    assert f.image.shape == (400, 400, 3) and f.pixel_format == "RGBa8" and f.error is None
    assert [x.seq for x in frames] == [0, 1, 2] and frames[1].frame_id != frames[0].frame_id
    assert f.source_id == f"gentl://{CTI}?serial=1"


def test_mono8_through_the_pipeline(tmp_path: Path) -> None:
    pkg = build_package(tmp_path / "pkg")
    pipe = stream(pkg, f"gentl://{CTI}?index=2&pixel_format=Mono8", policy="all", max_frames=5)
    watchdog = threading.Timer(30.0, pipe.stop)
    watchdog.start()
    try:
        results = list(pipe)
    finally:
        watchdog.cancel()
    assert len(results) == 5 and all(r.error is None for r in results)
    assert results[0].frame["pixel_format"] == "Mono8" and results[0].anomaly_map.shape == (400, 400)


def test_wrong_serial_and_missing_producer() -> None:
    with pytest.raises(SourceError, match=r"no camera with serial '9'; found \['0', '1', '2'\]"):
        GenTLSource(CTI, serial="9").open()
    with pytest.raises(SourceError, match="not found"):
        open_source("gentl:///nonexistent/producer.cti")
    with pytest.raises(SourceError, match="PixelFormat"):
        GenTLSource(CTI, pixel_format="BayerRG8").open()
