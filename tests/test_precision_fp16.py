"""FP16 package: strongly typed (no mixed float inputs), sensitive parts in FP32, runs in ONNX Runtime, gate passes."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edge_ad.errors import ConfigError
from edge_ad.export.fp16 import (
    FLOAT,
    HALF,
    convert_to_fp16,
    mixed_type_nodes,
    node_precisions,
)
from edge_ad.export.precision import convert_package
from edge_ad.runtime import Detector
from edge_ad.runtime.package import load_package

pytestmark = pytest.mark.slow  # trains/exports models or starts real peers: not in `make test-fast`

@pytest.fixture(scope="module")
def fp32(tiny_fp32, tmp_path_factory):
    data, _run, pkg = tiny_fp32
    root = tmp_path_factory.mktemp("fp16")  # this module's conversions
    return root, data, pkg


@pytest.fixture(scope="module")
def converted(fp32):
    _root, _, pkg = fp32
    model = onnx.load(str(pkg / "model.onnx"))
    half, summary = convert_to_fp16(model)
    return model, half, summary


def test_graph_is_strongly_typed_with_fp32_io(converted):
    _, half, summary = converted
    assert mixed_type_nodes(half) == []
    ins = {i.name: i.type.tensor_type.elem_type for i in half.graph.input}
    outs = {o.name: o.type.tensor_type.elem_type for o in half.graph.output}
    assert ins == {"image": onnx.TensorProto.UINT8}
    assert outs == {"anomaly_map": FLOAT, "score": FLOAT}
    assert summary["fp16_nodes"] > 100 and summary["casts_inserted"] > 0


def test_mixed_type_check_catches_a_mixed_add():
    g = onnx.helper.make_graph(
        [onnx.helper.make_node("Add", ["a", "b"], ["c"], name="bad")], "g",
        [onnx.helper.make_tensor_value_info("a", FLOAT, [2]), onnx.helper.make_tensor_value_info("b", HALF, [2])],
        [onnx.helper.make_tensor_value_info("c", FLOAT, [2])])
    assert any(p.where == "bad" and p.rule == "mixed-float" for p in mixed_type_nodes(onnx.helper.make_model(g)))


def test_sensitive_nodes_run_in_fp32_and_gemms_in_fp16(converted):
    _, half, _ = converted
    prec = node_precisions(half)
    by_op = {}
    for n in half.graph.node:
        if n.name in prec:
            by_op.setdefault(n.op_type, set()).add(prec[n.name])
    for op in ("LayerNormalization", "ReduceSum", "TopK", "ReduceL2", "Softmax"):
        assert by_op[op] == {FLOAT}, op
    assert prec["/model/decoder.3/attn/MatMul"] == FLOAT  # kv sum
    assert prec["/model/decoder.3/attn/MatMul_1"] == FLOAT  # denominator q . ksum
    assert prec["/model/decoder.3/attn/Div"] == FLOAT
    assert prec["/model/decoder.3/attn/Mul_1"] == FLOAT  # k / N
    assert prec["/model/MatMul"] == FLOAT and prec["/model/MatMul_1"] == FLOAT  # A a A^T head
    for name in ("/model/decoder.3/attn/qkv/MatMul", "/model/blocks.4/mlp/fc1/MatMul", "/model/proj/Conv",
                 "/model/blocks.4/attn/proj/MatMul"):
        assert prec[name] == HALF, name


def test_runs_in_onnxruntime_close_to_fp32(converted):
    model, half, _ = converted
    so = ort.SessionOptions()
    so.log_severity_level = 3
    x = np.random.default_rng(0).integers(0, 256, size=(2, 224, 224, 3), dtype=np.uint8)
    a = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"image": x})
    b = ort.InferenceSession(half.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"image": x})
    assert b[0].dtype == np.float32 and np.isfinite(b[0]).all()
    assert np.max(np.abs(a[0] - b[0])) < 5e-3 * max(1.0, float(np.abs(a[0]).max()))
    assert np.max(np.abs(a[1] - b[1])) < 1e-3 * max(1.0, float(np.abs(a[1]).max()))


def test_package_passes_gate_and_detector_loads_it(fp32):
    root, _, pkg = fp32
    # 2 x 2 held-out good images: one near-threshold flip would be 1/20, so the agreement budget is relaxed here
    out, rep = convert_package(pkg, "fp16", root / "fp16", min_agreement=0.9, progress=False)
    assert rep["gate"]["passed"] and "PASSED" in rep["table"]
    man = json.loads((out / "manifest.json").read_text())
    assert man["precision"] == "fp16"
    assert man["export_metrics"]["gate"]["overall"]["score_spearman"] > 0.99
    share = man["onnx"]["gemm_precision"]  # the manifest says how much of the GEMM work runs in fp16
    assert share["reduced_share"]["flops"] >= 0.9 and set(share["nodes"]) == {"fp16", "fp32"}
    assert "re-derived" in man["thresholds"]["source"]["note"]
    p = load_package(out)
    det = Detector.load(p, backend="onnxruntime", providers=["CPUExecutionProvider"])
    r = det.predict(np.full((120, 120, 3), 128, np.uint8))
    assert np.isfinite(r.score)
    with pytest.raises(ConfigError, match="already exists"):
        convert_package(pkg, "fp16", out, progress=False)
    with pytest.raises(ConfigError, match="int8 only"):
        convert_package(pkg, "fp16", root / "x", method="minmax", progress=False)
    with pytest.raises(ConfigError, match="precision"):
        convert_package(out, "fp16", root / "y", progress=False)  # converting a non-fp32 package
