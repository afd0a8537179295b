"""Static checks of an exported ONNX graph against what TensorRT's ONNX parser accepts."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

# ONNX ops the TensorRT 10.x ONNX parser imports (onnx-tensorrt docs/operators.md), restricted to what our
# graphs may reasonably contain. Anything else fails the export check instead of failing later on the device.
TENSORRT_OPS = frozenset(["Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh", "AveragePool", "BatchNormalization", "Cast", "Ceil", "Celu", "Clip", "Concat", "Constant", "ConstantOfShape", "Conv", "ConvTranspose", "Cos", "Cosh", "CumSum", "DepthToSpace", "DequantizeLinear", "Div", "Dropout", "Einsum", "Elu", "Equal", "Erf", "Exp", "Expand", "Flatten", "Floor", "Gather", "GatherElements", "GatherND", "Gelu", "Gemm", "GlobalAveragePool", "GlobalMaxPool", "Greater", "GreaterOrEqual", "GridSample", "GroupNormalization", "HardSigmoid", "HardSwish", "Identity", "If", "InstanceNormalization", "IsInf", "IsNaN", "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual", "Log", "LogSoftmax", "Loop", "LRN", "MatMul", "Max", "MaxPool", "Mean", "Min", "Mod", "Mul", "Neg", "NonZero", "Not", "OneHot", "Or", "Pad", "ParametricSoftplus", "Pow", "PRelu", "QuantizeLinear", "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Range", "Reciprocal", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare", "Relu", "Reshape", "Resize", "ReverseSequence", "RoiAlign", "Round", "ScaledTanh", "Scan", "ScatterElements", "ScatterND", "Selu", "Shape", "Shrink", "Sigmoid", "Sign", "Sin", "Sinh", "Size", "Slice", "Softmax", "Softplus", "Softsign", "SpaceToDepth", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tan", "Tanh", "ThresholdedRelu", "Tile", "TopK", "Transpose", "Trilu", "Unsqueeze", "Upsample", "Where", "Xor", "CastLike", "Hardmax", "LpNormalization", "Mish"])

# Supported by the parser but rejected by edge-ad's TensorRT path: Einsum has version-dependent limits
# (2 operands, ellipsis), control flow defeats static shapes and fusion.
FORBIDDEN_OPS = frozenset({"Einsum", "Loop", "Scan", "If", "NonZero"})
TOPK_MAX_K = 3840


def _constant_values(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    vals = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    vals[node.output[0]] = numpy_helper.to_array(attr.t)
    return vals


def check_tensorrt_compat(model: onnx.ModelProto, *, spatial_dims: tuple[int, ...] = (1, 2, 3)) -> list[str]:
    """Problems that would make TensorRT reject the graph or run it with dynamic shapes; empty list = clean."""
    problems: list[str] = []
    consts = _constant_values(model)
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"node {node.name or node.op_type}: custom domain {node.domain!r} op {node.op_type}")
        elif node.op_type not in TENSORRT_OPS:
            problems.append(f"node {node.name or node.op_type}: op {node.op_type} is not supported by TensorRT's ONNX parser")
        elif node.op_type in FORBIDDEN_OPS:
            problems.append(f"node {node.name or node.op_type}: op {node.op_type} is not allowed on edge-ad's TensorRT path")
        if node.op_type == "TopK" and len(node.input) > 1:
            k = consts.get(node.input[1])
            if k is None:
                problems.append(f"node {node.name}: TopK with a non-constant K")
            elif int(np.max(k)) > TOPK_MAX_K:
                problems.append(f"node {node.name}: TopK K={int(np.max(k))} exceeds TensorRT's limit {TOPK_MAX_K}")
    for inp in model.graph.input:
        dims = inp.type.tensor_type.shape.dim
        for i in spatial_dims:
            if i < len(dims) and not dims[i].HasField("dim_value"):
                problems.append(f"input {inp.name}: dimension {i} is dynamic ({dims[i].dim_param!r}); only batch may be")
    return problems


def op_histogram(model: onnx.ModelProto) -> dict[str, Any]:
    """Node count and op-type counts, for export summaries and docs."""
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return {"nodes": len(model.graph.node), "ops": dict(sorted(counts.items(), key=lambda kv: -kv[1]))}
