"""Thresholds from good images, F1-optimal threshold, normalisation, and the thresholds.json structure."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import precision_recall_curve

from edge_ad.errors import ConfigError
from edge_ad.evaluate.thresholds import (
    derive_thresholds,
    f1_optimal_threshold,
    normalization_bounds,
    threshold_at_frr,
)
from edge_ad.runtime.postprocess import normalize_score


def test_threshold_at_frr_known_arrays() -> None:
    s = np.arange(1, 101, dtype=float)  # 1..100
    assert threshold_at_frr(s, 0.01) == 99.0  # exactly one score (100) above
    assert threshold_at_frr(s, 0.05) == 95.0
    assert threshold_at_frr(s[::-1], 0.5) == 50.0  # order does not matter
    assert threshold_at_frr([1, 1, 1, 2, 2], 0.2) == 2.0  # ties: t=1 would reject 2/5 > 0.2
    assert threshold_at_frr([1, 1, 1, 2, 2], 0.4) == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_threshold_at_frr_is_smallest_valid(seed: int) -> None:
    rng = np.random.default_rng(seed)
    s = np.round(rng.normal(size=int(rng.integers(50, 500))), 1)
    frr = float(rng.uniform(0.005, 0.3))
    t = threshold_at_frr(s, frr)
    assert np.mean(s > t) <= frr
    assert np.mean(s > np.nextafter(t, -np.inf)) > frr


def test_threshold_with_few_samples_is_max_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert threshold_at_frr([0.3, 0.1, 0.2], 0.01) == 0.3
    assert "need >= 100" in caplog.text


@pytest.mark.parametrize(
    ("scores", "frr", "match"),
    [([], 0.01, "empty"), ([0.1, float("nan")], 0.01, "NaN"), ([[0.1, 0.2]], 0.01, "1-D"),
     ([0.1], 0.0, r"\(0, 1\)"), ([0.1], 1.0, r"\(0, 1\)"), ([0.1], -0.5, r"\(0, 1\)"), (["a"], 0.1, "real")],
)
def test_threshold_errors(scores: list, frr: float, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        threshold_at_frr(scores, frr)


@pytest.mark.parametrize("seed", range(5))
def test_f1_optimal_threshold_reproduces_best_f1(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    y[:2] = [0, 1]
    s = np.round(rng.normal(size=200) + y, 1)
    t = f1_optimal_threshold(y, s)
    pred = s > t
    tp = np.sum(pred & (y == 1))
    f1 = 2 * tp / (pred.sum() + y.sum())
    p, r, _ = precision_recall_curve(y, s)
    assert f1 == pytest.approx(np.max(2 * p * r / (p + r + 1e-7)), abs=1e-6)


def test_f1_optimal_threshold_separable_and_errors() -> None:
    assert f1_optimal_threshold([0, 0, 1, 1], [0.1, 0.2, 0.6, 0.9]) == pytest.approx(0.4)
    with pytest.raises(ConfigError, match="both good"):
        f1_optimal_threshold([1, 1], [0.1, 0.2])
    with pytest.raises(ConfigError, match="same number"):
        f1_optimal_threshold([0, 1, 1], [0.1, 0.2])


def test_normalize_score_piecewise_linear() -> None:
    """The one normalisation (edge_ad.runtime.postprocess): min -> 0, threshold -> 0.5, max -> 1."""
    assert normalize_score(1.0, 1.0, 0.0, 3.0) == 0.5
    assert normalize_score(0.0, 1.0, 0.0, 3.0) == 0.0
    assert normalize_score(3.0, 1.0, 0.0, 3.0) == 1.0
    assert normalize_score(0.5, 1.0, 0.0, 3.0) == pytest.approx(0.25)
    assert normalize_score(2.0, 1.0, 0.0, 3.0) == pytest.approx(0.75)  # different slope above the threshold
    assert normalize_score(-5.0, 1.0, 0.0, 3.0) == 0.0 and normalize_score(9.0, 1.0, 0.0, 3.0) == 1.0
    x = np.linspace(-1, 4, 101)
    y = normalize_score(x, 1.0, 0.0, 3.0)
    assert isinstance(y, np.ndarray) and y.shape == x.shape and y.dtype == np.float32
    assert np.all(np.diff(y) >= 0) and y.min() == 0.0 and y.max() == 1.0
    assert isinstance(normalize_score(np.float32(0.2), 1.0, 0.0, 3.0), float)
    assert math.isnan(normalize_score(float("nan"), 0.5, 0.0, 1.0))
    assert math.isnan(normalize_score(float("inf"), 0.5, 0.0, 1.0))
    assert np.isnan(normalize_score(np.array([0.2, np.nan]), 0.5, 0.0, 1.0)).tolist() == [False, True]


def test_normalize_score_degenerate_bounds() -> None:
    assert [normalize_score(v, 1.0, 1.0, 1.0) for v in (0.5, 1.0, 1.5)] == [0.0, 0.5, 1.0]
    assert [normalize_score(v, 1.0, 1.0, 2.0) for v in (0.9, 1.0, 1.5)] == [0.0, 0.5, 0.75]


def test_normalization_bounds() -> None:
    b = normalization_bounds([0.2, 0.3, 0.5], 0.4)
    assert b == pytest.approx({"min": 0.2, "max": 0.6})
    assert normalize_score(0.4, 0.4, b["min"], b["max"]) == 0.5
    b = normalization_bounds([0.4, 0.4], 0.4)  # all good scores at the threshold: a non-degenerate span
    assert b["min"] < 0.4 < b["max"]
    assert normalization_bounds([0.0], 0.0) == {"min": -1.0, "max": 1.0}


def test_derive_thresholds_structure() -> None:
    rng = np.random.default_rng(0)
    good = rng.random(200)
    good_px = good + 0.5
    thr = derive_thresholds(good, good_px, target_frr=0.02)
    assert set(thr) == {"image", "pixel", "normalization"}
    assert thr["image"] == {"value": threshold_at_frr(good, 0.02), "method": "false_reject_rate",
                            "target_frr": 0.02, "n_good": 200, "f1_optimal": None}
    assert thr["pixel"] == {"value": threshold_at_frr(good_px, 0.02), "method": "false_reject_rate_max_pixel",
                            "target_frr": 0.02}
    n = thr["normalization"]
    assert set(n) == {"score_min", "score_max", "pixel_min", "pixel_max"}
    assert n["score_min"] == pytest.approx(good.min()) and n["pixel_min"] == pytest.approx(good_px.min())
    assert n["score_min"] < thr["image"]["value"] < n["score_max"]
    json.dumps(thr, allow_nan=False)
    with_f1 = derive_thresholds(good, good_px, labels=[0, 0, 1, 1], scores=[0.1, 0.2, 0.6, 0.9])
    assert with_f1["image"]["f1_optimal"] == pytest.approx(0.4)
    with pytest.raises(ConfigError, match="both or neither"):
        derive_thresholds(good, good_px, labels=[0, 1])
    with pytest.raises(ConfigError, match="good_max_pixels"):
        derive_thresholds(good, [])


def test_thresholds_module_needs_numpy_only() -> None:
    code = ("import sys\nfor m in ('torch', 'scipy', 'skimage', 'sklearn', 'cv2'):\n    sys.modules[m] = None\n"
            "import edge_ad.evaluate.thresholds as t\nprint(t.threshold_at_frr([1.0, 2.0], 0.5))")
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1.0"
