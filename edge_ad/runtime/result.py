"""What the detector returns for one image: one dataclass for every model family and backend.

Fail-safe convention: a frame that could not be inspected (unreadable image, backend failure, a NaN/inf score or
map) yields `Result.failed(...)`: `error` holds the reason, `fault` a machine-readable code (`Fault`),
`score`/`normalized_score` are NaN (`null` in JSON), `status` is "ERROR" and `is_anomalous` is True, so code that
rejects on `is_anomalous` rejects it too. Nothing unknown is ever OK: `passed` is True only for an inspected image
with a finite score under the threshold. The PLC layer turns errors into a fail-safe NG with DefectCode
INSPECTION_ERROR.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_ad.runtime.overlay import render_overlay


@dataclass
class Region:
    """One connected anomalous area in source-image pixels: bounding box, pixel count, peak map value, contour."""

    x: int
    y: int
    w: int
    h: int
    area: int
    peak: float
    contour: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (the contour is left out)."""
        return {"box": [int(self.x), int(self.y), int(self.w), int(self.h)], "area": int(self.area),
                "peak": _num(self.peak)}


class Fault:
    """Machine-readable reasons of a failed result (`Result.fault`)."""

    IMAGE = "IMAGE"  #: the input is not a usable image (unreadable, truncated, empty, over the pixel budget)
    FRAME = "FRAME"  #: the source delivered a frame without a usable image
    INFERENCE = "INFERENCE"  #: the backend failed
    NON_FINITE = "NON_FINITE"  #: the model produced a NaN/inf score or map
    POSTPROCESS = "POSTPROCESS"  #: post-processing failed
    ALIGNMENT = "ALIGNMENT"  #: the frame could not be registered to the package's reference (the part is not there)
    INTERNAL = "INTERNAL"  #: any other unexpected error


@dataclass
class Result:
    """Outcome of one image.

    `score` is the raw model score, `normalized_score` maps it piecewise-linearly so that 0.5 is the effective
    threshold and the manifest's `score_min`/`score_max` are 0 and 1 (clipped). `anomaly_map` (float32) and `mask`
    (uint8 {0,1}) are at the source image's resolution. `timings` are milliseconds per stage. `threshold` is the
    effective image threshold used for the decision; `map_range` the manifest's (pixel_min, pixel_max) used to
    colour overlays consistently across images. `reason` says in words why the verdict is what it is (an NG without
    regions: the image score is over its threshold but no pixel is over the pixel threshold: a diffuse anomaly);
    `hotspot` is the (x, y, w, h) box around the anomaly map's maximum; `note` is set for every result of an
    untrained or random-init package (its scores mean little).
    """

    score: float
    normalized_score: float
    is_anomalous: bool
    anomaly_map: np.ndarray | None = field(default=None, repr=False)
    mask: np.ndarray | None = field(default=None, repr=False)
    regions: list[Region] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    frame: dict[str, Any] | None = None
    error: str | None = None
    threshold: float | None = None
    map_range: tuple[float, float] | None = None
    fault: str | None = None
    pixel_threshold: float | None = None
    reason: str | None = None
    hotspot: tuple[int, int, int, int] | None = None
    note: str | None = None
    alignment: dict[str, Any] | None = None  #: geometry packages: the placement (category, transform, score)

    @classmethod
    def failed(cls, error: str | BaseException, frame: dict[str, Any] | None = None, fault: str = Fault.INTERNAL,
               timings: dict[str, float] | None = None) -> Result:
        """A result for a frame that could not be inspected: a fail-safe NG (see the module docstring)."""
        text = str(error) if not isinstance(error, BaseException) else (str(error) or type(error).__name__)
        return cls(score=math.nan, normalized_score=math.nan, is_anomalous=True, frame=frame, error=text,
                   fault=fault, timings=dict(timings or {}), reason=f"not inspected: {text}")

    @property
    def passed(self) -> bool:
        """True only for an inspected, good image with a finite score (False for NG and for every error)."""
        return (self.error is None and not self.is_anomalous and math.isfinite(self.score)
                and math.isfinite(self.normalized_score))

    @property
    def status(self) -> str:
        """'OK', 'NG' or 'ERROR' (an error is a fail-safe NG whose reason is in `error` and `fault`)."""
        if self.error is not None:
            return "ERROR"
        return "OK" if self.passed else "NG"

    def plot(self, image: np.ndarray) -> np.ndarray:
        """The overlay (heatmap, regions, verdict, colour bar) on `image`, the picture this result was computed on,
        as a BGR uint8 array (`cv2.imshow`, `cv2.imwrite`, or `plt.imshow(overlay[..., ::-1])`)."""
        return render_overlay(image, self)

    def save(self, path: str | Path, image: np.ndarray | None = None) -> list[Path]:
        """Write the result as JSON to `path` (".json" added if missing) and, given the image, its overlay next to
        it (`<stem>_overlay.png`); both written atomically. Returns the files written."""
        import json

        import cv2

        from edge_ad.errors import DataError
        from edge_ad.fileio import atomic_write_bytes, atomic_write_text

        p = Path(path)
        p = p if p.suffix == ".json" else p.with_name(p.name + ".json")
        atomic_write_text(p, json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")
        written = [p]
        if image is not None:
            ok, buf = cv2.imencode(".png", self.plot(image))
            if not ok:
                raise DataError(f"{p}: PNG encoding of the overlay failed")
            overlay = p.with_name(p.stem + "_overlay.png")
            atomic_write_bytes(overlay, buf.tobytes())
            written.append(overlay)
        return written

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary: no arrays, NaN/inf as null, regions as box/area/peak."""
        out: dict[str, Any] = {
            "status": self.status,
            "score": _num(self.score),
            "normalized_score": _num(self.normalized_score),
            "is_anomalous": bool(self.is_anomalous),
            "threshold": _num(self.threshold) if self.threshold is not None else None,
            "regions": [r.to_dict() for r in self.regions],
            "timings": {k: _num(v) for k, v in self.timings.items()},
            "frame": json_safe(self.frame) if self.frame is not None else None,
            "error": self.error,
            "fault": self.fault,
            "reason": self.reason,
            "hotspot": [int(v) for v in self.hotspot] if self.hotspot is not None else None,
        }
        if self.note is not None:
            out["note"] = self.note
        if self.alignment is not None:
            out["alignment"] = self.alignment
        if self.anomaly_map is not None:
            out["map_shape"] = [int(s) for s in self.anomaly_map.shape]
        return out


def _num(v: Any) -> float | None:
    f = float(v)
    return f if math.isfinite(f) else None


def json_safe(v: Any) -> Any:
    """Frame metadata may hold numpy scalars, paths or arrays; keep scalars, stringify the rest."""
    if isinstance(v, dict):
        return {str(k): json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    if isinstance(v, (bool, str)) or v is None:
        return v
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return _num(v)
    if isinstance(v, np.ndarray):
        return f"<array {v.dtype} {list(v.shape)}>"
    return str(v)
