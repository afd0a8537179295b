"""`edge-ad eval`: the seven metrics per category and their mean for a trained run."""

from __future__ import annotations

import argparse
import json

from edge_ad.cli.common import add_json, comma_list, human_out, write_json_output

HELP = "evaluate a run on the test split: image/pixel AUROC, AP, F1max and AUPRO per category"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="run directory written by `edge-ad train`")
    p.add_argument("--data", help="dataset root (default: the one the run was trained on)")
    p.add_argument("--categories", type=comma_list, help="comma-separated subset (default: the run's categories)")
    add_json(p, "the metrics (the report's metrics.json)")
    p.add_argument("--out", help="report directory (default <run>/eval)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--overlays", type=int, default=4, help="overlay images per category (0 = none)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--protocol", choices=("edge-ad", "official"), default="edge-ad",
                   help="edge-ad: one consistent protocol for every model (default); official: the model family's "
                        "official resize, mask handling and metric variants, for numbers comparable with the paper")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from edge_ad.evaluate.report import format_table
    from edge_ad.evaluate.runner import evaluate_run

    cats = args.categories or None
    report = evaluate_run(args.run, data=args.data, categories=cats, out_dir=args.out, batch_size=args.batch,
                          device=args.device, overlays_per_category=args.overlays, progress=not args.no_progress,
                          protocol=args.protocol)
    keys = ["image_auroc", "image_ap", "image_f1max", "pixel_auroc", "pixel_ap", "pixel_f1max", "aupro"]
    def cell(v: float) -> str:
        return "-" if v != v else f"{100 * v:.1f}"

    rows = [[c] + [cell(m[k]) for k in keys] for c, m in report["categories"].items()]
    rows.append(["mean"] + [cell(report["mean"][k]) for k in keys])
    print(f"protocol: {report['protocol']['name']} ({report['protocol']['source']})", file=human_out(args))
    text = human_out(args)
    print(format_table(rows, ["category", "I-AUROC", "I-AP", "I-F1", "P-AUROC", "P-AP", "P-F1", "AUPRO"]), file=text)
    for note in report.get("notes", []):
        print(f"note: {note}", file=text)
    out = Path(args.out) if args.out else Path(args.run) / "eval"
    print(f"report: {out / 'metrics.md'}  overlays: {out / 'overlays'}", file=text)
    # the report's metrics.json is strict JSON (undefined metrics are null)
    write_json_output(args.json, json.loads((out / "metrics.json").read_text()))
    return 0
