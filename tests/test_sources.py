"""Folder/glob and video-file sources on generated files, the live-source reconnect path, backoff, URI factory."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_ad.errors import ConfigError
from edge_ad.sources import Backoff, SourceError, open_source
from edge_ad.sources.aravis import GigESource
from edge_ad.sources.folder import FolderSource
from edge_ad.sources.opencv import VideoFileSource, VideoStreamSource


def _images(folder: Path, n: int, ext: str = ".png") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"img_{i:03d}{ext}"
        cv2.imwrite(str(p), np.full((24, 32, 3), 10 * i, np.uint8))
        paths.append(p)
    return paths


def _video(path: Path, n: int, fourcc: str) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 25, (64, 48))
    for i in range(n):
        w.write(np.full((48, 64, 3), 8 * i, np.uint8))
    w.release()
    return path


def test_folder_replays_in_order_with_metadata(tmp_path: Path) -> None:
    _images(tmp_path / "d", 5)
    with FolderSource(tmp_path / "d") as src:
        frames = list(src)
    assert [f.seq for f in frames] == [0, 1, 2, 3, 4]
    assert [int(f.image[0, 0, 0]) for f in frames] == [0, 10, 20, 30, 40]
    f = frames[2]
    assert f.image.shape == (24, 32, 3) and f.pixel_format == "BGR8" and f.error is None
    assert f.extra["file"].endswith("img_002.png") and f.source_id == str(tmp_path / "d")
    assert abs(f.host_timestamp - time.time()) < 60 and f.meta()["width"] == 32
    assert src.finished


def test_folder_glob_grey_loop_and_rate(tmp_path: Path) -> None:
    _images(tmp_path, 3, ".jpg")
    cv2.imwrite(str(tmp_path / "grey.png"), np.zeros((8, 8), np.uint8))
    src = FolderSource(str(tmp_path / "*.jpg"), loop=True, rate=50.0)
    t0 = time.monotonic()
    with src:
        frames = [f for _, f in zip(range(10), src)]
    took = time.monotonic() - t0
    assert len(frames) == 10 and all(f.extra["file"].endswith(".jpg") for f in frames)
    assert frames[3].extra["file"] == frames[0].extra["file"]  # looped
    assert 0.15 < took < 2.0  # 10 frames at 50 fps: ~0.18 s
    grey = next(iter(FolderSource(tmp_path / "grey.png")))
    assert grey.image.shape == (8, 8, 3) and grey.pixel_format == "Mono8"


def test_folder_bad_files_become_error_frames(tmp_path: Path) -> None:
    good = _images(tmp_path, 2, ".jpg")
    (tmp_path / "img_000b.jpg").write_bytes(good[0].read_bytes()[:200])  # truncated JPEG
    (tmp_path / "img_000c.png").write_bytes(b"not an image at all")
    frames = list(FolderSource(tmp_path))
    by_name = {Path(f.extra["file"]).name: f for f in frames}
    assert len(frames) == 4
    assert by_name["img_000b.jpg"].image is None and "truncated JPEG" in by_name["img_000b.jpg"].error
    assert by_name["img_000c.png"].image is None and "not an image" in by_name["img_000c.png"].error
    assert by_name["img_001.jpg"].error is None


def test_folder_without_images_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no image files"):
        FolderSource(tmp_path)
    with pytest.raises(SourceError, match="rate"):
        _images(tmp_path, 1)
        FolderSource(tmp_path, rate=0)


@pytest.mark.parametrize("name,fourcc", [("clip.avi", "MJPG"), ("clip.mp4", "mp4v")])
def test_video_file_frames_and_loop(tmp_path: Path, name: str, fourcc: str) -> None:
    path = _video(tmp_path / name, 12, fourcc)
    src = open_source(str(path))
    assert isinstance(src, VideoFileSource)
    with src:
        frames = list(src)
    assert len(frames) == 12 and frames[0].image.shape == (48, 64, 3)
    assert [f.extra["index"] for f in frames] == list(range(12))
    assert abs(int(frames[5].image.mean()) - 40) <= 3
    assert frames[1].camera_timestamp_ns is not None and frames[1].camera_timestamp_ns > 0
    with open_source(str(path), loop="true") as looping:
        more = [f for _, f in zip(range(30), looping)]
    assert len(more) == 30 and more[12].extra["index"] == 0


def test_video_file_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not found"):
        VideoFileSource(tmp_path / "missing.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(SourceError, match="cannot open video"):
        VideoFileSource(bad).open()


def test_live_stream_reconnects_and_reports_the_gap(tmp_path: Path) -> None:
    """A 'live' capture on a file: the end of the file is a lost stream; while the file is missing reconnects fail
    with backoff; once it is back the stream resumes and the outage is reported as a Gap."""
    path = _video(tmp_path / "live.avi", 5, "MJPG")
    hidden = tmp_path / "hidden.avi"
    src = VideoStreamSource(str(path), backoff=Backoff(initial_s=0.05, max_s=0.2), poll_s=0.1)
    frames = []
    restore = threading.Timer(0.6, lambda: hidden.rename(path))
    watchdog = threading.Timer(20.0, src.request_stop)  # bound: the loop ends even if reconnect never works
    watchdog.start()
    try:
        with src:
            for frame in src:
                frames.append(frame)
                if len(frames) == 5:
                    path.rename(hidden)  # the 'camera' disappears before the stream notices the end
                    restore.start()
                if len(frames) > 5 and frame.gap is not None:
                    break
    finally:
        watchdog.cancel()
        restore.cancel()
    gap = frames[-1].gap
    assert gap is not None and gap.seconds_down >= 0.5 and "read failed" in gap.reason
    assert gap.reconnects >= 2  # at least one attempt failed while the file was gone
    assert src.gaps == [gap] and src.stats()["gaps"] == 1
    assert [f.seq for f in frames] == list(range(len(frames)))


def test_live_source_gives_up_when_configured(tmp_path: Path) -> None:
    path = _video(tmp_path / "live.avi", 2, "MJPG")
    src = VideoStreamSource(str(path), backoff=Backoff(initial_s=0.05, max_s=0.1, give_up_s=0.5), poll_s=0.05)
    with src:
        path.unlink()
        deadline = time.monotonic() + 10
        with pytest.raises(SourceError, match="giving up"):
            while time.monotonic() < deadline:
                src.read()


def test_backoff_schedule_and_frames_lost_estimate() -> None:
    b = Backoff(initial_s=0.5, max_s=2.0)
    for t in (0.0, 0.1, 0.2):
        b.frame(t)  # 10 fps
    b.lost("cable", 0.25)
    assert b.down and b.down_since == 0.2
    assert [b.failed(1.0), b.failed(2.0), b.failed(3.0), b.failed(4.0)] == [0.5, 1.0, 2.0, 2.0]
    gap = b.frame(3.2)
    assert gap is not None and gap.seconds_down == pytest.approx(3.0) and gap.frames_lost == 29
    assert gap.reason == "cable" and gap.reconnects == 5 and not b.down
    with pytest.raises(SourceError, match="initial"):
        Backoff(initial_s=2.0, max_s=1.0)


def test_factory_parses_uris_and_options(tmp_path: Path) -> None:
    cam = open_source("gige://CAM7@10.0.0.5?pixel_format=BayerRG8&fps=30&roi=0,0,640,480&exposure=2000"
                      "&trigger=Line0&packet_size=8000&buffers=6&give_up=60")
    assert isinstance(cam, GigESource)
    assert (cam.device, cam.pixel_format, cam.frame_rate, cam.roi) == (
        "CAM7@10.0.0.5",
        "BayerRG8",
        30.0,
        (0, 0, 640, 480),
    )
    assert (cam.exposure_us, cam.trigger_mode, cam.packet_size, cam.buffers) == (2000.0, "Line0", 8000, 6)
    assert cam.backoff.give_up_s == 60.0 and not cam.continuous
    assert open_source("gige://", gain="3").gain_db == 3.0  # type: ignore[attr-defined]
    assert isinstance(open_source("usb://0"), VideoStreamSource)
    assert isinstance(open_source("rtsp://127.0.0.1:8554/line?x=1"), VideoStreamSource)
    _images(tmp_path, 2)
    assert isinstance(open_source(str(tmp_path), rate="5"), FolderSource)
    for uri, msg in [("gige://x?colour=red", "unknown option 'colour'"), ("gige://x?fps=fast", "fps='fast'"),
                     ("usb://cam", "usb://INDEX"), ("ftp://x", "unknown source scheme"),
                     ("gentl://", "PRODUCER.cti"), ("gige://x?packet_size=10", None)]:
        with pytest.raises((ConfigError, SourceError), match=msg or "packet_size"):
            open_source(uri)
    with pytest.raises(ConfigError, match="only when the source is given as a URI"):
        open_source(FolderSource(tmp_path), rate=3)
