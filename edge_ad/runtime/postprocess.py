"""From the model's raw outputs to source-resolution maps, masks, regions and a normalised score (numpy + OpenCV).

Geometry: the model map covers the centre crop of the resized image. It is resized to the crop size, placed into
an otherwise-zero canvas of the resized size and resized (bilinear) to the source size. Pixels outside the crop are 0
because the model never saw them: they were not inspected and must not produce regions. Thresholds and region areas
then live in source-image pixels, which is what an engineer measures on the part.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from edge_ad.runtime.preprocess import Preprocess
from edge_ad.runtime.result import Region


def map_to_source(amap: np.ndarray, pre: Preprocess, source_hw: tuple[int, int]) -> np.ndarray:
    """Model map (h, w) covering the crop -> float32 map (H, W) aligned with the source image."""
    m = np.ascontiguousarray(amap, dtype=np.float32)
    top, left, ch, cw = pre.crop_box
    rh, rw = pre.resize
    crop_map = cv2.resize(m, (cw, ch), interpolation=cv2.INTER_LINEAR) if m.shape != (ch, cw) else m
    if (ch, cw) == (rh, rw):
        canvas = crop_map
    else:
        canvas = np.zeros((rh, rw), np.float32)
        canvas[top : top + ch, left : left + cw] = crop_map
    sh, sw = source_hw
    if (rh, rw) == (sh, sw):
        return np.ascontiguousarray(canvas)
    return cv2.resize(canvas, (sw, sh), interpolation=cv2.INTER_LINEAR)


def smooth_map(amap: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a model map with `sigma` in map pixels (0 = unchanged)."""
    if sigma <= 0:
        return amap
    return cv2.GaussianBlur(np.ascontiguousarray(amap, dtype=np.float32), (0, 0), sigmaX=float(sigma))


def find_regions(amap: np.ndarray, pixel_threshold: float, min_area_px: int = 0,
                 open_px: int = 0) -> tuple[np.ndarray, list[Region]]:
    """Binary mask (uint8 {0,1}) of `amap > pixel_threshold` and its regions, highest peak first.

    A region is an outer contour (cv2.findContours, 8-connected); its `area` counts the mask pixels inside it.
    `open_px` > 0 applies a morphological opening with an elliptical kernel of that size (removes specks);
    regions smaller than `min_area_px` pixels are dropped from the list and from the mask. Contour tracing only
    touches the mask's foreground, so the cost follows the defect size, not the image size.
    """
    mask = (amap > pixel_threshold).view(np.uint8)  # bool bytes are 0/1: no copy
    if open_px > 0:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (int(open_px), int(open_px)))
        mask = np.asarray(cv2.morphologyEx(mask, cv2.MORPH_OPEN, k), dtype=np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    min_area = max(int(min_area_px), 1)
    kept: list[tuple[Region, np.ndarray]] = []
    dropped = False
    for c in contours:
        x, y, w, h = cv2.boundingRect(c)
        if w * h < min_area:  # cannot hold enough pixels: skip without rasterising
            dropped = True
            continue
        fill = np.zeros((h, w), np.uint8)
        cv2.drawContours(fill, [c], -1, 1, thickness=cv2.FILLED, offset=(-x, -y))
        inside = (fill > 0) & (mask[y : y + h, x : x + w] > 0)
        area = int(np.count_nonzero(inside))
        if area < min_area:
            dropped = True
            continue
        peak = float(amap[y : y + h, x : x + w][inside].max())
        kept.append((Region(x=x, y=y, w=w, h=h, area=area, peak=peak, contour=c), inside))
    if dropped:
        mask = np.zeros_like(mask)
        for r, inside in kept:
            mask[r.y : r.y + r.h, r.x : r.x + r.w][inside] = 1
    regions = sorted((r for r, _ in kept), key=lambda r: r.peak, reverse=True)
    return mask, regions


def normalize_score(score: Any, threshold: float, lo: float, hi: float) -> Any:
    """Piecewise-linear map: `lo` -> 0, `threshold` -> 0.5, `hi` -> 1, clipped to [0, 1], with a separate slope
    below and above the threshold (a degenerate half is a step: 0 below, 1 above, 0.5 at the threshold); NaN/inf
    scores give NaN. The one normalisation of edge-ad (runtime results, PLC scores, evaluation reports): a float for
    a scalar, a float32 array for an array."""
    x = np.asarray(score, dtype=np.float64)
    t = float(threshold)
    with np.errstate(divide="ignore", invalid="ignore"):
        below = 0.5 * (x - lo) / (t - lo) if t > lo else np.where(x < t, 0.0, 0.5)
        above = 0.5 + 0.5 * (x - t) / (hi - t) if hi > t else np.where(x > t, 1.0, 0.5)
        out = np.clip(np.where(x <= t, below, above), 0.0, 1.0)
    out = np.where(np.isfinite(x), out, np.nan)
    return float(out) if out.ndim == 0 else out.astype(np.float32)
