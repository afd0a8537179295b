"""edge-ad's inference paths next to its peers, in one process, interleaved, on the same input and package.

    python benchmarks/peers.py --package packages/dinomaly-s --int8 packages/dinomaly-s-int8 --threads 1 \
        --runs 6 --json peers.json

Paths (each skipped with a note when its library is missing): edge-ad ONNX Runtime fp32 / int8 (CPU graph),
edge-ad OpenVINO f32 / bf16 / int8, raw OpenVINO on the same fp32 ONNX (what a user without edge-ad would run),
edge-ad's `auto` choice, PyTorch eager of the same model, and anomalib's Dinomaly eager when anomalib is installed.
Inference only, batch 1, on one preprocessed crop; the median of `--runs` interleaved rounds (each round runs every
path once, so drifting clocks or a busy neighbour affect all paths alike). Untrained weights are fine: latency does
not depend on the weight values. Without --package an untrained fp32 package of --model is exported first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def _bf16_copy(fp32: Path, out: Path) -> Path:
    """The fp32 package re-declared as bf16 (same graph; for speed measurement only, no gate)."""
    from edge_ad.runtime.package import load_package, write_package

    pkg = load_package(fp32)
    man = json.loads((pkg.root / "manifest.json").read_text())
    man["precision"] = "bf16"
    man["onnx"]["variants"] = {"fp32": man["onnx"]["file"]}
    return write_package(out, {man["onnx"]["file"]: pkg.onnx_path()}, man)


def _paths(args: argparse.Namespace, fp32: Path, tmp: Path) -> dict[str, Callable[[], Any] | str]:
    """name -> a zero-argument callable running one inference, or a string saying why the path is skipped."""
    from edge_ad.runtime.backends import create_backend
    from edge_ad.runtime.package import load_package

    pkg = load_package(fp32)
    crop = pkg.preprocess.apply(np.random.default_rng(0).integers(0, 256, (1080, 1440, 3), dtype=np.uint8))[None]
    t = args.threads
    out: dict[str, Callable[[], Any] | str] = {}

    def backend(p: Path, name: str) -> Callable[[], Any]:
        be = create_backend(load_package(p), name, threads=t)
        return lambda: be.run(crop)

    out["edge-ad ONNX Runtime fp32"] = backend(fp32, "onnxruntime")
    int8 = Path(args.int8) if args.int8 else None
    out["edge-ad ONNX Runtime int8"] = backend(int8, "onnxruntime") if int8 else "no --int8 package"
    bf16: Path | None = None
    try:
        import openvino as ov

        from edge_ad.runtime.backends.openvino import cpu_has_bf16

        out["edge-ad OpenVINO f32"] = backend(fp32, "openvino")
        bf16 = _bf16_copy(fp32, tmp / "bf16") if cpu_has_bf16(ov.Core()) else None
        out["edge-ad OpenVINO bf16"] = backend(bf16, "openvino") if bf16 else "this CPU has no native bf16"
        out["edge-ad OpenVINO int8"] = backend(int8, "openvino") if int8 else "no --int8 package"
        core = ov.Core()  # OpenVINO as a user would call it, with its own defaults (bf16 on AMX CPUs)
        raw = core.compile_model(str(pkg.onnx_path()), "CPU", {"INFERENCE_NUM_THREADS": t,
                                                               "PERFORMANCE_HINT": "LATENCY"})
        req = raw.create_infer_request()
        out["OpenVINO raw (its defaults)"] = lambda: req.infer({pkg.input_name: crop})
    except ImportError:
        for k in (
            "edge-ad OpenVINO f32",
            "edge-ad OpenVINO bf16",
            "edge-ad OpenVINO int8",
            "OpenVINO raw (its defaults)",
        ):
            out[k] = "openvino not installed"
    from edge_ad.runtime import Detector

    for candidate in (fp32, bf16, int8):  # what `backend: auto` picks for each package of the model
        if candidate:
            auto = Detector.load(candidate, threads=t)
            label = f"edge-ad auto, {load_package(candidate).precision} package ({auto.backend.name})"
            out[label] = lambda a=auto: a.backend.run(crop)
    try:
        import torch

        from edge_ad.export.onnx_export import PackagedModel
        from edge_ad.models.registry import create_model

        torch.set_num_threads(t)
        model = create_model(args.model, pretrained=False, state_dict_follows=True).eval()
        wrapped = PackagedModel(model, model.preprocess).eval()
        x = torch.from_numpy(crop)

        def eager() -> Any:
            with torch.inference_mode():
                return wrapped(x)

        out["PyTorch eager (edge-ad model)"] = eager
    except ImportError:
        out["PyTorch eager (edge-ad model)"] = "torch not installed"
    out["anomalib Dinomaly eager"] = _anomalib(args, crop) if args.model.startswith("dinomaly") else "not Dinomaly"
    return out


def _anomalib(args: argparse.Namespace, crop: np.ndarray) -> Callable[[], Any] | str:
    try:
        import torch
        from anomalib.models import Dinomaly
    except ImportError:
        return "anomalib not installed"
    size = {"dinomaly-s": "dinov2reg_vit_small_14", "dinomaly-b": "dinov2reg_vit_base_14",
            "dinomaly-l": "dinov2reg_vit_large_14"}.get(args.model)
    if size is None:
        return f"no anomalib counterpart of {args.model}"
    try:
        model = Dinomaly(encoder_name=size).model.eval()
    except Exception as e:  # anomalib downloads its encoder: offline machines cannot build it
        return f"anomalib could not build its model ({type(e).__name__}: {str(e)[:80]})"
    x = torch.from_numpy(crop).permute(0, 3, 1, 2).float() / 255.0

    def run() -> Any:
        with torch.inference_mode():
            return model(x)

    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="dinomaly-s")
    ap.add_argument("--package", help="fp32 package (default: export an untrained one of --model)")
    ap.add_argument("--int8", help="int8 package of the same model (edge-ad export --precision int8)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        if args.package:
            fp32 = Path(args.package)
        else:
            from edge_ad.export.exporter import export_package

            fp32, _ = export_package(model_name=args.model, out=tmp / "fp32")
        paths = _paths(args, fp32, tmp)
        live = {k: v for k, v in paths.items() if callable(v)}
        times: dict[str, list[float]] = {k: [] for k in live}
        for r in range(args.warmup + args.runs):
            for name, fn in live.items():
                t0 = time.perf_counter()
                fn()
                if r >= args.warmup:
                    times[name].append((time.perf_counter() - t0) * 1e3)
    base = float(np.median(times["edge-ad ONNX Runtime fp32"]))
    rows = []
    print(f"{args.model}, batch 1, {args.threads} thread(s), median of {args.runs} interleaved runs")
    print(f"{'path':44s} {'ms':>9s} {'vs ORT fp32':>12s}")
    for name, v in paths.items():
        if callable(v):
            ms = float(np.median(times[name]))
            rows.append({"path": name, "ms": round(ms, 1), "speedup": round(base / ms, 2)})
            print(f"{name:44s} {ms:9.1f} {base / ms:11.2f}x")
        else:
            rows.append({"path": name, "skipped": v})
            print(f"{name:44s} {'-':>9s} {'':>12s}  ({v})")
    if args.json_out:
        info = {"model": args.model, "threads": args.threads, "runs": args.runs, "cpu": platform.processor(),
                "machine": platform.machine(), "cpus": os.cpu_count()}
        Path(args.json_out).write_text(json.dumps({"info": info, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
