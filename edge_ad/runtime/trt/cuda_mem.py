"""CUDA device queries, streams and host/device buffers for the TensorRT backend, without PyTorch.

Two allocators, tried in this order:
- cuda-python, the library NVIDIA's own TensorRT samples use; it needs no compiled extension of its own. Its
  runtime module is `cuda.bindings.runtime` from 12.6.1 (and the only name in 13.x) and `cuda.cudart` up to
  12.6.0 (`import cuda` alone does not load it). cuda-python 13 needs a CUDA 13 driver: JetPack 6 (CUDA 12.6)
  must pin `cuda-python>=12.6.1,<13`, and the mismatch is reported, not silently turned into "no GPU";
- pycuda, as an alternative where only it is installed (it shares the CUDA primary context TensorRT uses).

The current device (cuda-python) and the current context (pycuda) are per *thread*: `activate()` makes them current
on the calling thread and is used around every call that touches the GPU, so an engine created on one thread runs
on another (the pipeline's inference thread). Streams are non-blocking (no implicit sync with the legacy default
stream). Host buffers are pinned (page-locked), so asynchronous copies really are asynchronous. On integrated GPUs
(Jetson) they can instead be *mapped*: the GPU reads and writes the very same physical memory, and no copy is
needed at all. Every allocation is tracked by its `CudaApi` and released by `CudaApi.close()`.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from edge_ad.errors import ConfigError, CudaError, CudaMissingError
from edge_ad.optional import install_hint

log = logging.getLogger(__name__)

CUDA_INSTALL_HINT = ("install cuda-python matching the CUDA of this machine: " + install_hint("cuda")
                     + " (pycuda is used instead when only it is installed)")


@dataclass(frozen=True)
class DeviceInfo:
    """What the engine cache and the zero-copy decision need to know about a GPU."""

    index: int
    name: str
    compute_capability: tuple[int, int]
    integrated: bool
    can_map_host_memory: bool
    total_memory: int
    multiprocessors: int = 0

    @property
    def sm(self) -> str:
        """Compute capability as "8.7"."""
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"


@dataclass
class HostBuffer:
    """A pinned (or mapped) host array and the device address TensorRT uses for it.

    For a mapped buffer `device_ptr` aliases `array`'s memory; otherwise it is a separate device allocation of the
    same size, filled and read back with asynchronous copies.
    """

    array: np.ndarray
    device_ptr: int
    mapped: bool


class CudaApi(ABC):
    """The CUDA calls the TensorRT backend needs; subclasses bind them to cuda-python or pycuda."""

    library: str

    @abstractmethod
    def device_count(self) -> int:
        """Number of visible CUDA devices (0 when there is no driver or no GPU)."""

    @abstractmethod
    def device_info(self, device: int) -> DeviceInfo:
        """Name, compute capability and memory model of GPU `device`."""

    @abstractmethod
    def set_device(self, device: int) -> None:
        """Make `device` current for this thread (TensorRT builds and runs on the current device)."""

    @contextlib.contextmanager
    def activate(self, device: int) -> Iterator[None]:
        """Make `device` current on the *calling* thread for the duration of the block (CUDA's current device and
        pycuda's context are per thread)."""
        self.set_device(device)
        yield

    @abstractmethod
    def create_stream(self) -> int:
        """A new non-blocking CUDA stream; returns its handle as TensorRT's execute_async_v3 wants it."""

    @abstractmethod
    def synchronize(self, stream: int) -> None:
        """Wait until all work queued on `stream` has finished."""

    @abstractmethod
    def host_buffer(self, shape: tuple[int, ...], dtype: np.dtype[Any], mapped: bool) -> HostBuffer:
        """Pinned host array plus its device memory (mapped: the same memory seen by the GPU)."""

    @abstractmethod
    def copy_to_device(self, buf: HostBuffer, stream: int) -> None:
        """Queue host -> device copy of `buf` on `stream` (no-op for mapped buffers)."""

    @abstractmethod
    def copy_to_host(self, buf: HostBuffer, stream: int) -> None:
        """Queue device -> host copy of `buf` on `stream` (no-op for mapped buffers)."""

    @abstractmethod
    def close(self) -> None:
        """Free every buffer and stream this object allocated; safe to call twice."""

    def __enter__(self) -> CudaApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: where cuda-python keeps its runtime bindings: 12.6.1+ and 13.x, then 11.x-12.6.0 (a submodule `import cuda` skips)
CUDART_MODULES = ("cuda.bindings.runtime", "cuda.cudart")


def _import_cudart() -> ModuleType | None:
    """The cuda-python runtime module under its new or old name, or None."""
    for modname in CUDART_MODULES:
        try:
            return importlib.import_module(modname)
        except ImportError:
            continue
    return None


def _cuda_version(v: Any) -> str:
    """12060 -> "12.6"; 0 -> "none"."""
    n = int(v or 0)
    return f"{n // 1000}.{(n % 1000) // 10}" if n else "none"


def _import_pycuda() -> ModuleType | None:
    """`pycuda.driver`, or None when pycuda is not installed."""
    try:
        return importlib.import_module("pycuda.driver")
    except ImportError:
        return None


def _array_at(ptr: int, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
    """A numpy array viewing `nbytes` of memory at address `ptr` (memory owned by the caller)."""
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = (ctypes.c_uint8 * nbytes).from_address(ptr)
    return np.ctypeslib.as_array(raw).view(dtype).reshape(shape)


class CudaPython(CudaApi):
    """CudaApi over cuda-python's runtime bindings (cudaHostAlloc, cudaMalloc, cudaMemcpyAsync, ...)."""

    library = "cuda-python"

    def __init__(self, cudart: ModuleType) -> None:
        self._rt = cudart
        self._host: list[int] = []
        self._device: list[int] = []
        self._streams: list[Any] = []

    def _call(self, what: str, result: Any) -> Any:
        """Unpack a cuda-python (err, *values) tuple, raising CudaError with CUDA's message on failure."""
        rt = self._rt
        values = result if isinstance(result, tuple) else (result,)
        err = values[0]
        if err != rt.cudaError_t.cudaSuccess:
            msg_result = rt.cudaGetErrorString(err)
            msg = msg_result[1] if isinstance(msg_result, tuple) else msg_result
            text = msg.decode() if isinstance(msg, bytes) else str(msg)
            raise CudaError(f"CUDA {what} failed: {getattr(err, 'name', err)}: {text}")
        rest = values[1:]
        return rest[0] if len(rest) == 1 else rest

    def device_count(self) -> int:
        err, count = self._rt.cudaGetDeviceCount()
        if err == self._rt.cudaError_t.cudaSuccess:
            return int(count)
        name = getattr(err, "name", str(err))
        _, driver = self._rt.cudaDriverGetVersion()
        _, runtime = self._rt.cudaRuntimeGetVersion()
        if "InsufficientDriver" in name and int(driver or 0) > 0:  # e.g. cuda-python 13 on JetPack 6's CUDA 12.6
            log.warning("CUDA: this cuda-python is built for CUDA %s but the driver provides CUDA %s; on JetPack 6 "
                        "install 'cuda-python>=12.6.1,<13' (pip install 'edge-ad[jetson]')", _cuda_version(runtime),
                        _cuda_version(driver))
        else:
            log.info("CUDA: no usable GPU (%s; driver CUDA %s)", name, _cuda_version(driver))
        return 0

    def device_info(self, device: int) -> DeviceInfo:
        prop = self._call(f"cudaGetDeviceProperties({device})", self._rt.cudaGetDeviceProperties(device))
        raw_name = prop.name
        name = raw_name.split(b"\0", 1)[0].decode(errors="replace") if isinstance(raw_name, bytes) else str(raw_name)
        return DeviceInfo(index=device, name=name.strip(), compute_capability=(int(prop.major), int(prop.minor)),
                          integrated=bool(prop.integrated), can_map_host_memory=bool(prop.canMapHostMemory),
                          total_memory=int(prop.totalGlobalMem), multiprocessors=int(prop.multiProcessorCount))

    def set_device(self, device: int) -> None:
        self._call(f"cudaSetDevice({device})", self._rt.cudaSetDevice(device))

    def create_stream(self) -> int:
        rt = self._rt
        stream = self._call("cudaStreamCreateWithFlags", rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking))
        self._streams.append(stream)
        return int(stream)

    def synchronize(self, stream: int) -> None:
        self._call("cudaStreamSynchronize", self._rt.cudaStreamSynchronize(stream))

    def host_buffer(self, shape: tuple[int, ...], dtype: np.dtype[Any], mapped: bool) -> HostBuffer:
        rt = self._rt
        nbytes = max(1, int(np.prod(shape)) * dtype.itemsize)
        flags = rt.cudaHostAllocMapped if mapped else rt.cudaHostAllocDefault
        host_ptr = int(self._call(f"cudaHostAlloc({nbytes} bytes)", rt.cudaHostAlloc(nbytes, flags)))
        self._host.append(host_ptr)
        if mapped:
            dev_ptr = int(self._call("cudaHostGetDevicePointer", rt.cudaHostGetDevicePointer(host_ptr, 0)))
        else:
            dev_ptr = int(self._call(f"cudaMalloc({nbytes} bytes)", rt.cudaMalloc(nbytes)))
            self._device.append(dev_ptr)
        return HostBuffer(array=_array_at(host_ptr, shape, dtype), device_ptr=dev_ptr, mapped=mapped)

    def copy_to_device(self, buf: HostBuffer, stream: int) -> None:
        if not buf.mapped:
            rt = self._rt
            self._call("cudaMemcpyAsync(host->device)", rt.cudaMemcpyAsync(
                buf.device_ptr, buf.array.ctypes.data, buf.array.nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice,
                stream))

    def copy_to_host(self, buf: HostBuffer, stream: int) -> None:
        if not buf.mapped:
            rt = self._rt
            self._call("cudaMemcpyAsync(device->host)", rt.cudaMemcpyAsync(
                buf.array.ctypes.data, buf.device_ptr, buf.array.nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                stream))

    def close(self) -> None:
        rt = self._rt
        for stream in self._streams:
            rt.cudaStreamDestroy(stream)
        for ptr in self._device:
            rt.cudaFree(ptr)
        for ptr in self._host:
            rt.cudaFreeHost(ptr)
        self._streams, self._device, self._host = [], [], []


class PyCuda(CudaApi):
    """CudaApi over pycuda, bound to the device's primary context (the one TensorRT's runtime API uses)."""

    library = "pycuda"

    def __init__(self, driver: ModuleType) -> None:
        self._drv = driver
        self._drv.init()
        self._ctx: Any = None
        self._device: int | None = None
        self._keep: list[Any] = []  # pycuda frees memory when its Python object dies: keep them until close()

    def device_count(self) -> int:
        return int(self._drv.Device.count())

    def device_info(self, device: int) -> DeviceInfo:
        drv = self._drv
        try:
            dev = drv.Device(device)
            attr = drv.device_attribute
            major, minor = dev.compute_capability()
            return DeviceInfo(index=device, name=str(dev.name()), compute_capability=(int(major), int(minor)),
                              integrated=bool(dev.get_attribute(attr.INTEGRATED)),
                              can_map_host_memory=bool(dev.get_attribute(attr.CAN_MAP_HOST_MEMORY)),
                              total_memory=int(dev.total_memory()),
                              multiprocessors=int(dev.get_attribute(attr.MULTIPROCESSOR_COUNT)))
        except drv.Error as e:
            raise CudaError(f"CUDA device {device}: {e}") from e

    def set_device(self, device: int) -> None:
        """Retain the device's primary context (once) and make it current on the calling thread."""
        drv = self._drv
        try:
            if self._ctx is None or self._device != device:
                self._ctx = drv.Device(device).retain_primary_context()
                self._device = device
            self._ctx.push()  # fails here, with a clear error, if the device is unusable
            drv.Context.pop()  # retained, not left pushed: activate() pushes it per thread and call
        except drv.Error as e:
            raise CudaError(f"CUDA device {device}: cannot make it current: {e}") from e

    @contextlib.contextmanager
    def activate(self, device: int) -> Iterator[None]:
        """Push the primary context on the calling thread for the block, pop it after (pycuda's context stack is
        per thread: a context pushed on the builder's thread does not exist on the pipeline's)."""
        if self._ctx is None or self._device != device:
            self.set_device(device)
        self._ctx.push()
        try:
            yield
        finally:
            self._drv.Context.pop()

    def create_stream(self) -> int:
        stream = self._drv.Stream(flags=1)  # CU_STREAM_NON_BLOCKING
        self._keep.append(stream)
        return int(stream.handle)

    def _stream(self, handle: int) -> Any:
        for obj in self._keep:
            if isinstance(obj, self._drv.Stream) and int(obj.handle) == handle:
                return obj
        raise CudaError(f"CUDA stream {handle:#x} was not created by this allocator")

    def synchronize(self, stream: int) -> None:
        self._stream(stream).synchronize()

    def host_buffer(self, shape: tuple[int, ...], dtype: np.dtype[Any], mapped: bool) -> HostBuffer:
        drv = self._drv
        try:
            flags = drv.host_alloc_flags.DEVICEMAP if mapped else 0
            array = drv.pagelocked_empty(shape, dtype, mem_flags=flags)
            self._keep.append(array)
            if mapped:
                dev_ptr = int(array.base.get_device_pointer())
            else:
                dev = drv.mem_alloc(max(1, array.nbytes))
                self._keep.append(dev)
                dev_ptr = int(dev)
        except drv.Error as e:
            raise CudaError(f"CUDA allocation of {shape} {dtype} failed: {e}") from e
        return HostBuffer(array=array, device_ptr=dev_ptr, mapped=mapped)

    def copy_to_device(self, buf: HostBuffer, stream: int) -> None:
        if not buf.mapped:
            self._drv.memcpy_htod_async(buf.device_ptr, buf.array, self._stream(stream))

    def copy_to_host(self, buf: HostBuffer, stream: int) -> None:
        if not buf.mapped:
            self._drv.memcpy_dtoh_async(buf.array, buf.device_ptr, self._stream(stream))

    def close(self) -> None:
        if self._ctx is not None and self._keep:
            self._ctx.push()  # frees need the context current on this thread
            try:
                for obj in reversed(self._keep):
                    free = getattr(obj, "free", None)
                    if callable(free):
                        free()
            finally:
                self._drv.Context.pop()
        self._keep = []
        if self._ctx is not None:
            self._ctx.detach()
            self._ctx = None


def get_cuda() -> CudaApi:
    """A fresh CudaApi: cuda-python when importable, else pycuda, else CudaMissingError with the install command."""
    cudart = _import_cudart()
    if cudart is not None:
        return CudaPython(cudart)
    driver = _import_pycuda()
    if driver is not None:
        return PyCuda(driver)
    raise CudaMissingError(f"neither cuda-python nor pycuda is installed: {CUDA_INSTALL_HINT}")


def use_zero_copy(info: DeviceInfo, zero_copy: bool | str) -> bool:
    """Resolve the `zero_copy` option: "auto" = mapped memory on integrated GPUs (Jetson), pinned+copies elsewhere."""
    if zero_copy == "auto":
        return info.integrated and info.can_map_host_memory
    if zero_copy is True:
        if not info.can_map_host_memory:
            raise ConfigError(f"zero_copy=True: GPU {info.index} ({info.name}) cannot map host memory; "
                              "use zero_copy='auto' or False")
        if not info.integrated:
            log.warning("zero_copy=True on discrete GPU %s: every GPU access crosses PCIe; usually slower", info.name)
        return True
    if zero_copy is False:
        return False
    raise ConfigError(f"zero_copy: expected 'auto', True or False, got {zero_copy!r}")
