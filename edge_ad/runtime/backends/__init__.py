"""Pluggable inference backends. `create_backend` resolves "auto" | "onnxruntime" | "tensorrt" | "openvino".

"auto" takes the fastest engine the machine has: TensorRT on an NVIDIA GPU, else OpenVINO when it is installed
(x86 line PCs: 1.2x ONNX Runtime in f32, 2-3x in bf16/int8, see docs/performance.md), else ONNX Runtime. Backend
modules are imported lazily, so a machine without TensorRT or OpenVINO never pays their import time.
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType
from typing import Any

from edge_ad.errors import ConfigError
from edge_ad.runtime.backends.base import Backend
from edge_ad.runtime.package import ModelPackage

log = logging.getLogger(__name__)

BACKENDS = ("auto", "onnxruntime", "tensorrt", "openvino")

__all__ = ["BACKENDS", "Backend", "create_backend"]


def _tensorrt_module() -> ModuleType:
    from edge_ad.runtime.trt import tensorrt_available

    if not tensorrt_available():  # also false for a stubs-only `tensorrt` (tensorrt-stubs)
        raise ConfigError("backend 'tensorrt': the tensorrt Python package is not installed on this machine; "
                          "install it (JetPack 6: apt install python3-libnvinfer and pip install 'edge-ad[jetson]' "
                          "in a --system-site-packages venv; x86 servers: pip install 'edge-ad[cuda]') or use "
                          "backend='onnxruntime'")
    try:
        return importlib.import_module("edge_ad.runtime.backends.tensorrt")
    except ModuleNotFoundError as e:
        if e.name == "edge_ad.runtime.backends.tensorrt":
            raise ConfigError("backend 'tensorrt': this edge-ad build has no TensorRT backend; "
                              "use backend='onnxruntime'") from e
        raise ConfigError(f"backend 'tensorrt': import failed: {e}") from e


def create_backend(package: ModelPackage, backend: str = "auto", *, device: int | None = None,
                   providers: str | list[str] | None = None, threads: int | None = None,
                   **trt_options: Any) -> Backend:
    """Open `backend` for `package`.

    "auto" picks TensorRT when the tensorrt package imports and its backend reports a usable GPU, else OpenVINO when
    it is installed (and `providers`, an ONNX Runtime choice, is not given), else ONNX Runtime (whose own provider
    choice prefers TensorRT EP > CUDA EP > CPU). `threads` applies to ONNX Runtime and OpenVINO, `providers` to
    ONNX Runtime; `trt_options` (precision, zero_copy, batch, workspace_mb, ...) to TensorRT, or (hint, cache) to
    OpenVINO.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend: expected one of {list(BACKENDS)}, got {backend!r}")
    if backend == "tensorrt":
        if providers is not None or threads is not None:
            raise ConfigError("backend 'tensorrt': providers/threads apply to onnxruntime only, got "
                              f"providers={providers!r}, threads={threads!r}")
        return _tensorrt_module().open_backend(package, device=device, **trt_options)
    if backend == "openvino":
        if providers is not None:
            raise ConfigError(f"backend 'openvino': providers apply to onnxruntime only, got {providers!r}")
        from edge_ad.runtime.backends import openvino

        return openvino.open_backend(package, device=device, threads=threads, **trt_options)
    if backend == "auto" and providers is None:
        trt = _probe_tensorrt(package)
        if trt is not None:
            try:
                return trt.open_backend(package, device=device, **trt_options)
            except Exception as e:
                log.warning("backend auto: TensorRT failed to open (%s); falling back", e)
        ov = _probe_openvino(package)
        if ov is not None and not trt_options and device is None:
            try:
                return ov.open_backend(package, threads=threads)
            except Exception as e:
                log.warning("backend auto: OpenVINO failed to open (%s); falling back to onnxruntime", e)
    if backend == "onnxruntime" and trt_options:
        raise ConfigError(f"backend 'onnxruntime': options {sorted(trt_options)} apply to tensorrt only")
    from edge_ad.runtime.backends import onnxruntime as ort_backend

    if not ort_backend.available(package):
        raise ConfigError(f"backend {backend!r}: no inference engine is installed (ONNX Runtime is an extra, so that "
                          "onnxruntime and onnxruntime-gpu never clash): pip install 'edge-ad[cpu]' on a CPU, "
                          "'edge-ad[cuda]' on an x86 machine with an NVIDIA GPU, 'edge-ad[jetson]' on JetPack 6 "
                          "(`edge-ad doctor` says which fits this machine)")

    options: dict[str, Any] = {"providers": providers, "threads": threads}
    return ort_backend.open_backend(package, device=device, **options)


def _probe_openvino(package: ModelPackage) -> ModuleType | None:
    """The OpenVINO backend module when openvino is installed with a CPU device for this package, else None."""
    from edge_ad.runtime.backends import openvino

    return openvino if openvino.available(package) else None


def _probe_tensorrt(package: ModelPackage) -> ModuleType | None:
    """The TensorRT backend module when it is installed and reports a usable device, else None."""
    try:
        mod = _tensorrt_module()
    except ConfigError as e:
        log.debug("backend auto: TensorRT not usable: %s", e)
        return None
    try:
        ok = bool(mod.available(package))
    except Exception as e:
        log.warning("backend auto: TensorRT availability check failed (%s); using onnxruntime", e)
        return None
    return mod if ok else None
