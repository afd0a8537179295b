"""The OpenVINO backend against ONNX Runtime on the same packages: fp32 parity, bf16 within its tolerance, the
int8 package's CPU graph, explicit settings (threads, precision hint, latency, cache), `auto` order, verify/bench."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from runtime_fixtures import blob_image, build_package, make_manifest

from edge_ad.cli.main import main
from edge_ad.runtime import Detector
from edge_ad.runtime.backends import create_backend
from edge_ad.runtime.package import load_package

ov = pytest.importorskip("openvino")


def _batch(p: Path, n: int = 3) -> np.ndarray:
    pk = load_package(p)
    g = np.random.default_rng(0)
    imgs = [blob_image(), blob_image(box=(0, 0, 1, 1)), *(g.integers(0, 256, (200, 300, 3), np.uint8)
                                                       for _ in range(n - 2))]
    return np.stack([pk.preprocess.apply(i) for i in imgs])


def test_fp32_matches_onnxruntime_and_settings_are_explicit(package: Path) -> None:
    loaded = load_package(package)
    be = create_backend(loaded, "openvino", threads=1)
    ref = create_backend(loaded, "onnxruntime", threads=1)
    x = _batch(package, 5)
    (m, s), (rm, rs) = be.run(x), ref.run(x)
    assert m.shape == rm.shape == (5, 1, *loaded.map_hw) and m.dtype == np.float32
    np.testing.assert_allclose(m, rm, atol=1e-5)
    np.testing.assert_allclose(s, rs, atol=1e-5)
    assert be.config["INFERENCE_PRECISION_HINT"] == "f32"  # not OpenVINO's bf16 default on AMX CPUs
    assert be.config["INFERENCE_NUM_THREADS"] == 1 and be.config["PERFORMANCE_HINT"] == "LATENCY"
    assert Path(be.config["CACHE_DIR"]).is_dir() and be.providers[0].startswith("OpenVINO CPU")
    m1, _ = be.run(x[:1])  # another batch size compiles another static shape
    np.testing.assert_allclose(m1, rm[:1], atol=1e-5)


def test_auto_prefers_openvino_and_detector_results_agree(package: Path) -> None:
    auto = Detector.load(package)
    assert auto.backend.name == "openvino"
    ort_det = Detector.load(package, backend="onnxruntime")
    for img in (blob_image(), blob_image(box=(0, 0, 1, 1))):
        a, b = auto.predict(img), ort_det.predict(img)
        assert a.status == b.status and a.score == pytest.approx(b.score, abs=1e-5)
        assert len(a.regions) == len(b.regions)
    assert Detector.load(package, providers="cpu").backend.name == "onnxruntime"  # providers: an ORT choice


def test_bf16_package_runs_in_bf16_where_the_cpu_has_it(tmp_path: Path) -> None:
    from edge_ad.runtime.backends.openvino import cpu_has_bf16

    man = make_manifest()
    man["precision"] = "bf16"
    man["onnx"]["variants"] = {"fp32": "model.onnx"}
    p = build_package(tmp_path / "bf16", manifest=man)
    package = load_package(p)
    be = create_backend(package, "openvino")
    want = "bf16" if cpu_has_bf16(ov.Core()) else "f32"
    assert be.config["INFERENCE_PRECISION_HINT"] == want
    m, s = be.run(_batch(p))
    rm, rs = create_backend(package, "onnxruntime").run(_batch(p))  # ORT runs the same file exactly as fp32
    assert np.max(np.abs(m - rm)) < 0.02 and np.max(np.abs(s - rs)) < 0.02


def test_verify_and_bench_cli(package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(package), "--backend", "openvino", "--limit", "4"]) == 0
    out = capsys.readouterr().out
    assert "OpenVINO CPU f32" in out and "PASS" in out
    assert main(["bench", str(package), "--backend", "openvino", "--runs", "3", "--warmup", "1", "--json",
                 str(tmp_path / "b.json")]) == 0
    assert json.loads((tmp_path / "b.json").read_text())["backend"] == "openvino"


def test_openvino_errors_name_the_problem(package: Path, tmp_path: Path) -> None:
    from edge_ad.errors import ConfigError

    package = load_package(package)
    with pytest.raises(ConfigError, match="device 'NPU.9' not found"):
        create_backend(package, "openvino", device="NPU.9")
    with pytest.raises(ConfigError, match="providers apply to onnxruntime only"):
        create_backend(package, "openvino", providers="cpu")
    with pytest.raises(ConfigError, match="hint"):
        create_backend(package, "openvino", hint="fast")
