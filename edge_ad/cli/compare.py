"""`edge-ad compare NEW OLD --data DIR`: judge two packages on the same labelled images, the gate before a new
package becomes a station's shadow.

Both packages run their CPU graph (ONNX Runtime, as the export gate does) over the test split of DIR (e.g. a
revision from `edge-ad dataset from-station`): per package the false-reject rate on the good images and the recall
on the anomalous ones, each at the package's own production threshold, and the image AUROC. NEW passes when its
false-reject rate is at most OLD's + --max-frr-increase and its recall at least OLD's - --max-recall-drop.
Exit status 0 passed, 3 refused (like an accuracy gate), 2 bad input.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

HELP = "compare two packages on the same labelled images (false-reject rate, recall, AUROC): the gate before a shadow"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from edge_ad.cli.common import add_json, add_trusted_key

    p.add_argument("new", help="the candidate package")
    p.add_argument("old", help="the package in production")
    p.add_argument("--data", required=True, help="labelled images in the MVTec layout (its test split is used)")
    p.add_argument("--max-frr-increase", type=float, default=0.01,
                   help="largest allowed increase of the false-reject rate (default 0.01)")
    p.add_argument("--max-recall-drop", type=float, default=0.0,
                   help="largest allowed drop of the recall on anomalous images (default 0: no NG may be missed "
                        "that the old package caught)")
    add_json(p, "both packages' figures and the verdict")
    add_trusted_key(p)


def judge_package(pkg: Any, samples: list[Any]) -> dict[str, Any]:
    """False-reject rate, recall and AUROC of one package on labelled samples, at its own threshold."""
    import numpy as np

    from edge_ad.evaluate.metrics import auroc
    from edge_ad.export.gate import run_package

    _maps, scores = run_package(pkg, samples, progress=False)
    labels = np.array([s.label for s in samples])
    thr = float(pkg.thresholds["image"]["value"])
    flagged = scores > thr
    good, bad = labels == 0, labels == 1
    return {"package": str(pkg.root), "model": pkg.name, "digest": pkg.digest, "threshold": thr,
            "n_good": int(good.sum()), "n_anomalous": int(bad.sum()),
            "false_reject_rate": float(flagged[good].mean()) if good.any() else None,
            "recall": float(flagged[bad].mean()) if bad.any() else None,
            "auroc": auroc(labels, scores) if good.any() and bad.any() else None}


def run(args: argparse.Namespace) -> int:
    from edge_ad.cli.common import human_out, write_json_output
    from edge_ad.data.mvtec import load_samples
    from edge_ad.errors import ConfigError
    from edge_ad.export.gate import run_package  # noqa: F401 - the lab side first: a line install says what to add
    from edge_ad.runtime.package import load_package

    for name in ("max_frr_increase", "max_recall_drop"):
        v = getattr(args, name)
        if not (math.isfinite(v) and 0.0 <= v <= 1.0):
            raise ConfigError(f"--{name.replace('_', '-')}: expected a number in [0, 1], got {v}")
    new, old = (load_package(p, trusted_keys=args.trusted_keys) for p in (args.new, args.old))
    if new.input_hw != old.input_hw and (new.geometry() is None) != (old.geometry() is None):
        raise ConfigError(f"{args.new} and {args.old}: one inspects whole images, the other tiles frames: compare "
                          "packages of the same station set-up")
    samples = load_samples(args.data, None, split="test")
    if not samples:
        raise ConfigError(f"{args.data}: no test images")
    figures = {"new": judge_package(new, samples), "old": judge_package(old, samples)}
    n, o = figures["new"], figures["old"]
    failures = []
    if n["false_reject_rate"] is not None and o["false_reject_rate"] is not None and \
            n["false_reject_rate"] > o["false_reject_rate"] + args.max_frr_increase + 1e-12:
        failures.append(f"false-reject rate {o['false_reject_rate']:.3f} -> {n['false_reject_rate']:.3f} "
                        f"(allowed +{args.max_frr_increase})")
    if n["recall"] is not None and o["recall"] is not None and n["recall"] < o["recall"] - args.max_recall_drop - 1e-12:
        failures.append(f"recall on anomalous images {o['recall']:.3f} -> {n['recall']:.3f} "
                        f"(allowed -{args.max_recall_drop})")
    report = {**figures, "passed": not failures, "failures": failures, "data": str(args.data)}
    out = human_out(args)

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.4f}"

    print(f"{'':6s} {'model':16s} {'digest':12s} {'FRR':>8s} {'recall':>8s} {'AUROC':>8s}  on {len(samples)} images",
          file=out)
    for key in ("old", "new"):
        f = figures[key]
        print(f"{key:6s} {f['model'][:16]:16s} {f['digest'][:12]:12s} {fmt(f['false_reject_rate']):>8s} "
              f"{fmt(f['recall']):>8s} {fmt(f['auroc']):>8s}", file=out)
    print("PASSED: NEW may become the shadow" if not failures else "REFUSED: " + "; ".join(failures), file=out)
    write_json_output(args.json, report)
    return 0 if not failures else 3
