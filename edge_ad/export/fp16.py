"""FP32 ONNX -> strongly-typed FP16 ONNX with explicit Cast nodes and FP32 islands where FP16 is unsafe.

TensorRT 10.3 (JetPack 6) builds this graph with `STRONGLY_TYPED`, TensorRT 11 always: the precision of every layer
is the dtype of its tensors, so what runs in FP32 must be FP32 *in the graph*. Kept in FP32:

* the graph prologue outside the model (uint8 -> float cast and mean/std normalisation) and the graph I/O
  (uint8 in, float32 out, unchanged for the runtime);
* op types `Fp16Policy.keep_op_types`: LayerNormalization (TensorRT warns about FP16 layernorm after attention;
  the decoder's eps 1e-8 underflows in FP16), Softmax, every reduction, TopK (dinomaly.md 11.1, 11.3);
* the linear-attention core of every block holding a ReduceSum in an `attn` scope: the k/N scaling, the `kv` and
  `ksum` sums, the numerator, the denominator and the division (their FP16 overflow is dinomaly.md 11.3's hazard);
* the anomaly head: model-root nodes that do not feed the decoder, i.e. everything after the encoder taps and
  decoder outputs are fused (tap means, cosine, the A a A^T map head, the top-k score);
* shape arithmetic (nodes whose inputs do not depend on the image values, e.g. Cast(Shape) -> Reciprocal).

Everything else (patch embedding, qkv/proj/fc GEMMs, attention MatMuls, GELU, residual adds) runs in FP16.
Each float input of a node has the node's precision (a Cast is inserted where a producer differs), so no op ever
sees mixed float types. ONNX Runtime 1.32's x86 CPU provider has no FP16 kernel for Add, Mul, Div, MatMul, Conv,
Elu, Reshape, Transpose, Unsqueeze, Concat and Shape (measured: its InsertCastTransformer wraps them in
`InsertedPrecisionFreeCast` nodes); it runs them in FP32 that way, so the graph runs on a CPU unchanged but is not
fast there, and nothing had to be kept FP32 for ONNX Runtime's sake. It is built for the GPU.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge_ad.export.graph_check import mixed_type_nodes

log = logging.getLogger(__name__)

FLOAT = TensorProto.FLOAT
HALF = TensorProto.FLOAT16
FP16_MAX = float(np.finfo(np.float16).max)
#: ops whose float input may have any float type (no Cast inserted in front of them)
_TYPE_AGNOSTIC = frozenset({"Cast", "Shape", "Size"})
#: ops whose outputs do not depend on the input *values*
_SHAPE_ONLY = frozenset({"Shape", "Size"})
_QDQ = frozenset({"QuantizeLinear", "DequantizeLinear"})


@dataclass(frozen=True)
class Fp16Policy:
    """What stays FP32. `keep_name_patterns` are regexes matched (re.search) against node names."""

    keep_op_types: frozenset[str] = frozenset({
        "LayerNormalization", "InstanceNormalization", "GroupNormalization", "BatchNormalization", "Softmax",
        "ReduceSum", "ReduceMean", "ReduceL2", "ReduceL1", "ReduceMax",
        "ReduceMin", "ReduceProd", "ReduceSumSquare", "ReduceLogSumExp", "TopK",
    })
    keep_name_patterns: tuple[str, ...] = ()
    keep_linear_attention: bool = True
    keep_head: bool = True
    model_scope: str = "/model/"
    decoder_pattern: str = r"^/model/decoder\.\d+/"


DEFAULT_POLICY = Fp16Policy()


def _tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    g = inferred.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*g.value_info, *g.input, *g.output]}
    types.update({init.name: init.data_type for init in g.initializer})
    return types


def _constants_to_initializers(model: onnx.ModelProto) -> None:
    """Float `Constant` nodes become initializers, so FP16 copies are made by converting data, not by Cast nodes."""
    keep = []
    for node in model.graph.node:
        value = next((a.t for a in node.attribute if a.name == "value"), None) if node.op_type == "Constant" else None
        if value is not None and value.data_type == FLOAT:
            t = onnx.TensorProto()
            t.CopyFrom(value)
            t.name = node.output[0]
            model.graph.initializer.append(t)
        else:
            keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)


def _value_dependent(model: onnx.ModelProto) -> set[str]:
    """Tensors whose values depend on the graph input values (Shape/Size outputs do not)."""
    dep = {i.name for i in model.graph.input}
    for node in model.graph.node:
        if node.op_type not in _SHAPE_ONLY and any(i in dep for i in node.input if i):
            dep.update(o for o in node.output if o)
    return dep


def _scope(name: str) -> str:
    return name.rsplit("/", 1)[0]


def _linear_attention_core(nodes: list[onnx.NodeProto], producer: dict[str, int]) -> set[int]:
    """Indices of the linear-attention sums: from the k/N scaling (the ReduceSum's input) forward within the same
    scope up to and including the division by the denominator."""
    consumers: dict[str, list[int]] = defaultdict(list)
    for i, n in enumerate(nodes):
        for t in n.input:
            consumers[t].append(i)
    core: set[int] = set()
    for n in nodes:
        if n.op_type != "ReduceSum" or "/attn/" not in n.name or n.input[0] not in producer:
            continue
        scope = _scope(n.name)
        seed = producer[n.input[0]]
        stack = [seed]
        while stack:
            j = stack.pop()
            if j in core or _scope(nodes[j].name) != scope:
                continue
            core.add(j)
            if nodes[j].op_type == "Div":
                continue
            for o in nodes[j].output:
                stack.extend(consumers.get(o, []))
    return core


def _head(nodes: list[onnx.NodeProto], producer: dict[str, int], policy: Fp16Policy) -> set[int]:
    """Model-root nodes (no sub-module in the name) that are not ancestors of the decoder: the fused-feature head."""
    dec = re.compile(policy.decoder_pattern)
    ancestors: set[int] = set()
    stack = [i for i, n in enumerate(nodes) if dec.search(n.name)]
    while stack:
        j = stack.pop()
        if j in ancestors:
            continue
        ancestors.add(j)
        stack.extend(producer[t] for t in nodes[j].input if t in producer)
    root = re.compile("^" + re.escape(policy.model_scope) + r"[A-Za-z]+(_\d+)?$")
    return {i for i, n in enumerate(nodes) if root.match(n.name) and i not in ancestors}


def fp32_nodes(model: onnx.ModelProto, policy: Fp16Policy = DEFAULT_POLICY) -> dict[str, str]:
    """node name -> why it stays FP32 (for nodes that touch float tensors and are kept).

    Q/DQ nodes (an INT8 graph) take the precision of the GEMM they feed, so each DequantizeLinear writes the type
    its GEMM reads and TensorRT can fuse the pair into an INT8 kernel with no Cast in between."""
    nodes = list(model.graph.node)
    producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    consumers: dict[str, list[int]] = defaultdict(list)
    for i, n in enumerate(nodes):
        for t in n.input:
            consumers[t].append(i)
    dep = _value_dependent(model)
    reasons: dict[int, str] = {}
    if policy.keep_head:
        reasons.update(dict.fromkeys(_head(nodes, producer, policy), "head"))
    if policy.keep_linear_attention:
        reasons.update(dict.fromkeys(_linear_attention_core(nodes, producer), "linear-attention sums"))
    pats = [re.compile(p) for p in policy.keep_name_patterns]
    qdq = [i for i, n in enumerate(nodes) if n.op_type in _QDQ]
    for i, n in enumerate(nodes):
        if n.op_type in _QDQ:
            continue
        if not n.name.startswith(policy.model_scope):
            reasons[i] = "graph prologue/epilogue"
        elif n.op_type in policy.keep_op_types:
            reasons[i] = f"op {n.op_type}"
        elif any(p.search(n.name) for p in pats):
            reasons[i] = "keep_name_patterns"
        elif not any(t in dep for t in n.input if t):
            reasons.setdefault(i, "shape arithmetic")
    for i in sorted(qdq, key=lambda j: nodes[j].op_type != "DequantizeLinear"):  # DQ first, then the Q feeding it
        users = consumers.get(nodes[i].output[0], [])
        if any(u in reasons for u in users):
            reasons[i] = "Q/DQ of an FP32 GEMM"
    return {nodes[i].name or f"#{i}": r for i, r in sorted(reasons.items())}


def convert_to_fp16(
    model: onnx.ModelProto, policy: Fp16Policy = DEFAULT_POLICY
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Return (FP16 model with FP32 islands and FP32 I/O, summary). The input model is not modified."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    _constants_to_initializers(m)
    types = _tensor_types(m)
    nodes = list(m.graph.node)
    keep_names = fp32_nodes(m, policy)
    keep = {i for i, n in enumerate(nodes) if (n.name or f"#{i}") in keep_names}

    def is_float(t: str) -> bool:
        return bool(t) and types.get(t) == FLOAT

    half = [i not in keep and any(is_float(t) for t in [*n.input, *n.output]) for i, n in enumerate(nodes)]
    actual: dict[str, int] = {}
    for i, n in enumerate(nodes):
        for o in n.output:
            if is_float(o):
                actual[o] = HALF if half[i] else FLOAT
    inits = {t.name: t for t in m.graph.initializer}
    new_inits: list[onnx.TensorProto] = []
    converted: dict[tuple[str, int], str] = {}
    out_nodes: list[onnx.NodeProto] = []
    n_casts = 0
    clipped = 0

    def as_type(t: str, want: int) -> str:
        nonlocal n_casts, clipped
        if actual.get(t, FLOAT) == want:
            return t
        key = (t, want)
        if key in converted:
            return converted[key]
        suffix = "fp16" if want == HALF else "fp32"
        if t in inits and want == HALF:
            arr = numpy_helper.to_array(inits[t])
            clipped += int(np.sum(np.abs(arr) > FP16_MAX))
            new_inits.append(numpy_helper.from_array(np.clip(arr, -FP16_MAX, FP16_MAX).astype(np.float16),
                                                     f"{t}__{suffix}"))
        else:
            out_nodes.append(helper.make_node("Cast", [t], [f"{t}__{suffix}"], name=f"/precision/Cast_{suffix}/{t}",
                                              to=want))
            n_casts += 1
        converted[key] = f"{t}__{suffix}"
        return converted[key]

    for i, n in enumerate(nodes):
        want = HALF if half[i] else FLOAT
        if n.op_type not in _TYPE_AGNOSTIC:
            for k, t in enumerate(n.input):
                if is_float(t):
                    n.input[k] = as_type(t, want)
        if half[i]:
            for a in n.attribute:
                if a.name in ("to", "dtype") and a.i == FLOAT:
                    a.i = HALF
                elif a.name == "value" and a.type == onnx.AttributeProto.TENSOR and a.t.data_type == FLOAT:
                    a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16), a.t.name))
        out_nodes.append(n)

    for o in m.graph.output:
        if actual.get(o.name) == HALF:  # an FP16 producer of a graph output: rename and cast back to float32
            inner = f"{o.name}__fp16_out"
            for n in out_nodes:
                n.input[:] = [inner if t == o.name else t for t in n.input]
                n.output[:] = [inner if t == o.name else t for t in n.output]
            out_nodes.append(
                helper.make_node("Cast", [inner], [o.name], name=f"/precision/Cast_out/{o.name}", to=FLOAT)
            )
            n_casts += 1
    if clipped:
        log.warning("fp16: %d weight value(s) beyond +-%g were clipped", clipped, FP16_MAX)

    del m.graph.node[:]
    m.graph.node.extend(out_nodes)
    m.graph.initializer.extend(new_inits)
    used = {t for n in m.graph.node for t in n.input}
    kept_inits = [t for t in m.graph.initializer if t.name in used]
    del m.graph.initializer[:]
    m.graph.initializer.extend(kept_inits)
    del m.graph.value_info[:]
    m = onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)
    onnx.checker.check_model(m)
    problems = mixed_type_nodes(m)
    if problems:
        raise RuntimeError("fp16 conversion left mixed-type inputs: " + "; ".join(str(p) for p in problems[:5]))
    reasons: dict[str, int] = defaultdict(int)
    for r in keep_names.values():
        reasons[r] += 1
    summary = {
        "fp16_nodes": int(sum(half)), "fp32_nodes": len(keep), "casts_inserted": n_casts,
        "fp32_reasons": dict(sorted(reasons.items())), "clipped_weights": clipped,
    }
    return m, summary


def node_precisions(model: onnx.ModelProto) -> dict[str, int]:
    """node name -> elem type of its first float (fp16/fp32) input or output, for nodes that compute on floats."""
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*g.value_info, *g.input, *g.output]}
    types.update({t.name: t.data_type for t in g.initializer})
    out = {}
    for n in g.node:
        for t in [*n.input, *n.output]:
            if types.get(t) in (FLOAT, HALF):
                out[n.name] = types[t]
                break
    return out
