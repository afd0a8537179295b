"""A static model of TensorRT's ONNX parser: the rules an edge-ad graph must satisfy to build at first contact.

Op names alone say little: TensorRT rejects a Transpose of a UINT8 tensor although it "supports" Transpose, and a
strongly typed network keeps every ONNX type, so a Q/DQ graph built on FP32 runs its softmax in FP32. The rules
below model the parser per TensorRT version (`trt_ops.PROFILES`: 10.3 on JetPack 6, 11.x), from onnx-tensorrt's
support matrix and importer sources and TensorRT's explicit-quantisation rules. `check_graph` runs on every
export and conversion; `RULES` names each rule, and every rule has a test graph that breaks it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from edge_ad.trt_ops import (
    DEFAULT_PROFILES,
    MAX_ELEMENTS,
    MAX_RANK,
    ONNX_TO_TRT,
    PROFILES,
    TOPK_MAX_K,
    TrtProfile,
)

RULES: dict[str, str] = {
    "opset": "the graph's ai.onnx opset is one the parser imports (10.3: 9-20, 11: 9-24)",
    "custom-domain": "no op of a custom domain (edge-ad ships no TensorRT plugin)",
    "unsupported-op": "every op is in the parser's support matrix",
    "forbidden-op": "no Loop/Scan/If/NonZero/Einsum: edge-ad's TensorRT path is static-shaped and fusible",
    "op-dtype": "every data input has a type the op supports in TensorRT",
    "uint8-io": "UINT8 only as a graph input read by nothing but Casts to FP32/FP16, or a graph output made by one",
    "bool-io": "a BOOL graph input or output goes through a Cast",
    "double": "no DOUBLE tensor anywhere",
    "constant-input": "inputs the parser needs as weights (axes, K, pads, Resize scales, ...) are constants",
    "topk-k": f"TopK has K <= {TOPK_MAX_K} (TensorRT: K < 3840) and sorted=1",
    "rank": f"no tensor has more than {MAX_RANK} dimensions (TensorRT's Dims::MAX_DIMS)",
    "volume": "no tensor has more than 2^31-1 elements at the batch the engine is built for",
    "resize-mode": "Resize uses a mode and coordinate transformation TensorRT implements, no antialiasing",
    "dynamic-dim": "only the batch dimension of a graph input is dynamic",
    "qdq-int8": "Q/DQ are symmetric INT8: an INT8 zero point of zeros, sized like the scale",
    "qdq-scale": "Q/DQ scales are constant, finite and > 0, of a float type",
    "qdq-scale-type": "a Q/DQ scale has the type of the data it scales (a strongly typed build inserts no Cast)",
    "qdq-axis": "per-channel scales only on constant weights, along the output-channel axis of the GEMM reading them",
    "qdq-placement": "Q feeds only DQ; DQ reads a Q or INT8 weights and feeds only GEMMs quantised on both inputs",
    "mixed-float": "no op mixes float types without an explicit Cast (a strongly typed network keeps ONNX types)",
    "finite-constant": "float constants are finite (an FP16 overflow would put inf into the engine)",
}

FORBIDDEN_OPS = frozenset({"Einsum", "Loop", "Scan", "If", "NonZero"})
QUANTIZABLE_OPS = ("MatMul", "Gemm", "Conv")
_QDQ = ("QuantizeLinear", "DequantizeLinear")
_SHAPE_QUERIES = ("Shape", "Size")
_FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}
_FLOAT_STRS = {"tensor(float)", "tensor(float16)", "tensor(bfloat16)", "tensor(double)"}


@dataclass(frozen=True)
class Problem:
    """One violation: the rule (a key of RULES), the node or tensor it is about, and the TensorRT versions hit."""

    rule: str
    where: str
    message: str
    profiles: tuple[str, ...] = DEFAULT_PROFILES

    def __str__(self) -> str:
        return f"[{self.rule}] {self.where}: {self.message} (TensorRT {'/'.join(self.profiles)})"


def _name(node: onnx.NodeProto) -> str:
    return node.name or f"{node.op_type}({', '.join(node.output)})"


def _dtype(code: int) -> str:
    return TensorProto.DataType.Name(code) if code else "unknown"


class _Graph:
    """Lookups over one model: tensor types, constant values, producers and consumers."""

    def __init__(self, model: onnx.ModelProto, batch: int = 1) -> None:
        self.model = model
        self.graph = model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        try:  # shapes at the batch the engine is built for (the model itself is left as it is)
            inferred = onnx.shape_inference.infer_shapes(_at_batch(model, batch), data_prop=True).graph
        except Exception:
            inferred = model.graph
        self.types: dict[str, int] = {}
        self.shapes: dict[str, list[int | None]] = {}
        for vi in [*inferred.value_info, *inferred.input, *inferred.output]:
            tt = vi.type.tensor_type
            self.types[vi.name] = tt.elem_type
            if tt.HasField("shape"):
                self.shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        self.consts: dict[str, Any] = {}
        for init in self.graph.initializer:
            self.types[init.name] = init.data_type
            self.consts[init.name] = init
            self.shapes[init.name] = list(init.dims)
        for node in self.graph.node:
            if node.op_type == "Constant":
                for attr in node.attribute:
                    if attr.name == "value":
                        self.types[node.output[0]] = attr.t.data_type
                        self.consts[node.output[0]] = attr.t
                        self.shapes[node.output[0]] = list(attr.t.dims)
        self.producer: dict[str, onnx.NodeProto] = {o: n for n in self.graph.node for o in n.output if o}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for n in self.graph.node:
            for t in n.input:
                if t:
                    self.consumers[t].append(n)
        self.input_names = {i.name for i in self.graph.input} - set(self.consts)
        self.output_names = {o.name for o in self.graph.output}

    def value(self, name: str) -> np.ndarray | None:
        t = self.consts.get(name)
        return None if t is None else numpy_helper.to_array(t)

    def is_const(self, name: str) -> bool:
        return name in self.consts


def _at_batch(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    """`model` with every symbolic leading input dimension set to `batch` (what the engine's profile fixes)."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    consts = {i.name for i in fixed.graph.initializer}
    for inp in fixed.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if inp.name not in consts and len(dims) and not dims[0].HasField("dim_value"):
            dims[0].dim_value = batch
    return fixed


def _size_rules(g: _Graph, batch: int) -> list[Problem]:
    """Ranks above TensorRT's maximum, and tensors whose element count overflows TensorRT's volume limit."""
    out: list[Problem] = []
    for name, shape in g.shapes.items():
        if len(shape) > MAX_RANK:
            out.append(Problem("rank", name, f"{len(shape)} dimensions {shape}; TensorRT allows at most {MAX_RANK}"))
        if shape and all(d is not None for d in shape):
            n = int(np.prod(np.asarray(shape, dtype=np.float64)))
            if n > MAX_ELEMENTS:
                out.append(Problem("volume", name, f"{n:,} elements (shape {shape} at batch {batch}); TensorRT "
                                                   f"tensors hold at most 2^31-1: build a smaller batch or tile"))
    return out


def _scale_type_rule(g: _Graph) -> list[Problem]:
    """Q: the scale's type equals x's; DQ: the scale's type (the output type) equals the type of the data it meets
    (the Q's input, or the other input of the GEMM reading dequantised weights)."""
    out: list[Problem] = []
    for n in g.graph.node:
        if n.op_type not in _QDQ or len(n.input) < 2:
            continue
        scale_type = g.types.get(n.input[1], 0)
        data_type = 0
        if n.op_type == "QuantizeLinear":
            data_type = g.types.get(n.input[0], 0)
        elif (src := g.producer.get(n.input[0])) is not None and src.op_type == "QuantizeLinear":
            data_type = g.types.get(src.input[0], 0)
        else:
            for c in g.consumers.get(n.output[0], []):
                others = [t for t in c.input[:2] if t and t != n.output[0]]
                if c.op_type in QUANTIZABLE_OPS and others:
                    data_type = g.types.get(others[0], 0)
                    break
        if scale_type and data_type and scale_type != data_type:
            out.append(Problem("qdq-scale-type", _name(n), f"scale is {_dtype(scale_type)} but the data is "
                                                           f"{_dtype(data_type)}: from opset 19 the parser inserts no "
                                                           "Cast, and a strongly typed network refuses the mix"))
    return out


def _schema(node: onnx.NodeProto, opset: int) -> Any:
    try:
        return onnx.defs.get_schema(node.op_type, opset, node.domain or "")
    except onnx.defs.SchemaError:
        return None


def _allowed(schema: Any, type_str: str) -> set[str]:
    for tc in schema.type_constraints:
        if tc.type_param_str == type_str:
            return set(tc.allowed_type_strs)
    return {type_str}


def _data_inputs(node: onnx.NodeProto, schema: Any) -> list[int]:
    """Indices of the inputs whose type the support matrix constrains: the first, and every input that may be a
    float (index/shape/axes inputs are integer-only in the ONNX schema and are not listed by the matrix)."""
    if node.op_type in _QDQ:
        return [0]
    out = []
    for k, t in enumerate(node.input):
        if not t:
            continue
        formal = schema.inputs[min(k, len(schema.inputs) - 1)]
        if k == 0 or _allowed(schema, formal.type_str) & _FLOAT_STRS:
            out.append(k)
    return out


def _profile_rules(g: _Graph, prof: TrtProfile) -> list[Problem]:
    out: list[Problem] = []

    def add(rule: str, where: str, msg: str) -> None:
        out.append(Problem(rule, where, msg, (prof.name,)))

    lo, hi = prof.opsets
    if not lo <= g.opset <= hi:
        add("opset", "model", f"ai.onnx opset {g.opset}; TensorRT {prof.name}'s parser imports opsets {lo}-{hi}")
    constants = defaultdict(list)
    for ci in prof.constant_inputs:
        constants[ci.op].append(ci)
    for node in g.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        where = _name(node)
        supported = prof.ops.get(node.op_type)
        if supported is None:
            add("unsupported-op", where, f"{node.op_type} is not imported by TensorRT {prof.name}'s ONNX parser")
            continue
        schema = _schema(node, g.opset)
        if schema is not None:
            for k in _data_inputs(node, schema):
                code = g.types.get(node.input[k], 0)
                trt = ONNX_TO_TRT.get(code)
                if code in (0, TensorProto.UINT8, TensorProto.DOUBLE):  # unknown / own rules
                    continue
                if trt not in supported:
                    add("op-dtype", where, f"input {k} ({node.input[k]!r}) is {_dtype(code)}; TensorRT {prof.name} "
                                           f"runs {node.op_type} on {', '.join(supported)} only")
        if node.op_type == "Cast":
            to = next((a.i for a in node.attribute if a.name == "to"), 0)
            if ONNX_TO_TRT.get(to) not in supported:
                add("op-dtype", where, f"casts to {_dtype(to)}, which TensorRT has no tensors of")
        for ci in constants.get(node.op_type, ()):
            used = g.opset >= ci.since and len(node.input) > ci.index and node.input[ci.index]
            if used and not g.is_const(node.input[ci.index]):
                add("constant-input", where, f"input {ci.name!r} ({node.input[ci.index]!r}) must be an "
                                             f"initializer or Constant ({ci.why})")
        if node.op_type == "TopK":
            k_value = g.value(node.input[1]) if len(node.input) > 1 else None
            if k_value is not None and int(np.max(k_value)) > prof.topk_max_k:
                add("topk-k", where, f"K={int(np.max(k_value))} exceeds TensorRT's limit of {prof.topk_max_k}")
            if next((a.i for a in node.attribute if a.name == "sorted"), 1) != 1:
                add("topk-k", where, "sorted=0 is not supported (TensorRT needs sorted=1)")
        if node.op_type == "Resize":
            out.extend(Problem("resize-mode", where, m, (prof.name,)) for m in _resize_problems(node, prof))
    return out


def _resize_problems(node: onnx.NodeProto, prof: TrtProfile) -> list[str]:
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

    def s(key: str, default: str) -> str:
        v = attrs.get(key, default)
        return v.decode() if isinstance(v, bytes) else str(v)

    out = []
    if s("mode", "nearest") not in prof.resize_modes:
        out.append(f"mode {s('mode', 'nearest')!r}; TensorRT supports {sorted(prof.resize_modes)}")
    ctm = s("coordinate_transformation_mode", "half_pixel")
    if ctm not in prof.resize_coordinate_modes:
        out.append(f"coordinate_transformation_mode {ctm!r}; TensorRT supports {sorted(prof.resize_coordinate_modes)}")
    if s("mode", "nearest") == "nearest" and s("nearest_mode", "round_prefer_floor") not in prof.resize_nearest_modes:
        out.append(f"nearest_mode {s('nearest_mode', '')!r} is not supported")
    if int(attrs.get("antialias", 0)):
        out.append("antialias=1: TensorRT does not antialias")
    if s("keep_aspect_ratio_policy", "stretch") != "stretch":
        out.append("keep_aspect_ratio_policy must be 'stretch'")
    return out


def _io_rules(g: _Graph, spatial_dims: Sequence[int]) -> list[Problem]:
    out: list[Problem] = []
    for inp in g.graph.input:
        if inp.name in g.consts:
            continue
        code = inp.type.tensor_type.elem_type
        dims = inp.type.tensor_type.shape.dim
        for i in spatial_dims:
            if i < len(dims) and not dims[i].HasField("dim_value"):
                out.append(Problem("dynamic-dim", f"input {inp.name}",
                                   f"dimension {i} is dynamic ({dims[i].dim_param!r}); only the batch may be"))
        if code not in (TensorProto.UINT8, TensorProto.BOOL):
            continue
        rule = "uint8-io" if code == TensorProto.UINT8 else "bool-io"
        for c in g.consumers.get(inp.name, []):
            to = next((a.i for a in c.attribute if a.name == "to"), 0)
            if c.op_type != "Cast":
                out.append(Problem(rule, f"input {inp.name}", f"is {_dtype(code)} and feeds {c.op_type} {_name(c)!r}: "
                                   "TensorRT takes it only into a Cast, so cast first (x.float().permute(...), not "
                                   "x.permute(...).float())"))
            elif code == TensorProto.UINT8 and to not in (TensorProto.FLOAT, TensorProto.FLOAT16):
                out.append(Problem(rule, f"input {inp.name}", f"UINT8 is cast to {_dtype(to)}; TensorRT converts UINT8 "
                                   "only to FLOAT or FLOAT16"))
    for name, code in g.types.items():
        if code != TensorProto.UINT8 or name in g.input_names:
            continue
        prod = g.producer.get(name)
        src = g.types.get(prod.input[0], 0) if prod is not None and prod.input else 0
        ok = (name in g.output_names and prod is not None and prod.op_type == "Cast"
              and src in (TensorProto.FLOAT, TensorProto.FLOAT16))
        if not ok:
            out.append(Problem("uint8-io", name, "UINT8 tensor inside the graph: TensorRT allows UINT8 only as network "
                                                 "I/O converted by a Cast from/to FP32 or FP16"))
    for o in g.graph.output:
        prod = g.producer.get(o.name)
        if o.type.tensor_type.elem_type == TensorProto.BOOL and (prod is None or prod.op_type != "Cast"):
            out.append(Problem("bool-io", f"output {o.name}", "BOOL graph output not produced by a Cast"))
    return out


def _double_rule(g: _Graph) -> list[Problem]:
    out = [Problem("double", name, "DOUBLE tensor: TensorRT has no FP64; export in float32")
           for name, code in g.types.items() if code == TensorProto.DOUBLE]
    for n in g.graph.node:
        if n.op_type == "Cast" and next((a.i for a in n.attribute if a.name == "to"), 0) == TensorProto.DOUBLE:
            out.append(Problem("double", _name(n), "Cast to DOUBLE"))
    return out


def _finite_rule(g: _Graph) -> list[Problem]:
    out = []
    for name, t in g.consts.items():
        if t.data_type in _FLOAT_TYPES:
            arr = numpy_helper.to_array(t)
            bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
            if bad:
                out.append(Problem("finite-constant", name, f"{bad} non-finite value(s) in a {_dtype(t.data_type)} "
                                                            "constant (overflow of a float conversion?)"))
    return out


def mixed_type_nodes(model: onnx.ModelProto) -> list[Problem]:
    """The `mixed-float` rule alone: nodes whose float inputs bound to one ONNX type variable differ in type."""
    return _mixed_float_rule(_Graph(model))


def _mixed_float_rule(g: _Graph) -> list[Problem]:
    out = []
    for n in g.graph.node:
        if n.domain not in ("", "ai.onnx"):
            continue
        schema = _schema(n, g.opset)
        if schema is None:
            continue
        seen: dict[str, set[int]] = defaultdict(set)
        for k, t in enumerate(n.input):
            if t and g.types.get(t, 0) in _FLOAT_TYPES:
                seen[schema.inputs[min(k, len(schema.inputs) - 1)].type_str].add(g.types[t])
        for tv, codes in seen.items():
            if len(codes) > 1:
                names = sorted(_dtype(c) for c in codes)
                out.append(
                    Problem("mixed-float", _name(n), f"{n.op_type} inputs of type {tv} mix {names}; insert a Cast")
                )
    return out


def _weight_axis(consumer: onnx.NodeProto, index: int, rank: int) -> int | None:
    """The output-channel axis of a GEMM's weight input, or None when `index` is not its weight input."""
    if index != 1:
        return None
    if consumer.op_type == "Conv":
        return 0
    if consumer.op_type == "Gemm":
        return 0 if next((a.i for a in consumer.attribute if a.name == "transB"), 0) else 1
    return rank - 1  # MatMul [.., K, N]: one scale per output column


def _qdq_rules(g: _Graph, allowed: Iterable[str] | None) -> list[Problem]:
    out: list[Problem] = []
    allowed_set = set(allowed) if allowed is not None else None
    for n in g.graph.node:
        where = _name(n)
        if n.op_type in _QDQ:
            scale = g.value(n.input[1]) if len(n.input) > 1 else None
            if scale is None:
                out.append(Problem("qdq-scale", where, "scale must be an initializer or Constant"))
            elif g.types.get(n.input[1]) not in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16):
                out.append(
                    Problem("qdq-scale", where, f"scale type {_dtype(g.types.get(n.input[1], 0))}; expected a float")
                )
            elif not np.all(np.isfinite(scale)) or np.any(scale <= 0):
                out.append(Problem("qdq-scale", where, "scale must be finite and > 0"))
            zp = g.value(n.input[2]) if len(n.input) > 2 and n.input[2] else None
            if zp is None:
                out.append(Problem("qdq-int8", where, "zero point missing or not constant (ONNX then means UINT8; "
                                                      "TensorRT quantises to INT8 only)"))
            elif g.types.get(n.input[2]) != TensorProto.INT8:
                out.append(
                    Problem("qdq-int8", where, f"zero point is {_dtype(g.types.get(n.input[2], 0))}; expected INT8")
                )
            elif np.any(zp != 0):
                out.append(Problem("qdq-int8", where, "zero point must be 0 (TensorRT INT8 is symmetric)"))
            elif scale is not None and np.size(zp) != np.size(scale):
                out.append(Problem("qdq-int8", where, f"zero point has {np.size(zp)} values, scale {np.size(scale)}"))
            if scale is not None and np.size(scale) > 1:
                out.extend(_per_channel_problems(g, n, where, np.size(scale)))
        if n.op_type == "QuantizeLinear":
            for c in g.consumers.get(n.output[0], []):
                if c.op_type != "DequantizeLinear":
                    out.append(Problem("qdq-placement", where, f"quantised values feed {c.op_type} {_name(c)!r}, not a "
                                                               "DequantizeLinear"))
        elif n.op_type == "DequantizeLinear":
            src = g.producer.get(n.input[0])
            if not (src is not None and src.op_type == "QuantizeLinear") and not (
                    g.is_const(n.input[0]) and g.types.get(n.input[0]) == TensorProto.INT8):
                out.append(Problem("qdq-placement", where, "reads neither a QuantizeLinear nor INT8 weights"))
            for c in g.consumers.get(n.output[0], []):
                if c.op_type not in QUANTIZABLE_OPS + _SHAPE_QUERIES:
                    out.append(
                        Problem(
                            "qdq-placement",
                            where,
                            f"dequantised values feed {c.op_type} {_name(c)!r}: only "
                            f"{', '.join(QUANTIZABLE_OPS)} may read them",
                        )
                    )
        elif n.op_type in QUANTIZABLE_OPS:
            dq = [k for k in (0, 1) if len(n.input) > k and (p := g.producer.get(n.input[k])) is not None
                  and p.op_type == "DequantizeLinear"]
            if dq and dq != [0, 1]:
                out.append(
                    Problem(
                        "qdq-placement",
                        where,
                        f"quantised {n.op_type} needs Q/DQ on both inputs, has it on input(s) {dq}",
                    )
                )
            if dq and allowed_set is not None and n.name not in allowed_set:
                out.append(Problem("qdq-placement", where, "quantised but not in the allowed node list"))
    return out


def _per_channel_problems(g: _Graph, n: onnx.NodeProto, where: str, size: int) -> list[Problem]:
    if n.op_type == "QuantizeLinear" or not g.is_const(n.input[0]):
        return [Problem("qdq-axis", where, "per-channel scale on an activation: TensorRT quantises activations "
                                           "per tensor only")]
    shape = g.shapes.get(n.input[0], [])
    rank = len(shape)
    axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
    axis = axis + rank if axis < 0 else axis
    if not 0 <= axis < rank or shape[axis] != size:
        return [Problem("qdq-axis", where, f"{size} scales along axis {axis} of a weight of shape {shape}")]
    out = []
    for c in g.consumers.get(n.output[0], []):
        want = _weight_axis(c, list(c.input).index(n.output[0]), rank) if c.op_type in QUANTIZABLE_OPS else None
        if c.op_type in QUANTIZABLE_OPS and want != axis:
            out.append(
                Problem(
                    "qdq-axis",
                    where,
                    f"per-channel axis {axis}, but {c.op_type} {_name(c)!r} has its output channels on axis {want}",
                )
            )
    return out


def check_graph(model: onnx.ModelProto, profiles: Sequence[str] = DEFAULT_PROFILES, *,
                spatial_dims: Sequence[int] = (1, 2, 3), allowed_quantized: Iterable[str] | None = None,
                batch: int = 1) -> list[Problem]:
    """Every rule violation of `model` for the TensorRT versions `profiles` (keys of trt_ops.PROFILES); empty = the
    parser imports it and a strongly typed build keeps its precision. `allowed_quantized`: node names that may
    carry Q/DQ (None: any GEMM); `batch`: the batch a dynamic-batch graph's engine is built for (tensor volumes
    are checked there)."""
    if batch < 1:
        raise ValueError(f"batch: expected an integer >= 1, got {batch}")
    g = _Graph(model, batch)
    problems: list[Problem] = []
    for n in g.graph.node:
        if n.domain not in ("", "ai.onnx"):
            problems.append(Problem("custom-domain", _name(n), f"op {n.op_type} of domain {n.domain!r}"))
        elif n.op_type in FORBIDDEN_OPS:
            problems.append(Problem("forbidden-op", _name(n), f"{n.op_type} is not allowed on edge-ad's TensorRT path"))
    merged: dict[tuple[str, str, str], list[str]] = {}
    for name in profiles:
        for p in _profile_rules(g, PROFILES[name]):
            merged.setdefault((p.rule, p.where, p.message.replace(f"TensorRT {name}", "TensorRT")), []).append(name)
    problems += [Problem(r, w, m, tuple(ps)) for (r, w, m), ps in merged.items()]
    problems += _io_rules(g, spatial_dims)
    problems += _double_rule(g)
    problems += _finite_rule(g)
    problems += _mixed_float_rule(g)
    problems += _qdq_rules(g, allowed_quantized)
    problems += _scale_type_rule(g)
    problems += _size_rules(g, batch)
    return problems


def format_problems(problems: Sequence[Problem], limit: int = 20) -> str:
    """Problems as an indented list, at most `limit` of them, grouped by rule in RULES order."""
    order = list(RULES)
    shown = sorted(problems, key=lambda p: order.index(p.rule) if p.rule in order else len(order))[:limit]
    more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
    return "\n  ".join(str(p) for p in shown) + more


def op_histogram(model: onnx.ModelProto) -> dict[str, Any]:
    """Node count and op-type counts, for export summaries and docs."""
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return {"nodes": len(model.graph.node), "ops": dict(sorted(counts.items(), key=lambda kv: -kv[1]))}
