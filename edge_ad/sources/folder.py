"""Replay image files from a folder or a glob, in name order, optionally paced at a fixed rate and looping.

Every file becomes a frame. A file that cannot be decoded (not an image, or truncated: a JPEG without its end
marker, a PNG without IEND) becomes a frame with `error` set, so the pipeline reports it and goes on.
"""

from __future__ import annotations

import glob
from pathlib import Path

import cv2
import numpy as np

from edge_ad.sources.base import Pacer, Source, SourceError
from edge_ad.sources.frame import Frame

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


def list_images(pattern: str | Path) -> list[Path]:
    """Image files of a directory (recursive, by extension) or a glob, sorted; SourceError when none match."""
    p = Path(pattern)
    if p.is_dir():
        files = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_EXTS)
    elif p.is_file():
        files = [p]
    else:
        files = sorted(Path(q) for q in glob.glob(str(pattern), recursive=True) if Path(q).is_file())
    if not files:
        raise SourceError(f"{pattern}: no image files (expected a directory with {sorted(IMAGE_EXTS)} files, "
                          "an image file or a glob)")
    return files


def decode_image(path: Path) -> tuple[np.ndarray, str]:
    """Read and decode one image file -> (BGR uint8, stored format); ValueError naming the problem when unusable."""
    data = np.fromfile(str(path), np.uint8)
    if data.size == 0:
        raise ValueError("empty file")
    head, tail = data[:8].tobytes(), data[-32:].tobytes()
    if head.startswith(b"\xff\xd8") and b"\xff\xd9" not in tail:
        raise ValueError("truncated JPEG (no end-of-image marker)")
    if head.startswith(b"\x89PNG") and b"IEND" not in tail:
        raise ValueError("truncated PNG (no IEND chunk)")
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError("cannot decode (not an image or corrupt)")
    bits = 16 if img.dtype == np.uint16 else 8
    if bits == 16:
        img = (img.astype(np.uint16) >> 8).astype(np.uint8)
    if img.dtype != np.uint8:
        raise ValueError(f"expected an 8- or 16-bit image, got {img.dtype}")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR), f"Mono{bits}"
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR), f"BGRa{bits}"
    return img, f"BGR{bits}"


class FolderSource(Source):
    """Image files as frames. `rate` (fps) paces delivery like a camera; `loop` restarts after the last file."""

    def __init__(self, pattern: str | Path, rate: float | None = None, loop: bool = False,
                 poll_s: float = 0.5) -> None:
        super().__init__(str(pattern), poll_s=poll_s)
        self.pacer = Pacer(rate, str(pattern))
        self.files = list_images(pattern)
        self.loop = loop
        self._index = 0

    def _open(self) -> None:
        self._index = 0
        self.pacer.reset()

    def _close(self) -> None:
        """Nothing to release: files are opened per frame."""

    def _grab(self, timeout: float) -> Frame | None:
        if self._index >= len(self.files):
            if not self.loop:
                self._finished = True
                return None
            self._index = 0
        if not self.pacer.wait(timeout, self._stop):
            return None
        path = self.files[self._index]
        self._index += 1
        extra = {"file": str(path)}
        try:
            image, fmt = decode_image(path)
        except (OSError, ValueError) as e:
            return self._emit(None, "unknown", error=f"{path}: {e}", extra=extra)
        return self._emit(image, fmt, extra=extra)
