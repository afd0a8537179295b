"""Each engine's graph choice: the gate runs every candidate, the fastest passing one is what the manifest names,
and the backends open exactly that graph at that precision. The model runs are replaced by recorded outputs here so
the choice logic is tested on outcomes that are known (pass / fail), not on what a random graph happens to do."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from edge_ad.errors import PackageError
from edge_ad.export import gate
from edge_ad.runtime.package import GraphChoice, load_package, write_package
from tests.runtime_fixtures import make_manifest, make_onnx

GOOD = [SimpleNamespace(category=c, label=0, path=f"{c}{i}.png") for c in ("a", "b") for i in range(30)]


def _int8_package(tmp: Path, backends: dict[str, Any] | None = None) -> Path:
    man = make_manifest()
    man["precision"] = "int8"
    man["onnx"]["cpu"] = {"file": "model_cpu.onnx", "opset": 17}
    if backends is not None:
        man["onnx"]["backends"] = backends
    graph = make_onnx()
    return write_package(tmp, {"model.onnx": graph, "model_cpu.onnx": graph}, man)


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch):
    """run_package replaced by fixed outputs: the reference's scores, plus noise for the choices in `bad`."""
    bad: set[tuple[str, str, str | None]] = set()
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 1, len(GOOD)).astype(np.float32)

    def run_package(pkg, samples, batch=4, desc="", progress=True, choice=None):
        s = scores[: len(samples)].copy()
        if choice is not None and (choice.backend, choice.file, choice.inference_precision) in bad:
            s = rng.permutation(s)  # a different ranking: Spearman collapses
        maps = np.repeat(s[:, None, None], 4, axis=1).repeat(4, axis=2)
        return maps, s

    monkeypatch.setattr(gate, "run_package", run_package)
    monkeypatch.setattr(gate, "engine_candidates", lambda cand: {
        "onnxruntime": [GraphChoice("onnxruntime", "model_cpu.onnx", None, "")],
        "openvino": [GraphChoice("openvino", "model.onnx", "bf16", ""),
                     GraphChoice("openvino", "model_cpu.onnx", "f32", "")]})
    return bad


def _gate(tmp_path: Path) -> dict[str, Any]:
    pkg = load_package(_int8_package(tmp_path / "p"))
    images = gate.GateSet(good=list(GOOD), test=[], good_source="recorded")
    return gate.evaluate_gate(pkg, pkg, images, gate.GateBudget(min_spearman=0.9), progress=False)


def test_the_fastest_passing_candidate_of_each_engine_is_chosen(tmp_path, recorded):
    rep = _gate(tmp_path)
    assert rep["passed"] and [e["label"] for e in rep["engines"]] == [
        "onnxruntime-cpu on model_cpu.onnx", "openvino-cpu bf16 on model.onnx"]  # f32 never needed
    assert rep["choices"]["openvino"] == {"file": "model.onnx", "inference_precision": "bf16",
                                          "checked": "export gate: openvino-cpu bf16 on model.onnx"}
    assert rep["choices"]["tensorrt"]["file"] == "model.onnx"
    assert "openvino-cpu bf16 on model.onnx (same thresholds; chosen)" in gate.format_gate_report(rep)


def test_a_failing_bf16_candidate_falls_back_to_f32_without_refusing(tmp_path, recorded):
    recorded.add(("openvino", "model.onnx", "bf16"))
    rep = _gate(tmp_path)
    ov = [e for e in rep["engines"] if e["backend"] == "openvino"]
    assert rep["passed"] and [e["chosen"] for e in ov] == [False, True] and ov[0]["failures"]
    assert rep["choices"]["openvino"]["inference_precision"] == "f32"
    assert rep["choices"]["openvino"]["file"] == "model_cpu.onnx"
    assert "openvino-cpu bf16 on model.onnx (same thresholds; FAILED)" in gate.format_gate_report(rep)


def test_an_engine_with_no_passing_candidate_refuses_the_package(tmp_path, recorded):
    recorded.update({("openvino", "model.onnx", "bf16"), ("openvino", "model_cpu.onnx", "f32")})
    rep = _gate(tmp_path)
    assert not rep["passed"]
    assert any(f["message"].startswith("openvino-cpu f32 on model_cpu.onnx: ") for f in rep["failures"])
    recorded.clear()
    recorded.add(("onnxruntime", "model_cpu.onnx", None))
    rep = _gate(tmp_path / "2")
    assert not rep["passed"] and rep["failures"][0]["message"].startswith("onnxruntime-cpu on model_cpu.onnx: ")


def test_backends_open_the_graph_the_manifest_names(tmp_path):
    from edge_ad.runtime.backends.onnxruntime import OnnxRuntimeBackend

    p = _int8_package(tmp_path / "p", {
        "onnxruntime": {"file": "model.onnx", "checked": "test"},
        "openvino": {"file": "model_cpu.onnx", "inference_precision": "f32", "checked": "test"}})
    pkg = load_package(p)
    assert OnnxRuntimeBackend(pkg, providers="cpu").onnx_path.name == "model.onnx"
    assert OnnxRuntimeBackend(pkg, providers="cpu", graph="cpu").onnx_path.name == "model_cpu.onnx"
    assert pkg.graph_for("tensorrt").file == "model.onnx"  # not in the section: the former rule
    ov = pytest.importorskip("openvino")
    from edge_ad.runtime.backends.openvino import OpenVinoBackend, cpu_has_bf16

    be = OpenVinoBackend(pkg, cache=False)
    assert be.onnx_path.name == "model_cpu.onnx" and be.config["INFERENCE_PRECISION_HINT"] == "f32"
    p2 = _int8_package(tmp_path / "q", {"openvino": {"file": "model.onnx", "inference_precision": "bf16",
                                                     "checked": "test"}})
    be2 = OpenVinoBackend(load_package(p2), cache=False)
    want = "bf16" if cpu_has_bf16(ov.Core()) else "f32"  # a CPU without bf16 runs the choice in f32
    assert be2.onnx_path.name == "model.onnx" and be2.config["INFERENCE_PRECISION_HINT"] == want


def test_legacy_packages_follow_the_former_rule(tmp_path):
    pkg = load_package(_int8_package(tmp_path / "p"))
    assert (pkg.graph_for("onnxruntime").file, pkg.graph_for("openvino").file) == ("model_cpu.onnx", "model_cpu.onnx")
    assert pkg.graph_for("openvino").inference_precision == "f32"
    assert "former rule" in pkg.graph_for("tensorrt").checked


@pytest.mark.parametrize("backends, match", [
    ({"openvino": {"file": "other.onnx", "checked": "x"}}, "onnx.backends.openvino.file: expected one of"),
    ({"tensorrt": {"file": "model_cpu.onnx", "checked": "x"}}, "TensorRT builds the main graph"),
    ({"onnxruntime": {"file": "model.onnx", "inference_precision": "bf16", "checked": "x"}},
     "only OpenVINO takes a precision hint"),
    ({"openvino": {"file": "model.onnx", "inference_precision": "fp8", "checked": "x"}},
     "onnx.backends.openvino.inference_precision"),
    ({"onnxruntime": {"file": "model.onnx"}}, "onnx.backends.onnxruntime.checked: missing"),
    ({"coreml": {"file": "model.onnx", "checked": "x"}}, "onnx.backends.coreml: unexpected field"),
])
def test_a_bad_backends_section_is_refused_by_field(tmp_path, backends, match):
    with pytest.raises(PackageError, match=match):
        _int8_package(tmp_path / "p", backends)
