"""Which registration for `--align`: ECC (what edge-ad runs) against ORB and SIFT features with RANSAC (AKAZE is
not in OpenCV 5's main modules), on
line-like frames with a known pose, one thread, in one interleaved run.

    .venv/bin/python benchmarks/align_methods.py --frames 40 --json align.json

Accuracy is the largest error at the four corners of the ROI box after composing the estimate with the true pose
(px at 1600x1200); time is per frame, grey conversion included.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from edge_ad.data.synth_line import _rng, make_frame, make_posed_frame, roi_mask
from edge_ad.runtime.geometry import AlignSpec, Geometry, Reference


def _features(kind: str, ref_grey: np.ndarray, mask: np.ndarray, long_side: int):  # type: ignore[no-untyped-def]
    det = cv2.ORB_create(1500) if kind == "orb" else cv2.SIFT_create(1500)
    s = long_side / max(ref_grey.shape)
    small = cv2.resize(ref_grey, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    msmall = cv2.resize(mask, small.shape[::-1], interpolation=cv2.INTER_NEAREST)
    kp, des = det.detectAndCompute(small, msmall)
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING if kind == "orb" else cv2.NORM_L2, crossCheck=True)

    def locate(grey: np.ndarray) -> np.ndarray:
        g = cv2.resize(grey, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        kp2, des2 = det.detectAndCompute(g, None)
        matches = matcher.match(des2, des)
        src = np.float32([kp2[m.queryIdx].pt for m in matches])
        dst = np.float32([kp[m.trainIdx].pt for m in matches])
        m, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=2.0)
        m = m.astype(np.float64)
        m[:, 2] /= s
        return m

    return locate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    cv2.setNumThreads(1)
    hw = (1200, 1600)
    ref_img, _ = make_frame("plate_a", "good", hw, _rng(0, "reference"), nominal=True)
    roi = roi_mask("plate_a", hw)
    ref = Reference("plate_a", ref_img, roi)
    geo = Geometry({"plate_a": ref}, AlignSpec())
    grey_ref = cv2.cvtColor(ref_img, cv2.COLOR_BGR2GRAY)
    mask = cv2.dilate((roi > 0).astype(np.uint8) * 255, np.ones((15, 15), np.uint8))
    methods = {
        "ecc (edge-ad)": lambda img: geo.locate(img).transform,
        "orb+ransac": (lambda f: lambda img: f(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)))(
            _features("orb", grey_ref, mask, 800)),
        "sift+ransac": (lambda f: lambda img: f(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)))(
            _features("sift", grey_ref, mask, 800)),
    }
    x, y, w, h = ref.box
    corners = np.array([[x, y, 1], [x + w, y, 1], [x, y + h, 1], [x + w, y + h, 1]], float).T
    frames = [make_posed_frame("plate_a", "good", hw, _rng(1, "frame", i)) for i in range(a.frames)]
    err: dict[str, list[float]] = {k: [] for k in methods}
    ms: dict[str, list[float]] = {k: [] for k in methods}
    for img, _, pose in frames:
        for name, fn in methods.items():
            t = time.perf_counter()
            try:
                m = fn(img)
            except Exception:
                err[name].append(float("inf"))
                continue
            ms[name].append((time.perf_counter() - t) * 1e3)
            full = np.vstack([m, [0, 0, 1]]) @ np.vstack([pose, [0, 0, 1]])
            err[name].append(float(np.abs((full @ corners)[:2] - corners[:2]).max()))
    rows = [{"method": k, "median_ms": round(statistics.median(ms[k]), 2), "p90_ms": round(
        float(np.percentile(ms[k], 90)), 2), "median_err_px": round(statistics.median(err[k]), 2),
        "max_err_px": round(max(err[k]), 2), "failures": sum(not np.isfinite(e) for e in err[k])} for k in methods]
    for r in rows:
        print(r)
    if a.json:
        Path(a.json).write_text(json.dumps({"frames": a.frames, "size": "1600x1200", "threads": 1, "rows": rows},
                                           indent=2) + "\n")


if __name__ == "__main__":
    main()
