"""Visual check of a Result: heatmap blended over the image, region contours and boxes, an OK/NG label with the
normalised score ("0.5 = threshold"), a colour bar with the pixel threshold marked, the hottest area of an NG
without regions, and the package's note (untrained / random-init) as a banner.

The heatmap is scaled with the manifest's pixel bounds (`Result.map_range`), not per image, so the same colour means
the same anomaly level on every image (per-image min-max would paint a perfect part red).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from edge_ad.errors import DataError
from edge_ad.imageio import to_bgr

if TYPE_CHECKING:
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
    thick = max(1, round(max(img.shape[:2]) / 400))
    if amap is not None and result.error is None:
        if amap.shape[:2] != img.shape[:2]:
            raise DataError(f"overlay: anomaly map is {amap.shape[1]}x{amap.shape[0]} but the image is "
                            f"{img.shape[1]}x{img.shape[0]}; pass the image the result was computed on")
        lo, hi = result.map_range if result.map_range is not None else (float(amap.min()), float(amap.max()))
        out = cv2.addWeighted(img, 1.0 - alpha, heatmap(amap, (lo, hi)), alpha, 0.0)
        contours = [r.contour for r in result.regions if r.contour is not None]
        if contours:
            cv2.drawContours(out, contours, -1, _WHITE, thick)
        for r in result.regions:
            cv2.rectangle(out, (r.x, r.y), (r.x + r.w - 1, r.y + r.h - 1), _RED, thick)
        if result.is_anomalous and not result.regions and result.hotspot is not None:
            x, y, w, h = result.hotspot
            cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), _ORANGE, thick)
            _text(out, "hottest", (x, max(0, y - 2)), _ORANGE, anchor="bottom")
        _colour_bar(out, lo, hi, result.pixel_threshold)
    _label(out, result)
    if result.note:
        _banner(out, result.note)
    return out


def _font(img: np.ndarray) -> tuple[float, int]:
    scale = max(0.35, min(img.shape[:2]) / 600)
    return scale, max(1, round(scale * 2))


def _text(img: np.ndarray, text: str, org: tuple[int, int], colour: tuple[int, int, int], anchor: str = "top",
          fill: bool = True) -> tuple[int, int]:
    """Draw `text` on a filled box at org (top-left, or bottom-left with anchor="bottom"); returns its (w, h)."""
    scale, thick = _font(img)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    pad = max(2, th // 3)
    x, y = org
    box_h = th + base + 2 * pad
    if anchor == "bottom":
        y -= box_h
    x = max(0, min(x, img.shape[1] - tw - 2 * pad))
    y = max(0, min(y, img.shape[0] - box_h))
    if fill:
        cv2.rectangle(img, (x, y), (x + tw + 2 * pad, y + box_h), colour, -1)
    cv2.putText(img, text, (x + pad, y + pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale, _WHITE, thick, cv2.LINE_AA)
    return tw + 2 * pad, box_h


def _label(img: np.ndarray, result: Result) -> None:
    if result.error is not None:
        text, colour = "ERROR: not inspected (fail-safe NG)", _ORANGE
    else:
        text = f"{result.status} {result.normalized_score:.2f} (0.5 = threshold)"
        colour = _RED if result.is_anomalous else _GREEN
    _text(img, text, (0, 0), colour)


def _banner(img: np.ndarray, note: str) -> None:
    """The package note across the bottom, cut to the image width."""
    scale, thick = _font(img)

    def width(t: str) -> int:
        return int(cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)[0][0])

    text = note
    while len(text) > 4 and width(text) > img.shape[1] - 8:
        text = note[: len(text) - 4].rstrip() + "..."
    _text(img, text, (0, img.shape[0]), _ORANGE, anchor="bottom")


def _colour_bar(img: np.ndarray, lo: float, hi: float, pixel_threshold: float | None) -> None:
    """A vertical JET bar at the right edge (hi at the top), with the pixel threshold marked in white."""
    h, w = img.shape[:2]
    bw, bh = max(6, w // 40), max(20, int(h * 0.5))
    x0, y0 = w - bw - max(2, w // 100), (h - bh) // 2
    ramp = np.linspace(255, 0, bh).astype(np.uint8).reshape(bh, 1)
    bar = cv2.applyColorMap(np.repeat(ramp, bw, axis=1), cv2.COLORMAP_JET)
    img[y0:y0 + bh, x0:x0 + bw] = bar
    cv2.rectangle(img, (x0 - 1, y0 - 1), (x0 + bw, y0 + bh), _WHITE, 1)
    if pixel_threshold is not None and hi > lo:
        frac = min(1.0, max(0.0, (pixel_threshold - lo) / (hi - lo)))
        ty = round(y0 + (1.0 - frac) * (bh - 1))
        cv2.line(img, (x0 - max(3, bw // 2), ty), (x0 + bw, ty), _WHITE, max(1, bh // 100))
        scale, thick = _font(img)
        (tw, _th), _ = cv2.getTextSize("thr", cv2.FONT_HERSHEY_SIMPLEX, scale * 0.8, thick)
        cv2.putText(img, "thr", (max(0, x0 - tw - 4), ty + 4), cv2.FONT_HERSHEY_SIMPLEX, scale * 0.8, _WHITE, thick,
                    cv2.LINE_AA)
