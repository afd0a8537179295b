"""Replay image files from a folder or a glob, in name order, optionally paced at a fixed rate and looping.

Every file becomes a frame. A file that cannot be decoded (not an image, truncated or corrupt, over the pixel
budget: `edge_ad.imageio`'s checks) becomes a frame with `error` set, so the pipeline reports it and goes on.
"""

from __future__ import annotations

import glob
from pathlib import Path

from edge_ad.errors import DataError
from edge_ad.imageio import IMAGE_EXTENSIONS, decode_image, read_bytes
from edge_ad.sources.base import Pacer, Source, SourceError
from edge_ad.sources.frame import Frame


def list_images(pattern: str | Path) -> list[Path]:
    """Image files of a directory (recursive, by extension) or a glob, sorted; SourceError when none match."""
    p = Path(pattern)
    if p.is_dir():
        files = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS)
    elif p.is_file():
        files = [p]
    else:
        files = sorted(Path(q) for q in glob.glob(str(pattern), recursive=True) if Path(q).is_file())
    if not files:
        raise SourceError(f"{pattern}: no image files (expected a directory with {', '.join(IMAGE_EXTENSIONS)} "
                          "files, an image file or a glob)")
    return files


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
            image, fmt = decode_image(read_bytes(path), str(path))
        except DataError as e:
            return self._emit(None, "unknown", error=str(e), extra=extra)
        return self._emit(image, fmt, extra=extra)
