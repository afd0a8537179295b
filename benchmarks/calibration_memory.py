"""Peak memory and time of INT8 calibration against the number of calibration images (bounded calibration).

    .venv/bin/python benchmarks/calibration_memory.py --model dinomaly-s --images 20,300 --json calib_mem.json

One fp32 package (random init: memory and time do not depend on the weights) and one synthetic dataset with enough
good training images are built first; then, for each image count, a fresh child process runs what
`edge-ad export --precision int8` runs for calibration (the model's calibration manifest with `num_images`
overridden: image selection, package preprocessing, `calibrate_scales`) and reports its own peak RSS (ru_maxrss).
Flat peak RSS across image counts is the claim under test; `--package`/`--data` reuse existing ones.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

_CHILD = r"""
import json, resource, sys, time
from dataclasses import replace
import onnx
from edge_ad.export.calibration import image_batches, load_calibration_config, select_images
from edge_ad.export.int8 import calibrate_scales
from edge_ad.runtime.package import load_package

pkg_dir, data, n, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
pkg = load_package(pkg_dir)
cfg = replace(load_calibration_config(pkg.manifest["model"]["name"]), num_images=n)
paths = select_images(cfg, data)
model = onnx.load(str(pkg.onnx_path()))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
doc = calibrate_scales(model, image_batches(paths, pkg.preprocess, progress=False), input_name=pkg.input_name,
                       method=cfg.method, percentile=cfg.percentile, exclude=cfg.exclude,
                       activation_gemms=cfg.activation_gemms)
print(json.dumps({"images": len(paths), "seconds": time.perf_counter() - t, "nodes": len(doc["nodes"]),
                  "method": cfg.method, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_before_mb": base / 1024}))
"""


def _run(code: str, *args: str, threads: int) -> str:
    env = {"OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                       env={**os.environ, **env}, check=False)
    if r.returncode:
        sys.exit(f"child failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return r.stdout.strip().splitlines()[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="dinomaly-s")
    ap.add_argument("--images", default="20,300", help="comma-separated calibration image counts")
    ap.add_argument("--package", help="an existing fp32 package (default: export --model, random init)")
    ap.add_argument("--data", help="an existing MVTec-layout dataset (default: synthetic, enough train images)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args()
    counts = [int(c) for c in args.images.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        pkg = args.package or str(Path(tmp) / "pkg")
        if not args.package:
            _run("import sys, logging; logging.disable(logging.WARNING)\n"
                 "from edge_ad.export.exporter import export_package\n"
                 "export_package(model_name=sys.argv[1], out=sys.argv[2]); print('ok')",
                 args.model, pkg, threads=args.threads)
        data = args.data or str(Path(tmp) / "data")
        if not args.data:  # synth's six categories, round-robin sampling: ceil(max / 6) train images each
            _run("import sys\nfrom edge_ad.data.synth import generate\n"
                 "generate(sys.argv[1], per_category=int(sys.argv[2])); print('ok')",
                 data, str(math.ceil(max(counts) / 6)), threads=args.threads)
        rows: list[dict[str, Any]] = [json.loads(_run(_CHILD, pkg, data, str(n), str(args.threads),
                                                      threads=args.threads)) for n in counts]
    print("| images | peak RSS MB | seconds | s/image |")
    print("|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['images']} | {r['peak_rss_mb']:,.0f} | {r['seconds']:.1f} | {r['seconds'] / r['images']:.2f} |")
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        slope = (b["peak_rss_mb"] - a["peak_rss_mb"]) / max(1, b["images"] - a["images"])
        print(f"growth: {slope:.2f} MB per extra image ({a['images']} -> {b['images']} images)")
    result = {"model": args.model, "threads": args.threads, "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
