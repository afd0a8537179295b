"""ULSAD under both protocols on one dataset: one model per category (the paper's) vs one model for all
categories (edge-ad's default), evaluated on the same test images, with the structural/logical breakdown.

    .venv/bin/python benchmarks/ulsad_protocols.py --model ulsad-tiny --iters 40 --json out.json

Without --data a synthetic set is generated (textures and objects; the objects carry the logical defects
missing_part / extra_part / misplaced_part). Both protocols get the same number of epochs: each per-category
model trains `--iters` steps, the multi-class model `--iters` x number of categories. Without --pretrained the
backbone is RANDOM-INIT, so the numbers show the pipeline and the protocol gap, not the paper's accuracy.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from edge_ad.data.mvtec import load_samples
from edge_ad.evaluate import rundir
from edge_ad.evaluate.inference import predict_samples
from edge_ad.evaluate.metrics import CategoryPredictions, evaluate_categories
from edge_ad.evaluate.runner import to_category_predictions
from edge_ad.models import create_model
from edge_ad.models.device import resolve_device
from edge_ad.train.options import resolve_config
from edge_ad.train.trainer import train

COLS = ("image_auroc", "pixel_auroc", "aupro")


def _train_and_predict(args: argparse.Namespace, data: Path, cats: list[str], iters: int, out: Path
                       ) -> tuple[dict[str, CategoryPredictions], float]:
    """Train one model on `cats`, return its test predictions per category and the training seconds."""
    with torch.device("meta"):
        defaults = create_model(args.model).default_train_config()
    cfg = resolve_config(defaults, None, {
        "model": args.model, "data": str(data), "out": str(out), "categories": cats, "iters": iters,
        "batch": args.batch, "pretrained": args.pretrained, "workers": 0, "device": args.device,
        "val_fraction": args.val_fraction, "log_every": max(1, iters // 4),
    })
    t0 = time.perf_counter()
    train(cfg, progress=False)
    seconds = time.perf_counter() - t0
    dev = resolve_device(args.device)
    model, _, _ = rundir.load_run(out, dev)
    samples = load_samples(data, cats, split="test")
    with torch.no_grad():
        preds = predict_samples(model, samples, batch_size=8, device=dev, with_masks=True, progress=False)
    return to_category_predictions(preds), seconds


def _fmt(v: float) -> str:
    return "  n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:5.1f}"


def table(reports: dict[str, dict[str, Any]]) -> str:
    """Markdown table: per category, mean, structural and logical rows; I-AUROC / P-AUROC / AUPRO per protocol."""
    protos = list(reports)
    head = "| row | " + " | ".join(f"{p} I / P / PRO" for p in protos) + " |"
    lines = [head, "|" + "---|" * (len(protos) + 1)]
    cats = list(next(iter(reports.values()))["categories"])
    rows: list[tuple[str, list[dict[str, float]]]] = [(c, [r["categories"][c] for r in reports.values()]) for c in cats]
    rows.append(("**mean**", [r["mean"] for r in reports.values()]))
    for kind in ("structural", "logical"):
        rows.append((f"{kind} defects", [r["defect_kinds"][kind] for r in reports.values()]))
    for name, vals in rows:
        lines.append(f"| {name} | " + " | ".join(" / ".join(_fmt(v.get(k)) for k in COLS) for v in vals) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ulsad-tiny")
    p.add_argument("--data", help="MVTec-layout dataset (default: generate a synthetic one)")
    p.add_argument("--categories", default="fabric,wood,screw_plate,pcb", help="comma-separated")
    p.add_argument("--per-category", type=int, default=24, help="synthetic train images per category")
    p.add_argument("--size", type=int, default=128, help="synthetic image side")
    p.add_argument("--iters", type=int, default=40, help="steps per per-category model (multi-class: x categories)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--device", default="auto")
    p.add_argument("--pretrained", action="store_true", help="pretrained backbone from the offline cache")
    p.add_argument("--out", help="work directory (default: a temporary one)")
    p.add_argument("--json", help="write the reports here")
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)

    cats = [c.strip() for c in args.categories.split(",") if c.strip()]
    work = Path(args.out or tempfile.mkdtemp(prefix="ulsad-protocols-"))
    data = Path(args.data) if args.data else work / "synth"
    if not args.data and not data.exists():
        from edge_ad.data.synth import generate

        generate(data, categories=cats, per_category=args.per_category, size=args.size, seed=0)

    per_cat: dict[str, CategoryPredictions] = {}
    t_per = 0.0
    for c in cats:
        preds, s = _train_and_predict(args, data, [c], args.iters, work / f"per-category-{c}")
        per_cat.update(preds)
        t_per += s
    multi, t_multi = _train_and_predict(args, data, cats, args.iters * len(cats), work / "multi-class")
    reports = {"per-category (paper)": evaluate_categories(per_cat),
               "multi-class (edge-ad)": evaluate_categories(multi)}

    backbone = "pretrained" if args.pretrained else "RANDOM-INIT (weak maps expected; not the paper's accuracy)"
    print(f"\n{args.model} on {data} ({', '.join(cats)}); backbone {backbone}")
    print(f"per-category: {len(cats)} models x {args.iters} iters ({t_per:.0f} s); "
          f"multi-class: 1 model x {args.iters * len(cats)} iters ({t_multi:.0f} s); batch {args.batch}\n")
    print(table(reports))
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "categories": cats, "iters": args.iters,
                                               "backbone": backbone, "reports": reports}, indent=2, default=float))


if __name__ == "__main__":
    main()
