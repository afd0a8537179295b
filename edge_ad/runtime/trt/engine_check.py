"""The TensorRT engine checked against ONNX Runtime on CPU (`edge-ad verify`, `edge-ad selftest`); the comparison
itself is `edge_ad.runtime.verify`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_ad.runtime.package import ModelPackage
from edge_ad.runtime.trt.engine_options import EngineOptions
from edge_ad.runtime.verify import DEFAULT_TOL, Comparison, compare, load_images, report, tolerance_for

__all__ = ["DEFAULT_TOL", "Comparison", "compare", "load_images", "verify_engine"]


def verify_engine(package: ModelPackage, precision: str | None = None, *, images: Path | None = None, n: int = 8,
                  seed: int = 0, tol: float | None = None, device: int = 0, fp16_fallback: bool = False,
                  engine: EngineOptions | None = None) -> dict[str, Any]:
    """Run the package's TensorRT engine (built/cached as needed) and ONNX Runtime CPU on the same images; returns
    {"passed", "failures", "engine", "reference", "threshold", "images": [{name, onnxruntime, tensorrt, agree}],
    "max_score_delta", "score_tol", "max_map_diff", "map_tol", "spearman"}. With no precision and no `engine`
    options, the engine `edge-ad build` recorded for this device is the one verified."""
    from dataclasses import replace

    from edge_ad.runtime.backends.onnxruntime import OnnxRuntimeBackend
    from edge_ad.runtime.backends.tensorrt import TensorRTBackend

    opts = engine or EngineOptions()
    if precision:
        opts = replace(opts, precision=precision)
    if fp16_fallback:
        opts = replace(opts, fp16_fallback=True)
    loaded = load_images(images, n, package.preprocess.resize, seed)
    batch = np.stack([package.preprocess.apply(img) for _, img in loaded])
    with TensorRTBackend(package, device=device, **opts.kwargs()) as trt_be:
        got = trt_be.run(batch)
        onnx_path = trt_be.record.onnx_path
        key = trt_be.record.key
    prec = key.precision  # what was built: the options given, or this device's recorded default
    tolerance = tolerance_for(prec, tol)
    ref_precision = "fp32" if key.typing == "weak-fp16" else prec
    ref_be = OnnxRuntimeBackend(package, providers="cpu", precision=ref_precision)
    try:
        ref = ref_be.run(batch)
    finally:
        ref_be.close()
    return report(package, "tensorrt", key.describe(), f"ONNX Runtime CPU on {onnx_path.name}", loaded, ref, got,
                  tolerance)
