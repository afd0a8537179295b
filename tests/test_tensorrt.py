"""TensorRT device code: build modes, engine cache keys and staleness, CUDA/zero-copy choices, CLI errors without
TensorRT, verify metrics. Tests marked `tensorrt` build and run real engines; they skip unless tensorrt and a GPU are
present (run them on the Jetson: `pytest tests/test_tensorrt.py -m tensorrt`)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

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
    CudaApi,
    CudaMissingError,
    DeviceInfo,
    HostBuffer,
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
    base: dict[str, Any] = {"model_sha256": model_sha256(pkg, pkg.onnx_path()), "precision": "fp32",
                            "typing": "weak", "input_shape": (1, H, W, 3), "tensorrt": "10.3.0.30",
                            "gpu": "Orin (nvgpu)", "compute_capability": "8.7"}
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
    assert name.startswith(k.model_sha256[:8] + "_fp32-weak_1x32x32x3_orin-nvgpu_sm87_trt10.3.0.30_")
    assert name.endswith(".engine") and "/" not in name
    variants = [key_for(package, precision="fp16", typing="strong"), key_for(package, input_shape=(2, H, W, 3)),
                key_for(package, tensorrt="10.3.0.31"), key_for(package, gpu="NVIDIA H100"),
                key_for(package, compute_capability="9.0"), key_for(package, dla_core=0),
                key_for(package, model_sha256="f" * 64)]
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
    stale = store_engine(package, key_for(package, model_sha256="0" * 64), b"stale")
    assert prune_engines(package) == [stale]
    assert current.exists() and other_device.exists() and not stale.exists()
    assert {e.path for e in list_engines(package)} == {current, other_device}


# ---------------------------------------------------------------- ensure_engine with a fake TensorRT and GPU

class FakeCuda(CudaApi):
    library = "fake"

    def __init__(self, info: DeviceInfo) -> None:
        self.info = info
        self.current: int | None = None

    def device_count(self) -> int:
        return 1

    def device_info(self, device: int) -> DeviceInfo:
        return self.info

    def set_device(self, device: int) -> None:
        self.current = device

    def create_stream(self) -> int:
        return 1

    def synchronize(self, stream: int) -> None:
        pass

    def host_buffer(self, shape: tuple[int, ...], dtype: np.dtype[Any], mapped: bool) -> HostBuffer:
        return HostBuffer(np.zeros(shape, dtype), 0, mapped)

    def copy_to_device(self, buf: HostBuffer, stream: int) -> None:
        pass

    def copy_to_host(self, buf: HostBuffer, stream: int) -> None:
        pass

    def close(self) -> None:
        pass


ORIN = DeviceInfo(0, "Orin (nvgpu)", (8, 7), integrated=True, can_map_host_memory=True, total_memory=8 << 30)


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
    assert first.built and first.plan == b"plan-fp32-1" and first.path is not None and cuda.current == 0
    call = fake_trt[0]
    assert call["input_shape"] == (1, H, W, 3) and call["strongly_typed"] is False
    assert Path(call["timing_cache"]).name == "timing_orin-nvgpu_sm87_trt10.3.0.30.timing-cache"
    second = ensure_engine(package, cuda=cuda)
    assert not second.built and second.plan == first.plan and second.path == first.path and len(fake_trt) == 1
    forced = ensure_engine(package, cuda=cuda, force=True)
    assert forced.built and len(fake_trt) == 2
    assert first.key.gpu == "Orin (nvgpu)" and first.key.compute_capability == "8.7"


def test_ensure_engine_rebuilds_for_another_gpu_or_batch(package, fake_trt: list[dict[str, Any]]) -> None:
    ensure_engine(package, cuda=FakeCuda(ORIN))
    h100 = DeviceInfo(0, "NVIDIA H100", (9, 0), integrated=False, can_map_host_memory=True, total_memory=80 << 30)
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

def test_spearman() -> None:
    from edge_ad.cli.verify import spearman

    a = np.array([0.1, 0.2, 0.3, 0.4])
    assert spearman(a, a * 2 + 1) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(a, np.array([1.0, 1.0, 2.0, 3.0])) == pytest.approx(0.9486833, abs=1e-6)  # ties averaged
    assert spearman(a, np.ones(4)) is None
    assert spearman(a[:2], a[:2]) is None


def test_compare_flags_decision_flip_and_map_difference() -> None:
    from edge_ad.cli.verify import compare

    th = manifest()["thresholds"]
    maps = np.zeros((4, 1, 2, 2), np.float32)
    ref_scores = np.array([0.1, 0.3, 0.6, 0.8], np.float32)
    ok = compare((maps, ref_scores), (maps + 0.001, ref_scores + 0.002), th, tol=0.01)
    assert ok.failures == []
    flipped = compare((maps, ref_scores), (maps, np.array([0.1, 0.3, 0.49, 0.8], np.float32)), th, tol=0.2)
    assert any("OK/NG differs on 1 of 4" in f for f in flipped.failures)
    far = compare((maps, ref_scores), (maps + 0.5, ref_scores), th, tol=0.01)
    assert any("map difference" in f for f in far.failures)


def test_synthetic_images_are_seeded() -> None:
    from edge_ad.cli.verify import load_images

    a, b = load_images(None, 3, (8, 8), seed=1), load_images(None, 3, (8, 8), seed=1)
    assert len(a) == 3 and all(np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    with pytest.raises(ConfigError):
        load_images(None, 0, (8, 8), seed=1)


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


@pytest.mark.tensorrt
@needs_trt
@pytest.mark.parametrize("zero_copy", [False, True])
def test_engine_matches_onnxruntime_and_is_cached(package, zero_copy: bool) -> None:
    from edge_ad.runtime.backends.onnxruntime import OnnxRuntimeBackend
    from edge_ad.runtime.backends.tensorrt import TensorRTBackend

    batch = np.random.default_rng(0).integers(0, 256, (3, H, W, 3), dtype=np.uint8)
    with TensorRTBackend(package, zero_copy=zero_copy, batch=2) as be:
        assert be.record.built and be.max_batch == 2 and be.zero_copy is zero_copy
        maps, scores = be.run(batch)  # 3 images through a batch-2 engine: split and padded
    ref_maps, ref_scores = OnnxRuntimeBackend(package, providers="cpu").run(batch)
    assert maps.dtype == np.float32 and maps.shape == (3, 1, H, W) and scores.shape == (3,)
    np.testing.assert_allclose(maps, ref_maps, atol=1e-5)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    with TensorRTBackend(package, zero_copy=zero_copy, batch=2, build_if_missing=False) as again:
        assert not again.record.built
        np.testing.assert_allclose(again.run(batch)[1], scores, atol=0)


@pytest.mark.tensorrt
@needs_trt
def test_build_engine_static_profile_and_timing_cache(package, tmp_path: Path) -> None:
    from edge_ad.runtime.trt.build import build_engine

    cache = tmp_path / "t.timing-cache"
    with pytest.raises(ConfigError, match="dynamic dimensions"):
        build_engine(package.onnx_path(), "fp32")
    with pytest.raises(ConfigError, match="does not fit"):
        build_engine(package.onnx_path(), "fp32", input_shape=(1, H + 1, W, 3))
    plan = build_engine(package.onnx_path(), "fp32", input_shape=(1, H, W, 3), timing_cache=cache, workspace_mb=64)
    assert len(plan) > 0 and cache.stat().st_size > 0
    plan16 = build_engine(package.onnx_path(), "fp16", input_shape=(1, H, W, 3), timing_cache=cache,
                          strongly_typed=True)
    assert len(plan16) > 0


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
def test_cli_build_and_verify(package, capsys: pytest.CaptureFixture[str]) -> None:
    from edge_ad.cli.main import main

    assert main(["build", str(package.root)]) == 0
    out = capsys.readouterr().out
    assert "engine" in out and ".engine" in out and "build" in out
    assert main(["verify", str(package.root), "--n", "4"]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "Spearman" in out
