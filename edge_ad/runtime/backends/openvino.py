"""OpenVINO backend for x86 line PCs: the package's ONNX graph compiled by OpenVINO for the CPU (or an Intel GPU).

What runs, per package precision (the package says, the backend never guesses):
- fp32: the fp32 graph with INFERENCE_PRECISION_HINT f32, set explicitly because OpenVINO's CPU default on
  AMX/AVX512-BF16 machines is bf16, which would change the numbers of a package gated in fp32;
- bf16: the same fp32 graph executed in bf16 (the gate checked that precision); a CPU without bf16 runs f32;
- fp16: the fp16 graph (OpenVINO computes it in f32, or bf16/f16 where the hardware has them);
- int8: the package's CPU graph (the same Q/DQ on fp32 ops), which OpenVINO turns into its int8 kernels.

Settings are deliberate: INFERENCE_NUM_THREADS = `threads` (default the physical cores), PERFORMANCE_HINT
"LATENCY" (one stream, one image at a time: the line inspects part by part) or "THROUGHPUT", and CACHE_DIR in the
package's engines/openvino folder when it is writable (a restart reuses the compiled blob: seconds instead of a
recompile). The graph is compiled for the static batch sizes it is called with (batch 1 on the line).
Optional: `pip install "edge-ad[openvino]"`; torch-free.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from edge_ad.errors import ConfigError, PackageError
from edge_ad.optional import installed, require
from edge_ad.runtime.backends.base import closed_error, physical_cores, run_in_chunks
from edge_ad.runtime.package import ModelPackage

log = logging.getLogger(__name__)
HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT"}
PRECISIONS = ("fp32", "bf16", "fp16", "int8")


def _core() -> Any:
    return require("openvino", "backend 'openvino'").Core()


def available(package: ModelPackage) -> bool:
    """True when openvino imports, has a CPU device and the package's precision is one it runs."""
    if not installed("openvino"):
        return False
    try:
        return package.precision in PRECISIONS and "CPU" in _core().available_devices
    except Exception as e:  # a broken OpenVINO install must not stop "auto" from falling back
        log.debug("openvino unavailable: %s", e)
        return False


def cpu_has_bf16(core: Any, device: str = "CPU") -> bool:
    """Whether OpenVINO reports native bf16 on `device` (AVX512-BF16 or AMX on Intel CPUs)."""
    try:
        return "BF16" in core.get_property(device, "OPTIMIZATION_CAPABILITIES")
    except Exception:  # older devices/plugins without the property
        return False


class OpenVinoBackend:
    """Backend running the package's ONNX graph with OpenVINO on `device` ("CPU", "GPU", ...)."""

    name = "openvino"

    def __init__(self, package: ModelPackage, *, device: str = "CPU", threads: int | None = None,
                 hint: str = "latency", cache: bool = True) -> None:
        if hint not in HINTS:
            raise ConfigError(f"openvino hint: expected one of {list(HINTS)}, got {hint!r}")
        if threads is not None and threads < 1:
            raise ConfigError(f"threads: expected an integer >= 1, got {threads}")
        if package.precision not in PRECISIONS:
            raise ConfigError(f"backend 'openvino': package precision {package.precision!r} is not one of "
                              f"{list(PRECISIONS)}")
        self.core = _core()
        if device not in self.core.available_devices:
            raise ConfigError(f"backend 'openvino': device {device!r} not found; available: "
                              f"{self.core.available_devices}")
        cpu_graph = package.cpu_onnx_path()
        self.onnx_path: Path = cpu_graph if package.precision == "int8" and cpu_graph else package.onnx_path()
        self.precision = package.precision
        self.input_name, self.input_hw, self.map_hw = package.input_name, package.input_hw, package.map_hw
        self.threads = threads or physical_cores()
        bf16 = package.precision == "bf16" and device == "CPU" and cpu_has_bf16(self.core, device)
        if package.precision == "bf16" and not bf16:
            log.warning("%s: bf16 package on a %s without native bf16: running f32 (same results, slower)",
                        package.root, device)
        self.config: dict[str, Any] = {"PERFORMANCE_HINT": HINTS[hint]}
        if device == "CPU":
            self.config["INFERENCE_NUM_THREADS"] = self.threads
            self.config["INFERENCE_PRECISION_HINT"] = "bf16" if bf16 else "f32"
        if hint == "latency":
            self.config["NUM_STREAMS"] = 1
        cache_dir = package.root / "engines" / "openvino"
        if cache and os.access(package.root, os.W_OK):
            cache_dir.mkdir(parents=True, exist_ok=True)
            self.config["CACHE_DIR"] = str(cache_dir)
        self.device = device
        try:
            self._model = self.core.read_model(str(self.onnx_path))
        except Exception as e:  # OpenVINO raises RuntimeError for graphs it cannot read
            raise PackageError(f"{self.onnx_path}: OpenVINO cannot read the graph: {e}") from e
        self._check_io()
        self.max_batch: int | None = None
        self._compiled: dict[int, Any] = {}
        self._closed = False
        self.providers = [f"OpenVINO {device} {self.config.get('INFERENCE_PRECISION_HINT', 'default')}"]
        self._request(1)  # compile now: a graph OpenVINO cannot compile fails at load, not at the first part
        log.info("openvino on %s (%s, %s, threads=%d, hint=%s)", device, self.onnx_path.name,
                 self.config.get("INFERENCE_PRECISION_HINT"), self.threads, hint)

    def _check_io(self) -> None:
        where = str(self.onnx_path)
        names = [next(iter(p.get_names()), "") for p in self._model.inputs]
        if names != [self.input_name]:
            raise PackageError(f"{where}: expected one graph input named {self.input_name!r} (manifest input.name), "
                               f"got {names}")
        shape = self._model.inputs[0].get_partial_shape()
        dims = [d.get_length() if d.is_static else None for d in shape]
        want = [None, *self.input_hw, 3]
        if len(dims) != 4 or any(g is not None and w is not None and g != w for g, w in zip(dims, want)):
            raise PackageError(f"{where}: input {self.input_name!r}: expected shape [B, {self.input_hw[0]}, "
                               f"{self.input_hw[1]}, 3] (manifest input.height/width, NHWC), got {dims}")
        self._fixed_batch = dims[0]
        outs = {n for o in self._model.outputs for n in o.get_names()}
        missing = {"anomaly_map", "score"} - outs
        if missing:
            raise PackageError(f"{where}: expected graph outputs anomaly_map and score, missing {sorted(missing)}")

    def _request(self, batch: int) -> Any:
        """An infer request for a static batch size, compiling (or loading from CACHE_DIR) on first use."""
        if batch not in self._compiled:
            model = self._model.clone()
            model.reshape({self.input_name: [batch, *self.input_hw, 3]})
            try:
                compiled = self.core.compile_model(model, self.device, self.config)
            except Exception as e:  # compile errors are RuntimeErrors with OpenVINO's message
                raise PackageError(f"{self.onnx_path}: OpenVINO cannot compile the graph for {self.device}: "
                                   f"{e}") from e
            self._compiled[batch] = compiled.create_infer_request()
        return self._compiled[batch]

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 [B,H,W,3] -> (float32 [B,1,h,w], float32 [B]); a graph with a fixed batch gets padded chunks."""
        if self._closed:
            raise closed_error(self.name)
        step = self._fixed_batch or batch.shape[0]

        def infer(chunk: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            req = self._request(step)
            req.infer({self.input_name: chunk})
            # the request owns its output buffers: copy before the next call overwrites them
            return (np.array(req.get_tensor("anomaly_map").data[:k], dtype=np.float32),
                    np.array(req.get_tensor("score").data, dtype=np.float32).reshape(-1)[:k])

        return run_in_chunks(batch, step, infer, self.map_hw, self.onnx_path)

    def close(self) -> None:
        """Drop the compiled models and their infer requests."""
        self._closed = True
        self._compiled.clear()


def open_backend(package: ModelPackage, *, device: int | str | None = None, **options: Any) -> OpenVinoBackend:
    """Module-level factory of the backend contract (see base.py); options: threads, hint, cache.
    `device` is an OpenVINO device name ("CPU", "GPU"); an integer GPU index means "GPU.<n>"."""
    name = "CPU" if device is None else f"GPU.{device}" if isinstance(device, int) else str(device)
    return OpenVinoBackend(package, device=name, **options)
