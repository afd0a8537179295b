"""Where results go: a Python callback, a rotating JSONL log, a folder of NG images and overlays (bounded).

A sink gets every Result with the frame's image (BGR, None for frames that could not be decoded). Sinks run on
the pipeline's sink thread; one that raises is logged and counted, and the stream goes on.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from edge_ad.errors import ConfigError
from edge_ad.fileio import atomic_write_bytes
from edge_ad.runtime.result import Result

log = logging.getLogger(__name__)


class Sink(Protocol):
    """Receives each result in order; `close()` flushes at the end of the stream."""

    def write(self, result: Result, image: np.ndarray | None) -> None: ...

    def close(self) -> None: ...


class CallbackSink:
    """Calls `fn(result, image)` for every result."""

    def __init__(self, fn: Callable[[Result, np.ndarray | None], object]) -> None:
        if not callable(fn):
            raise ConfigError(f"callback: expected a callable fn(result, image), got {type(fn).__name__}")
        self.fn = fn

    def write(self, result: Result, image: np.ndarray | None) -> None:
        self.fn(result, image)

    def close(self) -> None:
        """Nothing to flush."""


class JsonlSink:
    """One JSON line per result (`Result.to_dict()` plus `time`), rotated at `max_bytes` keeping `backups` files.

    Rotation renames `results.jsonl` -> `results.jsonl.1` -> ... like logging's RotatingFileHandler; each line is
    flushed as written, so a crash loses at most the line being written.
    """

    def __init__(self, path: str | Path, max_bytes: int = 50_000_000, backups: int = 5) -> None:
        if max_bytes < 1024 or backups < 0:
            raise ConfigError(f"{path}: expected max_bytes >= 1024 and backups >= 0, got {max_bytes}, {backups}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.backups = max_bytes, backups
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (kept open for the stream)

    def write(self, result: Result, image: np.ndarray | None) -> None:
        line = json.dumps({"time": time.time(), **result.to_dict()}, allow_nan=False) + "\n"
        if self._f.tell() + len(line) > self.max_bytes and self._f.tell() > 0:
            self._rotate()
        self._f.write(line)
        self._f.flush()

    def _rotate(self) -> None:
        self._f.close()
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            for i in range(self.backups - 1, 0, -1):
                src = self.path.with_name(f"{self.path.name}.{i}")
                if src.exists():
                    os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def close(self) -> None:
        self._f.close()


_NAME = re.compile(r"^(\d{8}T\d{6}_\d{6}_\d+)[_.]")


class NGImageSink:
    """Saves NG frames (and error frames with `errors=True`): image, overlay and result JSON, newest `keep` kept.

    Files: `<time>_<seq>_image.<ext>`, `<time>_<seq>_overlay.<ext>`, `<time>_<seq>.json`, written atomically. Files
    of earlier runs in the folder count towards the limit, oldest deleted first, so the disk cannot fill up.
    """

    def __init__(self, folder: str | Path, keep: int = 500, overlays: bool = True, errors: bool = False,
                 ext: str = ".jpg") -> None:
        if keep < 1:
            raise ConfigError(f"{folder}: keep: expected >= 1 saved items, got {keep}")
        if ext not in (".jpg", ".png", ".bmp"):
            raise ConfigError(f"{folder}: ext: expected .jpg, .png or .bmp, got {ext!r}")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.keep, self.overlays, self.errors, self.ext = keep, overlays, errors, ext
        stems = sorted({m.group(1) for p in self.folder.iterdir() if (m := _NAME.match(p.name))})
        self._items: deque[str] = deque(stems)
        self.saved = 0

    def write(self, result: Result, image: np.ndarray | None) -> None:
        if result.error is not None and not self.errors:
            return
        if result.passed:
            return
        from edge_ad.runtime.overlay import render_overlay

        frame = result.frame or {}
        ts = float(frame.get("host_timestamp") or time.time())
        stem = time.strftime("%Y%m%dT%H%M%S", time.localtime(ts)) + f"_{int(ts % 1 * 1e6):06d}_{frame.get('seq', 0)}"
        if image is not None:
            atomic_write_bytes(self.folder / f"{stem}_image{self.ext}", _encode(image, self.ext))
            if self.overlays:
                atomic_write_bytes(self.folder / f"{stem}_overlay{self.ext}",
                                    _encode(render_overlay(image, result), self.ext))
        atomic_write_bytes(self.folder / f"{stem}.json",
                            (json.dumps(result.to_dict(), indent=1, allow_nan=False) + "\n").encode())
        self._items.append(stem)
        self.saved += 1
        while len(self._items) > self.keep:
            old = self._items.popleft()
            for p in [*self.folder.glob(f"{old}_*"), self.folder / f"{old}.json"]:
                p.unlink(missing_ok=True)

    def close(self) -> None:
        """Nothing buffered: every item is on disk when write returns."""


def _encode(image: np.ndarray, ext: str) -> bytes:
    ok, buf = cv2.imencode(ext, image)
    if not ok:
        raise ValueError(f"cannot encode a {image.shape} image as {ext}")
    return buf.tobytes()
