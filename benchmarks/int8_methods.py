"""INT8 calibration methods side by side on one trained run: the accuracy gate's worst per-category image-AUROC drop.

    .venv/bin/python benchmarks/int8_methods.py --run demo_out/run --json methods.json

Exports the run's fp32 package once, then converts it with each method (budget opened so that every result is
reported, nothing refused) and prints the worst drop and whether the default budget (0.005) would have passed.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

from edge_ad.export.exporter import export_package
from edge_ad.export.precision import convert_package

METHODS = ("percentile", "minmax", "entropy")
DEFAULT_MAX_DROP = 0.005


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="run directory from edge-ad train")
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        fp32, _ = export_package(run=args.run, out=Path(tmp) / "fp32")
        for method in METHODS:
            _, r = convert_package(fp32, "int8", Path(tmp) / method, method=method, max_drop=1.0, min_agreement=0.0,
                                   progress=False)
            drops = {c: v["image_auroc"]["drop"] for c, v in r["gate"]["categories"].items() if v.get("image_auroc")}
            worst = max(drops, key=lambda c: drops[c])
            out[method] = {"worst_drop": drops[worst], "worst_category": worst, "drops": drops,
                           "passes_default_budget": drops[worst] <= DEFAULT_MAX_DROP,
                           "spearman": r["gate"]["overall"]["score_spearman"]}
            print(f"{method:10s} worst image-AUROC drop {drops[worst]:+.4f} ({worst}), "
                  f"{'passes' if drops[worst] <= DEFAULT_MAX_DROP else 'fails'} the 0.005 budget", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
