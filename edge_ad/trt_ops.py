"""What TensorRT's ONNX parser accepts, per TensorRT version: the data behind `graph_check`.

Source: onnx-tensorrt `docs/operators.md` (the parser's own support matrix) and its Changelog, read at the
10.1-GA tag (the matrix that 10.2 and 10.3 ship, plus 10.3's "tensor `axes` inputs for `Slice`") and at the
10.15 GA release (the parser TensorRT 11 continues; opsets 9-24), and the importer sources of 10.1-GA for the
inputs that must be build-time constants (`is_weights()` assertions). Two profiles:

* "10.3": JetPack 6.x (Jetson Orin), the target that cannot move;
* "11":   TensorRT 11.x on desktops/servers, and 11.4.1 on JetPack 7.2.2+ (AGX Orin, Thor only).

Types are the parser's names: FP32 FP16 BF16 INT32 INT64 INT8 UINT8 BOOL FP8 FP4 INT4. An op absent from a
profile is not imported by that parser ("N" in the matrix).
"""

from __future__ import annotations

from dataclasses import dataclass, field

_F = ("FP32", "FP16", "BF16")
_FI = _F + ("INT32", "INT64")
_FIB = _FI + ("BOOL",)

#: TensorRT 10.3 (onnx-tensorrt 10.1-GA matrix; 10.2/10.3 added no op and no type)
_OPS_10_3: dict[str, tuple[str, ...]] = {
    **dict.fromkeys((
        "Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "AveragePool", "BatchNormalization", "Ceil", "Celu", "Clip",
        "Conv", "ConvTranspose", "Cos", "Cosh", "CumSum", "Dropout", "Einsum", "Elu", "Erf", "Exp", "Floor", "GRU",
        "Gemm", "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool", "GroupNormalization", "HardSigmoid", "HardSwish",
        "Hardmax", "ImageScaler", "InstanceNormalization", "IsInf", "LRN", "LSTM", "LayerNormalization", "LeakyRelu",
        "Log", "LogSoftmax", "LpNormalization", "LpPool", "MatMul", "MaxPool", "MeanVarianceNormalization", "PRelu",
        "ParametricSoftplus", "Pow", "QuantizeLinear", "RNN", "RandomNormal", "RandomNormalLike", "RandomUniform",
        "RandomUniformLike", "Reciprocal", "Resize", "Round", "ScaledTanh", "Scan", "Selu", "Sigmoid", "Sin", "Sinh",
        "Softmax", "Softplus", "Softsign", "Sqrt", "Tan", "Tanh", "ThresholdedRelu", "Upsample"), _F),
    **dict.fromkeys((
        "Abs", "Add", "ArgMax", "ArgMin", "DepthToSpace", "Div", "Equal", "Greater", "GreaterOrEqual", "IsNaN", "Less",
        "LessOrEqual", "Max", "Min", "Mod", "Mul", "Neg", "Pad", "Range", "ReduceL1", "ReduceL2", "ReduceLogSum",
        "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare", "Relu",
        "Scatter", "ScatterElements", "ScatterND", "Shrink", "Sign", "SpaceToDepth", "Sub", "Sum", "TopK"), _FI),
    **dict.fromkeys((
        "Concat", "Constant", "ConstantOfShape", "Expand", "EyeLike", "Flatten", "Gather", "GatherElements", "GatherND",
        "Identity", "If", "Loop", "OneHot", "Reshape", "ReverseSequence", "Shape", "Size", "Slice", "Split", "Squeeze",
        "Tile", "Transpose", "Trilu", "Unsqueeze", "Where"), _FIB),
    **dict.fromkeys(("DeformConv", "GridSample", "Mish", "NonMaxSuppression", "NonZero", "RoiAlign"), ("FP32", "FP16")),
    **dict.fromkeys(("And", "Not", "Or", "Xor"), ("BOOL",)),
    **dict.fromkeys(("Cast", "CastLike"), _FIB + ("UINT8",)),
    "DequantizeLinear": ("INT8", "FP8", "INT4"),
    "Gelu": _FI + ("INT8",),
    "Mean": _FI + ("FP8",),
}

#: TensorRT 11.x: the 10.3 matrix with the additions of 10.4-10.15 (Changelog + the 10.15 matrix)
_OPS_11: dict[str, tuple[str, ...]] = {
    **_OPS_10_3,
    **dict.fromkeys(("Attention",), _F + ("INT8", "FP8")),
    **dict.fromkeys(("BlackmanWindow", "HammingWindow", "HannWindow"), ("FP32", "FP16")),
    **dict.fromkeys(("RMSNormalization", "RotaryEmbedding"), _F),
    "STFT": ("FP32",),
    "TensorScatter": _F + ("INT32",),
    "Pow": _FI,
    "DequantizeLinear": ("INT8", "FP8", "FP4", "INT4"),
    "Constant": _FIB + ("FP8", "FP4", "INT4"),
    "ConstantOfShape": _FIB + ("FP8", "FP4", "INT4"),
}

_REDUCE = ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
           "ReduceProd", "ReduceSumSquare")


@dataclass(frozen=True)
class ConstantInput:
    """Input `index` of `op` (from opset `since`) must be a build-time constant: an initializer or a Constant node
    (what the parser sees as weights). `why`: the parser's words, or "edge-ad" for a rule of our own."""

    op: str
    index: int
    name: str
    since: int = 1
    why: str = "parser"


_CONSTANTS_COMMON: tuple[ConstantInput, ...] = (
    ConstantInput("CumSum", 1, "axis"),
    *(ConstantInput(op, 1, "axes", since=18) for op in _REDUCE),
    ConstantInput("ReduceSum", 1, "axes", since=13),
    ConstantInput("TopK", 1, "K", since=10, why="edge-ad: K must be known to check TensorRT's K < 3840"),
    ConstantInput("Resize", 2, "scales", since=11, why="edge-ad: static output shape"),
    ConstantInput("Clip", 1, "min", since=11),
    ConstantInput("Clip", 2, "max", since=11),
    ConstantInput("Dropout", 2, "training_mode", since=12),
    ConstantInput("InstanceNormalization", 1, "scale"),
    ConstantInput("InstanceNormalization", 2, "B"),
    ConstantInput("OneHot", 1, "depth"),
    ConstantInput("Squeeze", 1, "axes", since=13),
    ConstantInput("Unsqueeze", 1, "axes", since=13),
    ConstantInput("Pad", 1, "pads", since=11, why="edge-ad: static output shape"),
)


#: The largest TopK K edge-ad lets through: TensorRT's operator reference gives k <= 3840, onnx-tensorrt's import
#: rule K < 3840; the stricter holds on every version edge-ad targets (models that reduce with TopK check it too)
TOPK_MAX_K = 3839
#: TensorRT's Dims::MAX_DIMS: no tensor of a network may have more dimensions
MAX_RANK = 8
#: TensorRT's volume limit: a tensor of more elements than this fails to build (or overflows int32 indexing)
MAX_ELEMENTS = 2**31 - 1


@dataclass(frozen=True)
class TrtProfile:
    """One TensorRT version's parser as far as edge-ad's graphs are concerned."""

    name: str
    opsets: tuple[int, int]
    ops: dict[str, tuple[str, ...]]
    constant_inputs: tuple[ConstantInput, ...]
    topk_max_k: int = TOPK_MAX_K
    resize_modes: frozenset[str] = frozenset({"nearest", "linear"})
    resize_coordinate_modes: frozenset[str] = frozenset(
        {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"})
    resize_nearest_modes: frozenset[str] = frozenset({"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"})
    notes: tuple[str, ...] = field(default=())


PROFILES: dict[str, TrtProfile] = {
    "10.3": TrtProfile(
        name="10.3", opsets=(9, 20), ops=_OPS_10_3,
        constant_inputs=_CONSTANTS_COMMON + (ConstantInput("Pad", 3, "axes", since=18),),
        notes=("JetPack 6.x", "Pad `axes` tensors arrived in 10.4")),
    "11": TrtProfile(
        name="11", opsets=(9, 24), ops=_OPS_11, constant_inputs=_CONSTANTS_COMMON,
        notes=("TensorRT 11.x (11.4.1: JetPack 7.2.2+ on AGX Orin and Thor)", "strongly typed only")),
}
DEFAULT_PROFILES: tuple[str, ...] = ("10.3", "11")

#: ONNX TensorProto data type -> the parser's type name (None: TensorRT has no such type)
ONNX_TO_TRT: dict[int, str] = {1: "FP32", 10: "FP16", 16: "BF16", 6: "INT32", 7: "INT64", 3: "INT8", 2: "UINT8",
                               9: "BOOL", 17: "FP8", 22: "INT4", 23: "FP4", 11: "DOUBLE"}
