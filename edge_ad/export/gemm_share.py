"""Which precision each GEMM of a graph runs in, counted in nodes and in FLOPs: the number that says whether a
reduced-precision package uses the hardware (Tensor Cores run FP16/INT8 GEMMs; an FP32 island does not).

A MatMul/Gemm/Conv is "int8" when both of its data inputs come from DequantizeLinear, otherwise the float type of its
first input ("fp16" or "fp32"). FLOPs are 2 x multiply-accumulates at batch 1 with shapes from ONNX shape inference
are taken by running the graph once on a black batch-1 image with ONNX Runtime: exact for every graph edge-ad
writes, where static shape inference loses the token count behind dynamic-batch reshapes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto

GEMM_OPS = ("MatMul", "Gemm", "Conv")
_NAMES: dict[int, str] = {TensorProto.FLOAT: "fp32", TensorProto.FLOAT16: "fp16", TensorProto.BFLOAT16: "bf16"}


def _gemm_shapes(model: onnx.ModelProto) -> tuple[dict[str, list[int]], dict[str, int]]:
    """(shape, elem type) of every input and output of the GEMM nodes, measured at batch 1."""
    import onnxruntime as ort

    names = sorted({t for n in model.graph.node if n.op_type in GEMM_OPS for t in [*n.input[:2], n.output[0]] if t})
    inits = {t.name: t for t in model.graph.initializer}
    shapes = {k: list(t.dims) for k, t in inits.items() if k in names}
    types = {k: t.data_type for k, t in inits.items()}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    wanted = [t for t in names if t not in inits]
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in wanted)
    feeds = {}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        tt = inp.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in tt.shape.dim]
        feeds[inp.name] = np.zeros(dims, onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    for name, value in zip(wanted, sess.run(wanted, feeds)):
        shapes[name] = list(np.shape(value))
        types[name] = onnx.helper.np_dtype_to_tensor_dtype(np.asarray(value).dtype)
    return shapes, types


def _flops(node: onnx.NodeProto, shapes: dict[str, list[int]]) -> int:
    """2 x MACs of one GEMM node; 0 when a shape is unknown."""
    a = shapes.get(node.input[0])
    b = shapes.get(node.input[1])
    if not a or not b or any(d <= 0 for d in [*a, *b]):
        return 0
    if node.op_type == "Conv":
        out = shapes.get(node.output[0])
        if not out:
            return 0
        # weight [O, I/groups, k...]; each output element needs I/groups * prod(k) MACs
        return 2 * int(np.prod(out)) * int(np.prod(b[1:]))
    if node.op_type == "Gemm":
        trans_a = next((x.i for x in node.attribute if x.name == "transA"), 0)
        trans_b = next((x.i for x in node.attribute if x.name == "transB"), 0)
        m, k = (a[1], a[0]) if trans_a else (a[0], a[1])
        n = b[0] if trans_b else b[1]
        return 2 * m * k * n
    out = shapes.get(node.output[0])  # MatMul with broadcasting: out elements x K
    if not out:
        return 0
    return 2 * int(np.prod(out)) * int(a[-1])


def gemm_precision(model: onnx.ModelProto, islands: Sequence[str] = ()) -> dict[str, Any]:
    """{"nodes": {precision: count}, "flops": {precision: FLOPs}, "reduced_share": {"nodes", "flops"}} where
    reduced = fp16 + bf16 + int8; the share of FLOPs is what decides the speed on a GPU. GEMMs whose names match
    `islands` (the model's required FP32 islands, e.g. MambaAD's selective scan) are counted apart under
    "islands" {"nodes", "flops", "fp32_flops"} and left out of the share, which then measures everything else."""
    shapes, types = _gemm_shapes(model)
    producer = {o: n for n in model.graph.node for o in n.output}
    pats = [re.compile(p) for p in islands]
    nodes: dict[str, int] = {}
    flops: dict[str, int] = {}
    isl = {"nodes": 0, "flops": 0, "fp32_flops": 0}
    for n in model.graph.node:
        if n.op_type not in GEMM_OPS or len(n.input) < 2:
            continue
        dq = all((p := producer.get(t)) is not None and p.op_type == "DequantizeLinear" for t in n.input[:2])
        prec = "int8" if dq else _NAMES.get(types.get(n.input[0], 0), "other")
        if any(r.search(n.name) for r in pats):
            f = _flops(n, shapes)
            isl["nodes"] += 1
            isl["flops"] += f
            isl["fp32_flops"] += f if prec == "fp32" else 0
            continue
        nodes[prec] = nodes.get(prec, 0) + 1
        flops[prec] = flops.get(prec, 0) + _flops(n, shapes)
    total_n = sum(nodes.values())
    total_f = sum(flops.values())
    reduced = ("fp16", "bf16", "int8")
    out: dict[str, Any] = {
        "nodes": dict(sorted(nodes.items())),
        "flops": dict(sorted(flops.items())),
        "reduced_share": {
            "nodes": sum(nodes.get(p, 0) for p in reduced) / total_n if total_n else 0.0,
            "flops": sum(flops.get(p, 0) for p in reduced) / total_f if total_f else 0.0,
        },
    }
    if isl["nodes"]:
        out["islands"] = {"patterns": list(islands), **isl}
    return out


def format_gemm_share(stats: dict[str, Any]) -> str:
    """One line: 'GEMM FLOPs: int8 81.2%, fp16 18.1%, fp32 0.7% (reduced precision 99.3%)'."""
    total = sum(stats["flops"].values()) or 1
    parts = ", ".join(f"{p} {100 * v / total:.1f}%" for p, v in sorted(stats["flops"].items(), key=lambda kv: -kv[1]))
    return f"GEMM FLOPs: {parts} (reduced precision {100 * stats['reduced_share']['flops']:.1f}%)"
