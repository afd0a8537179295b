"""`edge-ad eval` as a library call: score a run's model on the test split and write the report."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from edge_ad.data.mvtec import Sample, load_samples, read_mask_values
from edge_ad.data.views import views_dataset
from edge_ad.errors import ConfigError, DataError
from edge_ad.evaluate import rundir
from edge_ad.evaluate.inference import DatasetPredictions, predict_samples
from edge_ad.evaluate.metrics import CategoryPredictions, evaluate_categories
from edge_ad.evaluate.protocols import Protocol, get_protocol, protocol_mask, use_resize
from edge_ad.evaluate.report import save_overlay_grid, write_report
from edge_ad.evaluate.rundir import load_run
from edge_ad.fileio import read_json_file
from edge_ad.imageio import inspect_header_only, read_bytes, read_image
from edge_ad.models.device import resolve_device

log = logging.getLogger(__name__)

RANDOM_INIT_NOTE = (
    "encoder weights are RANDOM-INIT: heatmaps from a random-init encoder are weak and metrics are far below the "
    "paper's; this is expected, not a bug. Use pretrained weights (`edge-ad weights import`) for real accuracy."
)


def to_category_predictions(preds: DatasetPredictions) -> dict[str, CategoryPredictions]:
    """Split flat predictions into the per-category arrays the metrics take (masks None: image metrics only)."""
    out = {}
    for cat, idx in preds.by_category().items():
        out[cat] = CategoryPredictions(
            labels=np.array([preds.samples[i].label for i in idx]),
            scores=preds.scores[idx],
            masks=None if preds.masks is None else preds.masks[idx],
            maps=preds.maps[idx],
            defect_types=[preds.samples[i].defect_type for i in idx],
        )
    return out


def raw_mask(sample: Sample) -> np.ndarray | None:
    """The mask's grey values as stored (`read_mask_values`), None for good images; DataError when its size differs
    from its image's (the official codes would resize it silently)."""
    if sample.mask_path is None:
        if sample.label:
            raise ConfigError(f"anomalous image {sample.path}: no ground-truth mask, cannot evaluate pixel metrics")
        return None
    m = read_mask_values(sample.mask_path)
    info = inspect_header_only(read_bytes(sample.path), str(sample.path))
    if m.shape != (info.height, info.width):
        raise DataError(f"mask {sample.mask_path}: size {m.shape[1]}x{m.shape[0]} differs from image {sample.path} "
                        f"size {info.width}x{info.height}")
    return m


def predict_for_protocol(model: Any, samples: list[Sample], proto: Protocol, *, batch_size: int = 8,
                         device: torch.device | str = "cpu", progress: bool = False) -> tuple[DatasetPredictions,
                                                                                              list[str]]:
    """(scores, maps and ground truth of `samples` as the protocol's official code computes them, notes): the
    protocol's image resize, output normalisation refitted on the test split's good images where the official code
    does that (ULSAD), and masks built by `protocol_mask`. The model is changed in place (resize, calibration)."""
    notes = []
    trained = use_resize(model, proto)
    if trained:
        notes.append(f"the model was trained with {trained!r} resizing; evaluated with the official "
                     f"{proto.resize!r} as the official code would (train with --protocol official to match)")
    if proto.calibrate_on_test_good:
        good = [s for s in samples if s.label == 0]
        if not good:
            raise ConfigError("protocol official: the test split has no good images to fit the map quantiles on")
        with torch.no_grad():
            model.calibrate(DataLoader(views_dataset(good, model.preprocess, model.geometry), batch_size=batch_size,
                                       shuffle=False),
                            torch.device(device))
    with torch.no_grad():
        if proto.name == "edge-ad":
            masks = all(s.mask_path is not None for s in samples if s.label)  # mask-less datasets: image metrics
            return predict_samples(model, samples, batch_size=batch_size, device=device, with_masks=masks,
                                   desc="eval", progress=progress), notes
        preds = predict_samples(model, samples, batch_size=batch_size, device=device, desc="eval", progress=progress)
    hw = tuple(preds.maps.shape[1:]) if len(samples) else (1, 1)
    preds.masks = np.stack([protocol_mask(proto, raw_mask(s), model.preprocess, hw) for s in samples]) \
        if samples else np.zeros((0,) + hw, np.uint8)
    return preds, notes


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
    protocol: str = "edge-ad",
) -> dict[str, Any]:
    """Seven metrics per category and their mean (+ defect-type breakdown), written as JSON/markdown/overlays.

    `protocol`: "edge-ad" (the default: one consistent protocol) or "official" (the model family's official
    resize, mask handling and metric variants; see `edge_ad.evaluate.protocols`). A run trained one model per
    category (official ULSAD) is evaluated category by category with its own model."""
    dev = resolve_device(device)
    run = Path(run_dir)
    cfg = rundir.read_config(run)
    proto = get_protocol(protocol, cfg["model"])
    root = Path(data or cfg["data"])
    cats = categories or cfg.get("categories")
    samples = load_samples(root, cats, split="test")
    per_cat_file = run / rundir.PER_CATEGORY
    if per_cat_file.is_file():
        subs = read_json_file(per_cat_file, "per-category runs")["runs"]
        groups = {}
        for cat in sorted({s.category for s in samples}):
            if cat not in subs:
                raise ConfigError(f"{run}: no per-category model for category {cat!r} (has {sorted(subs)})")
            groups[cat] = (run / subs[cat], [s for s in samples if s.category == cat])
    else:
        groups = {"": (run, samples)}
    notes: list[str] = []
    parts: list[DatasetPredictions] = []
    model: Any = None
    thresholds = None
    for sub_run, subset in groups.values():
        model, _, thresholds = load_run(sub_run, dev)
        part, part_notes = predict_for_protocol(model, subset, proto, batch_size=batch_size, device=dev,
                                                progress=progress)
        parts.append(part)
        notes += part_notes
    preds = parts[0] if len(parts) == 1 else DatasetPredictions(
        samples=[s for p in parts for s in p.samples], scores=np.concatenate([p.scores for p in parts]),
        maps=np.concatenate([p.maps for p in parts]),
        masks=None if any(p.masks is None for p in parts) else np.concatenate([p.masks for p in parts
                                                                               if p.masks is not None]))
    samples = preds.samples
    report = evaluate_categories(to_category_predictions(preds), proto.variants)
    enc = str(getattr(model, "encoder_weights", "unknown"))
    report["model"] = cfg["model"]
    report["run"] = str(run_dir)
    report["data"] = str(root)
    report["encoder_weights"] = enc
    report["protocol"] = proto.describe()
    report["notes"] = sorted(set(notes)) + list(proto.notes) + report.get("notes", [])
    if enc == "random-init":
        report["notes"].insert(0, RANDOM_INIT_NOTE)
    if len(parts) > 1:
        thresholds = None  # one threshold per category model; the at-threshold summary needs a single one
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
    write_report(report, out, title=f"{cfg['model']} on {root.name} ({proto.name} protocol)")
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
