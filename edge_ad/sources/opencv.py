"""OpenCV VideoCapture sources: video files (optionally looping or paced), USB cameras and network streams.

Live inputs (USB, RTSP/HTTP) reconnect with backoff when reads fail and report the outage as a Gap; a video file
ends at its last frame (or restarts with `loop=True`). Open/read timeouts are passed to the FFmpeg backend so a dead
RTSP server cannot block the capture thread for long.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2

from edge_ad.sources.base import (
    Backoff,
    ConnectionLost,
    LiveSource,
    Pacer,
    Source,
    SourceError,
)
from edge_ad.sources.frame import Frame

log = logging.getLogger(__name__)

NETWORK_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://", "udp://", "tcp://")


def _open_capture(target: str | int, timeout_ms: int) -> cv2.VideoCapture:
    if isinstance(target, int):
        return cv2.VideoCapture(target)
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
    return cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)


class VideoFileSource(Source):
    """Frames of a video file; `rate` (fps) paces playback like a camera, `loop` restarts at the end."""

    def __init__(self, path: str | Path, rate: float | None = None, loop: bool = False, poll_s: float = 0.5) -> None:
        super().__init__(str(path), poll_s=poll_s)
        self.path = Path(path)
        if not self.path.is_file():
            raise SourceError(f"{self.path}: video file not found")
        self.pacer = Pacer(rate, str(path))
        self.loop = loop
        self._cap: cv2.VideoCapture | None = None
        self._index = 0

    def _open(self) -> None:
        cap = _open_capture(str(self.path), 5000)
        if not cap.isOpened():
            raise SourceError(f"{self.path}: cannot open video (unsupported container/codec or not a video)")
        self._cap = cap
        self.pacer.reset()
        self._index = 0

    def _close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def _grab(self, timeout: float) -> Frame | None:
        assert self._cap is not None
        if not self.pacer.wait(timeout, self._stop):
            return None
        ok, image = self._cap.read()
        if not ok:
            if self.loop and self._index > 0:
                self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                self._index = 0
                ok, image = self._cap.read()
            if not ok:
                self._finished = True
                return None
        pos_ms = self._cap.get(cv2.CAP_PROP_POS_MSEC)
        self._index += 1
        return self._emit(image, "BGR8", camera_timestamp_ns=int(pos_ms * 1e6) if pos_ms >= 0 else None,
                          extra={"file": str(self.path), "index": self._index - 1})


class VideoStreamSource(LiveSource):
    """A live VideoCapture: USB camera index or network URL (RTSP, HTTP, ...), reconnecting on failure.

    Any target can be forced live (a file then replays after each 'reconnect'), which the tests use to exercise the
    reconnect path without a network server.
    """

    def __init__(self, target: str | int, width: int | None = None, height: int | None = None,
                 fps: float | None = None, timeout_s: float = 5.0, stall_timeout_s: float = 5.0,
                 backoff: Backoff | None = None, poll_s: float = 0.5) -> None:
        sid = f"usb://{target}" if isinstance(target, int) else str(target)
        super().__init__(sid, stall_timeout_s=stall_timeout_s, backoff=backoff, continuous=True, poll_s=poll_s)
        self.target, self.width, self.height, self.fps = target, width, height, fps
        self.timeout_ms = int(timeout_s * 1000)
        self._cap: cv2.VideoCapture | None = None

    def _connect(self) -> None:
        cap = _open_capture(self.target, self.timeout_ms)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{self.source_id}: cannot open (device missing, stream down or unsupported)")
        for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, self.width), (cv2.CAP_PROP_FRAME_HEIGHT, self.height),
                            (cv2.CAP_PROP_FPS, self.fps)):
            if value is not None:
                cap.set(prop, float(value))
        if isinstance(self.target, str):
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # keep the newest frame, not a backlog
        self._cap = cap

    def _disconnect(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def _fetch(self, timeout: float) -> Frame | None:
        assert self._cap is not None
        ok, image = self._cap.read()
        if not ok or image is None:
            raise ConnectionLost("read failed (stream ended or device unplugged)")
        return self._emit(image, "BGR8")
