"""TensorRT device code: build modes, engine cache keys and staleness, CUDA/zero-copy choices, CLI errors without
TensorRT, verify metrics. Tests marked `tensorrt` build and run real engines; they skip unless tensorrt and a GPU are
present (run them on the Jetson: `pytest tests/test_tensorrt.py -m tensorrt`)."""

from __future__ import annotations

import functools
import json
import logging
import sys
import threading
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_trt import ORIN_AGX, ORIN_NX, FakeCuda, fake_plan, make_tensorrt

from edge_ad.errors import ConfigError, PackageError
from edge_ad.runtime.package import load_package, write_package
from edge_ad.runtime.trt import TensorRTMissingError, load_tensorrt, tensorrt_available
from edge_ad.runtime.trt import build as trt_build
from edge_ad.runtime.trt.build import (
    BuildMode,
    engine_input_shape,
    ensure_engine,
    resolve_build_mode,
    resolve_onnx,
)
from edge_ad.runtime.trt.cache import (
    EngineKey,
    find_engine,
    list_engines,
    model_sha256,
    prune_engines,
    store_engine,
)
from edge_ad.runtime.trt.cuda_mem import (
    CudaMissingError,
    DeviceInfo,
    use_zero_copy,
)

H = W = 32


def tiny_onnx(path: Path, batch: int | str = "B") -> Path:
    """uint8 [B,H,W,3] -> anomaly_map = channel mean / 255 [B,1,H,W], score = its max [B]."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["f", "k"], ["fs"]),
        helper.make_node("ReduceMean", ["fs"], ["m"], axes=[3], keepdims=1),
        helper.make_node("Transpose", ["m"], ["anomaly_map"], perm=[0, 3, 1, 2]),
        helper.make_node("ReduceMax", ["anomaly_map"], ["score"], axes=[1, 2, 3], keepdims=0),
    ]
    inits = [helper.make_tensor("k", TensorProto.FLOAT, [], [1 / 255.0])]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.UINT8, [batch, H, W, 3])],
        [helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, [batch, 1, H, W]),
         helper.make_tensor_value_info("score", TensorProto.FLOAT, [batch])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def manifest(batch: int | str = "dynamic") -> dict[str, Any]:
    return {
        "created": "2026-11-24T10:00:00Z",
        "model": {"name": "tiny", "family": "test", "untrained": True},
        "categories": ["bottle"],
        "precision": "fp32",
        "onnx": {"file": "model.onnx", "opset": 17},
        "input": {"name": "image", "dtype": "uint8", "layout": "NHWC", "height": H, "width": W, "batch": batch,
                  "preprocess": {"resize": [H, W], "crop": [H, W], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                                 "color_order": "RGB"}},
        "outputs": {"anomaly_map": {"height": H, "width": W}, "score": {}},
        "postprocess": {"min_region_area_px": 0},
        "thresholds": {"image": {"value": 0.5}, "pixel": {"value": 0.5},
                       "normalization": {"score_min": 0.0, "score_max": 1.0, "pixel_min": 0.0, "pixel_max": 1.0}},
        "files": {},
    }


@pytest.fixture
def package(tmp_path: Path):
    onnx_file = tiny_onnx(tmp_path / "src.onnx")
    return load_package(write_package(tmp_path / "pkg", {"model.onnx": onnx_file}, manifest()))


def key_for(pkg, **kw: Any) -> EngineKey:
    base: dict[str, Any] = {"model_sha256": model_sha256(pkg, pkg.onnx_path()), "package_digest": pkg.digest,
                            "precision": "fp32",
                            "typing": "weak", "input_shape": (1, H, W, 3), "tensorrt": "10.3.0.30",
                            "gpu": "Orin (nvgpu)", "compute_capability": "8.7", "sm_count": 8, "memory_mib": 16384}
    base.update(kw)
    return EngineKey(**base)


# ---------------------------------------------------------------- tensorrt missing

@pytest.fixture
def no_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)


def test_load_tensorrt_missing_names_the_jetpack_package(no_tensorrt: None) -> None:
    with pytest.raises(TensorRTMissingError, match="python3-libnvinfer"):
        load_tensorrt()
    assert not tensorrt_available()


def test_stub_only_tensorrt_namespace_is_not_mistaken_for_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))  # what tensorrt-stubs alone gives
    with pytest.raises(TensorRTMissingError, match="type stubs"):
        load_tensorrt()


@pytest.mark.parametrize("command", ["build", "verify"])
def test_cli_exits_2_with_install_message_without_tensorrt(no_tensorrt: None, package, command: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from edge_ad.cli.main import main

    assert main([command, str(package.root)]) == 2
    err = capsys.readouterr().err
    assert f"edge-ad {command}: error: tensorrt is not installed" in err and "python3-libnvinfer" in err
    assert "Traceback" not in err


def test_backend_module_without_tensorrt(no_tensorrt: None, package) -> None:
    from edge_ad.runtime.backends import create_backend
    from edge_ad.runtime.backends import tensorrt as trt_backend

    assert trt_backend.available(package) is False
    with pytest.raises(ConfigError):
        create_backend(package, "tensorrt")


# ---------------------------------------------------------------- build modes

@pytest.mark.parametrize("major,precision,typed,fallback,want", [
    (10, "fp32", None, False, BuildMode(False, False)),
    (10, "fp16", None, False, BuildMode(True, False)),
    (10, "int8", None, False, BuildMode(True, False)),
    (10, "fp16", None, True, BuildMode(False, True)),
    (10, "fp16", False, False, BuildMode(False, True)),
    (10, "fp32", True, False, BuildMode(True, False)),
    (11, "fp32", None, False, BuildMode(True, False)),
    (11, "fp16", None, False, BuildMode(True, False)),
    (11, "int8", True, False, BuildMode(True, False)),
])
def test_resolve_build_mode(major: int, precision: str, typed: bool | None, fallback: bool, want: BuildMode) -> None:
    assert resolve_build_mode(major, precision, typed, fallback) == want


@pytest.mark.parametrize("major,precision,typed,fallback,match", [
    (11, "fp16", None, True, "no weak typing"),
    (11, "fp32", False, False, "no weak typing"),
    (10, "int8", False, False, "strongly typed"),
    (10, "int8", None, True, "only applies to precision 'fp16'"),
    (10, "fp16", True, True, "cannot be combined"),
    (10, "bf16", None, False, "expected one of"),
])
def test_resolve_build_mode_rejects(major: int, precision: str, typed: bool | None, fallback: bool,
                                    match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        resolve_build_mode(major, precision, typed, fallback)


def test_mode_labels() -> None:
    assert [BuildMode(True, False).typing, BuildMode(False, True).typing, BuildMode(False, False).typing] == \
        ["strong", "weak-fp16", "weak"]


def test_resolve_onnx_hints(package) -> None:
    with pytest.raises(PackageError, match="--fp16-fallback"):
        resolve_onnx(package, "fp16", False, 10)
    with pytest.raises(PackageError, match="precision step") as e:
        resolve_onnx(package, "fp16", False, 11)
    assert "--fp16-fallback" not in str(e.value)
    assert resolve_onnx(package, "fp16", True, 10) == package.root / "model.onnx"


def test_engine_input_shape(tmp_path: Path, package) -> None:
    assert engine_input_shape(package, None) == (1, H, W, 3)
    assert engine_input_shape(package, 4) == (4, H, W, 3)
    with pytest.raises(ConfigError, match=">= 1"):
        engine_input_shape(package, 0)
    fixed = load_package(write_package(tmp_path / "fixed", {"model.onnx": tiny_onnx(tmp_path / "f.onnx", 2)},
                                       manifest(batch=2)))
    assert engine_input_shape(fixed, None) == (2, H, W, 3)
    with pytest.raises(ConfigError, match="fixed batch of 2"):
        engine_input_shape(fixed, 1)


# ---------------------------------------------------------------- cache

def test_engine_key_file_name_is_readable_and_key_specific(package) -> None:
    k = key_for(package)
    name = k.file_name()
    assert name.startswith(k.model_sha256[:8] + "_fp32-weak_1x32x32x3_orin-nvgpu_sm87-x8_trt10.3.0.30_")
    assert name.endswith(".engine") and "/" not in name
    variants = [key_for(package, precision="fp16", typing="strong"), key_for(package, input_shape=(2, H, W, 3)),
                key_for(package, tensorrt="10.3.0.31"), key_for(package, gpu="NVIDIA H100"),
                key_for(package, compute_capability="9.0"), key_for(package, dla_core=0),
                key_for(package, model_sha256="f" * 64), key_for(package, sm_count=16),
                key_for(package, memory_mib=65536), key_for(package, workspace_mib=512),
                key_for(package, builder_flags=("GPU_FALLBACK",)), key_for(package, package_digest="e" * 64)]
    names = {v.file_name() for v in variants}
    assert len(names) == len(variants) and name not in names
    assert EngineKey.from_dict(json.loads(json.dumps(k.to_dict()))) == k


def test_store_then_find(package) -> None:
    manifest_before = (package.root / "manifest.json").read_bytes()
    k = key_for(package)
    path = store_engine(package, k, b"plan-bytes", build_seconds=1.5)
    assert path.parent == package.root / "engines" and path.read_bytes() == b"plan-bytes"
    assert find_engine(package, k) == path
    assert find_engine(package.root, k) == path  # a plain path works too
    index = json.loads((package.root / "engines" / "index.json").read_text())
    rec = index["engines"][path.name]
    assert rec["key"] == k.to_dict() and rec["bytes"] == 10 and rec["build_seconds"] == 1.5
    # the manifest is untouched and the package still verifies with engines/ inside it
    assert (package.root / "manifest.json").read_bytes() == manifest_before
    load_package(package.root)
    assert not [p for p in (package.root / "engines").iterdir() if p.name.endswith(".tmp")]


def test_foreign_or_stale_key_is_not_found(package) -> None:
    store_engine(package, key_for(package), b"plan")
    assert find_engine(package, key_for(package, tensorrt="10.7.0.23")) is None
    assert find_engine(package, key_for(package, gpu="NVIDIA GeForce RTX 4090", compute_capability="8.9")) is None
    assert find_engine(package, key_for(package, precision="fp16", typing="strong")) is None


def test_tampered_engine_is_not_loaded(package) -> None:
    k = key_for(package)
    path = store_engine(package, k, b"plan")
    path.write_bytes(b"other")  # same size class, different content
    assert find_engine(package, k) is None
    path.unlink()
    assert find_engine(package, k) is None


def test_engine_copied_in_without_index_entry_is_ignored(package) -> None:
    k = key_for(package)
    (package.root / "engines").mkdir()
    (package.root / "engines" / k.file_name()).write_bytes(b"plan from another device")
    assert find_engine(package, k) is None


def test_index_entry_with_mismatching_key_is_not_trusted(package) -> None:
    k = key_for(package)
    path = store_engine(package, k, b"plan")
    index_path = package.root / "engines" / "index.json"
    index = json.loads(index_path.read_text())
    index["engines"][path.name]["key"]["tensorrt"] = "8.6.1"
    index_path.write_text(json.dumps(index))
    assert find_engine(package, k) is None


def test_corrupt_index_reads_as_empty(package) -> None:
    k = key_for(package)
    store_engine(package, k, b"plan")
    (package.root / "engines" / "index.json").write_text("{not json")
    assert find_engine(package, k) is None
    assert list_engines(package) == []
    store_engine(package, k, b"plan")  # a rebuild repairs the index
    assert find_engine(package, k) is not None


def test_prune_removes_engines_of_graphs_no_longer_in_package(package) -> None:
    current = store_engine(package, key_for(package), b"current")
    other_device = store_engine(package, key_for(package, gpu="NVIDIA H100", compute_capability="9.0"), b"h100")
    stale = store_engine(package, key_for(package, package_digest="0" * 64), b"stale")
    assert prune_engines(package) == [stale]
    assert current.exists() and other_device.exists() and not stale.exists()
    assert {e.path for e in list_engines(package)} == {current, other_device}


def test_engine_is_bound_to_the_package_digest(package, tmp_path: Path) -> None:
    """Same graph, edited manifest (new thresholds, new digest): the old package's engine is never reused."""
    from edge_ad.runtime.package import manifest_digest

    store_engine(package, key_for(package), b"plan")
    man = json.loads((package.root / "manifest.json").read_text())
    man["thresholds"]["image"]["value"] = man["thresholds"]["normalization"]["score_min"]
    man["digest"] = manifest_digest(man)
    (package.root / "manifest.json").write_text(json.dumps(man))
    edited = load_package(package.root)
    assert edited.digest != package.digest and model_sha256(edited, edited.onnx_path()) == key_for(package).model_sha256
    assert find_engine(edited, key_for(edited)) is None
    assert len(prune_engines(edited)) == 1


# ---------------------------------------------------------------- ensure_engine with a fake TensorRT and GPU

ORIN = ORIN_NX


@pytest.fixture
def fake_trt(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """A `tensorrt` module that passes load_tensorrt, and build_engine replaced by a recorder."""
    mod = types.ModuleType("tensorrt")
    mod.__version__ = "10.3.0.30"  # type: ignore[attr-defined]
    mod.Builder = object  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt", mod)
    calls: list[dict[str, Any]] = []

    def fake_build(onnx_path: Path, precision: str, **kw: Any) -> bytes:
        calls.append({"onnx": Path(onnx_path), "precision": precision, **kw})
        return f"plan-{precision}-{len(calls)}".encode()

    monkeypatch.setattr(trt_build, "build_engine", fake_build)
    return calls


def test_ensure_engine_builds_once_then_reuses(package, fake_trt: list[dict[str, Any]]) -> None:
    cuda = FakeCuda(ORIN)
    first = ensure_engine(package, cuda=cuda)
    assert first.built and first.plan == b"plan-fp32-1" and first.path is not None
    assert ("set_device", threading.get_ident(), 0) in cuda.events  # the builder ran with the device current
    call = fake_trt[0]
    assert call["input_shape"] == (1, H, W, 3) and call["strongly_typed"] is False
    assert Path(call["timing_cache"]).name == "timing_orin-nvgpu_sm87-x8_trt10.3.0.30.timing-cache"
    second = ensure_engine(package, cuda=cuda)
    assert not second.built and second.plan == first.plan and second.path == first.path and len(fake_trt) == 1
    forced = ensure_engine(package, cuda=cuda, force=True)
    assert forced.built and len(fake_trt) == 2
    assert first.key.gpu == "Orin (nvgpu)" and first.key.compute_capability == "8.7"


def test_ensure_engine_rebuilds_for_another_gpu_or_batch(package, fake_trt: list[dict[str, Any]]) -> None:
    ensure_engine(package, cuda=FakeCuda(ORIN))
    h100 = DeviceInfo(0, "NVIDIA H100", (9, 0), integrated=False, can_map_host_memory=True, total_memory=80 << 30,
                      multiprocessors=132)
    assert ensure_engine(package, cuda=FakeCuda(h100)).built
    assert ensure_engine(package, cuda=FakeCuda(ORIN), batch=4).built
    assert len(fake_trt) == 3 and len(list_engines(package)) == 3


def test_ensure_engine_without_build_names_the_command(package, fake_trt: list[dict[str, Any]]) -> None:
    with pytest.raises(PackageError, match="edge-ad build"):
        ensure_engine(package, cuda=FakeCuda(ORIN), build_if_missing=False)
    assert fake_trt == []


def test_ensure_engine_fp16_fallback_uses_fp32_graph(package, fake_trt: list[dict[str, Any]]) -> None:
    rec = ensure_engine(package, "fp16", cuda=FakeCuda(ORIN), fp16_fallback=True)
    assert rec.key.typing == "weak-fp16" and rec.onnx_path.name == "model.onnx"
    assert fake_trt[0]["fp16_fallback"] is True and fake_trt[0]["strongly_typed"] is False


def test_foreign_module_with_other_sm_count_misses_the_cache(package, fake_trt: list[dict[str, Any]]) -> None:
    """Orin NX and AGX both say "Orin", sm 8.7: their SM counts and memory tell them apart."""
    assert ensure_engine(package, cuda=FakeCuda(ORIN_NX)).built
    agx = ensure_engine(package, cuda=FakeCuda(ORIN_AGX))
    assert agx.built and agx.key.sm_count == 16 and agx.key.memory_mib == 64 << 10
    assert not ensure_engine(package, cuda=FakeCuda(ORIN_NX)).built
    assert ensure_engine(package, cuda=FakeCuda(ORIN_NX), workspace_mb=256).built  # workspace is part of the key
    assert len(fake_trt) == 3


@pytest.fixture
def fake_backend(package, monkeypatch: pytest.MonkeyPatch):
    """(FakeCuda, open(**kw)) for a TensorRTBackend over the fake tensorrt module (no GPU, real backend code)."""
    from fake_trt import add_builder

    from edge_ad.runtime.backends import tensorrt as trt_backend

    cuda = FakeCuda(ORIN_NX)
    mod = make_tensorrt(cuda)
    add_builder(mod, dla_cores=2)  # only num_DLA_cores is read: build_engine itself is replaced below
    monkeypatch.setitem(sys.modules, "tensorrt", mod)
    monkeypatch.setattr(trt_backend, "get_cuda", lambda: cuda)
    monkeypatch.setattr(trt_build, "get_cuda", lambda: cuda)

    def build(onnx_path: Path, precision: str, **kw: Any) -> bytes:
        return fake_plan(kw["input_shape"], (H, W))

    monkeypatch.setattr(trt_build, "build_engine", build)
    return cuda, lambda **kw: trt_backend.TensorRTBackend(package, **kw)


@pytest.mark.parametrize("zero_copy", [False, True])
def test_backend_on_another_thread_makes_the_device_current_there(fake_backend, zero_copy: bool) -> None:
    """The pipeline opens the backend on one thread and runs it on its inference thread."""
    cuda, open_backend = fake_backend
    be = open_backend(batch=2, zero_copy=zero_copy)
    batch = np.random.default_rng(0).integers(0, 256, (3, H, W, 3), dtype=np.uint8)
    out: dict[str, Any] = {}

    def infer() -> None:
        out["thread"] = threading.get_ident()
        out["result"] = be.run(batch)  # 3 images through a batch-2 engine: split and padded

    worker = threading.Thread(target=infer)
    worker.start()
    worker.join()
    mine = [(what, dev) for what, t, dev in cuda.events if t == out["thread"]]
    assert mine[0] == ("set_device", 0)  # first thing on the inference thread, before any copy or execute
    assert ("execute", 0) in mine and all(dev == 0 for what, dev in mine if what in ("execute", "copy_to_device"))
    maps, scores = out["result"]
    assert maps.shape == (3, 1, H, W) and scores.shape == (3,)
    np.testing.assert_allclose(maps[:, 0], batch.astype(np.float32).mean(axis=3) / 255.0, rtol=1e-6)
    np.testing.assert_allclose(scores, maps.reshape(3, -1).max(axis=1))
    assert cuda.stream_flags == ["non-blocking"]
    be.close()


def test_dla_core_is_set_before_the_engine_is_deserialised(fake_backend) -> None:
    cuda, open_backend = fake_backend
    be = open_backend(dla_core=1, precision="fp16")  # DLA: fp16 from the fp32 graph, weakly typed
    order = [what for what, _, _ in cuda.events if what.startswith("DLA_core") or what == "deserialize"]
    assert order == ["DLA_core=1", "deserialize"]
    assert be._runtime.dla_when_deserialised == 1 and be.record.key.dla_core == 1
    assert be.record.key.builder_flags == ("FP16", "GPU_FALLBACK") and be.record.key.typing == "weak-fp16"
    be.close()
    plain = open_backend()
    assert plain._runtime.dla_when_deserialised is None  # no DLA: the runtime keeps its default
    plain.close()


def test_corrupt_timing_cache_is_discarded_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    class Config:
        def __init__(self) -> None:
            self.caches: list[bytes] = []

        def create_timing_cache(self, data: bytes) -> Any:
            if data and not data.startswith(b"TRTCACHE"):
                raise RuntimeError("Failed to deserialize the timing cache")
            self.caches.append(data)
            return ("cache", data)

        def set_timing_cache(self, cache: Any, ignore_mismatch: bool) -> bool:
            return True

    bad = tmp_path / "t.timing-cache"
    bad.write_bytes(b"\x00garbage from a power cut")
    cfg = Config()
    with caplog.at_level(logging.WARNING):
        cache, start = trt_build._setup_timing_cache(cfg, bad)  # type: ignore[arg-type]
    assert cache == ("cache", b"") and start == b"" and "corrupt" in caplog.text
    good = tmp_path / "g.timing-cache"
    good.write_bytes(b"TRTCACHE1")
    assert trt_build._setup_timing_cache(Config(), good) == (("cache", b"TRTCACHE1"), b"TRTCACHE1")  # type: ignore[arg-type]


def test_cuda_python_12_6_0_layout_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """cuda-python <= 12.6.0 has `cuda.cudart` (a submodule `import cuda` does not load), no `cuda.bindings`."""
    from edge_ad.runtime.trt import cuda_mem

    old = types.ModuleType("cuda.cudart")
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", None)  # import fails
    monkeypatch.setitem(sys.modules, "cuda.cudart", old)
    assert cuda_mem._import_cudart() is old
    new = types.ModuleType("cuda.bindings.runtime")
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", new)
    assert cuda_mem._import_cudart() is new  # 12.6.1+ and 13.x: the new name wins


def test_pycuda_context_is_pushed_on_the_calling_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """pycuda's context stack is per thread: activate() pushes the primary context where the work happens."""
    from edge_ad.runtime.trt.cuda_mem import PyCuda

    stacks = threading.local()

    def stack() -> list[Any]:
        if not hasattr(stacks, "s"):
            stacks.s = []
        return stacks.s

    class Ctx:
        detached = False

        def push(self) -> None:
            stack().append(self)

        def detach(self) -> None:
            self.detached = True

    ctx = Ctx()
    drv = types.ModuleType("pycuda.driver")
    drv.init = lambda: None  # type: ignore[attr-defined]
    drv.Error = RuntimeError  # type: ignore[attr-defined]
    drv.Device = lambda i: types.SimpleNamespace(retain_primary_context=lambda: ctx)  # type: ignore[attr-defined]
    drv.Context = types.SimpleNamespace(pop=lambda: stack().pop())  # type: ignore[attr-defined]
    flags: list[int] = []
    drv.Stream = lambda flags=0: flags_append(flags)  # type: ignore[attr-defined]

    def flags_append(f: int) -> Any:
        flags.append(f)
        return types.SimpleNamespace(handle=42)

    api = PyCuda(drv)
    api.set_device(0)
    assert stack() == []  # retained, not left pushed on the opening thread
    seen: dict[str, Any] = {}

    def worker() -> None:
        with api.activate(0):
            seen["inside"] = list(stack())
        seen["after"] = list(stack())

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == {"inside": [ctx], "after": []}
    api.create_stream()
    assert flags == [1]  # CU_STREAM_NON_BLOCKING
    api.close()
    assert ctx.detached


# ---------------------------------------------------------------- CUDA helpers

def test_zero_copy_choice() -> None:
    discrete = DeviceInfo(0, "RTX", (8, 9), integrated=False, can_map_host_memory=True, total_memory=1)
    nomap = DeviceInfo(0, "old", (5, 0), integrated=False, can_map_host_memory=False, total_memory=1)
    assert use_zero_copy(ORIN, "auto") is True
    assert use_zero_copy(discrete, "auto") is False
    assert use_zero_copy(discrete, True) is True
    assert use_zero_copy(ORIN, False) is False
    with pytest.raises(ConfigError, match="cannot map host memory"):
        use_zero_copy(nomap, True)
    with pytest.raises(ConfigError, match="zero_copy"):
        use_zero_copy(ORIN, "yes")


def test_get_cuda_without_any_binding(monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_ad.runtime.trt import cuda_mem

    monkeypatch.setattr(cuda_mem, "_import_cudart", lambda: None)
    monkeypatch.setattr(cuda_mem, "_import_pycuda", lambda: None)
    with pytest.raises(CudaMissingError, match="cuda-python"):
        cuda_mem.get_cuda()


def test_cuda_python_errors_are_clear_without_a_gpu() -> None:
    from edge_ad.runtime.trt import cuda_mem

    if cuda_mem._import_cudart() is None:
        pytest.skip("cuda-python not installed")
    api = cuda_mem.get_cuda()
    if api.device_count() > 0:
        pytest.skip("a GPU is present")
    with pytest.raises(cuda_mem.CudaError, match="cudaGetDeviceProperties"):
        api.device_info(0)
    api.close()


# ---------------------------------------------------------------- verify metrics

def test_compare_flags_decision_flip_and_map_difference() -> None:
    from edge_ad.runtime.trt.engine_check import compare

    th = manifest()["thresholds"]
    maps = np.zeros((4, 1, 2, 2), np.float32)
    ref_scores = np.array([0.1, 0.3, 0.6, 0.8], np.float32)
    ok = compare((maps, ref_scores), (maps + 0.001, ref_scores + 0.002), th, tol=0.01)
    assert ok.failures == []
    # 0.6 -> 0.49 at tolerance 0.2 is a borderline flip (reported); 0.8 -> 0.45 at 0.2 is a clear one
    borderline = compare((maps, ref_scores), (maps, np.array([0.1, 0.3, 0.49, 0.8], np.float32)), th, tol=0.2)
    assert borderline.failures == [] and borderline.borderline[2] and not borderline.borderline[[0, 3]].any()
    assert not borderline.agree[2]
    flipped = compare((maps, ref_scores), (maps, np.array([0.1, 0.3, 0.6, 0.45], np.float32)), th, tol=0.2)
    assert any("OK/NG differs on 1 of 4" in f for f in flipped.failures)
    far = compare((maps, ref_scores), (maps + 0.5, ref_scores), th, tol=0.01)
    assert any("map difference" in f for f in far.failures)


def test_verify_cannot_flap_on_ties() -> None:
    """Untrained packages score noise images almost equally: within tolerance, any reordering of near-ties passes
    (Spearman may be anything), while reversing two clearly separated scores fails."""
    from edge_ad.runtime.trt.engine_check import compare

    th = manifest()["thresholds"]
    maps = np.zeros((8, 1, 2, 2), np.float32)
    rng = np.random.default_rng(0)
    ref = (0.2 + rng.normal(0, 1e-4, 8)).astype(np.float32)
    for seed in range(20):  # every run's rounding reorders the ties differently: the verdict never changes
        got = ref + np.random.default_rng(seed).normal(0, 3e-4, 8).astype(np.float32)
        c = compare((maps, ref), (maps, got), th, tol=0.01)
        assert c.failures == [] and c.separated_pairs == 0
    spread = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], np.float32)
    assert compare((maps, spread), (maps, spread + 0.004), th, tol=0.01).separated_pairs == 28
    swapped = spread.copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    c = compare((maps, spread), (maps, swapped), th, tol=0.2)  # deltas within 0.2, but 0.1/0.2 are not 0.4 apart
    assert c.failures == []
    c = compare((maps, spread), (maps, swapped), th, tol=0.04)
    assert c.swapped_pairs == 1 and any("order reversed for 1 of" in f for f in c.failures)


def test_synthetic_images_are_seeded() -> None:
    from edge_ad.runtime.trt.engine_check import load_images

    a, b = load_images(None, 3, (8, 8), seed=1), load_images(None, 3, (8, 8), seed=1)
    assert len(a) == 3 and all(np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    with pytest.raises(ConfigError):
        load_images(None, 0, (8, 8), seed=1)


# ---------------------------------------------------------------- selftest with the fake TensorRT

def test_selftest_builds_verifies_and_benches_every_package(fake_backend, package, tmp_path: Path) -> None:
    from edge_ad.runtime.trt import selftest

    report = selftest.run_selftest([package], tmp_path / "report", runs=3, warmup=1, n_verify=4, run_tests=False,
                                   log=lambda _msg: None)
    row = report["packages"][0]
    assert report["passed"], json.dumps(report, indent=1, default=str)
    assert row["build"]["passed"] and not row["build"]["cached"]
    assert row["verify"]["passed"] and row["verify"]["max_map_diff"] < 1e-5  # fake engine = the package's graph
    assert row["bench"]["throughput_fps"] > 0 and row["bench"]["infer_ms"]["p50"] >= 0
    assert report["tests"]["skipped"] == "--no-tests"
    saved = json.loads((tmp_path / "report" / "selftest.json").read_text())
    assert saved["passed"] and saved["packages"][0]["build"]["key"]["sm_count"] == 8
    md = (tmp_path / "report" / "selftest.md").read_text()
    assert md.startswith("# edge-ad selftest: PASSED") and "| tiny | fp32 |" in md
    again = selftest.run_selftest([package], tmp_path / "again", runs=2, warmup=0, run_tests=False,
                                  log=lambda _msg: None)
    assert again["packages"][0]["build"]["cached"]  # the engine was cached in the package


def test_selftest_reports_a_failing_step_and_goes_on(fake_backend, package, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_ad.runtime.trt import engine_check, selftest

    def wrong(*args: Any, **kw: Any) -> Any:
        raise PackageError("engine and ONNX Runtime disagree")

    monkeypatch.setattr(engine_check, "verify_engine", wrong)
    report = selftest.run_selftest([package, package], tmp_path, runs=2, warmup=0, run_tests=False,
                                   log=lambda _msg: None)
    assert not report["passed"] and len(report["packages"]) == 2
    for row in report["packages"]:
        assert "disagree" in row["verify"]["error"] and row["bench"]["passed"]
    assert "FAIL" in (tmp_path / "selftest.md").read_text()


def test_selftest_finds_packages_in_a_directory(package, tmp_path: Path) -> None:
    from edge_ad.runtime.trt.selftest import find_packages

    assert [p.root for p in find_packages([package.root.parent])] == [package.root]
    assert [p.root for p in find_packages([package.root])] == [package.root]
    (tmp_path / "empty").mkdir()
    with pytest.raises(PackageError, match="neither a model package"):
        find_packages([tmp_path / "empty"])
    with pytest.raises(PackageError, match="not found"):
        find_packages([tmp_path / "absent"])


def test_selftest_cli_without_tensorrt_says_how_to_install(no_tensorrt: None, capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    from edge_ad.cli.main import main

    assert main(["selftest"]) == 2
    err = capsys.readouterr().err
    assert "tensorrt is not installed" in err and "Traceback" not in err


def test_selftest_prepare_exports_checked_packages(tmp_path: Path) -> None:
    """`--prepare` (lab side): untrained dinomaly-tiny in fp32/fp16/int8, graphs passing the TensorRT rules."""
    import onnx

    from edge_ad.cli.main import main
    from edge_ad.export.graph_check import check_graph
    from edge_ad.runtime.trt.selftest import find_packages

    assert main(["selftest", "--prepare", str(tmp_path)]) == 0
    pkgs = find_packages([tmp_path])
    assert sorted(p.precision for p in pkgs) == ["fp16", "fp32", "int8"]
    for p in pkgs:
        assert p.manifest["model"]["untrained"] and check_graph(onnx.load(str(p.onnx_path()))) == []


# ---------------------------------------------------------------- real TensorRT (Jetson / GPU machine)

def _gpu_present() -> bool:
    if not tensorrt_available():
        return False
    from edge_ad.runtime.trt.cuda_mem import CudaError, get_cuda

    try:
        return get_cuda().device_count() > 0
    except (CudaMissingError, CudaError):
        return False


needs_trt = pytest.mark.skipif(not _gpu_present(), reason="needs tensorrt, cuda-python/pycuda and an NVIDIA GPU")
PRECISIONS = ("fp32", "fp16", "int8")


@functools.cache
def _given_packages() -> tuple[Any, ...]:
    """The packages named by $EDGE_AD_TRT_PACKAGES, loaded (and verified) once per session."""
    import os

    from edge_ad.runtime.trt.selftest import PACKAGES_ENV, find_packages

    given = os.environ.get(PACKAGES_ENV)
    return tuple(find_packages(given.split(os.pathsep))) if given else ()


def _tiny_models() -> list[str]:
    """The models to parametrize over: those of the packages `edge-ad selftest` passes, else every tiny variant
    (the lab side's registry), else dinomaly-tiny (a device install without the lab side and no packages)."""
    given = _given_packages()
    if given:
        return sorted({p.name for p in given})
    try:
        from edge_ad.export.selftest_packages import tiny_models

        return tiny_models()
    except ModuleNotFoundError:  # a device without the lab side (torch): packages come from EDGE_AD_TRT_PACKAGES
        return ["dinomaly-tiny"]


def _one_package(device_packages: dict[tuple[str, str], Any], precision: str) -> Any:
    """dinomaly-tiny's package of `precision` when there is one, else any given package of it (skip if none)."""
    pkg = device_packages.get(("dinomaly-tiny", precision)) or next(
        (p for (_, prec), p in sorted(device_packages.items()) if prec == precision), None)
    if pkg is None:
        pytest.skip(f"no {precision} package among the given packages")
    return pkg


@pytest.fixture(scope="session")
def device_packages(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Any]:
    """(model, precision) -> exported package: from $EDGE_AD_TRT_PACKAGES (what `edge-ad selftest` passes), else
    exported here from every tiny model (needs the lab side)."""
    from edge_ad.runtime.trt.selftest import PACKAGES_ENV

    pkgs = list(_given_packages())
    if not pkgs:
        pytest.importorskip("torch", reason=f"no {PACKAGES_ENV} and no lab side to export packages with")
        from edge_ad.export.selftest_packages import prepare_packages

        pkgs = [load_package(p) for p in prepare_packages(tmp_path_factory.mktemp("trt_pkgs"), _tiny_models(),
                                                          PRECISIONS, progress=False)]
    return {(p.name, p.precision): p for p in pkgs}


@pytest.mark.tensorrt
@needs_trt
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("model", _tiny_models())
def test_exported_package_engine_matches_onnxruntime_and_is_cached(device_packages: dict[tuple[str, str], Any],
                                                                   model: str, precision: str) -> None:
    """Each family's tiny package in each precision: the parser takes it, the engine agrees with ONNX Runtime
    within the verify tolerances, and a second open reuses the cached engine."""
    from edge_ad.runtime.backends.tensorrt import TensorRTBackend
    from edge_ad.runtime.trt.engine_check import verify_engine

    pkg = device_packages.get((model, precision))
    if pkg is None:
        pytest.skip(f"no {model} {precision} package among the given packages")
    r = verify_engine(pkg, n=6)
    assert r["passed"], r["failures"]
    with TensorRTBackend(pkg, build_if_missing=False) as again:
        assert not again.record.built
        maps, scores = again.run(np.zeros((2, *pkg.input_hw, 3), np.uint8))
        assert np.isfinite(maps).all() and np.isfinite(scores).all()


@pytest.mark.tensorrt
@needs_trt
@pytest.mark.parametrize("zero_copy", [False, True])
def test_engine_runs_on_another_thread_split_and_padded(device_packages: dict[tuple[str, str], Any],
                                                        zero_copy: bool) -> None:
    from edge_ad.runtime.backends.onnxruntime import OnnxRuntimeBackend
    from edge_ad.runtime.backends.tensorrt import TensorRTBackend

    pkg = _one_package(device_packages, "fp32")
    batch = np.random.default_rng(0).integers(0, 256, (3, *pkg.input_hw, 3), dtype=np.uint8)
    with TensorRTBackend(pkg, zero_copy=zero_copy, batch=2) as be:
        out: dict[str, Any] = {}
        worker = threading.Thread(target=lambda: out.update(r=be.run(batch)))  # as the pipeline's infer thread
        worker.start()
        worker.join()
        maps, scores = out["r"]
    ref_maps, ref_scores = OnnxRuntimeBackend(pkg, providers="cpu").run(batch)
    np.testing.assert_allclose(maps, ref_maps, atol=1e-3)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-3)


@pytest.mark.tensorrt
@needs_trt
def test_build_engine_static_profile_and_timing_cache(device_packages: dict[tuple[str, str], Any],
                                                      tmp_path: Path) -> None:
    from edge_ad.runtime.trt.build import build_engine

    pkg = _one_package(device_packages, "fp32")
    h, w = pkg.input_hw
    cache = tmp_path / "t.timing-cache"
    with pytest.raises(ConfigError, match="dynamic dimensions"):
        build_engine(pkg.onnx_path(), "fp32")
    with pytest.raises(ConfigError, match="does not fit"):
        build_engine(pkg.onnx_path(), "fp32", input_shape=(1, h + 1, w, 3))
    plan = build_engine(pkg.onnx_path(), "fp32", input_shape=(1, h, w, 3), timing_cache=cache, workspace_mb=256)
    assert len(plan) > 0 and cache.stat().st_size > 0
    cache.write_bytes(b"corrupt")  # discarded with a warning, the build still succeeds
    assert len(build_engine(pkg.onnx_path(), "fp32", input_shape=(1, h, w, 3), timing_cache=cache)) > 0


@pytest.mark.tensorrt
@needs_trt
def test_build_engine_reports_parser_errors(tmp_path: Path) -> None:
    from edge_ad.runtime.trt import EngineBuildError
    from edge_ad.runtime.trt.build import build_engine

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf")
    with pytest.raises(EngineBuildError, match="cannot parse the ONNX graph"):
        build_engine(bad, "fp32")


@pytest.mark.tensorrt
@needs_trt
def test_cli_build_and_verify(device_packages: dict[tuple[str, str], Any], capsys: pytest.CaptureFixture[str]) -> None:
    from edge_ad.cli.main import main

    pkg = _one_package(device_packages, "fp16")
    assert main(["build", str(pkg.root)]) == 0
    out = capsys.readouterr().out
    assert "engine" in out and ".engine" in out and "build" in out
    assert main(["verify", str(pkg.root), "--limit", "4"]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "Spearman" in out


# ---------------------------------------------------------------- build_engine itself, on the fake builder bindings

@pytest.fixture
def fake_builder(package, monkeypatch: pytest.MonkeyPatch):
    """(builds, cuda, set_version): the real build_engine/ensure_engine over a fake tensorrt with the build API."""
    from fake_trt import add_builder

    cuda = FakeCuda(ORIN_NX)
    mod = make_tensorrt(cuda)
    builds = add_builder(mod, inputs=(("image", [-1, H, W, 3]),), dla_cores=2, map_hw=(H, W))
    monkeypatch.setitem(sys.modules, "tensorrt", mod)
    monkeypatch.setattr(trt_build, "get_cuda", lambda: cuda)
    from edge_ad.runtime.backends import tensorrt as trt_backend

    monkeypatch.setattr(trt_backend, "get_cuda", lambda: cuda)

    def set_version(v: str) -> None:
        mod.__version__ = v  # type: ignore[attr-defined]

    return builds, cuda, set_version


def test_tf32_is_cleared_unless_allowed_for_fp32(fake_builder, package, tmp_path: Path) -> None:
    """TensorRT turns TF32 on by default; edge-ad clears it, so FP32 layers and islands keep their mantissa."""
    builds, _, set_version = fake_builder
    onnx_file = package.onnx_path()
    for precision in ("fp32", "fp16", "int8"):
        trt_build.build_engine(onnx_file, precision, input_shape=(1, H, W, 3))
        assert "TF32" not in builds[-1]["flags"], precision
    assert builds[1]["network_flags"] == 1 << 1 and builds[0]["network_flags"] == 0  # fp16 strongly typed, fp32 weak
    trt_build.build_engine(onnx_file, "fp32", input_shape=(1, H, W, 3), tf32=True)
    assert "TF32" in builds[-1]["flags"]
    with pytest.raises(ConfigError, match="tf32: applies to fp32 engines only"):
        trt_build.build_engine(onnx_file, "fp16", input_shape=(1, H, W, 3), tf32=True)
    set_version("11.4.0.0")  # strongly typed always, TF32 still on by default there: still cleared
    trt_build.build_engine(onnx_file, "fp32", input_shape=(2, H, W, 3), workspace_mb=64)
    last = builds[-1]
    assert "TF32" not in last["flags"] and last["network_flags"] == 0 and last["pools"] == {0: 64 << 20}
    assert last["profiles"] == [{"image": ([2, H, W, 3], [2, H, W, 3], [2, H, W, 3])}]


def test_tf32_is_part_of_the_engine_key(fake_builder, package) -> None:
    builds, cuda, _ = fake_builder
    plain = ensure_engine(package, cuda=cuda)
    tf32 = ensure_engine(package, cuda=cuda, tf32=True)
    assert plain.built and tf32.built and plain.path != tf32.path and len(builds) == 2
    assert "TF32" in tf32.key.builder_flags and "TF32" not in plain.key.builder_flags
    assert not ensure_engine(package, cuda=cuda).built and not ensure_engine(package, cuda=cuda, tf32=True).built
    assert len(builds) == 2


def test_dla_build_sets_the_core_and_gpu_fallback(fake_builder, package, tmp_path: Path) -> None:
    builds, _, _ = fake_builder
    trt_build.build_engine(package.onnx_path(), "fp16", input_shape=(1, H, W, 3), dla_core=1)
    assert builds[-1]["device_type"] == "DLA" and builds[-1]["dla_core"] == 1 and "GPU_FALLBACK" in builds[-1]["flags"]
    with pytest.raises(ConfigError, match="dla_core: 2 is not available on this device, which has cores 0..1"):
        trt_build.build_engine(package.onnx_path(), "fp16", input_shape=(1, H, W, 3), dla_core=2)


def test_build_records_the_device_default_and_run_time_reuses_it(fake_builder, package) -> None:
    """`edge-ad build --dla 0` builds once; Detector.load, the station's loader and verify then use that engine
    with no options given, instead of rebuilding with defaults; explicit options still choose their own."""
    from edge_ad.cli.main import main
    from edge_ad.runtime.detector import Detector
    from edge_ad.runtime.trt.engine_options import EngineOptions
    from edge_ad.services import load_detector
    from edge_ad.station.config import StationConfig

    builds, _, _ = fake_builder
    pkg_dir = package.root
    assert main(["build", str(pkg_dir), "--precision", "fp16", "--dla", "0", "--workspace", "64", "-q"]) == 0
    assert len(builds) == 1 and builds[0]["dla_core"] == 0 and builds[0]["device_type"] == "DLA"
    with Detector.load(pkg_dir, backend="tensorrt") as det:
        rec = det.backend.record  # type: ignore[attr-defined]
        assert not rec.built and rec.key.dla_core == 0 and rec.key.workspace_mib == 64
        assert det.backend._runtime.dla_when_deserialised == 0  # type: ignore[attr-defined]
    with load_detector(str(pkg_dir), StationConfig(package=str(pkg_dir), backend="tensorrt")) as det:
        assert not det.backend.record.built  # type: ignore[attr-defined]
    assert len(builds) == 1
    # explicit options choose their own engine, from the station config or the API
    cfg = StationConfig(package=str(pkg_dir), backend="tensorrt", precision="fp16", dla=1)
    with load_detector(str(pkg_dir), cfg) as det:
        assert det.backend.record.built and det.backend.record.key.dla_core == 1  # type: ignore[attr-defined]
    with Detector.load(pkg_dir, backend="tensorrt", engine=EngineOptions(precision="fp32")) as det:
        assert det.backend.record.built and det.backend.record.key.dla_core is None  # type: ignore[attr-defined]
    assert len(builds) == 3
    # a new build records the new default (here the fp32 GPU engine, which exists: reused, not rebuilt)
    assert main(["build", str(pkg_dir), "-q"]) == 0 and len(builds) == 3
    with Detector.load(pkg_dir, backend="tensorrt") as det:
        assert det.backend.record.key.dla_core is None and not det.backend.record.built  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="apply to tensorrt only"):
        Detector.load(pkg_dir, backend="onnxruntime", engine=EngineOptions(dla_core=0))


def test_engine_options_are_validated_where_they_are_read(tmp_path: Path) -> None:
    from edge_ad.runtime.trt.engine_options import EngineOptions

    with pytest.raises(ConfigError, match="dla_core: expected an integer >= 0, got -1"):
        EngineOptions(dla_core=-1)
    with pytest.raises(ConfigError, match="station.yaml: unknown engine option"):
        EngineOptions.from_dict({"dla": 0}, "station.yaml")
    with pytest.raises(ConfigError, match="x: precision: expected one of"):
        EngineOptions.from_dict({"precision": "fp64"}, "x")
    assert EngineOptions().is_unset() and EngineOptions(tf32=True).kwargs() == {"tf32": True}


_BLOCK_LAB = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in {'torch', 'torchvision', 'timm', 'tqdm', 'onnx', 'onnxscript', 'sklearn', 'scipy',
                                  'skimage'}:
            raise ModuleNotFoundError('not on a device install: ' + name)
sys.meta_path.insert(0, Block())
import pytest
sys.exit(pytest.main(['-q', '-m', 'tensorrt', '-p', 'no:cacheprovider', '--collect-only', sys.argv[1]]))
"""


def test_device_tests_collect_without_the_lab_side() -> None:
    """What `edge-ad selftest` runs on a device install (runtime + pytest, no torch/tqdm/onnx) collects: conftest.py
    and test_tensorrt.py import the lab side only inside the fixtures that need it."""
    import subprocess

    proc = subprocess.run([sys.executable, "-c", _BLOCK_LAB, str(Path(__file__))], cwd=Path(__file__).parents[1],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "error" not in proc.stdout.lower().split("\n")[-2]


def test_selftest_without_pytest_skips_the_test_step(monkeypatch: pytest.MonkeyPatch, package) -> None:
    import importlib.util

    from edge_ad.runtime.trt import selftest

    real = importlib.util.find_spec
    monkeypatch.setattr(selftest.importlib.util, "find_spec", lambda name, *a: None if name == "pytest" else
                        real(name, *a))
    result = selftest._tests([package.root], timeout_s=60)
    assert result == {"passed": True, "skipped": "pytest is not installed: pip install edge-ad[device-test]"}


def test_dla_is_fp16_on_tensorrt_10_and_refused_with_the_alternative_elsewhere(fake_builder, package) -> None:
    from edge_ad.runtime.trt.support import dla_support

    builds, cuda, set_version = fake_builder
    rec = ensure_engine(package, "fp16", dla_core=0, cuda=cuda)  # an fp32 package: DLA fp16 needs no fp16 graph
    assert rec.key.typing == "weak-fp16" and rec.onnx_path == package.onnx_path("fp32")
    assert builds[-1]["network_flags"] == 0 and {"FP16", "GPU_FALLBACK"} <= set(builds[-1]["flags"])
    for precision, match in (("fp32", "DLA engines are fp16.*no --dla"), ("int8", "DLA engines are fp16")):
        with pytest.raises(ConfigError, match=match):
            ensure_engine(package, precision, dla_core=0, cuda=cuda)
    with pytest.raises(ConfigError, match="DLA engines are fp16"):
        trt_build.build_engine(package.onnx_path(), "int8", input_shape=(1, H, W, 3), dla_core=0)
    for version, match in (("11.0.0.1", "has no DLA"), ("11.4.1.0", "strongly typed networks only")):
        set_version(version)
        with pytest.raises(ConfigError, match=match):
            ensure_engine(package, "fp16", dla_core=0, cuda=cuda)
    assert dla_support("10.3.0.30", 0)[0] is False and "Orin Nano" in dla_support("10.3.0.30", 0)[1]
    assert dla_support("10.3.0.30", 2) == (True, dla_support("10.3.0.30", 2)[1])
