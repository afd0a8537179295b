"""PyTorch eager CPU vs ONNX Runtime CPU latency of one model, and the runtime's end-to-end overhead.

Measured in one process, on the same inputs, so the figures are comparable:

    python benchmarks/torch_vs_ort.py --model dinomaly-s --iters 20 --json bench_torch_vs_ort.json

Untrained (random-init) weights are fine: latency does not depend on the weight values.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def percentiles(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs)
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)), "p99": float(np.percentile(a, 99)),
            "mean": float(a.mean())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="dinomaly-s")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from edge_ad.export.exporter import export_package
    from edge_ad.export.onnx_export import PackagedModel
    from edge_ad.runtime import Detector

    with tempfile.TemporaryDirectory() as tmp:
        pkg, summary = export_package(model_name=args.model, out=Path(tmp) / "pkg")
        det = Detector.load(pkg, backend="onnxruntime", threads=args.threads)
        from edge_ad.models.registry import create_model

        model = create_model(args.model, pretrained=False).eval()
        wrapped = PackagedModel(model, model.preprocess).eval()
        h, w = model.preprocess.crop
        rng = np.random.default_rng(0)
        frame = rng.integers(0, 256, size=(1080, 1440, 3), dtype=np.uint8)  # a typical camera frame
        crop = model.preprocess.apply(frame)[None]

        # interleaved, so drifting CPU clocks or neighbours affect all three alike
        t_torch, t_ort, t_e2e, t_over = [], [], [], []
        with torch.inference_mode():
            for i in range(args.warmup + args.iters):
                t0 = time.perf_counter()
                wrapped(torch.from_numpy(crop))
                t1 = time.perf_counter()
                det.backend.run(crop)
                t2 = time.perf_counter()
                r = det.predict(frame)
                t3 = time.perf_counter()
                if i >= args.warmup:
                    t_torch.append(1e3 * (t1 - t0))
                    t_ort.append(1e3 * (t2 - t1))
                    t_e2e.append(1e3 * (t3 - t2))
                    t_over.append(r.timings["total"] - r.timings["infer"])  # same call: pre + post only
    res = {
        "model": args.model,
        "input": [h, w],
        "note": "runtime_overhead_ms = Detector total - infer within the same predict() call (preprocess of the "
        "camera-sized frame + postprocess to source resolution)",
        "frame": list(frame.shape),
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "onnx_nodes": summary["nodes"],
        "torch_eager_ms": percentiles(t_torch),
        "ort_infer_ms": percentiles(t_ort),
        "runtime_end_to_end_ms": percentiles(t_e2e),
        "runtime_overhead_ms": percentiles(t_over),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps(res, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
