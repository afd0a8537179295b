"""Build TensorRT engines from the package's ONNX graphs, on the device that will run them.

Precision policy (see docs: TensorRT 11 removed weak typing; Jetson on JetPack 6 is stuck on TensorRT 10.3):
- each precision has its own ONNX graph: fp32 as exported, fp16 with explicit casts (AutoCast), int8 with Q/DQ nodes;
- fp16/int8 graphs are built as *strongly typed* networks (TensorRT 10: NetworkDefinitionCreationFlag.STRONGLY_TYPED;
  TensorRT 11: always), so TensorRT runs every layer in the type the graph says, and FP32 islands (LayerNorm, softmax,
  the score reduction) stay FP32;
- on TensorRT 10 only, `fp16_fallback` builds the fp32 graph weakly typed with BuilderFlag.FP16 (TensorRT picks the
  precision per layer), for packages that have no fp16 graph;
- BuilderFlag.TF32 (on by default in TensorRT 10 and 11) is cleared in every build, so FP32 layers, the fp16/int8
  graphs' FP32 islands included, keep a 23-bit mantissa; `tf32=True` allows it for fp32 engines only.

Line-side engines are built for one static input shape: a dynamic batch gets an optimisation profile with
min = opt = max, which builds faster and gets better tactics than a range.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from edge_ad.errors import ConfigError, PackageError
from edge_ad.fileio import atomic_write_bytes
from edge_ad.runtime.package import ModelPackage
from edge_ad.runtime.trt import EngineBuildError, load_tensorrt, tensorrt_major
from edge_ad.runtime.trt.cache import (
    EngineKey,
    device_tag,
    engines_dir,
    find_engine,
    get_default,
    model_sha256,
    prune_engines,
    set_default,
    store_engine,
)
from edge_ad.runtime.trt.cuda_mem import CudaApi, DeviceInfo, get_cuda
from edge_ad.runtime.trt.engine_options import EngineOptions
from edge_ad.runtime.trt.support import check_dla

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class BuildMode:
    """How the network is typed: strongly (types from the graph) or weakly, optionally with BuilderFlag.FP16."""

    strongly_typed: bool
    fp16_flag: bool

    @property
    def typing(self) -> str:
        """Label used in engine cache keys: "strong", "weak" or "weak-fp16"."""
        if self.strongly_typed:
            return "strong"
        return "weak-fp16" if self.fp16_flag else "weak"


def builder_flags(mode: BuildMode, dla_core: int | None, tf32: bool = False) -> tuple[str, ...]:
    """The BuilderFlag names `build_engine` leaves set for this mode (part of the engine cache key; TF32 is
    cleared unless listed)."""
    flags = []
    if mode.fp16_flag:
        flags.append("FP16")
    if dla_core is not None:
        flags.append("GPU_FALLBACK")
    if tf32:
        flags.append("TF32")
    return tuple(flags)


def check_tf32(precision: str, tf32: bool) -> None:
    """ConfigError when TF32 is asked for an engine whose FP32 layers are FP32 by the model's spec."""
    if tf32 and precision != "fp32":
        raise ConfigError(f"tf32: applies to fp32 engines only; a {precision} graph's FP32 islands (norms, softmax, "
                          "the spec's FP32 sums) are built in full FP32")


def resolve_build_mode(trt_major: int, precision: str, strongly_typed: bool | None = None,
                       fp16_fallback: bool = False) -> BuildMode:
    """Typing mode for a build, or ConfigError for a combination this TensorRT version cannot do.

    Default (strongly_typed=None): strongly typed for fp16/int8 graphs, and always on TensorRT >= 11; fp32 graphs are
    built weakly typed on TensorRT 10 (the same FP32 layers; TF32 only where `tf32` allows it).
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision: expected one of {list(PRECISIONS)}, got {precision!r}")
    if fp16_fallback and precision != "fp16":
        raise ConfigError(f"fp16_fallback: only applies to precision 'fp16', got precision {precision!r}")
    if trt_major >= 11:
        if fp16_fallback or strongly_typed is False:
            raise ConfigError(f"TensorRT {trt_major}.x has no weak typing (BuilderFlag.FP16 was removed): build from "
                              "the package's fp16 ONNX graph (strongly typed) instead of --fp16-fallback")
        return BuildMode(strongly_typed=True, fp16_flag=False)
    if fp16_fallback:
        if strongly_typed:
            raise ConfigError("fp16_fallback builds a weakly typed network: it cannot be combined with "
                              "strongly_typed=True")
        return BuildMode(strongly_typed=False, fp16_flag=True)
    if strongly_typed is None:
        strongly_typed = precision != "fp32"
    if not strongly_typed and precision == "int8":
        raise ConfigError("precision 'int8': the Q/DQ graph must be built strongly typed (implicit INT8 "
                          "calibration is deprecated since TensorRT 10.1 and not supported by edge-ad)")
    return BuildMode(strongly_typed=strongly_typed, fp16_flag=not strongly_typed and precision == "fp16")


def make_logger() -> trt.ILogger:
    """A TensorRT logger forwarding to Python logging and keeping error messages for exception texts."""
    import tensorrt as trt

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
            level = int(severity)
            if level <= int(trt.ILogger.Severity.ERROR):
                self.errors.append(msg)
                log.error("TensorRT: %s", msg)
            elif level == int(trt.ILogger.Severity.WARNING):
                log.warning("TensorRT: %s", msg)
            elif level == int(trt.ILogger.Severity.INFO):
                log.info("TensorRT: %s", msg)
            else:
                log.debug("TensorRT: %s", msg)

    return _Logger()


def dla_core_count(trt: ModuleType) -> int:
    """DLA cores this TensorRT sees on the current device (a builder is made to ask; 0 on Orin Nano and dGPUs)."""
    return int(trt.Builder(make_logger()).num_DLA_cores)


def _logged_errors(logger: trt.ILogger) -> list[str]:
    errors = getattr(logger, "errors", [])
    return [str(e) for e in errors]


def _read_timing_cache(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""
    except OSError as e:
        log.warning("timing cache %s unreadable (%s); starting an empty one", path, e)
        return b""


def _new_timing_cache(config: trt.IBuilderConfig, data: bytes) -> trt.ITimingCache | None:
    """A timing cache from serialized bytes, or None when TensorRT rejects them (truncated, corrupt, foreign)."""
    try:
        return config.create_timing_cache(data)
    except Exception as e:
        log.debug("timing cache rejected: %s", e)
        return None


def _setup_timing_cache(config: trt.IBuilderConfig, path: Path | None) -> tuple[trt.ITimingCache, bytes]:
    """Load the timing cache at `path` (or an empty one) into `config`; returns it and the bytes it started from.

    A cache that is corrupt or was made by another TensorRT version or GPU is discarded with a warning (the build
    then times tactics from scratch); it never fails the build."""
    start = _read_timing_cache(path) if path is not None else b""
    cache = _new_timing_cache(config, start) if start else None
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        if start:
            log.warning("timing cache %s is corrupt or was made by another TensorRT version or GPU; discarding it "
                        "(this build times every tactic again)", path)
        start = b""
        cache = _new_timing_cache(config, b"")
        if cache is None:
            raise EngineBuildError("TensorRT cannot create an empty timing cache (see the TensorRT messages above)")
        config.set_timing_cache(cache, ignore_mismatch=False)
    return cache, start


def _save_timing_cache(config: trt.IBuilderConfig, cache: trt.ITimingCache, path: Path, start: bytes) -> None:
    """Merge what another process saved meanwhile into `cache`, then write it atomically."""
    now = _read_timing_cache(path)
    if now and now != start:
        other = _new_timing_cache(config, now)
        if other is None or not cache.combine(other, ignore_mismatch=False):
            log.warning("timing cache %s: could not merge the version saved meanwhile; overwriting it", path)
    try:
        atomic_write_bytes(path, bytes(memoryview(cache.serialize())), fsync=True)
    except OSError as e:
        log.warning("timing cache %s not saved (%s)", path, e)


def _static_profile(builder: trt.Builder, network: trt.INetworkDefinition, input_shape: tuple[int, ...] | None,
                    where: str) -> trt.IOptimizationProfile | None:
    """Check `input_shape` against the network's single input; a profile min=opt=max=input_shape if it is dynamic."""
    import tensorrt as trt

    if network.num_inputs != 1:
        names = [network.get_input(i).name for i in range(network.num_inputs)]
        raise PackageError(f"{where}: expected one graph input (the uint8 image), got {names}")
    inp = network.get_input(0)
    dims = [int(inp.shape[i]) for i in range(len(inp.shape))]
    if input_shape is None:
        if any(d < 0 for d in dims):
            raise ConfigError(f"{where}: graph input {inp.name!r} has dynamic dimensions {dims}: pass input_shape, "
                              "e.g. (1, H, W, 3), to build a static engine")
        return None
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != len(dims) or any(d >= 0 and d != s for d, s in zip(dims, shape)) or min(shape) < 1:
        raise ConfigError(f"input_shape: {list(shape)} does not fit graph input {inp.name!r} of shape {dims} "
                          "(-1 = dynamic)")
    if all(d >= 0 for d in dims):
        return None
    profile = builder.create_optimization_profile()
    static = trt.Dims(list(shape))
    profile.set_shape(inp.name, static, static, static)
    return profile


def build_engine(onnx_path: str | Path, precision: str, *, workspace_mb: int | None = None,
                 timing_cache: str | Path | None = None, dla_core: int | None = None,
                 input_shape: tuple[int, ...] | None = None, strongly_typed: bool | None = None,
                 fp16_fallback: bool = False, tf32: bool = False) -> bytes:
    """Parse `onnx_path` and build a serialized TensorRT engine (plan) for the current CUDA device.

    `precision` names the graph's precision (fp32/fp16/int8) and selects the typing mode (`resolve_build_mode`).
    `workspace_mb` caps the builder's scratch memory (on Jetson it comes out of system RAM). `timing_cache` is a file
    read before and merged/saved (atomically) after the build, which makes rebuilds on the device much faster.
    `dla_core` builds an fp16 engine for that DLA core, weakly typed with GPU fallback for the layers DLA lacks
    (TensorRT 10.x; refused elsewhere with the alternative, see trt/support.py). `input_shape` (e.g. (1,224,224,3))
    is required when the graph's batch is dynamic. `tf32` lets fp32 layers run in TF32 (fp32 engines only).
    """
    load_tensorrt()
    import tensorrt as trt

    path = Path(onnx_path)
    if not path.is_file():
        raise PackageError(f"{path}: ONNX graph not found")
    logger = make_logger()
    builder = trt.Builder(logger)
    if dla_core is not None:  # DLA: fp16 only, weakly typed with BuilderFlag.FP16 (as TensorRT 10.3 documents it)
        check_dla(precision, str(trt.__version__), int(builder.num_DLA_cores), dla_core)
        mode = resolve_build_mode(tensorrt_major(trt), precision, False, True)
    else:
        mode = resolve_build_mode(tensorrt_major(trt), precision, strongly_typed, fp16_fallback)
    check_tf32(precision, tf32)
    if workspace_mb is not None and workspace_mb < 1:
        raise ConfigError(f"workspace_mb: expected an integer >= 1 (MiB), got {workspace_mb}")
    flags = 0
    if mode.strongly_typed and tensorrt_major(trt) < 11:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    # bytes, not parse_from_file: without a path the parser cannot follow an initializer's "external data"
    # location out of the package (edge-ad packages never use external data; ORT refuses escaping paths too)
    if not parser.parse(path.read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)] or _logged_errors(logger)
        listing = "\n  - ".join(errors) or "(no details reported)"
        raise EngineBuildError(f"{path}: TensorRT {trt.__version__} cannot parse the ONNX graph "
                               f"({len(errors)} error(s)):\n  - {listing}")

    config = builder.create_builder_config()
    profile = _static_profile(builder, network, input_shape, str(path))
    if profile is not None:
        config.add_optimization_profile(profile)
    if workspace_mb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if mode.fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    if tf32:
        config.set_flag(trt.BuilderFlag.TF32)
    else:  # on by default: FP32 layers would run with a 10-bit mantissa
        config.clear_flag(trt.BuilderFlag.TF32)
    if dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    cache_path = Path(timing_cache) if timing_cache is not None else None
    cache, cache_start = _setup_timing_cache(config, cache_path)

    t0 = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - t0
    if plan is None:
        errors = _logged_errors(logger)
        detail = ("\n  - " + "\n  - ".join(errors)) if errors else " (see the TensorRT messages above)"
        raise EngineBuildError(
            f"{path}: TensorRT {trt.__version__} failed to build a {precision} engine ({mode.typing} typing) after "
            f"{seconds:.1f} s{detail}\nTry a larger --workspace, another --precision, or run without --dla.")
    if cache_path is not None:
        _save_timing_cache(config, cache, cache_path, cache_start)
    data = bytes(memoryview(plan))
    log.info("built %s engine (%s typing) from %s in %.1f s: %.1f MiB", precision, mode.typing, path.name, seconds,
             len(data) / 2**20)
    return data


def _record_default(package: ModelPackage, tag: str, opts: EngineOptions, engine: Path) -> None:
    try:
        set_default(package, tag, opts.to_dict(), engine, package.digest)
    except OSError as e:
        log.warning("engine options not recorded as this device's default (%s)", e)


@dataclass(frozen=True)
class EngineRecord:
    """A ready engine for a package on this device: its key, plan bytes, cache path (None when not cacheable)."""

    key: EngineKey
    plan: bytes
    path: Path | None
    built: bool
    build_seconds: float | None
    onnx_path: Path


def default_timing_cache(package: ModelPackage, info: DeviceInfo, trt_version: str) -> Path:
    """Per-device timing cache kept next to the engines (timing data is only valid for one GPU + TensorRT)."""
    tag = device_tag(info.name, info.sm, trt_version, info.multiprocessors)
    return engines_dir(package) / f"timing_{tag}.timing-cache"


def engine_input_shape(package: ModelPackage, batch: int | None) -> tuple[int, int, int, int]:
    """(B, H, W, 3) for the engine: the manifest's fixed batch, else `batch` (default: 1, or for a tiled package
    the tiles of one frame, so a frame is one engine call)."""
    fixed = package.manifest["input"].get("batch", "dynamic")
    if isinstance(fixed, int):
        if batch is not None and batch != fixed:
            raise ConfigError(f"batch: the package graph has a fixed batch of {fixed} (manifest input.batch), "
                              f"got {batch}")
        b = fixed
    else:
        geometry = package.geometry() if batch is None else None
        b = batch if batch is not None else geometry.max_views() if geometry is not None else 1
    if b < 1:
        raise ConfigError(f"batch: expected an integer >= 1, got {b}")
    h, w = package.input_hw
    return b, h, w, 3


def resolve_onnx(package: ModelPackage, precision: str, fp16_fallback: bool, trt_major: int) -> Path:
    """The ONNX graph an engine of `precision` is built from, with a hint when the package lacks it."""
    if fp16_fallback:
        return package.onnx_path("fp32")
    try:
        return package.onnx_path(precision)
    except PackageError as e:
        hint = ""
        if precision == "fp16" and trt_major < 11:
            hint = "; or build the fp32 graph with TensorRT's FP16 flag: --fp16-fallback (TensorRT 10 only)"
        raise PackageError(f"{e}; add a {precision} graph to the package with edge-ad's precision step{hint}") from e


def ensure_engine(package: ModelPackage, precision: str | None = None, *, device: int = 0, batch: int | None = None,
                  workspace_mb: int | None = None, timing_cache: str | Path | None = None,
                  dla_core: int | None = None, fp16_fallback: bool = False, tf32: bool = False, force: bool = False,
                  build_if_missing: bool = True, record_default: bool = False,
                  cuda: CudaApi | None = None) -> EngineRecord:
    """Return the cached engine for this package/precision/shape on GPU `device`, building (and caching) it if needed.

    With no engine option given (precision, batch, workspace_mb, dla_core, fp16_fallback, tf32), the options that
    `edge-ad build` last recorded for this device (`record_default=True`) apply, so a run after a build reuses
    that engine. `timing_cache` defaults to a per-device file in `<package>/engines/`. A package directory that is
    not writable still gets an engine, built in memory on every start (a warning says so).
    """
    load_tensorrt()
    import tensorrt as trt

    major = tensorrt_major(trt)
    chosen = EngineOptions(precision=precision, batch=batch, workspace_mb=workspace_mb, dla_core=dla_core,
                           fp16_fallback=fp16_fallback, tf32=tf32)
    api = cuda if cuda is not None else get_cuda()
    with api.activate(device):  # the builder runs on the device current on this thread
        info = api.device_info(device)
        tag = device_tag(info.name, info.sm, str(trt.__version__), info.multiprocessors)
        opts = chosen
        if chosen.is_unset() and not record_default:
            recorded = get_default(package, tag, package.digest)
            if recorded is not None:
                opts = EngineOptions.from_dict(recorded, f"{engines_dir(package)}: recorded default for {tag}")
                log.info("using the engine options `edge-ad build` recorded for this device: %s", opts.kwargs())
        prec = opts.precision or package.precision
        if prec == "bf16":  # a bf16 package is the fp32 graph for engines without a bf16 path of their own
            log.info("%s: bf16 package: TensorRT builds its fp32 graph (export fp16 or int8 for a GPU)", package.root)
            prec = "fp32"
        fallback = opts.fp16_fallback
        if opts.dla_core is not None:  # refused with the alternative, or fp16 from the fp32 graph, weakly typed
            check_dla(prec, str(trt.__version__), dla_core_count(trt), opts.dla_core)
            fallback = True
        mode = resolve_build_mode(major, prec, None, fallback)
        check_tf32(prec, opts.tf32)
        onnx = resolve_onnx(package, prec, fallback, major)
        shape = engine_input_shape(package, opts.batch)
        key = EngineKey(model_sha256=model_sha256(package, onnx), package_digest=package.digest, precision=prec,
                        typing=mode.typing,
                        input_shape=shape, tensorrt=str(trt.__version__), gpu=info.name, compute_capability=info.sm,
                        sm_count=info.multiprocessors, memory_mib=info.total_memory >> 20, dla_core=opts.dla_core,
                        workspace_mib=opts.workspace_mb, builder_flags=builder_flags(mode, opts.dla_core, opts.tf32))
        found = None if force else find_engine(package, key)
        if found is not None:
            log.info("using cached engine %s", found)
            if record_default:
                _record_default(package, tag, opts, found)
            return EngineRecord(key=key, plan=found.read_bytes(), path=found, built=False, build_seconds=None,
                                onnx_path=onnx)
        if not build_if_missing:
            raise PackageError(f"{engines_dir(package)}: no TensorRT engine for {key.describe()}; build it on this "
                               f"device with `edge-ad build {package.root} --precision {prec}`")
        log.info("building TensorRT engine for %s (this takes minutes on a Jetson)", key.describe())
        cache_file = timing_cache if timing_cache is not None else default_timing_cache(package, info, key.tensorrt)
        t0 = time.perf_counter()
        plan = build_engine(onnx, prec, workspace_mb=opts.workspace_mb, timing_cache=cache_file,
                            dla_core=opts.dla_core, input_shape=shape, strongly_typed=mode.strongly_typed,
                            fp16_fallback=fallback, tf32=opts.tf32)
        seconds = time.perf_counter() - t0
    path: Path | None
    try:
        path = store_engine(package, key, plan, seconds)
        prune_engines(package)
    except (PackageError, OSError) as e:
        log.warning("engine not cached (%s): it will be rebuilt at every start; make %s writable", e, package.root)
        path = None
    if record_default and path is not None:
        _record_default(package, tag, opts, path)
    return EngineRecord(key=key, plan=plan, path=path, built=True, build_seconds=seconds, onnx_path=onnx)
