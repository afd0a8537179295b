"""Line-like frames: dinomaly-tiny trained with --align --roi --tile against the same model on whole resized frames.

    .venv/bin/python benchmarks/geometry_line.py --out /tmp/geo_bench --iters 300 --json geo.json

Generates `edge-ad synth --line` frames (1600x1200 by default: pose jitter +-40 px / +-3 deg, a label with a changing
serial number, 20-70 px scratches, pits and stains), trains both ways with the same seed, iterations and batch,
and evaluates both with `edge-ad eval` (the geometry run in its ROI box, the whole-frame run in its resized crop:
each in the space its runtime inspects). Random-init encoder (nothing is downloaded): absolute numbers are low.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from edge_ad.cli.main import main
from edge_ad.data.synth_line import generate_line


def _run(argv: list[str]) -> float:
    t = time.perf_counter()
    rc = main(argv)
    if rc != 0:
        raise SystemExit(f"failed ({rc}): {' '.join(argv)}")
    return time.perf_counter() - t


def run(args: argparse.Namespace) -> dict[str, object]:
    out = Path(args.out)
    data = out / "data"
    if not (data / "synth.json").is_file():
        generate_line(data, per_category=args.per_category, size=(args.height, args.width), seed=args.seed,
                      force=True)
    common = ["--model", "dinomaly-tiny", "--data", str(data), "--iters", str(args.iters), "--batch",
              str(args.batch), "--no-pretrained", "--workers", "0", "--no-progress", "--seed", str(args.seed)]
    report: dict[str, object] = {"frames": f"{args.width}x{args.height}", "iters": args.iters, "batch": args.batch,
                                 "threads": os.environ.get("OMP_NUM_THREADS")}
    for name, extra in (("whole_frame", []),
                        ("align_roi_tile", ["--align", str(data), "--roi", str(data), "--tile", str(args.tile)])):
        run_dir = out / name
        t_train = _run(["train", *common, "--out", str(run_dir), *extra]) if not (run_dir / "thresholds.json"
                                                                                 ).is_file() else None
        t_eval = _run(["eval", "--run", str(run_dir), "--no-progress", "--overlays", "0", "--json",
                       str(out / f"{name}.json")])
        metrics = json.loads((out / f"{name}.json").read_text())["mean"]
        report[name] = {"metrics": metrics, "train_s": t_train, "eval_s": t_eval}
    return report


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tile", type=int, default=320)
    ap.add_argument("--per-category", type=int, default=30)
    ap.add_argument("--width", type=int, default=1600)
    ap.add_argument("--height", type=int, default=1200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    rep = run(a)
    text = json.dumps(rep, indent=2)
    print(text)
    if a.json:
        Path(a.json).write_text(text + "\n")
