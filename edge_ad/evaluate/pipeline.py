"""`edge-ad eval` as a library call: score a run's model on the test split and write the report."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_ad.data.mvtec import load_samples
from edge_ad.evaluate.inference import DatasetPredictions, predict_samples
from edge_ad.evaluate.metrics import CategoryPredictions, evaluate_categories
from edge_ad.evaluate.report import save_overlay_grid, write_report
from edge_ad.imageio import read_image
from edge_ad.train.rundir import load_run
from edge_ad.train.trainer import resolve_device

log = logging.getLogger(__name__)

RANDOM_INIT_NOTE = (
    "encoder weights are RANDOM-INIT: heatmaps from a random-init encoder are weak and metrics are far below the "
    "paper's; this is expected, not a bug. Use pretrained weights (`edge-ad weights import`) for real accuracy."
)


def to_category_predictions(preds: DatasetPredictions) -> dict[str, CategoryPredictions]:
    """Split flat predictions into the per-category arrays the metrics take."""
    assert preds.masks is not None
    out = {}
    for cat, idx in preds.by_category().items():
        out[cat] = CategoryPredictions(
            labels=np.array([preds.samples[i].label for i in idx]),
            scores=preds.scores[idx],
            masks=preds.masks[idx],
            maps=preds.maps[idx],
            defect_types=[preds.samples[i].defect_type for i in idx],
        )
    return out


def evaluate_run(
    run_dir: str | Path,
    *,
    data: str | Path | None = None,
    categories: list[str] | None = None,
    out_dir: str | Path | None = None,
    batch_size: int = 8,
    device: str = "auto",
    overlays_per_category: int = 4,
    progress: bool = True,
) -> dict[str, Any]:
    """Seven metrics per category and their mean (+ defect-type breakdown), written as JSON/markdown/overlays."""
    dev = resolve_device(device)
    model, cfg, thresholds = load_run(run_dir, dev)
    root = Path(data or cfg["data"])
    cats = categories or cfg.get("categories")
    samples = load_samples(root, cats, split="test")
    with torch.no_grad():
        preds = predict_samples(model, samples, batch_size=batch_size, device=dev, with_masks=True, desc="eval",
                                progress=progress)
    report = evaluate_categories(to_category_predictions(preds))
    enc = str(getattr(model, "encoder_weights", "unknown"))
    report["model"] = cfg["model"]
    report["run"] = str(run_dir)
    report["data"] = str(root)
    report["encoder_weights"] = enc
    report.setdefault("notes", [])
    if enc == "random-init":
        report["notes"].insert(0, RANDOM_INIT_NOTE)
    if thresholds:
        thr = float(thresholds["image"]["value"])
        labels = np.array([s.label for s in samples])
        pred_ng = preds.scores > thr
        report["at_threshold"] = {
            "threshold": thr,
            "false_reject_rate": float(pred_ng[labels == 0].mean()) if (labels == 0).any() else None,
            "miss_rate": float((~pred_ng[labels == 1]).mean()) if (labels == 1).any() else None,
        }
    out = Path(out_dir) if out_dir else Path(run_dir) / "eval"
    write_report(report, out, title=f"{cfg['model']} on {root.name}")
    _write_overlays(model, preds, out, overlays_per_category, thresholds)
    return report


def _write_overlays(
    model: Any, preds: DatasetPredictions, out: Path, per_cat: int, thresholds: dict[str, Any] | None
) -> None:
    """A few images per category: the most anomalous defects and the highest-scoring good image."""
    if per_cat <= 0:
        return
    bounds = (thresholds or {}).get("normalization", {})
    vmin = float(bounds.get("pixel_min", float(preds.maps.min())))
    vmax = float(bounds.get("pixel_max", float(preds.maps.max())))
    for cat, idx in preds.by_category().items():
        order = sorted(idx, key=lambda i: -preds.scores[i])
        bad = [i for i in order if preds.samples[i].label == 1][: max(per_cat - 1, 1)]
        good = [i for i in order if preds.samples[i].label == 0][:1]
        rows = []
        for i in bad + good:
            s = preds.samples[i]
            rgb = model.preprocess.apply(read_image(s.path))
            if model.preprocess.color_order == "BGR":
                rgb = rgb[..., ::-1]
            mask = preds.masks[i] if preds.masks is not None else None
            rows.append((rgb, preds.maps[i], mask, f"{s.defect_type} {preds.scores[i]:.4f}"))
        if rows:
            save_overlay_grid(out / "overlays" / f"{cat}.png", rows, vmin=vmin, vmax=vmax)
