"""TensorRT backend: runs the package's engine (built and cached on this device on first use) with execute_async_v3.

One execution context, one non-blocking CUDA stream, buffers allocated once at the engine's batch size. Host buffers
are pinned and copied asynchronously; on integrated GPUs (Jetson, `zero_copy="auto"`) they are mapped instead, so the
GPU reads the input and writes the outputs in place and no copy is queued at all. I/O tensors are bound by name,
never by index. Every entry point makes the device (and pycuda's context) current on the *calling* thread, so a
backend opened on one thread runs on another (the pipeline's inference thread). A DLA engine gets its core set on
the runtime before it is deserialised (otherwise TensorRT runs it on core 0).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edge_ad.errors import PackageError
from edge_ad.runtime.package import ModelPackage
from edge_ad.runtime.trt import load_tensorrt, tensorrt_available
from edge_ad.runtime.trt.build import EngineRecord, ensure_engine, make_logger
from edge_ad.runtime.trt.cuda_mem import (
    CudaApi,
    CudaError,
    HostBuffer,
    get_cuda,
    use_zero_copy,
)

log = logging.getLogger(__name__)

OUTPUT_NAMES = ("anomaly_map", "score")


def numpy_dtype(dtype: Any) -> np.dtype[Any]:
    """numpy dtype of a tensorrt.DataType (the types an I/O tensor of an edge-ad graph can have)."""
    import tensorrt as trt

    table = {trt.DataType.FLOAT: np.float32, trt.DataType.HALF: np.float16, trt.DataType.INT8: np.int8,
             trt.DataType.INT32: np.int32, trt.DataType.INT64: np.int64, trt.DataType.BOOL: np.bool_,
             trt.DataType.UINT8: np.uint8}
    if dtype not in table:
        raise PackageError(f"TensorRT engine: I/O tensor type {dtype} has no numpy equivalent")
    return np.dtype(table[dtype])


class TensorRTBackend:
    """Backend (see base.py) over a TensorRT engine for `package` on GPU `device`.

    `precision` picks the package graph (default: the manifest's). Without a cached engine for this device it is built
    first (minutes on a Jetson) unless `build_if_missing` is False. `batch` is the engine batch for packages with a
    dynamic batch (default 1); bigger batches given to `run` are split, smaller ones padded. Use as a context manager
    or call `close()` to free GPU and pinned memory.
    """

    name = "tensorrt"

    def __init__(self, package: ModelPackage, *, precision: str | None = None, device: int = 0,
                 zero_copy: bool | str = "auto", build_if_missing: bool = True, workspace_mb: int | None = None,
                 timing_cache: str | Path | None = None, batch: int | None = None, dla_core: int | None = None,
                 fp16_fallback: bool = False, tf32: bool = False) -> None:
        load_tensorrt()
        import tensorrt as trt

        self.input_name = package.input_name
        self.input_hw = package.input_hw
        self.map_hw = package.map_hw
        self.providers: list[str] = ["tensorrt"]
        self._lock = threading.Lock()
        self._cuda: CudaApi = get_cuda()
        self._device_index = device
        self._buffers: dict[str, HostBuffer] = {}
        try:
            self.record: EngineRecord = ensure_engine(
                package, precision, device=device, batch=batch, workspace_mb=workspace_mb, timing_cache=timing_cache,
                dla_core=dla_core, fp16_fallback=fp16_fallback, tf32=tf32, build_if_missing=build_if_missing,
                cuda=self._cuda)
            with self._cuda.activate(device):
                self.device = self._cuda.device_info(device)
                self.zero_copy = use_zero_copy(self.device, zero_copy)
                self._logger = make_logger()
                self._runtime = trt.Runtime(self._logger)
                if self.record.key.dla_core is not None:
                    self._runtime.DLA_core = self.record.key.dla_core  # before deserialising, as trtexec does
                where = str(self.record.path or self.record.onnx_path)
                engine = self._runtime.deserialize_cuda_engine(self.record.plan)
                if engine is None:
                    raise PackageError(f"{where}: TensorRT {trt.__version__} cannot deserialize the engine; delete "
                                       "the package's engines/ folder to rebuild it")
                self._engine = engine
                self.record = replace(self.record, plan=b"")  # the engine keeps its own copy; free the plan bytes
                context = engine.create_execution_context()
                if context is None:
                    raise CudaError(f"{where}: cannot create a TensorRT execution context (out of GPU memory?)")
                self._context = context
                self.max_batch: int | None = self._bind(where)
                self._stream = self._cuda.create_stream()
        except BaseException:
            self.close()
            raise
        log.info("TensorRT %s engine on %s (sm %s, %s memory, batch %d)", self.record.key.precision,
                 self.device.name, self.device.sm, "zero-copy mapped" if self.zero_copy else "pinned",
                 self.max_batch)

    def _bind(self, where: str) -> int:
        """Check engine I/O against the manifest, fix the input shape, allocate and bind buffers; returns the batch."""
        import tensorrt as trt

        engine, ctx = self._engine, self._context
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if inputs != [self.input_name]:
            raise PackageError(f"{where}: expected one engine input named {self.input_name!r} (manifest input.name), "
                               f"got {inputs}")
        missing = [n for n in OUTPUT_NAMES if n not in names]
        if missing:
            raise PackageError(f"{where}: engine lacks output(s) {missing}; its tensors are {names}")
        if numpy_dtype(engine.get_tensor_dtype(self.input_name)) != np.uint8:
            raise PackageError(f"{where}: input {self.input_name!r}: expected uint8, got "
                               f"{engine.get_tensor_dtype(self.input_name)}")
        shape = engine.get_tensor_shape(self.input_name)
        dims = [int(shape[i]) for i in range(len(shape))]
        batch = int(self.record.key.input_shape[0])
        if dims[0] < 0:
            profile_max = engine.get_tensor_profile_shape(self.input_name, 0)[2]
            batch = int(profile_max[0])
        want = (batch, *self.input_hw, 3)
        if any(d >= 0 and d != w for d, w in zip(dims, want)) or len(dims) != 4:
            raise PackageError(f"{where}: input {self.input_name!r}: expected shape {list(want)}, got {dims}")
        if not ctx.set_input_shape(self.input_name, want):
            raise PackageError(f"{where}: engine rejects input shape {list(want)}")
        for name in names:  # every I/O tensor needs an address, extra outputs included
            out_shape = ctx.get_tensor_shape(name)
            tshape = tuple(int(out_shape[i]) for i in range(len(out_shape)))
            dtype = numpy_dtype(engine.get_tensor_dtype(name))
            buf = self._cuda.host_buffer(tshape, dtype, self.zero_copy)
            self._buffers[name] = buf
            if not ctx.set_tensor_address(name, buf.device_ptr):
                raise CudaError(f"{where}: cannot bind tensor {name!r}")
        amap, score = self._buffers["anomaly_map"].array, self._buffers["score"].array
        if amap.shape != (batch, 1, *self.map_hw) or score.reshape(batch, -1).shape != (batch, 1):
            raise PackageError(f"{where}: outputs: expected anomaly_map {[batch, 1, *self.map_hw]} and score "
                               f"[{batch}], got {list(amap.shape)} and {list(score.shape)}")
        return batch

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 [B,H,W,3] -> (float32 [B,1,h,w], float32 [B]); split into / padded to the engine batch."""
        h, w = self.input_hw
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[1:] != (h, w, 3):
            raise ValueError(f"tensorrt backend: expected uint8 [B, {h}, {w}, 3], got {batch.dtype} "
                             f"{list(batch.shape)}")
        n = batch.shape[0]
        step = int(self.max_batch or n)
        maps, scores = [], []
        with self._lock, self._cuda.activate(self._device_index):  # this thread may not be the one that opened us
            for s in range(0, n, step):
                m, sc = self._run_chunk(batch[s : s + step])
                maps.append(m)
                scores.append(sc)
        return np.concatenate(maps), np.concatenate(scores)

    def _run_chunk(self, chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = chunk.shape[0]
        inp = self._buffers[self.input_name]
        inp.array[:k] = chunk
        if k < inp.array.shape[0]:  # a fixed-batch engine: pad with copies of the last image, drop their outputs
            inp.array[k:] = chunk[-1]
        self._cuda.copy_to_device(inp, self._stream)
        if not self._context.execute_async_v3(self._stream):
            raise CudaError("TensorRT execute_async_v3 failed (see the TensorRT messages above)")
        for name in OUTPUT_NAMES:
            self._cuda.copy_to_host(self._buffers[name], self._stream)
        self._cuda.synchronize(self._stream)
        amap = self._buffers["anomaly_map"].array[:k].astype(np.float32, copy=True)
        score = self._buffers["score"].array.reshape(-1)[:k].astype(np.float32, copy=True)
        return amap, score

    def close(self) -> None:
        """Free the execution context, engine, stream and all buffers (idempotent), on whatever thread calls it."""
        with self._lock:
            held = [a for a in ("_context", "_engine", "_runtime") if hasattr(self, a)]
            if held:
                try:
                    with self._cuda.activate(self._device_index):
                        for attr in held:
                            delattr(self, attr)  # TensorRT objects free their GPU memory when the last reference goes
                except CudaError as e:
                    log.warning("TensorRT backend close: cannot make GPU %d current (%s)", self._device_index, e)
                    for attr in held:
                        delattr(self, attr)
            self._buffers = {}
            self._cuda.close()

    def __enter__(self) -> TensorRTBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def available(package: ModelPackage) -> bool:
    """tensorrt imports, a CUDA binding is installed and at least one GPU is visible (cheap: no engine is built)."""
    if not tensorrt_available():
        return False
    try:
        return get_cuda().device_count() > 0
    except Exception as e:
        log.debug("tensorrt backend unavailable: %s", e)
        return False


def open_backend(package: ModelPackage, *, device: int | None = None, **options: Any) -> TensorRTBackend:
    """Module-level factory of the backend contract (see base.py); options: TensorRTBackend's keyword arguments."""
    return TensorRTBackend(package, device=device or 0, **options)
