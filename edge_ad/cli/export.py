"""`edge-ad export`: a trained run (or untrained weights, for speed tests) -> a verified model package."""

from __future__ import annotations

import argparse

HELP = "export a model to a self-describing package (ONNX + manifest), verified against PyTorch"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="registered model name, e.g. dinomaly-s (default: the run's)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--run", help="run directory from `edge-ad train` (weights, thresholds, data)")
    src.add_argument("--checkpoint", help="a model.safetensors file (thresholds.json must lie beside it)")
    p.add_argument("--out", help="package directory (default packages/<model>)")
    p.add_argument("--data", help="dataset for the parity images (default: the run's)")
    p.add_argument("--recipe", help="export recipe YAML (default export/<model>.yaml)")
    p.add_argument("--precision", choices=["fp32"], default="fp32", help="numeric precision of the package")
    p.add_argument("--force", action="store_true", help="replace an existing package directory")
    p.add_argument("--json", dest="json_out", help="write the export summary as JSON")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from edge_ad.evaluate.report import format_table
    from edge_ad.export.exporter import export_package
    from edge_ad.train.rundir import write_json

    pkg, s = export_package(model_name=args.model, run=args.run, checkpoint=args.checkpoint, out=args.out,
                            data=args.data, recipe_path=args.recipe, force=args.force)
    par = s["parity"]
    rows = [[s["model"], s["precision"], f"{s['onnx_mb']:.1f}", str(s["opset"]), str(s["nodes"]), s["input"],
             f"{par['max_abs_map_diff']:.2e}", f"{par['score_spearman']:.4f}", f"{s['seconds']:.1f}"]]
    print(format_table(rows, ["model", "precision", "MB", "opset", "nodes", "input", "max|Δmap|", "Spearman", "s"]))
    print(f"outputs: {s['outputs']}")
    if s["untrained"]:
        print("WARNING: UNTRAINED package (random weights): use it to measure speed only.")
    print(f"package: {pkg}  (next: edge-ad predict {pkg} IMAGE...  |  edge-ad bench {pkg})")
    if args.json_out:
        write_json(Path(args.json_out), s)
    return 0
