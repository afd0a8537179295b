"""The seven anomaly-detection metrics in numpy (sort once, no sklearn), in each official code's variant.

image_auroc/image_ap/image_f1max over image scores, pixel_auroc/pixel_ap/pixel_f1max over all pixels of a
category, and aupro. `MetricVariants` selects how F1-max, AUPRO, AUROC and the image labels are computed; the
default is the Dinomaly reference evaluation (F1 = 2PR/(P+R+1e-7); `compute_pro`: 200 thresholds, FPR < 0.3
normalised by its maximum). AUROC/AP equal sklearn's roc_auc_score/average_precision_score.

Undefined values: the low-level `auroc`/`average_precision`/`f1_max`/`aupro` raise `DataError` when only one
class is present; `image_metrics`, `pixel_metrics` and `evaluate_categories` instead return NaN for that
metric, log a warning, and (for `evaluate_categories`) add a line to "notes" and leave it out of the mean.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edge_ad.data.mvtec import defect_kind
from edge_ad.errors import DataError
from edge_ad.evaluate.thresholds import binary_curve

log = logging.getLogger(__name__)

IMAGE_KEYS = ("image_auroc", "image_ap", "image_f1max")
PIXEL_KEYS = ("pixel_auroc", "pixel_ap", "pixel_f1max", "aupro")
METRIC_KEYS = IMAGE_KEYS + PIXEL_KEYS
KIND_KEYS = ("image_auroc",) + PIXEL_KEYS
_NAN = float("nan")


AUPRO_VARIANTS = ("max-200", "minmax-100", "minmax-200", "anomalib")
F1_VARIANTS = ("eps", "finite", "ader-21")


@dataclass(frozen=True)
class MetricVariants:
    """How each metric is computed, one field per difference between the official evaluation codes.

    image_f1/pixel_f1: "eps" = max 2PR/(P+R+1e-7) over the PR curve (Dinomaly); "finite" = max of 2PR/(P+R) over
    its finite values (ADer, DualAD); "ader-21" (pixel only) = 21 thresholds 0, 0.05 .. 1 on the category's
    min-max-normalised maps, eps 1e-8 (ADer `mF1_max_px`, MambaAD's reported P-F1). aupro: "max-200" = 200
    thresholds, FPR < 0.3 divided by its max (Dinomaly); "minmax-N" = N thresholds, (FPR - min)/(max - min) (ADer
    N=100 in MambaAD's configs, DualAD N=200); "anomalib" = anomalib's interpolated AUPRO (ULSAD). auroc:
    "sklearn" (float64, exact) or "anomalib" (torchmetrics float32). image_labels: "folder" (good/ = 0) or "mask"
    (ADer: anomalous iff the resized mask holds a defect pixel). keys: the metrics the protocol reports.
    """

    image_f1: str = "eps"
    pixel_f1: str = "eps"
    aupro: str = "max-200"
    auroc: str = "sklearn"
    image_labels: str = "folder"
    keys: tuple[str, ...] = ("image_auroc", "image_ap", "image_f1max", "pixel_auroc", "pixel_ap", "pixel_f1max",
                             "aupro")

    def __post_init__(self) -> None:
        checks = {"image_f1": ("eps", "finite"), "pixel_f1": F1_VARIANTS, "aupro": AUPRO_VARIANTS,
                  "auroc": ("sklearn", "anomalib"), "image_labels": ("folder", "mask")}
        for name, allowed in checks.items():
            if getattr(self, name) not in allowed:
                raise DataError(f"metric variants: {name} must be one of {allowed}, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["keys"] = list(self.keys)
        return d


DEFAULT_VARIANTS = MetricVariants()


def _f1(precision: np.ndarray, recall: np.ndarray, variant: str) -> float:
    if variant == "eps":
        return float(np.max(2 * precision * recall / (precision + recall + 1e-7)))
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * precision * recall / (precision + recall)
    # sklearn's curve ends at (P=1, R=0), an F1 of 0; thresholds with no true positive are NaN and dropped
    return float(max(np.max(f1[np.isfinite(f1)], initial=0.0), 0.0))


def _curve_metrics(labels: Any, scores: Any, f1: str = "eps") -> tuple[float, float, float] | None:
    """(AUROC, AP, F1max) from one sort, or None when labels hold a single class."""
    _, tps, fps = binary_curve(labels, scores)
    n_pos, n_neg = int(tps[-1]), int(fps[-1])
    if n_pos == 0 or n_neg == 0:
        return None
    tpr = np.concatenate(([0.0], tps / n_pos))
    fpr = np.concatenate(([0.0], fps / n_neg))
    roc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2.0)
    precision = tps / (tps + fps)
    recall = tps / n_pos
    ap = float(np.sum(np.diff(np.concatenate(([0.0], recall))) * precision))
    return roc, ap, _f1(precision, recall, f1)


def _ader_f1_21(gt: np.ndarray, maps: np.ndarray) -> float:
    """ADer `mF1_max_px`: max F1 over thresholds 0:0.05:1 of the min-max-normalised maps (eps 1e-8)."""
    norm = (maps - maps.min()) / (maps.max() - maps.min())
    eps = 1e-8
    n_label = gt.sum()
    best = []
    for score in np.arange(0.0, 1.0 + 1e-3, 0.05):
        pr = norm > score
        inter = np.logical_and(gt, pr).sum()
        precision = inter / (pr.sum() + eps)
        recall = inter / (n_label + eps)
        best.append(2 * precision * recall / (precision + recall + eps))
    return float(np.max(best))


def _require_two_classes(labels: Any, scores: Any, what: str) -> tuple[float, float, float]:
    out = _curve_metrics(labels, scores)
    if out is None:
        raise DataError(f"{what}: expected labels with both 0 (good) and 1 (anomalous), got a single class")
    return out


def auroc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve, tie-correct (= sklearn.metrics.roc_auc_score)."""
    return _require_two_classes(labels, scores, "auroc")[0]


def average_precision(labels: Any, scores: Any) -> float:
    """Step-wise average precision over distinct thresholds (= sklearn.metrics.average_precision_score)."""
    return _require_two_classes(labels, scores, "average_precision")[1]


def f1_max(labels: Any, scores: Any) -> float:
    """max over the precision-recall curve of 2PR/(P+R+1e-7) (the reference code's F1max)."""
    return _require_two_classes(labels, scores, "f1_max")[2]


def _check_maps(masks: Any, maps: Any) -> tuple[np.ndarray, np.ndarray]:
    """masks/maps as bool/float [N,h,w] arrays of the same shape, else DataError."""
    gt, am = np.asarray(masks), np.asarray(maps)
    if gt.ndim != 3 or am.ndim != 3:
        raise DataError(f"masks and maps: expected [N,h,w] arrays, got shapes {gt.shape} and {am.shape}")
    if gt.shape != am.shape:
        raise DataError(f"masks and maps: expected the same shape, got {gt.shape} and {am.shape}")
    if gt.size == 0:
        raise DataError(f"masks and maps: expected at least one pixel, got shape {gt.shape}")
    if not np.issubdtype(am.dtype, np.floating) and not np.issubdtype(am.dtype, np.integer):
        raise DataError(f"maps: expected real numbers, got dtype {am.dtype}")
    if not np.isfinite(am).all():
        raise DataError(f"maps: expected finite values, got {int((~np.isfinite(am)).sum())} NaN/inf value(s)")
    return gt > 0, am


def _aupro(gt: np.ndarray, amaps: np.ndarray, num_th: int, why: list[str], norm: str = "max") -> float:
    """Vectorised `compute_pro` (norm "max") / ADer-DualAD `cal_pro_score` (norm "minmax"); NaN (reason appended
    to `why`) where the official code has no defined value."""
    from skimage.measure import label

    lo, hi = amaps.min(), amaps.max()
    if not hi > lo:
        why.append("aupro undefined: the anomaly maps are constant")
        return _NAN
    ths = np.arange(lo, hi, (hi - lo) / num_th)
    dt = np.result_type(amaps.dtype, ths.dtype)
    ths = ths.astype(dt, copy=False)
    n_th = ths.size
    # c = number of thresholds strictly below the value: the pixel is flagged (amap > th) for th index < c
    c = np.searchsorted(ths, amaps.astype(dt, copy=False).reshape(-1), side="left").reshape(amaps.shape)
    regions = np.zeros(gt.shape, np.int64)
    n_regions = 0
    for i in range(gt.shape[0]):
        lab = label(gt[i])  # default connectivity: 8-neighbourhood in 2-D, as the official code
        fg = lab > 0
        regions[i][fg] = lab[fg] + n_regions
        n_regions += int(lab.max())
    neg = ~gt
    n_neg = int(neg.sum())
    if n_regions == 0 or n_neg == 0:
        why.append("aupro undefined: " + ("no defect regions in the masks" if n_regions == 0 else "no normal pixels"))
        return _NAN

    def flagged_at_or_above(hist: np.ndarray) -> np.ndarray:
        """hist[..., c] counts -> [..., k] counts with c > k (flagged at threshold k)."""
        return np.cumsum(hist[..., ::-1], axis=-1)[..., ::-1][..., 1:]

    fp = flagged_at_or_above(np.bincount(c[neg], minlength=n_th + 1))
    width = n_th + 1
    hist = np.bincount(regions[gt] * width + c[gt], minlength=(n_regions + 1) * width)
    hist = hist.reshape(n_regions + 1, width)[1:]
    tp = flagged_at_or_above(hist)
    pro = np.mean(tp / hist.sum(axis=1, keepdims=True), axis=0)
    fpr = fp / n_neg
    keep = fpr < 0.3
    f = fpr[keep]
    if int(keep.sum()) < 2 or float(f.max()) == (0.0 if norm == "max" else float(f.min())):
        why.append("aupro undefined: fewer than two thresholds with FPR < 0.3, or all of them at one FPR")
        return _NAN
    x = f / f.max() if norm == "max" else (f - f.min()) / (f.max() - f.min())
    y = pro[keep]
    # x falls as the threshold rises: sklearn.metrics.auc's decreasing direction, area = -trapz(y, x)
    return float(-np.add.reduce(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def _aupro_variant(gt: np.ndarray, amaps: np.ndarray, variant: str, why: list[str]) -> float:
    if variant == "anomalib":
        from edge_ad.evaluate.anomalib_metrics import aupro as anomalib_aupro

        value = anomalib_aupro(gt, amaps)
        if math.isnan(value):
            why.append("aupro undefined: NaN in anomalib's arithmetic (no defect region or normal pixel, or scores "
                       "its sigmoid saturates into ties)")
        return value
    norm, steps = variant.split("-")
    return _aupro(gt, amaps, int(steps), why, norm)


def aupro(masks: Any, maps: Any, num_th: int = 200) -> float:
    """Per-region overlap area up to FPR 0.3 (normalised by the max FPR kept), as the reference `compute_pro`.

    masks [N,h,w] (> 0 = defect), maps [N,h,w]; regions are 8-connected and pooled across images.
    Raises DataError when the value is undefined (no defect region, no normal pixel, constant maps).
    """
    if not isinstance(num_th, (int, np.integer)) or num_th < 1:
        raise DataError(f"num_th: expected a positive integer, got {num_th!r}")
    gt, am = _check_maps(masks, maps)
    why: list[str] = []
    value = _aupro(gt, am, int(num_th), why)
    if why:
        raise DataError(why[0])
    return value


def _anomalib_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    from edge_ad.evaluate.anomalib_metrics import auroc as anomalib_auroc

    return anomalib_auroc(labels, scores)


def _only(out: dict[str, float], v: MetricVariants) -> dict[str, float]:
    """Metrics outside the protocol's keys are NaN (not computed by that official code)."""
    return {k: (val if k in v.keys else _NAN) for k, val in out.items()}


def _image(labels: Any, scores: Any, why: list[str], v: MetricVariants = DEFAULT_VARIANTS) -> dict[str, float]:
    y, s = np.asarray(labels), np.asarray(scores)
    if y.ndim != 1 or s.ndim != 1:
        raise DataError(f"labels and scores: expected 1-D arrays, got shapes {y.shape} and {s.shape}")
    out = _curve_metrics(y, s, v.image_f1)
    if out is None:
        why.append(f"image metrics undefined: all {y.size} images have label {int(y[0])}, need good and anomalous")
        return dict.fromkeys(IMAGE_KEYS, _NAN)
    res = dict(zip(IMAGE_KEYS, out))
    if v.auroc == "anomalib":
        res["image_auroc"] = _anomalib_auroc(y, s)
    return _only(res, v)


def _pixel(masks: Any, maps: Any, why: list[str], v: MetricVariants = DEFAULT_VARIANTS) -> dict[str, float]:
    if masks is None:
        why.append("pixel metrics undefined: the dataset has no ground-truth masks (image metrics only)")
        return dict.fromkeys(PIXEL_KEYS, _NAN)
    gt, am = _check_maps(masks, maps)
    out = _curve_metrics(gt.reshape(-1), am.reshape(-1), "eps" if v.pixel_f1 == "ader-21" else v.pixel_f1)
    if out is None:
        why.append(
            "pixel metrics undefined: the masks hold " + ("no defect pixel" if not gt.any() else "no normal pixel")
        )
        return dict.fromkeys(PIXEL_KEYS, _NAN)
    res = dict(zip(PIXEL_KEYS[:3], out))
    if v.pixel_f1 == "ader-21":
        res["pixel_f1max"] = _ader_f1_21(gt, am) if "pixel_f1max" in v.keys else _NAN
    if v.auroc == "anomalib" and "pixel_auroc" in v.keys:
        res["pixel_auroc"] = _anomalib_auroc(gt, am)
    res["aupro"] = _aupro_variant(gt, am, v.aupro, why) if "aupro" in v.keys else _NAN
    return _only(res, v)


def _warn(why: list[str], prefix: str = "") -> None:
    for w in why:
        log.warning("%s%s", prefix, w)


def image_metrics(labels: Any, scores: Any) -> dict[str, float]:
    """{"image_auroc", "image_ap", "image_f1max"}; NaN (with a warning) if labels hold a single class."""
    why: list[str] = []
    out = _image(labels, scores, why)
    _warn(why)
    return out


def pixel_metrics(masks: Any, maps: Any) -> dict[str, float]:
    """{"pixel_auroc", "pixel_ap", "pixel_f1max", "aupro"} over all pixels of masks/maps [N,h,w].

    NaN (with a warning) where undefined: no defect pixel or no normal pixel at all, or (aupro only)
    constant maps / no threshold with 0 < FPR < 0.3.
    """
    why: list[str] = []
    out = _pixel(masks, maps, why)
    _warn(why)
    return out


@dataclass
class CategoryPredictions:
    """One category's test predictions: labels [N] 0/1, scores [N], masks [N,h,w] uint8, maps [N,h,w] float32,
    defect_types (folder names, "good" for good images) of length N."""

    labels: np.ndarray
    scores: np.ndarray
    masks: np.ndarray | None  #: None: a dataset without ground-truth masks (image metrics only)
    maps: np.ndarray
    defect_types: Sequence[str]


def _check_category(name: str, p: CategoryPredictions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """labels, scores, defect types as arrays after checking every length against N; DataError naming `name`."""
    labels, scores = np.asarray(p.labels), np.asarray(p.scores)
    n = labels.shape[0] if labels.ndim == 1 else -1
    if n < 1:
        raise DataError(f"category {name!r}: labels: expected a non-empty 1-D array, got shape {labels.shape}")
    shapes = {"scores": scores.shape, "maps": np.shape(p.maps)[:1], "defect_types": (len(p.defect_types),)}
    if p.masks is not None:
        shapes["masks"] = np.shape(p.masks)[:1]
    bad = {k: v for k, v in shapes.items() if v != (n,)}
    if bad or scores.ndim != 1:
        raise DataError(f"category {name!r}: expected {n} entries (one per label) in scores/masks/maps/defect_types, "
                        f"got leading shapes {shapes}")
    return labels, scores, np.asarray(list(p.defect_types), dtype=object)


def _nanmean(values: list[float]) -> float:
    ok = [v for v in values if not math.isnan(v)]
    return float(np.mean(ok)) if ok else _NAN


def evaluate_categories(per_category: Mapping[str, CategoryPredictions],
                        variants: MetricVariants = DEFAULT_VARIANTS) -> dict[str, Any]:
    """Seven metrics per category, their mean over categories, and the defect-type/kind breakdown.

    Per defect type (and kind: structural/logical) the image AUROC uses that type's images against the
    category's good images (label 0); the kind breakdown also has pixel metrics on that subset, averaged
    over the categories holding that kind. Undefined values are NaN, noted in "notes", and skipped by means.
    """
    if not per_category:
        raise DataError("per_category: expected at least one category, got none")
    notes: list[str] = []
    categories: dict[str, dict[str, float]] = {}
    types: dict[str, dict[str, dict[str, Any]]] = {}
    kind_rows: dict[str, list[dict[str, float]]] = {"structural": [], "logical": []}
    kind_images = {"structural": 0, "logical": 0}
    v = variants
    for cat, p in per_category.items():
        labels, scores, dtypes = _check_category(cat, p)
        if v.image_labels == "mask":  # ADer: the label is whether the (resized) mask holds a defect pixel
            labels = np.asarray((np.asarray(p.masks).reshape(labels.shape[0], -1) > 0).any(axis=1), np.int64)
        why: list[str] = []
        m = {**_image(labels, scores, why, v), **_pixel(p.masks, p.maps, why, v)}
        categories[cat] = {k: float(m[k]) for k in METRIC_KEYS}
        good = labels == 0
        bad = labels == 1
        types[cat] = {}
        for dt in sorted(set(dtypes[bad].tolist())):
            sel = good | (bad & (dtypes == dt))
            r = _curve_metrics(labels[sel], scores[sel])
            if r is None:
                why.append(f"image_auroc of defect type {dt!r} undefined: no good images")
            types[cat][dt] = {"image_auroc": _NAN if r is None else r[0], "n": int((bad & (dtypes == dt)).sum())}
        kinds = np.array(["logical" if defect_kind(d) == "logical" else "structural" for d in dtypes], dtype=object)
        present = sorted(set(kinds[bad].tolist()))
        for kind in present:
            in_kind = bad & (kinds == kind)
            kind_images[kind] += int(in_kind.sum())
            if len(present) == 1:
                kind_rows[kind].append({k: categories[cat][k] for k in KIND_KEYS})
                continue
            sel = good | in_kind
            sub_why: list[str] = []
            km = {**_image(labels[sel], scores[sel], sub_why, v),
                  **_pixel(None if p.masks is None else np.asarray(p.masks)[sel], np.asarray(p.maps)[sel], sub_why,
                           v)}
            why += [f"{kind} defects: {w}" for w in sub_why]
            kind_rows[kind].append({k: float(km[k]) for k in KIND_KEYS})
        _warn(why, f"category {cat!r}: ")
        notes += [f"{cat}: {w}" for w in why]
    mean = {k: _nanmean([categories[c][k] for c in categories]) for k in METRIC_KEYS}
    by_skipped: dict[tuple[str, ...], list[str]] = {}
    for k in v.keys:
        skipped = tuple(c for c in categories if math.isnan(categories[c][k]))
        if skipped:
            by_skipped.setdefault(skipped, []).append(k)
    for skipped, keys in by_skipped.items():
        notes.append(f"mean {', '.join(keys)}: over {len(categories) - len(skipped)} of {len(categories)} "
                     f"categories (undefined in {', '.join(skipped)})")
    defect_kinds = {
        kind: {**{k: _nanmean([r[k] for r in rows]) for k in KIND_KEYS},
               "n_categories": len(rows), "n_images": kind_images[kind]}
        for kind, rows in kind_rows.items()
    }
    left_out = [k for k in METRIC_KEYS if k not in v.keys]
    if left_out:
        notes.append(f"{', '.join(left_out)}: not reported by this protocol's official code (null)")
    return {"categories": categories, "mean": mean, "defect_types": types, "defect_kinds": defect_kinds,
            "notes": notes, "metric_variants": v.to_dict()}
