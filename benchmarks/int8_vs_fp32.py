"""ONNX Runtime CPU latency of an fp32 package graph vs its explicit-Q/DQ INT8 graphs, in one process.

    .venv/bin/python benchmarks/int8_vs_fp32.py --model dinomaly-s --runs 10 --json out.json

Untrained weights (speed only): the INT8 graphs are calibrated on a few seeded synthetic images with the default
exclusions of calibration/<model>.yaml, so the figures measure the quantised GEMMs, not accuracy. "int8-cpu" is the
Q/DQ graph on fp32 (what CPU runtimes fuse into integer GEMMs), "int8-trt" the TensorRT graph (Q/DQ on fp16), which
ONNX Runtime's CPU provider runs with casts around every FP16 op: it is built for the GPU, not for this.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort


def _synthetic(n: int, hw: tuple[int, int]) -> list[np.ndarray]:
    """Seeded smooth-noise uint8 images, one per batch."""
    return [np.random.default_rng(i + 1).normal(128, 40, size=(1, *hw, 3)).clip(0, 255).astype(np.uint8)
            for i in range(n)]


def _time(sess: ort.InferenceSession, x: np.ndarray, runs: int, warmup: int) -> list[float]:
    name = sess.get_inputs()[0].name
    for _ in range(warmup):
        sess.run(None, {name: x})
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, {name: x})
        out.append((time.perf_counter() - t) * 1e3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="dinomaly-s")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--calib-images", type=int, default=4)
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = ONNX Runtime default)")
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args()

    from edge_ad.export.calibration import load_calibration_config
    from edge_ad.export.exporter import export_package
    from edge_ad.export.int8 import calibrate_scales, cpu_graph, tensorrt_graph
    from edge_ad.export.precision import fp16_policy
    from edge_ad.runtime.package import load_package

    with tempfile.TemporaryDirectory() as tmp:
        pkg = load_package(export_package(model_name=args.model, out=Path(tmp) / "pkg")[0])
        fp32 = onnx.load(str(pkg.onnx_path()))
        cfg = load_calibration_config(args.model)
        t0 = time.perf_counter()
        scales = calibrate_scales(fp32, _synthetic(args.calib_images, pkg.input_hw), input_name=pkg.input_name,
                                  method="minmax", exclude=cfg.exclude)
        graphs = {"fp32": fp32, "int8-cpu": cpu_graph(fp32, scales),
                  "int8-trt": tensorrt_graph(fp32, scales, fp16_policy(args.model))}
        quant_s = time.perf_counter() - t0
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.intra_op_num_threads = args.threads
        sessions = {k: ort.InferenceSession(g.SerializeToString(), so, providers=["CPUExecutionProvider"])
                    for k, g in graphs.items()}
        x = np.random.default_rng(0).integers(0, 256, size=(args.batch, *pkg.input_hw, 3), dtype=np.uint8)
        times: dict[str, list[float]] = {k: [] for k in sessions}
        for _ in range(2):  # interleave to share thermal/background noise
            for k, s in sessions.items():
                times[k] += _time(s, x, args.runs // 2 or 1, args.warmup)
        outs = {k: s.run(None, {pkg.input_name: x}) for k, s in sessions.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "model": args.model, "input": [args.batch, *pkg.input_hw, 3], "backend": "onnxruntime-cpu",
        "onnxruntime": ort.__version__, "cpu": platform.processor() or platform.machine(),
        "threads": args.threads or "default", "runs": len(times["fp32"]),
        "median_ms": med, "min_ms": {k: min(v) for k, v in times.items()},
        "speedup_int8_cpu": med["fp32"] / med["int8-cpu"], "quantized_gemms": len(scales["nodes"]),
        "quantize_seconds": quant_s,
        "max_abs_map_diff_untrained": {k: float(np.max(np.abs(outs["fp32"][0] - outs[k][0])))
                                       for k in ("int8-cpu", "int8-trt")},
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
