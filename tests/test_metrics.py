"""The seven metrics against sklearn and an independent loop implementation of the reference `compute_pro`."""

from __future__ import annotations

import json
import logging
import math
import time

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import (
    auc,
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
)

from edge_ad.errors import DataError
from edge_ad.evaluate.metrics import (
    METRIC_KEYS,
    CategoryPredictions,
    aupro,
    auroc,
    average_precision,
    evaluate_categories,
    f1_max,
    image_metrics,
    pixel_metrics,
)


def sk_f1max(y: np.ndarray, s: np.ndarray) -> float:
    p, r, _ = precision_recall_curve(y, s)
    return float((2 * p * r / (p + r + 1e-7))[:-1].max())


def ref_pro(masks: np.ndarray, amaps: np.ndarray, num_th: int = 200) -> float:
    """Straightforward port of the official compute_pro (loops over thresholds and regions)."""
    structure = np.ones((3, 3), int)
    lo, hi = amaps.min(), amaps.max()
    pros, fprs = [], []
    inverse = 1 - (masks > 0)
    for th in np.arange(lo, hi, (hi - lo) / num_th):
        binary = amaps > th
        per_region = []
        for b, m in zip(binary, masks):
            lab, n = ndimage.label(m > 0, structure=structure)
            for r in range(1, n + 1):
                region = lab == r
                per_region.append(b[region].sum() / region.sum())
        pros.append(np.mean(per_region))
        fprs.append(np.logical_and(inverse, binary).sum() / inverse.sum())
    fpr, pro = np.array(fprs), np.array(pros)
    keep = fpr < 0.3
    return float(auc(fpr[keep] / fpr[keep].max(), pro[keep]))


@pytest.mark.parametrize("seed", range(12))
def test_curve_metrics_match_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 400))
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    s = np.round(rng.normal(size=n) + 0.7 * y, int(rng.integers(0, 3)))  # heavy ties
    assert auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert f1_max(y, s) == pytest.approx(sk_f1max(y, s), abs=1e-12)
    m = image_metrics(y, s)
    assert m == pytest.approx({"image_auroc": roc_auc_score(y, s), "image_ap": average_precision_score(y, s),
                               "image_f1max": sk_f1max(y, s)}, abs=1e-12)


def test_all_tied_and_perfect_scores() -> None:
    y = np.array([0, 1, 0, 1])
    assert auroc(y, np.ones(4)) == pytest.approx(0.5)
    assert average_precision(y, np.ones(4)) == pytest.approx(0.5)
    assert auroc(y, y * 2.0) == 1.0 and average_precision(y, y * 2.0) == 1.0
    assert f1_max(y, y * 2.0) == pytest.approx(1.0, abs=1e-6)
    assert auroc(y, -y) == 0.0


def test_pixel_metrics_match_sklearn_on_pixel_scale_data() -> None:
    rng = np.random.default_rng(1)
    masks = np.zeros((12, 96, 96), np.uint8)
    for i in range(6):
        masks[i, 10 + i:40 + i, 20:50] = 1
        masks[i, 70:80, 5 + 3 * i:15 + 3 * i] = 255  # any value > 0 is a defect
    maps = (rng.random(masks.shape) * 0.6 + (masks > 0) * 0.3).astype(np.float32)
    maps = np.round(maps, 2)  # ties at pixel scale
    y, s = (masks > 0).ravel(), maps.ravel()
    m = pixel_metrics(masks, maps)
    assert set(m) == {"pixel_auroc", "pixel_ap", "pixel_f1max", "aupro"}
    assert m["pixel_auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-10)
    assert m["pixel_ap"] == pytest.approx(average_precision_score(y, s), abs=1e-10)
    assert m["pixel_f1max"] == pytest.approx(sk_f1max(y, s), abs=1e-10)
    assert m["aupro"] == pytest.approx(ref_pro(masks, maps), abs=1e-10)


def test_aupro_matches_reference_loop_on_hand_made_masks() -> None:
    rng = np.random.default_rng(2)
    masks = np.zeros((4, 40, 40), np.uint8)
    masks[0, 5:15, 5:15] = 1
    masks[0, 15:18, 15:18] = 1  # touches the first square at a corner: one 8-connected region
    masks[1, 30:33, 2:38] = 1
    masks[2, 20, 20] = 1  # single-pixel region
    maps = rng.random(masks.shape).astype(np.float32) * 0.7 + masks * rng.random(masks.shape).astype(np.float32) * 0.5
    assert aupro(masks, maps) == pytest.approx(ref_pro(masks, maps), abs=1e-10)
    assert aupro(masks, maps.astype(np.float64)) == pytest.approx(ref_pro(masks, maps.astype(np.float64)), abs=1e-10)


def test_aupro_by_hand() -> None:
    masks = np.zeros((1, 20, 20), np.uint8)
    masks[0, 2:5, 2:5] = 1  # 9 px, detected
    masks[0, 5, 5] = 1  # 1 px touching diagonally, missed: 8-connectivity -> one region with PRO 9/10
    maps = np.zeros((1, 20, 20), np.float32)
    maps[0, 2:5, 2:5] = 1.0
    maps[0, 15:17, 15:17] = 0.5  # 4 false-positive pixels for thresholds below 0.5 -> FPR 4/390 < 0.3
    # every kept threshold has PRO 0.9; FPR normalised to {1, 0} -> area 0.9 (0.5 with 4-connectivity)
    assert aupro(masks, maps) == pytest.approx(0.9, abs=1e-12)
    assert aupro(masks, maps) == pytest.approx(ref_pro(masks, maps), abs=1e-12)


def test_aupro_drops_fpr_of_exactly_point_three() -> None:
    masks = np.zeros((1, 10, 10), np.uint8)
    masks[0, 0:2, 0:5] = 1  # 10 px region; 90 negatives
    maps = np.zeros((1, 10, 10))
    maps[0, 0, 0:5], maps[0, 1, 0:5] = 1.0, 0.5  # PRO 1 for th < 0.5, else 0.5
    maps[0, 5:7, 0:9] = 0.8  # 18 px: FPR 0.2 for th < 0.8
    maps[0, 8, 0:9] = 0.5  # +9 px: FPR exactly 0.3 (with PRO 1) for th < 0.5 -> dropped (fpr < 0.3 is strict)
    # kept rows: FPR 0.2 and 0, PRO 0.5 -> normalised area 0.5 (keeping FPR 0.3 would give ~0.58)
    assert aupro(masks, maps) == pytest.approx(0.5, abs=1e-12)


def test_perfect_map_gives_one() -> None:
    rng = np.random.default_rng(3)
    masks = np.zeros((5, 32, 32), np.uint8)
    masks[:3, 8:16, 8:20] = 1
    maps = np.where(masks > 0, 0.6 + 0.4 * rng.random(masks.shape), 0.4 * rng.random(masks.shape))
    m = pixel_metrics(masks, maps)
    assert m["pixel_auroc"] == 1.0 and m["pixel_ap"] == 1.0
    assert m["aupro"] == pytest.approx(1.0, abs=1e-12)
    assert m["pixel_f1max"] == pytest.approx(1.0, abs=1e-6)


def test_pixel_metrics_fast_enough() -> None:
    rng = np.random.default_rng(4)
    masks = np.zeros((50, 256, 256), np.uint8)
    for i in range(25):
        masks[i, 40 + i:90 + i, 60:110] = 1
    maps = (rng.random(masks.shape, dtype=np.float32) * 0.5 + masks * 0.3).astype(np.float32)
    t = time.perf_counter()
    m = pixel_metrics(masks, maps)
    assert time.perf_counter() - t < 5.0  # ~1 s on one core; a per-threshold pixel loop takes far longer
    assert all(0.0 <= v <= 1.0 for v in m.values())


def test_undefined_metrics_are_nan_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        m = image_metrics([0, 0, 0], [0.1, 0.2, 0.3])
        p = pixel_metrics(np.zeros((2, 8, 8), np.uint8), np.random.default_rng(0).random((2, 8, 8)))
    assert all(math.isnan(v) for v in m.values()) and all(math.isnan(v) for v in p.values())
    assert "image metrics undefined" in caplog.text and "no defect pixel" in caplog.text
    masks = np.zeros((1, 8, 8), np.uint8)
    masks[0, :2] = 1
    p = pixel_metrics(masks, np.ones((1, 8, 8)))  # constant map: AUROC 0.5, AUPRO undefined
    assert p["pixel_auroc"] == 0.5 and math.isnan(p["aupro"])


def test_bad_input_raises() -> None:
    with pytest.raises(DataError, match="single class"):
        auroc([1, 1], [0.1, 0.2])
    with pytest.raises(DataError, match="same number"):
        auroc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(DataError, match="only 0"):
        average_precision([0, 2], [0.1, 0.2])
    with pytest.raises(DataError, match="NaN"):
        f1_max([0, 1], [0.1, float("nan")])
    with pytest.raises(DataError, match="same shape"):
        pixel_metrics(np.zeros((2, 8, 8)), np.zeros((2, 8, 9)))
    with pytest.raises(DataError, match=r"\[N,h,w\]"):
        pixel_metrics(np.zeros((8, 8)), np.zeros((8, 8)))
    with pytest.raises(DataError, match="no defect regions"):
        aupro(np.zeros((1, 8, 8)), np.random.default_rng(0).random((1, 8, 8)))


def _category(rng: np.random.Generator, types: list[str], n_good: int = 6, size: int = 24) -> CategoryPredictions:
    dtypes = ["good"] * n_good + types
    labels = np.array([0 if t == "good" else 1 for t in dtypes])
    masks = np.zeros((len(dtypes), size, size), np.uint8)
    for i in np.flatnonzero(labels):
        r, c = rng.integers(0, size - 6, 2)
        masks[i, r:r + 5, c:c + 5] = 1
    maps = (rng.random(masks.shape) * 0.6 + masks * 0.4 * rng.random(masks.shape)).astype(np.float32)
    scores = maps.reshape(len(dtypes), -1).max(axis=1)
    return CategoryPredictions(labels, scores, masks, maps, dtypes)


def test_evaluate_categories_structure_mean_and_breakdown() -> None:
    rng = np.random.default_rng(5)
    preds = {
        "bottle": _category(rng, ["crack"] * 4 + ["scratch"] * 3),
        "box": _category(rng, ["crack"] * 3 + ["missing_part"] * 4),
        "empty": _category(rng, [], n_good=5),  # no anomalies: every metric undefined
    }
    rep = evaluate_categories(preds)
    assert set(rep) == {"categories", "mean", "defect_types", "defect_kinds", "notes", "metric_variants"}
    assert list(rep["categories"]) == ["bottle", "box", "empty"]
    b = preds["bottle"]
    assert rep["categories"]["bottle"]["image_auroc"] == pytest.approx(roc_auc_score(b.labels, b.scores))
    assert rep["categories"]["bottle"]["aupro"] == pytest.approx(ref_pro(b.masks, b.maps), abs=1e-10)
    assert all(math.isnan(v) for v in rep["categories"]["empty"].values())
    for k in METRIC_KEYS:
        assert isinstance(rep["mean"][k], float)
        assert rep["mean"][k] == pytest.approx((rep["categories"]["bottle"][k] + rep["categories"]["box"][k]) / 2)
    assert any("empty" in n and "mean" in n for n in rep["notes"])
    sel = np.array([t in ("good", "scratch") for t in b.defect_types])
    assert rep["defect_types"]["bottle"]["scratch"] == {
        "image_auroc": pytest.approx(roc_auc_score(b.labels[sel], b.scores[sel])), "n": 3}
    assert rep["defect_types"]["empty"] == {}
    kinds = rep["defect_kinds"]
    assert kinds["logical"]["n_categories"] == 1 and kinds["logical"]["n_images"] == 4
    assert kinds["structural"]["n_categories"] == 2 and kinds["structural"]["n_images"] == 10
    x = preds["box"]
    sel = np.array([t in ("good", "missing_part") for t in x.defect_types])
    assert kinds["logical"]["image_auroc"] == pytest.approx(roc_auc_score(x.labels[sel], x.scores[sel]))
    assert kinds["logical"]["aupro"] == pytest.approx(ref_pro(x.masks[sel], x.maps[sel]), abs=1e-10)
    # bottle is structural only, so its whole-category values enter the structural mean
    sel = np.array([t in ("good", "crack") for t in x.defect_types])
    box_struct = roc_auc_score(x.labels[sel], x.scores[sel])
    assert kinds["structural"]["image_auroc"] == pytest.approx(
        (rep["categories"]["bottle"]["image_auroc"] + box_struct) / 2)
    json.dumps(rep)  # plain Python types only


def test_evaluate_categories_rejects_mismatched_lengths() -> None:
    rng = np.random.default_rng(6)
    p = _category(rng, ["crack"] * 3)
    p.defect_types = p.defect_types[:-1]
    with pytest.raises(DataError, match="'bottle'.*expected 9 entries"):
        evaluate_categories({"bottle": p})
    with pytest.raises(DataError, match="at least one category"):
        evaluate_categories({})
