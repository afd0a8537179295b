"""Collect good training images from the station's own camera into the MVTec layout, keeping only usable ones.

Each considered frame (every `every`-th) is checked, cheapest first, and skipped with its reason:
- `no-image`: the source delivered a frame without pixels;
- `over-exposed` / `under-exposed`: more than 5 % of the pixels clipped at >= 250, or more than half at <= 5;
- `blurred`: variance of the Laplacian (grey, longest side scaled to 512) under `min_sharpness`, or under half the
  median of the images kept so far (motion blur, lost focus);
- `duplicate`: the 32x32 grey thumbnail differs from the last kept one by less than `min_change` grey levels on
  average (a stopped conveyor).
Kept frames are written losslessly (PNG, atomically) to `OUT/CATEGORY/train/good/`, and `OUT/CATEGORY/capture.json`
records the source, its camera settings, pixel formats, times and every skip count. Frames come either from the
source's own stream (`capture`, every N-th) or one per PLC Trigger (`capture_on_trigger`). Torch-free.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_ad.errors import ConfigError
from edge_ad.fileio import atomic_write_bytes, atomic_write_json
from edge_ad.runtime.result import Result

log = logging.getLogger(__name__)


@dataclass
class CaptureReport:
    kept: int = 0
    considered: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    out: Path | None = None

    def line(self) -> str:
        skips = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items())) or "none"
        return f"kept {self.kept} of {self.considered} considered; skipped: {skips}"


def _grey(image: np.ndarray) -> np.ndarray:
    g = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if g.dtype != np.uint8:  # 16-bit mono: scale to 8 bits for the checks
        g = (g.astype(np.float32) * (255.0 / max(1.0, float(g.max())))).astype(np.uint8)
    scale = 512.0 / max(g.shape[:2])
    return cv2.resize(g, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else g


def sharpness(grey: np.ndarray) -> float:
    """Variance of the Laplacian: high for crisp edges, low for blur."""
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def exposure_problem(grey: np.ndarray) -> str | None:
    if float(np.mean(grey >= 250)) > 0.05:
        return "over-exposed"
    if float(np.mean(grey <= 5)) > 0.5:
        return "under-exposed"
    return None


class Capturer:
    """The frame checks and the writer; `offer(frame)` returns None when kept, else the skip reason."""

    def __init__(self, out: str | Path, category: str = "good_parts", *, min_sharpness: float = 20.0,
                 min_change: float = 1.5) -> None:
        if not category or "/" in category or category.startswith("."):
            raise ConfigError(f"category {category!r}: expected a plain folder name")
        if min_sharpness < 0 or min_change < 0:
            raise ConfigError(f"expected min_sharpness >= 0 and min_change >= 0, got {min_sharpness}, {min_change}")
        self.root = Path(out) / category
        self.folder = self.root / "train" / "good"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.min_sharpness, self.min_change = min_sharpness, min_change
        self.report = CaptureReport(out=self.root)
        self._sharp: list[float] = []
        self._last: np.ndarray | None = None
        self._next = 1 + max((int(p.stem) for p in self.folder.glob("*.png") if p.stem.isdigit()), default=0)
        self.pixel_formats: Counter[str] = Counter()

    def offer(self, frame: Any) -> str | None:
        self.report.considered += 1
        image = getattr(frame, "image", frame)
        reason = self._check(image)
        if reason:
            self.report.skipped[reason] += 1
            return reason
        ok, buf = cv2.imencode(".png", image)
        if not ok:
            self.report.skipped["unencodable"] += 1
            return "unencodable"
        atomic_write_bytes(self.folder / f"{self._next:06d}.png", buf.tobytes())
        self._next += 1
        self.report.kept += 1
        self.pixel_formats[str(getattr(frame, "pixel_format", "") or "unknown")] += 1
        return None

    def _check(self, image: Any) -> str | None:
        if not isinstance(image, np.ndarray) or image.size == 0:
            return "no-image"
        grey = _grey(image)
        bad = exposure_problem(grey)
        if bad:
            return bad
        sharp = sharpness(grey)
        median = float(np.median(self._sharp[-50:])) if len(self._sharp) >= 5 else 0.0
        if sharp < self.min_sharpness or sharp < 0.5 * median:
            return "blurred"
        thumb = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
        if self._last is not None and float(np.mean(np.abs(thumb - self._last))) < self.min_change:
            return "duplicate"
        self._last = thumb
        self._sharp.append(sharp)
        return None


def capture(source: Any, out: str | Path, *, category: str = "good_parts", every: int = 1, max_images: int = 300,
            duration_s: float | None = None, min_sharpness: float = 20.0, min_change: float = 1.5,
            status: Any = None, source_label: str | None = None) -> CaptureReport:
    """Read frames from `source` (a Source, opened here) until `max_images` are kept, the source ends or
    `duration_s` passes; every `every`-th frame is offered. Writes capture.json at the end (also on Ctrl-C)."""
    if every < 1 or max_images < 1:
        raise ConfigError(f"capture: expected every >= 1 and max >= 1, got {every}, {max_images}")
    cap = Capturer(out, category, min_sharpness=min_sharpness, min_change=min_change)
    started = time.time()
    end = None if duration_s is None else time.monotonic() + duration_s
    seen = 0
    last_status = 0.0
    source.open()
    try:
        while cap.report.kept < max_images and (end is None or time.monotonic() < end):
            frame = source.read(timeout=0.5)
            if frame is None:
                if getattr(source, "finished", False):
                    break
                continue
            seen += 1
            if (seen - 1) % every:
                continue
            cap.offer(frame)
            if status is not None and time.monotonic() - last_status >= 1.0:
                last_status = time.monotonic()
                status(cap.report)
    finally:
        source.close()
        _write_manifest(cap, source, source_label, started, every, max_images, min_sharpness, min_change)
    return cap.report


class CaptureDetector:
    """Stands in for the model while the PLC paces a capture (`edge-ad capture --trigger plc`): each triggered
    frame is offered to the Capturer, and the PLC gets a fail-safe NG "not inspected: capture mode" for every part,
    so nothing leaves a capture session as OK without an inspection."""

    package = None  #: no model judges these parts
    threshold = None
    sensitivity = 1.0

    def __init__(self, capturer: Capturer) -> None:
        self.capturer = capturer

    def predict(self, image: np.ndarray, frame: dict[str, Any] | None = None) -> Result:
        why = self.capturer.offer(image)
        return Result.failed(f"capture mode: {'kept' if why is None else 'skipped, ' + why}", frame=frame)

    def close(self) -> None:
        """Nothing to release: the Capturer belongs to the caller."""


def capture_on_trigger(source: Any, plc: Any, out: str | Path, *, category: str = "good_parts", max_images: int = 300,
                       duration_s: float | None = None, min_sharpness: float = 20.0, min_change: float = 1.5,
                       status: Any = None, source_label: str | None = None, stop: Any = None,
                       link_options: dict[str, Any] | None = None) -> CaptureReport:
    """Capture one frame per PLC Trigger (the station's handshake, see samples/README.md) until `max_images` are
    kept, `duration_s` passes or `stop` (a threading.Event) is set; writes capture.json like `capture`."""
    from edge_ad.plc.inspector import Inspector

    if max_images < 1:
        raise ConfigError(f"capture: expected max >= 1, got {max_images}")
    cap = Capturer(out, category, min_sharpness=min_sharpness, min_change=min_change)
    inspector = Inspector(CaptureDetector(cap), source, plc, trigger="plc", budget_ms=5000.0,
                          link_options=link_options)
    started = time.time()
    end = None if duration_s is None else time.monotonic() + duration_s
    last_status = 0.0
    inspector.start()
    try:
        while cap.report.kept < max_images and (end is None or time.monotonic() < end) and inspector.running \
                and not (stop is not None and stop.is_set()):
            time.sleep(0.05)
            if status is not None and time.monotonic() - last_status >= 1.0:
                last_status = time.monotonic()
                status(cap.report)
    finally:
        inspector.stop()
        _write_manifest(cap, source, source_label, started, "plc", max_images, min_sharpness, min_change)
    return cap.report


def _write_manifest(cap: Capturer, source: Any, label: str | None, started: float, every: int | str,
                    max_images: int, min_sharpness: float, min_change: float) -> None:
    settings = {k: getattr(source, k) for k in ("exposure_us", "gain_db", "frame_rate", "roi", "pixel_format")
                if getattr(source, k, None) is not None}
    atomic_write_json(cap.root / "capture.json", {
        "format": "edge-ad/capture", "version": 1, "source": label or repr(source),
        "camera_settings": settings, "pixel_formats": dict(cap.pixel_formats),
        "started": started, "finished": time.time(), "every": every, "max": max_images,
        "kept": cap.report.kept, "considered": cap.report.considered, "skipped": dict(cap.report.skipped),
        "checks": {"min_sharpness": min_sharpness, "min_change": min_change},
        "source_stats": source.stats() if hasattr(source, "stats") else {},
    }, default=str)
    log.info("capture %s: %s", cap.root, cap.report.line())
