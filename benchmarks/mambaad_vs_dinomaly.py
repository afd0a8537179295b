"""ONNX Runtime CPU latency and peak memory of `mambaad` (256x256) next to `dinomaly-s`, measured in one run,
plus the exported graphs' node counts.

    python benchmarks/mambaad_vs_dinomaly.py --threads 2 --iters 5 --json bench_mambaad.json

Each model is exported with the generic exporter (`edge_ad.export.onnx_export.export_onnx`: the graph
`edge-ad export` writes, uint8 NHWC input, opset 17) in a child process, then timed in a fresh child that imports
only numpy and onnxruntime, so its peak RSS (ru_maxrss) is the session's own footprint plus a small baseline
(reported separately). Batch 1, random uint8 images; random-init weights (latency does not depend on them).
Dinomaly's input side must be a multiple of 14: `dinomaly-s` runs at its paper size 392 and, with
`--dinomaly-crops 392,252`, also at 252 (18x18 tokens), the nearest size to 256.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _export(name: str, crop: int | None, out: str) -> dict[str, Any]:
    import logging

    logging.disable(logging.WARNING)  # the random-init warning is expected here
    import torch

    from edge_ad.export.graph_check import op_histogram
    from edge_ad.export.onnx_export import export_onnx
    from edge_ad.models import create_model

    torch.manual_seed(0)
    kw: dict[str, Any] = {"crop": crop} if crop else {}
    model = create_model(name, **kw).eval()
    t0 = time.perf_counter()
    proto = export_onnx(model, opset=17, dynamic_batch=True)
    export_s = time.perf_counter() - t0
    Path(out).write_bytes(proto.SerializeToString())
    hist = op_histogram(proto)
    return {
        "model": name, "input": list(model.preprocess.crop), "export_s": export_s,
        "onnx_mb": Path(out).stat().st_size / 2**20, "nodes": hist["nodes"],
        "nodes_without_constant": hist["nodes"] - hist["ops"].get("Constant", 0), "ops": hist["ops"],
        "params": sum(p.numel() for p in model.parameters()),
    }


def _run(onnx_path: str, threads: int, warmup: int, iters: int) -> dict[str, Any]:
    import numpy as np
    import onnxruntime as ort  # type: ignore[import-untyped]

    base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    t0 = time.perf_counter()
    sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    init_s = time.perf_counter() - t0
    inp = sess.get_inputs()[0]
    _, h, w, _ = inp.shape
    x = np.random.default_rng(0).integers(0, 256, size=(1, h, w, 3), dtype=np.uint8)
    times = []
    for i in range(warmup + iters):
        t0 = time.perf_counter()
        sess.run(None, {inp.name: x})
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1000)
    a = np.asarray(times)
    return {"threads": threads, "session_init_s": init_s, "latency_ms_p50": float(np.median(a)),
            "latency_ms_mean": float(a.mean()), "latency_ms_min": float(a.min()), "iters": iters,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "baseline_rss_mb": base_mb}


def _child(args: list[str]) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--dinomaly-crops", default="392", help="comma-separated dinomaly-s input sides (multiples of 14)")
    ap.add_argument("--json", dest="json_out")
    ap.add_argument("--_export", nargs=3, metavar=("MODEL", "CROP", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--_run", metavar="ONNX", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._export:
        name, crop, out = args._export
        print(json.dumps(_export(name, int(crop) or None, out)))
        return 0
    if args._run:
        print(json.dumps(_run(args._run, args.threads, args.warmup, args.iters)))
        return 0

    runs = [("mambaad", 0)] + [("dinomaly-s", int(c)) for c in args.dinomaly_crops.split(",") if c]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, crop in runs:
            path = str(Path(tmp) / f"{name}-{crop}.onnx")
            info = _child(["--_export", name, str(crop), path])
            info.update(_child(["--_run", path, "--threads", str(args.threads), "--iters", str(args.iters),
                                "--warmup", str(args.warmup)]))
            results.append(info)
            print(f"{name:11s} {info['input'][0]}x{info['input'][1]}: ORT CPU {args.threads} thr "
                  f"p50 {info['latency_ms_p50']:.0f} ms (min {info['latency_ms_min']:.0f}), "
                  f"peak RSS {info['peak_rss_mb']:.0f} MB (baseline {info['baseline_rss_mb']:.0f}), "
                  f"nodes {info['nodes']} ({info['nodes_without_constant']} without Constant), "
                  f"export {info['export_s']:.0f} s, session init {info['session_init_s']:.1f} s", flush=True)
    report = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
              "command": " ".join(sys.argv), "results": results}
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
