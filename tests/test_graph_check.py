"""The TensorRT parser model: each rule has a graph that breaks it (so the checker provably catches it), and a clean
graph passes every rule."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from runtime_fixtures import make_onnx

from edge_ad.export.graph_check import (
    RULES,
    Problem,
    check_graph,
    format_problems,
    op_histogram,
)

F, H, U8 = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.UINT8


def model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def vi(name, dtype, shape):
    return helper.make_tensor_value_info(name, dtype, shape)


def x_in(dtype=F, shape=("batch", 8, 8)):
    return vi("x", dtype, list(shape))


def y_out(dtype=F):
    return vi("y", dtype, None)


def const(name, value):
    return numpy_helper.from_array(np.asarray(value), name)


def rules(m, **kw) -> set[str]:
    return {p.rule for p in check_graph(m, **kw)}


def test_clean_graph_passes_and_histogram():
    import onnx

    m = onnx.load_from_string(make_onnx())  # uint8 image -> Cast -> ... the shape of every edge-ad graph
    assert check_graph(m) == []
    assert op_histogram(m)["nodes"] == 6


# ------------------------------------------------------------------ one breaking graph per rule

ZERO_INT8 = np.int8(0)

def qdq_matmul(*, zp=ZERO_INT8, scale=0.1, w_axis=1, w_scale_len=4, feed="MatMul", both=True, opset=17):
    """x -> Q -> DQ -> MatMul(., DQ(W int8)) -> y, with knobs that break the Q/DQ rules one at a time."""
    w = np.ones((8, 4), np.int8)
    inits = [const("s", np.float32(scale)), const("zp", np.asarray(zp)), const("w", w),
             const("ws", np.full(w_scale_len, 0.1, np.float32)), const("wz", np.zeros(w_scale_len, np.int8)),
             const("wf", np.ones((8, 4), np.float32))]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"], name="q"),
             helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"], name="dq"),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], name="wdq", axis=w_axis)]
    if feed == "MatMul":
        nodes.append(helper.make_node("MatMul", ["xd", "wd" if both else "wf"], ["y"], name="gemm"))
    else:
        nodes += [helper.make_node("Relu", ["xd"], ["r"], name="relu"),
                  helper.make_node("MatMul", ["r", "wd"], ["y"], name="gemm")]
    return model(nodes, [x_in()], [y_out()], inits, opset=opset)


def _retyped(m, types):
    """`m` with the named initializers cast to the given numpy types."""
    for t in m.graph.initializer:
        if t.name in types:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(types[t.name]), t.name))
    return m


BREAKERS = {
    "opset": lambda: model([helper.make_node("Relu", ["x"], ["y"])], [x_in()], [y_out()], opset=25),
    "custom-domain": lambda: model([helper.make_node("Foo", ["x"], ["y"], domain="com.example")], [x_in()], [y_out()]),
    "unsupported-op": lambda: model([helper.make_node("Unique", ["x"], ["y"])], [x_in()], [y_out()]),
    "forbidden-op": lambda: model([helper.make_node("Einsum", ["x", "x"], ["y"], equation="bij,bij->bij")],
                                  [x_in()], [y_out()]),
    "op-dtype": lambda: model([helper.make_node("MatMul", ["x", "x"], ["y"], name="intmm")],
                              [x_in(TensorProto.INT32)], [y_out(TensorProto.INT32)]),
    # the prologue every edge-ad export had: uint8 image -> Transpose -> Cast
    "uint8-io": lambda: model([helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1], name="/Transpose"),
                               helper.make_node("Cast", ["t"], ["y"], to=F)], [x_in(U8)], [y_out()]),
    "bool-io": lambda: model([helper.make_node("Not", ["x"], ["y"])], [x_in(TensorProto.BOOL)],
                             [y_out(TensorProto.BOOL)]),
    "double": lambda: model([helper.make_node("Cast", ["x"], ["d"], to=TensorProto.DOUBLE),
                             helper.make_node("Cast", ["d"], ["y"], to=F)], [x_in()], [y_out()]),
    "constant-input": lambda: model([helper.make_node("ReduceMean", ["x", "axes"], ["y"])],
                                    [x_in(), vi("axes", TensorProto.INT64, [1])], [y_out()], opset=18),
    "topk-k": lambda: model([helper.make_node("Flatten", ["x"], ["f"]),
                             helper.make_node("TopK", ["f", "k"], ["y", "i"], name="topk")],
                            [x_in()], [y_out()], [const("k", np.array([65536], np.int64))]),
    "resize-mode": lambda: model([helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="cubic")],
                                 [x_in()], [y_out()], [const("sc", np.array([1, 2, 2], np.float32))]),
    "dynamic-dim": lambda: model([helper.make_node("Relu", ["x"], ["y"])], [x_in(shape=("batch", "h", 8))], [y_out()]),
    "qdq-int8": lambda: qdq_matmul(zp=np.uint8(0)),
    "qdq-scale": lambda: qdq_matmul(scale=0.0),
    "qdq-axis": lambda: qdq_matmul(w_axis=0, w_scale_len=8),
    "qdq-placement": lambda: qdq_matmul(feed="Relu"),
    "mixed-float": lambda: model([helper.make_node("Add", ["x", "h"], ["y"], name="mix")],
                                 [x_in(), vi("h", H, ["batch", 8, 8])], [y_out()]),
    # x (fp32) quantised with an fp16 scale at opset 19: the parser inserts no Cast, a strongly typed build fails
    "qdq-scale-type": lambda: _retyped(qdq_matmul(opset=19), {"s": np.float16}),
    # a reshape to 9 dimensions
    "rank": lambda: model([helper.make_node("Reshape", ["x", "shape"], ["y"])], [x_in(shape=(2, 8, 8))], [y_out()],
                          [const("shape", np.array([2, 2, 2, 2, 2, 2, 2, 2, 1], np.int64))]),
    # 2^31 elements: a broadcast of a [batch, 4096, 1] input against 1 x 2^19 (MambaAD's scan state at a big batch)
    "volume": lambda: model([helper.make_node("Expand", ["x", "shape"], ["y"])], [x_in(shape=("batch", 4096, 1))],
                            [y_out()], [const("shape", np.array([1, 4096, 2**19], np.int64))]),
    "finite-constant": lambda: model([helper.make_node("Add", ["x", "c"], ["y"])], [x_in(H)], [y_out(H)],
                                     [const("c", np.array([np.inf], np.float16))]),
}


def test_every_rule_has_a_breaking_graph():
    assert set(BREAKERS) == set(RULES)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_rule_catches_its_breaking_graph(rule):
    problems = check_graph(BREAKERS[rule]())
    assert rule in {p.rule for p in problems}, format_problems(problems)
    text = str(next(p for p in problems if p.rule == rule))
    assert text.startswith(f"[{rule}]") and "TensorRT" in text


def test_uint8_prologue_message_says_how_to_fix():
    p = next(p for p in check_graph(BREAKERS["uint8-io"]()) if p.rule == "uint8-io")
    assert "feeds Transpose" in p.message and "x.float().permute" in p.message and p.profiles == ("10.3", "11")


def test_uint8_rules_in_detail():
    bad_target = model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.INT32)], [x_in(U8)],
                       [y_out(TensorProto.INT32)])
    assert "uint8-io" in rules(bad_target)
    intermediate = model([helper.make_node("Cast", ["x"], ["u"], to=U8), helper.make_node("Cast", ["u"], ["y"], to=F)],
                         [x_in()], [y_out()])
    assert "uint8-io" in rules(intermediate)
    uint8_output = model([helper.make_node("Cast", ["x"], ["y"], to=U8)], [x_in()], [y_out(U8)])
    assert "uint8-io" not in rules(uint8_output)


def test_profiles_are_told_apart():
    # opset 21 is imported by TensorRT 11 (9-24) but not by 10.3 (9-20)
    p = next(p for p in check_graph(model([helper.make_node("Relu", ["x"], ["y"])], [x_in()], [y_out()], opset=21))
             if p.rule == "opset")
    assert p.profiles == ("10.3",)
    # STFT arrived in 10.5: unsupported on JetPack 6's 10.3 only
    stft = model([helper.make_node("STFT", ["x", "step"], ["y"])], [x_in(shape=(1, 64, 1))], [y_out()],
                 [const("step", np.array(8, np.int64))])
    hits = [p for p in check_graph(stft) if p.rule == "unsupported-op"]
    assert [p.profiles for p in hits] == [("10.3",)]
    assert "unsupported-op" not in rules(stft, profiles=("11",))


def test_constant_inputs_accept_initializers_and_constant_nodes():
    as_init = model([helper.make_node("ReduceMean", ["x", "axes"], ["y"])], [x_in()], [y_out()],
                    [const("axes", np.array([1], np.int64))], opset=18)
    assert "constant-input" not in rules(as_init)
    as_node = model([helper.make_node("Constant", [], ["axes"], value=const("v", np.array([1], np.int64))),
                     helper.make_node("ReduceMean", ["x", "axes"], ["y"])], [x_in()], [y_out()], opset=18)
    assert "constant-input" not in rules(as_node)
    k_from_shape = model([helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Shape", ["f"], ["s"]),
                          helper.make_node("Slice", ["s", "one", "two"], ["k"]),
                          helper.make_node("TopK", ["f", "k"], ["y", "i"])], [x_in()], [y_out()],
                         [const("one", np.array([1], np.int64)), const("two", np.array([2], np.int64))])
    assert "constant-input" in rules(k_from_shape)


def _topk(k: int):
    return model([helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("TopK", ["f", "k"], ["y", "i"])],
                 [x_in(shape=("batch", 64, 64))], [y_out()], [const("k", np.array([k], np.int64))])


def test_topk_k_must_be_below_3840():
    assert check_graph(_topk(3839)) == []
    hit = [p for p in check_graph(_topk(3840)) if p.rule == "topk-k"]
    assert hit and "K=3840" in hit[0].message


def test_volume_is_checked_at_the_build_batch():
    # [batch, 1024, 1024, 1024] fp32 after an Expand: fine at batch 1, 2^31 elements at batch 2
    big = model([helper.make_node("Expand", ["x", "shape"], ["y"])], [x_in(shape=("batch", 1024, 1))], [y_out()],
                [const("shape", np.array([1, 1024, 1024], np.int64))])
    assert check_graph(big, batch=1) == [] and check_graph(big, batch=2047) == []
    hit = [p for p in check_graph(big, batch=2048) if p.rule == "volume"]
    assert hit and "batch 2048" in hit[0].message and hit[0].where == "y"
    assert big.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"  # the model itself unchanged
    with pytest.raises(ValueError, match="batch"):
        check_graph(big, batch=0)


def test_rank_8_passes_rank_9_does_not():
    eight = model([helper.make_node("Reshape", ["x", "shape"], ["y"])], [x_in(shape=(2, 8, 8))], [y_out()],
                  [const("shape", np.array([2, 2, 2, 2, 2, 2, 2, 4], np.int64))])
    assert check_graph(eight) == []
    hit = [p for p in check_graph(BREAKERS["rank"]()) if p.rule == "rank"]
    assert hit and "9 dimensions" in hit[0].message


def test_scale_type_follows_the_data():
    # fp16 data with fp16 scales (opset 19) is clean; fp16 weights' scale against fp32 activations is not
    assert "qdq-scale-type" not in rules(_retyped(qdq_matmul(opset=19), {}))
    weights = rules(_retyped(qdq_matmul(opset=19), {"ws": np.float16}))
    assert "qdq-scale-type" in weights


def test_small_topk_is_fine_but_unsorted_is_not():
    ok = model([helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("TopK", ["f", "k"], ["y", "i"])],
               [x_in()], [y_out()], [const("k", np.array([655], np.int64))])
    assert check_graph(ok) == []
    unsorted = model([helper.make_node("Flatten", ["x"], ["f"]),
                      helper.make_node("TopK", ["f", "k"], ["y", "i"], sorted=0)],
                     [x_in()], [y_out()], [const("k", np.array([655], np.int64))])
    assert "topk-k" in rules(unsorted)


def test_resize_linear_half_pixel_passes_antialias_does_not():
    lin = model([helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="linear")], [x_in()], [y_out()],
                [const("sc", np.array([1, 2, 2], np.float32))])
    assert check_graph(lin) == []
    aa = model([helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="linear", antialias=1)], [x_in()], [y_out()],
               [const("sc", np.array([1, 2, 2], np.float32))], opset=18)
    assert "resize-mode" in rules(aa)


def test_qdq_rules_in_detail():
    assert check_graph(qdq_matmul()) == []  # the clean pattern: Q/DQ on both inputs of the GEMM
    assert "qdq-int8" in rules(qdq_matmul(zp=np.int8(3)))  # asymmetric
    assert "qdq-placement" in rules(qdq_matmul(both=False))  # only the activation quantised
    assert "qdq-scale" in rules(qdq_matmul(scale=-0.1))
    assert "qdq-placement" in rules(qdq_matmul(), allowed_quantized=["other"])
    # fp16 scales need opset 19: there a DQ outputs FP16 and the GEMM reads FP16 (strongly typed, no Cast)
    half = qdq_matmul(opset=19)
    for t in half.graph.initializer:
        if t.name in ("s", "ws"):
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name))
    half.graph.input[0].type.tensor_type.elem_type = H
    half.graph.output[0].type.tensor_type.elem_type = H
    assert check_graph(half) == []


def test_problem_text_and_format():
    p = Problem("opset", "model", "opset 30", ("10.3",))
    assert str(p) == "[opset] model: opset 30 (TensorRT 10.3)"
    many = [Problem("double", f"t{i}", "x") for i in range(25)]
    assert "... and 5 more" in format_problems(many)
