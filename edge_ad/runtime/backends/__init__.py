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
from edge_ad.plugins import Plugin, Registry
from edge_ad.runtime.backends.base import Backend
from edge_ad.runtime.package import ModelPackage

log = logging.getLogger(__name__)

#: the inference engines; each module implements `open_backend(package, *, device, **options)` and
#: `available(package)` (see base.py)
BACKEND_PLUGINS: Registry[Backend] = Registry("backend")
BACKEND_PLUGINS.register(Plugin("onnxruntime", "edge_ad.runtime.backends.onnxruntime:open_backend",
                                "ONNX Runtime (CPU; CUDA and TensorRT execution providers where installed)",
                                needs=("onnxruntime",), options=("providers", "threads", "precision", "graph")))
BACKEND_PLUGINS.register(Plugin("tensorrt", "edge_ad.runtime.backends.tensorrt:open_backend",
                                "TensorRT engine built on this device (NVIDIA GPU, Jetson)", needs=("tensorrt",),
                                options=("precision", "zero_copy", "build_if_missing", "workspace_mb",
                                         "timing_cache", "batch", "dla_core", "fp16_fallback", "tf32")))
BACKEND_PLUGINS.register(Plugin("openvino", "edge_ad.runtime.backends.openvino:open_backend",
                                "OpenVINO (x86 CPUs: bf16/int8 fast paths)", needs=("openvino",),
                                options=("threads", "hint", "streams", "cache")))
BACKENDS = ("auto", *BACKEND_PLUGINS.names())

__all__ = ["BACKENDS", "BACKEND_PLUGINS", "Backend", "create_backend"]


def _tensorrt_module() -> ModuleType:
    from edge_ad.runtime.trt import TENSORRT_INSTALL_HINT, tensorrt_available

    if not tensorrt_available():  # also false for a stubs-only `tensorrt` (tensorrt-stubs)
        raise ConfigError(f"backend 'tensorrt': the tensorrt Python package is not installed on this machine: "
                          f"{TENSORRT_INSTALL_HINT} (or use backend='onnxruntime')")
    module: ModuleType = importlib.import_module(BACKEND_PLUGINS.get("tensorrt").factory.partition(":")[0])
    return module


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
        return BACKEND_PLUGINS.create("openvino", package, device=device, threads=threads, **trt_options)
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
    if trt_options:
        log.warning("backend auto: no TensorRT here, so the engine options %s do not apply", sorted(trt_options))
    ort = BACKEND_PLUGINS.get("onnxruntime")
    if not ort.available():
        raise ConfigError(f"backend {backend!r}: no inference engine is installed: {ort.install_hint()}")
    return BACKEND_PLUGINS.create("onnxruntime", package, device=device, providers=providers, threads=threads)


def _probe_openvino(package: ModelPackage) -> ModuleType | None:
    """The OpenVINO backend module when openvino is installed with a CPU device for this package, else None."""
    plugin = BACKEND_PLUGINS.get("openvino")
    if not plugin.available():
        return None
    module: ModuleType = importlib.import_module(plugin.factory.partition(":")[0])
    return module if module.available(package) else None


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
