"""A fake `tensorrt` module and a fake CUDA allocator, just rich enough to run `TensorRTBackend` end to end without a
GPU: engines are JSON "plans" whose execution computes the brightness map of `runtime_fixtures` (channel mean / 255,
score = max), buffers are numpy arrays, and every call records the thread it came from, so tests can check *where*
the device was made current relative to `run()` and *when* `DLA_core` was set relative to deserialisation.
"""

from __future__ import annotations

import json
import threading
import types
from enum import IntEnum
from typing import Any

import numpy as np

from edge_ad.runtime.trt.cuda_mem import CudaApi, DeviceInfo, HostBuffer

ORIN_NX = DeviceInfo(0, "Orin (nvgpu)", (8, 7), integrated=True, can_map_host_memory=True, total_memory=16 << 30,
                     multiprocessors=8)
ORIN_AGX = DeviceInfo(0, "Orin (nvgpu)", (8, 7), integrated=True, can_map_host_memory=True, total_memory=64 << 30,
                      multiprocessors=16)


class FakeCuda(CudaApi):
    """Buffers in numpy; `events` records (call, thread ident, device current on that thread)."""

    library = "fake"

    def __init__(self, info: DeviceInfo = ORIN_NX) -> None:
        self.info = info
        self.events: list[tuple[str, int, int | None]] = []
        self._current: dict[int, int | None] = {}
        self._device_mem: dict[int, np.ndarray] = {}
        self._next_ptr = 0x1000
        self.stream_flags: list[str] = []

    def _log(self, what: str) -> None:
        t = threading.get_ident()
        self.events.append((what, t, self._current.get(t)))

    def current_on_this_thread(self) -> int | None:
        return self._current.get(threading.get_ident())

    def device_count(self) -> int:
        return 1

    def device_info(self, device: int) -> DeviceInfo:
        return self.info

    def set_device(self, device: int) -> None:
        self._current[threading.get_ident()] = device
        self._log("set_device")

    def create_stream(self) -> int:
        self.stream_flags.append("non-blocking")
        return 7

    def synchronize(self, stream: int) -> None:
        self._log("synchronize")

    def host_buffer(self, shape: tuple[int, ...], dtype: np.dtype[Any], mapped: bool) -> HostBuffer:
        host = np.zeros(shape, dtype)
        ptr = self._next_ptr
        self._next_ptr += 0x1000
        self._device_mem[ptr] = host if mapped else np.zeros(shape, dtype)
        return HostBuffer(host, ptr, mapped)

    def device_array(self, ptr: int) -> np.ndarray:
        return self._device_mem[ptr]

    def copy_to_device(self, buf: HostBuffer, stream: int) -> None:
        self._log("copy_to_device")
        if not buf.mapped:
            self._device_mem[buf.device_ptr][...] = buf.array

    def copy_to_host(self, buf: HostBuffer, stream: int) -> None:
        if not buf.mapped:
            buf.array[...] = self._device_mem[buf.device_ptr]

    def close(self) -> None:
        self._log("close")


def fake_plan(input_shape: tuple[int, ...], map_hw: tuple[int, int]) -> bytes:
    return json.dumps({"input": list(input_shape), "map": list(map_hw)}).encode()


def make_tensorrt(cuda: FakeCuda, version: str = "10.3.0.30") -> types.ModuleType:
    """A `tensorrt` module whose runtime deserialises `fake_plan` engines and executes them on `cuda`'s buffers."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version  # type: ignore[attr-defined]
    trt.Builder = object  # type: ignore[attr-defined]

    class DataType(IntEnum):
        FLOAT = 0
        HALF = 1
        INT8 = 2
        INT32 = 3
        BOOL = 4
        UINT8 = 5
        INT64 = 6

    class TensorIOMode(IntEnum):
        INPUT = 1
        OUTPUT = 2

    class ILogger:
        class Severity(IntEnum):
            INTERNAL_ERROR = 0
            ERROR = 1
            WARNING = 2
            INFO = 3
            VERBOSE = 4

        def __init__(self) -> None:
            pass

    class Context:
        def __init__(self, engine: Engine) -> None:
            self.engine = engine
            self.addresses: dict[str, int] = {}

        def set_input_shape(self, name: str, shape: Any) -> bool:
            return list(shape) == self.engine.shapes[name]

        def get_tensor_shape(self, name: str) -> list[int]:
            return list(self.engine.shapes[name])

        def set_tensor_address(self, name: str, ptr: int) -> bool:
            self.addresses[name] = ptr
            return True

        def execute_async_v3(self, stream: int) -> bool:
            cuda._log("execute")
            if cuda.current_on_this_thread() is None:
                raise RuntimeError("execute_async_v3 on a thread without a current CUDA device/context")
            img = cuda.device_array(self.addresses["image"]).astype(np.float32)
            grey = img.mean(axis=3) / 255.0
            h, w = self.engine.shapes["anomaly_map"][2:]
            b = grey.shape[0]
            amap = grey.reshape(b, h, grey.shape[1] // h, w, grey.shape[2] // w).mean(axis=(2, 4))
            cuda.device_array(self.addresses["anomaly_map"])[...] = amap[:, None]
            cuda.device_array(self.addresses["score"])[...] = amap.reshape(b, -1).max(axis=1)
            return True

    class Engine:
        def __init__(self, plan: dict[str, Any]) -> None:
            b, h, w, _ = plan["input"]
            mh, mw = plan["map"]
            self.shapes = {"image": [b, h, w, 3], "anomaly_map": [b, 1, mh, mw], "score": [b]}
            self.names = ["image", "anomaly_map", "score"]
            self.num_io_tensors = 3

        def get_tensor_name(self, i: int) -> str:
            return self.names[i]

        def get_tensor_mode(self, name: str) -> TensorIOMode:
            return TensorIOMode.INPUT if name == "image" else TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name: str) -> DataType:
            return DataType.UINT8 if name == "image" else DataType.FLOAT

        def get_tensor_shape(self, name: str) -> list[int]:
            return list(self.shapes[name])

        def get_tensor_profile_shape(self, name: str, profile: int) -> tuple[list[int], list[int], list[int]]:
            s = self.shapes[name]
            return s, s, s

        def create_execution_context(self) -> Context:
            return Context(self)

    class Runtime:
        def __init__(self, logger: Any) -> None:
            self._dla: int | None = None
            self.dla_when_deserialised: int | None = None

        @property
        def DLA_core(self) -> int | None:
            return self._dla

        @DLA_core.setter
        def DLA_core(self, core: int) -> None:
            cuda._log(f"DLA_core={core}")
            self._dla = core

        def deserialize_cuda_engine(self, plan: bytes) -> Engine:
            cuda._log("deserialize")
            self.dla_when_deserialised = self._dla
            return Engine(json.loads(bytes(plan)))

    trt.DataType = DataType  # type: ignore[attr-defined]
    trt.TensorIOMode = TensorIOMode  # type: ignore[attr-defined]
    trt.ILogger = ILogger  # type: ignore[attr-defined]
    trt.Runtime = Runtime  # type: ignore[attr-defined]
    return trt


def add_builder(trt: types.ModuleType, *, tf32_default: bool = True, dla_cores: int = 0,
                inputs: tuple[tuple[str, list[int]], ...] = (("image", [-1, 64, 64, 3]),),
                map_hw: tuple[int, int] = (8, 8)) -> list[dict[str, Any]]:
    """Give a fake `tensorrt` module the build half of the real bindings (Builder, OnnxParser, IBuilderConfig with
    set_flag/clear_flag/get_flag, optimisation profiles, timing caches, BuilderFlag, MemoryPoolType, DeviceType,
    NetworkDefinitionCreationFlag, Dims). TF32 starts set, as in TensorRT 10.3 and 11.x. Returns a list that gets one
    dict per build_serialized_network call: the flags set at that moment, the network flags, pool limits, DLA."""
    builds: list[dict[str, Any]] = []

    class BuilderFlag(IntEnum):
        FP16 = 0
        INT8 = 1
        DEBUG = 2
        GPU_FALLBACK = 3
        REFIT = 5
        TF32 = 7

    class NetworkDefinitionCreationFlag(IntEnum):
        EXPLICIT_BATCH = 0
        STRONGLY_TYPED = 1

    class MemoryPoolType(IntEnum):
        WORKSPACE = 0

    class DeviceType(IntEnum):
        GPU = 0
        DLA = 1

    class Dims(list):  # type: ignore[type-arg]
        pass

    class Tensor:
        def __init__(self, name: str, shape: list[int]) -> None:
            self.name, self.shape = name, Dims(shape)

    class Network:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.inputs: list[Tensor] = []

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        def get_input(self, i: int) -> Tensor:
            return self.inputs[i]

    class OnnxParser:
        def __init__(self, network: Network, logger: Any) -> None:
            self.network = network
            self.num_errors = 0

        def parse(self, model: bytes) -> bool:
            if not isinstance(model, bytes) or not model:
                self.num_errors = 1
                return False
            self.network.inputs = [Tensor(n, list(s)) for n, s in inputs]
            return True

        def get_error(self, i: int) -> str:
            return "empty model"

    class TimingCache:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def combine(self, other: TimingCache, ignore_mismatch: bool) -> bool:
            return True

        def serialize(self) -> bytes:
            return b"timing" + self.data

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple[list[int], list[int], list[int]]] = {}

        def set_shape(self, name: str, lo: Dims, opt: Dims, hi: Dims) -> None:
            self.shapes[name] = (list(lo), list(opt), list(hi))

    class BuilderConfig:
        def __init__(self) -> None:
            self._flags = {BuilderFlag.TF32} if tf32_default else set()
            self.pools: dict[MemoryPoolType, int] = {}
            self.profiles: list[Profile] = []
            self.default_device_type = DeviceType.GPU
            self.DLA_core = -1
            self.timing_cache: TimingCache | None = None

        def set_flag(self, flag: BuilderFlag) -> None:
            self._flags.add(BuilderFlag(flag))

        def clear_flag(self, flag: BuilderFlag) -> None:
            self._flags.discard(BuilderFlag(flag))

        def get_flag(self, flag: BuilderFlag) -> bool:
            return BuilderFlag(flag) in self._flags

        def set_memory_pool_limit(self, pool: MemoryPoolType, size: int) -> None:
            self.pools[pool] = size

        def add_optimization_profile(self, profile: Profile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, data: bytes) -> TimingCache:
            return TimingCache(bytes(data))

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            self.timing_cache = cache
            return True

    class Builder:
        def __init__(self, logger: Any) -> None:
            self.num_DLA_cores = dla_cores

        def create_network(self, flags: int = 0) -> Network:
            return Network(flags)

        def create_builder_config(self) -> BuilderConfig:
            return BuilderConfig()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: BuilderConfig) -> bytes:
            builds.append({"flags": sorted(f.name for f in config._flags), "network_flags": network.flags,
                           "pools": dict(config.pools), "device_type": config.default_device_type.name,
                           "dla_core": config.DLA_core,
                           "profiles": [p.shapes for p in config.profiles]})
            shape = next(iter(config.profiles[0].shapes.values()))[0] if config.profiles else network.inputs[0].shape
            return fake_plan(tuple(shape), map_hw)

    for name, value in dict(BuilderFlag=BuilderFlag, NetworkDefinitionCreationFlag=NetworkDefinitionCreationFlag,
                            MemoryPoolType=MemoryPoolType, DeviceType=DeviceType, Dims=Dims, OnnxParser=OnnxParser,
                            Builder=Builder).items():
        setattr(trt, name, value)
    return builds
