"""Decision thresholds and score normalisation, derived from good images only (numpy only: used line-side too).

Convention everywhere: an image (pixel) is anomalous when its score is strictly greater than the threshold.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from edge_ad.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def _scores_1d(values: Any, name: str, error: type[Exception] = ConfigError) -> np.ndarray:
    """`values` as a finite, non-empty 1-D float array, or `error` naming `name`."""
    a = np.asarray(values)
    if a.ndim != 1:
        raise error(f"{name}: expected a 1-D array of scores, got shape {tuple(np.shape(values))}")
    if a.size == 0:
        raise error(f"{name}: expected at least one score, got an empty array")
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise error(f"{name}: expected real numbers, got dtype {a.dtype}")
    if not np.isfinite(a).all():
        raise error(f"{name}: expected finite scores, got {int((~np.isfinite(a)).sum())} NaN/inf value(s)")
    return a


def _check_frr(target_frr: float) -> float:
    if not isinstance(target_frr, (int, float, np.floating)) or not 0.0 < float(target_frr) < 1.0:
        raise ConfigError(f"target_frr: expected a number in (0, 1), got {target_frr!r}")
    return float(target_frr)


def binary_curve(
    labels: Any, scores: Any, error: type[Exception] = DataError
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts behind ROC/PR curves: distinct thresholds (descending) and the true/false positives at each.

    `tps[i]`/`fps[i]` count samples with score >= `thresholds[i]` (sklearn's `_binary_clf_curve`); fast on
    millions of pixels. Raises `error` for mismatched lengths, non-binary labels or NaN.
    """
    y = np.asarray(labels).reshape(-1)
    s = np.asarray(scores).reshape(-1)
    if y.shape != s.shape:
        raise error(f"labels and scores: expected the same number of elements, got {y.size} and {s.size}")
    s = _scores_1d(s, "scores", error)
    if y.dtype != np.bool_:
        if not np.issubdtype(y.dtype, np.number):
            raise error(f"labels: expected 0/1 values, got dtype {y.dtype}")
        if not np.isin(y, (0, 1)).all():
            bad = np.unique(y[~np.isin(y, (0, 1))])[:5].tolist()
            raise error(f"labels: expected only 0 (good) and 1 (anomalous), got also {bad}")
    # np.sort is several times faster than argsort + gathers on millions of pixels: sort all scores and the
    # positives' scores separately, then count positives >= each distinct value with searchsorted
    ordered = np.sort(s)
    pos = np.sort(s[y.astype(bool, copy=False)])
    starts = np.concatenate(([0], np.flatnonzero(np.diff(ordered)) + 1))  # first index of each distinct value
    values = ordered[starts]
    tps = pos.size - np.searchsorted(pos, values, side="left")
    fps = (ordered.size - starts) - tps
    return values[::-1], tps[::-1], fps[::-1]


def threshold_at_frr(good_scores: Any, target_frr: float = 0.01) -> float:
    """Smallest threshold t such that the fraction of good scores > t is at most `target_frr`.

    With n good scores, at most k = floor(target_frr * n) may exceed t, so t is the (n-k)-th smallest score.
    With fewer than 1/target_frr scores k is 0 and t is the maximum good score: zero false rejects on the
    given images, but the real false-reject rate is then not measured (a warning is logged).
    """
    frr = _check_frr(target_frr)
    s = np.sort(_scores_1d(good_scores, "good_scores"))
    n = s.size
    k = math.floor(frr * n + 1e-9)
    if k == 0:
        log.warning("only %d good scores for target_frr=%g (need >= %d to measure it): threshold = max good score",
                    n, frr, math.ceil(1.0 / frr))
    return float(s[n - 1 - k])


def f1_optimal_threshold(labels: Any, scores: Any) -> float:
    """Threshold with the best F1 (precision-recall curve semantics) on labelled scores.

    The best curve point flags scores >= v; the returned t is the midpoint between v and the next lower
    distinct score (or just below v when v is the lowest), so that `score > t` reproduces that point.
    """
    thr, tps, fps = binary_curve(labels, scores, ConfigError)
    n_pos = int(tps[-1])
    if n_pos == 0 or int(fps[-1]) == 0:
        raise ConfigError(f"labels: expected both good (0) and anomalous (1) samples, got {n_pos} anomalous "
                          f"of {int(tps[-1] + fps[-1])}")
    precision = tps / (tps + fps)
    recall = tps / n_pos
    f1 = 2 * precision * recall / (precision + recall + 1e-7)
    i = int(np.argmax(f1))
    v = float(thr[i])
    if i + 1 < thr.size:
        return (v + float(thr[i + 1])) / 2.0
    return float(np.nextafter(v, -np.inf))


def normalization_bounds(good_scores: Any, threshold: float) -> dict[str, float]:
    """Bounds {"min", "max"} for `normalize_score`: min = lowest good score (-> 0), max mirrors it above the
    threshold (max = 2*threshold - min -> 1), so both halves of the scale have the same slope.

    If every good score equals the threshold, a span of 10% of |threshold| (or 1.0 for 0) is used instead.
    """
    s = _scores_1d(good_scores, "good_scores")
    t = float(threshold)
    if not math.isfinite(t):
        raise ConfigError(f"threshold: expected a finite number, got {threshold!r}")
    lo = min(float(s.min()), t)
    span = t - lo
    if span <= 0.0:
        span = 0.1 * abs(t) if t != 0.0 else 1.0
        lo = t - span
    return {"min": lo, "max": t + span}


def derive_thresholds(
    good_scores: Any,
    good_max_pixels: Any,
    target_frr: float = 0.01,
    labels: Any = None,
    scores: Any = None,
) -> dict[str, Any]:
    """The `thresholds.json` structure (docs/architecture.md) from held-out good images.

    Image threshold at `target_frr` over image scores; pixel threshold at `target_frr` over each good
    image's maximum map value (so at most that fraction of good images shows any flagged pixel).
    `labels`/`scores` (optional, both or neither) add the F1-optimal image threshold for reference.
    """
    frr = _check_frr(target_frr)
    good = _scores_1d(good_scores, "good_scores")
    good_px = _scores_1d(good_max_pixels, "good_max_pixels")
    if (labels is None) != (scores is None):
        raise ConfigError("labels and scores: expected both or neither, got only "
                          f"{'labels' if scores is None else 'scores'}")
    f1_opt = None if labels is None else f1_optimal_threshold(labels, scores)
    t_img = threshold_at_frr(good, frr)
    t_px = threshold_at_frr(good_px, frr)
    b_img = normalization_bounds(good, t_img)
    b_px = normalization_bounds(good_px, t_px)
    return {
        "image": {"value": t_img, "method": "false_reject_rate", "target_frr": frr, "n_good": int(good.size),
                  "f1_optimal": f1_opt},
        "pixel": {"value": t_px, "method": "false_reject_rate_max_pixel", "target_frr": frr},
        "normalization": {"score_min": b_img["min"], "score_max": b_img["max"],
                          "pixel_min": b_px["min"], "pixel_max": b_px["max"]},
    }
