"""Cost of the three resize methods a package can name, on the line-side (torch-free) path.

    python benchmarks/resize_methods.py [--repeat 20] [--threads 1] [--no-pillow]

Times `Preprocess.apply` (decode excluded) for typical camera frames -> model inputs: "area-down/linear-up"
(edge-ad's protocol), "linear" (cv2.INTER_LINEAR; official DualAD/ULSAD) and "pil-bilinear" (Pillow-exact numpy;
official Dinomaly/MambaAD). Prints median milliseconds per frame.
"""

import argparse
import statistics
import time

import cv2
import numpy as np

from edge_ad.runtime.preprocess import INTERPOLATIONS, Preprocess

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--repeat", type=int, default=20)
ap.add_argument("--threads", type=int, default=1, help="OpenCV threads")
ap.add_argument("--no-pillow", action="store_true", help="time pil-bilinear's numpy path (a runtime without Pillow)")
args = ap.parse_args()
if args.no_pillow:
    from edge_ad.runtime import resample

    resample._PIL = False
cv2.setNumThreads(args.threads)

CASES = [((1024, 1024), (448, 392)), ((1024, 1024), (256, 256)), ((1944, 2592), (448, 392)), ((1200, 1920), (256, 256))]
rng = np.random.default_rng(0)
print(f"| frame (h x w) | model input (resize -> crop) | {' | '.join(INTERPOLATIONS)} |")
print("|---|---|" + "---:|" * len(INTERPOLATIONS))
for (h, w), (r, c) in CASES:
    frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    row = []
    for method in INTERPOLATIONS:
        pre = Preprocess(resize=(r, r), crop=(c, c), interpolation=method)
        pre.apply(frame)
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            pre.apply(frame)
            times.append(time.perf_counter() - t)
        row.append(f"{1e3 * statistics.median(times):.1f}")
    print(f"| {h} x {w} | {r} -> {c} | {' | '.join(row)} |")
