"""Visual check of a Result: heatmap blended over the image, region contours and boxes, and an OK/NG label.

The heatmap is scaled with the manifest's pixel bounds (`Result.map_range`), not per image, so the same colour means
the same anomaly level on every image (per-image min-max would paint a perfect part red).
"""

from __future__ import annotations

import cv2
import numpy as np

from edge_ad.errors import DataError
from edge_ad.imageio import to_bgr
from edge_ad.runtime.result import Result

_GREEN = (0, 200, 0)
_RED = (0, 0, 255)
_ORANGE = (0, 140, 255)
_WHITE = (255, 255, 255)


def heatmap(amap: np.ndarray, map_range: tuple[float, float] | None) -> np.ndarray:
    """float map -> BGR uint8 JET colours; `map_range` (lo, hi) fixes the scale (None: the map's own min/max)."""
    lo, hi = map_range if map_range is not None else (float(amap.min()), float(amap.max()))
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    u8 = np.clip((amap - lo) * scale, 0, 255).astype(np.uint8)
    return cv2.applyColorMap(u8, cv2.COLORMAP_JET)


def render_overlay(image_bgr: np.ndarray, result: Result, alpha: float = 0.5) -> np.ndarray:
    """BGR uint8 image of the same size as `image_bgr` (grey/BGRA accepted) with the result drawn on it."""
    img = to_bgr(image_bgr, "overlay image")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"overlay: alpha: expected a value in [0, 1], got {alpha}")
    out = img.copy()
    amap = result.anomaly_map
    if amap is not None and result.error is None:
        if amap.shape[:2] != img.shape[:2]:
            raise DataError(f"overlay: anomaly map is {amap.shape[1]}x{amap.shape[0]} but the image is "
                            f"{img.shape[1]}x{img.shape[0]}; pass the image the result was computed on")
        out = cv2.addWeighted(img, 1.0 - alpha, heatmap(amap, result.map_range), alpha, 0.0)
        thick = max(1, round(max(img.shape[:2]) / 400))
        contours = [r.contour for r in result.regions if r.contour is not None]
        if contours:
            cv2.drawContours(out, contours, -1, _WHITE, thick)
        for r in result.regions:
            cv2.rectangle(out, (r.x, r.y), (r.x + r.w - 1, r.y + r.h - 1), _RED, thick)
    _label(out, result)
    return out


def _label(img: np.ndarray, result: Result) -> None:
    if result.error is not None:
        text, colour = "ERROR", _ORANGE
    else:
        text = f"{result.status} {result.normalized_score:.2f} (score {result.score:.4g})"
        colour = _RED if result.is_anomalous else _GREEN
    scale = max(0.4, min(img.shape[:2]) / 500)
    thick = max(1, round(scale * 2))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    pad = max(2, th // 3)
    cv2.rectangle(img, (0, 0), (tw + 2 * pad, th + base + 2 * pad), colour, -1)
    cv2.putText(img, text, (pad, th + pad), cv2.FONT_HERSHEY_SIMPLEX, scale, _WHITE, thick, cv2.LINE_AA)
