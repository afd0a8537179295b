"""ONNX Runtime backend: provider choice, tuned session options, name-based I/O checked against the manifest."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from edge_ad.errors import ConfigError, PackageError
from edge_ad.optional import installed
from edge_ad.runtime.backends.base import closed_error, physical_cores, run_in_chunks
from edge_ad.runtime.package import ModelPackage

log = logging.getLogger(__name__)

#: which of a package's graphs to run: "auto" = the manifest's `onnx.backends.onnxruntime` on CPU-only providers
#: (the CPU graph of int8 packages), else the main one
GRAPHS = ("auto", "main", "cpu")
#: preference order for `providers="auto"`
PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
_GPU_PROVIDERS = {"TensorrtExecutionProvider", "CUDAExecutionProvider"}
_FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def available(package: ModelPackage) -> bool:
    """Available whenever the `onnxruntime` module (from onnxruntime or onnxruntime-gpu) imports."""
    return installed("onnxruntime")


def choose_providers(requested: str | list[str] | None) -> list[str]:
    """Resolve "auto"/None (TensorRT EP > CUDA EP > CPU) or an explicit list against the installed providers."""
    import onnxruntime as ort

    have = ort.get_available_providers()
    if requested is None or requested == "auto":
        chosen = [p for p in PROVIDER_ORDER if p in have]
        return chosen or ["CPUExecutionProvider"]
    names = [requested] if isinstance(requested, str) else list(requested)
    short = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
    names = [short.get(n.lower(), n) for n in names]
    missing = [n for n in names if n not in have]
    if missing:
        raise ConfigError(f"providers: {missing} not available in this onnxruntime build; available: {have}"
                          + ("; install onnxruntime-gpu for CUDA/TensorRT" if set(missing) & _GPU_PROVIDERS else ""))
    return names


class OnnxRuntimeBackend:
    """Backend running the package's ONNX graph with ONNX Runtime (`graph` says which: "main" or "cpu")."""

    name = "onnxruntime"

    def __init__(self, package: ModelPackage, *, device: int | None = None, providers: str | list[str] | None = None,
                 threads: int | None = None, precision: str | None = None, graph: str = "auto") -> None:
        import onnxruntime as ort

        if graph not in GRAPHS:
            raise ConfigError(f"graph: expected one of {list(GRAPHS)}, got {graph!r}")
        if threads is not None and threads < 1:
            raise ConfigError(f"threads: expected an integer >= 1, got {threads}")
        chosen = choose_providers(providers)
        cpu_path = package.cpu_onnx_path() if precision in (None, package.precision) else None
        if graph == "cpu" and cpu_path is None:
            raise ConfigError(f"graph 'cpu': {package.root} has no CPU graph (onnx.cpu); only int8 packages carry one")
        own = precision in (None, package.precision)
        if graph == "auto" and own and not set(chosen) & _GPU_PROVIDERS:  # CPU only: the manifest's choice
            self.onnx_path: Path = package.root / package.graph_for("onnxruntime").file
        elif graph == "cpu" and cpu_path is not None:
            self.onnx_path = cpu_path
        else:  # GPU providers (TensorRT EP, CUDA) run the main graph, as TensorRT does
            self.onnx_path = package.onnx_path(precision)
        self.graph = "cpu" if cpu_path is not None and self.onnx_path == cpu_path else "main"
        self.input_name = package.input_name
        self.input_hw = package.input_hw
        self.map_hw = package.map_hw
        self.output_names = ["anomaly_map", "score"]
        self.threads = threads or physical_cores()
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        provider_args: list[Any] = []
        for p in chosen:
            if p in _GPU_PROVIDERS:
                popts: dict[str, Any] = {"device_id": int(device or 0)}
                if p == "TensorrtExecutionProvider":
                    cache = package.root / "engines" / "onnxruntime-trt"
                    if os.access(package.root, os.W_OK):
                        cache.mkdir(parents=True, exist_ok=True)
                        popts.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache))
                    popts["trt_fp16_enable"] = package.precision == "fp16"
                provider_args.append((p, popts))
            else:
                provider_args.append(p)
        try:
            self.session: Any = ort.InferenceSession(str(self.onnx_path), sess_options=opts, providers=provider_args)
        except Exception as e:  # onnxruntime raises its own exception types for invalid/unsupported graphs
            raise PackageError(f"{self.onnx_path}: ONNX Runtime cannot load the graph: {e}") from e
        self.providers: list[str] = list(self.session.get_providers())
        self.max_batch: int | None = self._check_io()
        log.info("onnxruntime session on %s (%s graph %s, threads=%d, batch=%s)", self.providers, self.graph,
                 self.onnx_path.name, self.threads, self.max_batch or "dynamic")

    def _check_io(self) -> int | None:
        """Compare graph I/O with the manifest; return the fixed batch size or None when dynamic."""
        where = str(self.onnx_path)
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name: o for o in self.session.get_outputs()}
        if self.input_name not in inputs or len(inputs) != 1:
            raise PackageError(f"{where}: expected one graph input named {self.input_name!r} (manifest input.name), "
                               f"got {sorted(inputs)}")
        inp = inputs[self.input_name]
        if inp.type != "tensor(uint8)":
            raise PackageError(f"{where}: input {self.input_name!r}: expected dtype tensor(uint8), got {inp.type}")
        want = [None, *self.input_hw, 3]
        if len(inp.shape) != 4 or any(isinstance(g, int) and w is not None and g != w
                                      for g, w in zip(inp.shape, want)):
            raise PackageError(f"{where}: input {self.input_name!r}: expected shape [B, {self.input_hw[0]}, "
                               f"{self.input_hw[1]}, 3] (manifest input.height/width, NHWC), got {inp.shape}")
        for name in self.output_names:
            if name not in outputs:
                raise PackageError(f"{where}: expected a graph output named {name!r} (manifest outputs), "
                                   f"got {sorted(outputs)}")
            if outputs[name].type not in _FLOAT_TYPES:
                raise PackageError(f"{where}: output {name!r}: expected tensor(float), got {outputs[name].type}")
        mshape = outputs["anomaly_map"].shape
        want_map = [None, 1, *self.map_hw]
        if len(mshape) != 4 or any(isinstance(g, int) and w is not None and g != w for g, w in zip(mshape, want_map)):
            raise PackageError(f"{where}: output 'anomaly_map': expected shape [B, 1, {self.map_hw[0]}, "
                               f"{self.map_hw[1]}] (manifest outputs.anomaly_map), got {mshape}")
        if len(outputs["score"].shape) != 1:
            raise PackageError(f"{where}: output 'score': expected shape [B], got {outputs['score'].shape}")
        b = inp.shape[0]
        return b if isinstance(b, int) and b > 0 else None

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 [B,H,W,3] -> (float32 [B,1,h,w], float32 [B]); batches larger than a fixed graph batch are split."""

        session = self.session
        if session is None:
            raise closed_error(self.name)

        def infer(chunk: np.ndarray, _k: int) -> tuple[np.ndarray, np.ndarray]:
            m, sc = session.run(self.output_names, {self.input_name: chunk})
            return m, sc

        return run_in_chunks(batch, self.max_batch or batch.shape[0], infer, self.map_hw, self.onnx_path)

    def close(self) -> None:
        """Drop the session (ONNX Runtime frees its arenas with it)."""
        self.session = None


def open_backend(package: ModelPackage, *, device: int | None = None, **options: Any) -> OnnxRuntimeBackend:
    """Module-level factory of the backend contract (see base.py); options: providers, threads, precision, graph."""
    return OnnxRuntimeBackend(package, device=device, **options)
