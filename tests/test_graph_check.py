"""The TensorRT compatibility walk flags what the device would reject."""

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from edge_ad.export.graph_check import check_tensorrt_compat, op_histogram


def _model(nodes, inits=(), h=8):
    inp = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", h, h, 3])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    g = helper.make_graph(nodes, "g", [inp], [out], initializer=list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_clean_graph_passes():
    m = _model([helper.make_node("Relu", ["image"], ["y"])])
    assert check_tensorrt_compat(m) == []
    assert op_histogram(m) == {"nodes": 1, "ops": {"Relu": 1}}


def test_large_topk_and_einsum_and_custom_ops_flagged():
    k = numpy_helper.from_array(np.array([65536], np.int64), "k")
    nodes = [
        helper.make_node("Flatten", ["image"], ["f"]),
        helper.make_node("TopK", ["f", "k"], ["y", "i"], name="topk"),
        helper.make_node("Einsum", ["f", "f"], ["e"], equation="bi,bi->b", name="ein"),
        helper.make_node("Foo", ["f"], ["z"], domain="com.example", name="foo"),
        helper.make_node("Unique", ["f"], ["u"], name="uniq"),
    ]
    problems = "\n".join(check_tensorrt_compat(_model(nodes, [k])))
    assert "TopK K=65536" in problems
    assert "Einsum" in problems
    assert "custom domain" in problems
    assert "Unique is not supported" in problems


def test_small_topk_ok_dynamic_spatial_flagged():
    k = numpy_helper.from_array(np.array([655], np.int64), "k")
    nodes = [helper.make_node("Flatten", ["image"], ["f"]), helper.make_node("TopK", ["f", "k"], ["y", "i"])]
    assert check_tensorrt_compat(_model(nodes, [k])) == []
    inp = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", "h", 8, 3])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    m = helper.make_model(helper.make_graph([helper.make_node("Relu", ["image"], ["y"])], "g", [inp], [out]))
    assert any("dimension 1 is dynamic" in p for p in check_tensorrt_compat(m))
