"""Explicit INT8: an FP32 ONNX graph + calibrated activation ranges -> Q/DQ graphs, with a reviewable scales file.

TensorRT 10.1 deprecated and 11.x removed implicit INT8 calibration; explicit Q/DQ is the path that works on both.
TensorRT's rules are followed: symmetric INT8 (zero point 0), per-tensor activation scales, per-output-channel weight
scales, a Q/DQ pair in front of both inputs of each quantised GEMM and nowhere else.

GEMMs/convolutions with a constant weight are the candidates; `exclude` (regexes on node names or op types) removes
sensitive ones, so for Dinomaly only the qkv/proj/fc1/fc2 GEMMs of the encoder and decoder blocks are quantised
(dinomaly.md 11.3). MatMuls between two activations (attention's q k^T) are quantised only when named by
`activation_gemms` (regexes; a per-tensor scale on each input), since their ranges vary more. A strongly typed
engine keeps every ONNX type, so Q/DQ on the FP32 graph would leave softmax, LayerNorm, GELU and attention in
FP32. `tensorrt_graph` therefore quantises on top of the FP16 graph: opset 19, FP16 scales, the FP16
policy's islands kept FP32, everything else FP16 between the INT8 GEMMs. `cpu_graph` is the same quantisation on the
FP32 graph, which CPU runtimes fuse into integer GEMMs. Scales are rounded to FP16 once, so both graphs quantise
identically; the scales JSON stores them and passing it back reproduces both graphs byte for byte.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge_ad.errors import ConfigError
from edge_ad.fileio import read_json_file

SCALES_FORMAT = "edge-ad/int8-scales"
SCALES_VERSION = 3
#: versions read: 2 (weight GEMMs only) and 3 (also activation x activation GEMMs: "activation_b" entries)
SCALES_VERSIONS_READ = (2, 3)
CANDIDATE_OPS = ("MatMul", "Gemm", "Conv")
QMAX = 127
#: FP16 Q/DQ scales need QuantizeLinear/DequantizeLinear-19 (TensorRT 10.3 imports opsets up to 20)
QDQ_FP16_OPSET = 19
#: the smallest scale kept: FP16's smallest normal number (subnormal scales lose precision in FP16)
MIN_SCALE = float(np.finfo(np.float16).tiny)


def _is_op_type(entry: str) -> bool:
    return re.fullmatch(r"[A-Z][A-Za-z0-9]*", entry) is not None and onnx.defs.has(entry)


def _constant_tensors(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    out = {t.name: t for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            value = next((a.t for a in n.attribute if a.name == "value"), None)
            if value is not None:
                out[n.output[0]] = value
    return out


def _weight_axis(node: onnx.NodeProto, rank: int) -> int:
    """Output-channel axis of the weight (input 1): Conv [O, I, k..] -> 0, Gemm -> 0 if transB else 1,
    MatMul -> last."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        return 0 if next((a.i for a in node.attribute if a.name == "transB"), 0) else 1
    return rank - 1


def select_nodes(model: onnx.ModelProto, exclude: Sequence[str]) -> list[str]:
    """Names of the candidate nodes (GEMM/Conv with a constant float weight as input 1, 2-D for MatMul) not removed
    by `exclude`."""
    consts = _constant_tensors(model)
    op_ex = {e for e in exclude if _is_op_type(e)}
    rx = [re.compile(e) for e in exclude if e not in op_ex]
    out = []
    for n in model.graph.node:
        if n.op_type not in CANDIDATE_OPS or len(n.input) < 2 or n.op_type in op_ex:
            continue
        w = consts.get(n.input[1])
        if w is None or w.data_type != TensorProto.FLOAT or (n.op_type == "MatMul" and len(w.dims) != 2):
            continue
        if any(r.search(n.name) for r in rx):
            continue
        out.append(n.name)
    if not out:
        raise ConfigError(f"int8: no node left to quantise after exclude={list(exclude)}; candidates are "
                          f"{list(CANDIDATE_OPS)} nodes with a constant weight")
    return out


def select_activation_gemms(model: onnx.ModelProto, patterns: Sequence[str], exclude: Sequence[str]) -> list[str]:
    """Names of the MatMuls between two non-constant tensors matching `patterns` (and not `exclude`)."""
    if not patterns:
        return []
    consts = _constant_tensors(model)
    want = [re.compile(p) for p in patterns]
    rx = [re.compile(e) for e in exclude if not _is_op_type(e)]
    out = [n.name for n in model.graph.node
           if n.op_type == "MatMul" and len(n.input) == 2 and not any(i in consts for i in n.input)
           and any(w.search(n.name) for w in want) and not any(r.search(n.name) for r in rx)]
    if not out:
        raise ConfigError(f"int8: activation_gemms {list(patterns)} match no MatMul between two activations")
    return out


def fp16_scale(values: np.ndarray | float) -> np.ndarray:
    """Scales representable in FP16, rounded up (never clipping more than the FP32 scale would), >= MIN_SCALE;
    returned as float32."""
    s = np.maximum(np.asarray(values, np.float32), np.float32(MIN_SCALE))
    s16 = s.astype(np.float16)
    s16 = np.where(s16.astype(np.float32) < s, np.nextafter(s16, np.float16(np.inf)), s16)
    return s16.astype(np.float32)


def weight_scales(w: np.ndarray, axis: int) -> np.ndarray:
    """Symmetric per-channel scales max|w| / 127 along `axis` (FP16-representable); all-zero channels get MIN_SCALE."""
    other = tuple(i for i in range(w.ndim) if i != axis)
    return fp16_scale(np.max(np.abs(w), axis=other) / QMAX)


def activation_tensors(model: onnx.ModelProto, nodes: Sequence[str]) -> dict[str, str]:
    """node name -> the activation tensor (input 0) it quantises."""
    by_name = {n.name: n for n in model.graph.node}
    return {name: by_name[name].input[0] for name in nodes}


def _act_entry(tensor: str, amax: dict[str, float], node: str) -> dict[str, Any]:
    if tensor not in amax:
        raise ConfigError(f"int8: no calibrated range for {tensor!r}, an input of {node}")
    return {"tensor": tensor, "amax": float(amax[tensor]), "scale": float(fp16_scale(amax[tensor] / QMAX))}


def onnx_sha256(model: onnx.ModelProto) -> str:
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()


def plan_scales(model: onnx.ModelProto, nodes: Sequence[str], amax: dict[str, float], *, method: str,
                percentile: float | None, exclude: Sequence[str], activation_gemms: Sequence[str] = (),
                act_nodes: Sequence[str] = ()) -> dict[str, Any]:
    """The scales document for `nodes` (weight GEMMs) and `act_nodes` (activation x activation MatMuls) of the
    FP32 `model` from calibrated |x| thresholds (`amax`, keyed by tensor name, as `calibration.collect_ranges`
    returns them)."""
    consts = _constant_tensors(model)
    by_name = {n.name: n for n in model.graph.node}
    plan: dict[str, Any] = {}
    for name in nodes:
        n = by_name[name]
        w = numpy_helper.to_array(consts[n.input[1]])
        axis = _weight_axis(n, w.ndim)
        plan[name] = {
            "op": n.op_type,
            "activation": _act_entry(n.input[0], amax, name),
            "weight": {"initializer": n.input[1], "axis": axis, "scale": [float(v) for v in weight_scales(w, axis)]},
        }
    for name in act_nodes:
        n = by_name[name]
        plan[name] = {"op": n.op_type, "activation": _act_entry(n.input[0], amax, name),
                      "activation_b": _act_entry(n.input[1], amax, name)}
    return {"format": SCALES_FORMAT, "version": SCALES_VERSION, "fp32_onnx_sha256": onnx_sha256(model),
            "method": method, "percentile": percentile if method == "percentile" else None,
            "exclude": list(exclude), "activation_gemms": list(activation_gemms), "nodes": plan}


def calibrate_scales(
    model: onnx.ModelProto,
    batches: Iterable[np.ndarray],
    *,
    input_name: str = "image",
    method: str = "percentile",
    percentile: float = 99.999,
    exclude: Sequence[str] = (),
    activation_gemms: Sequence[str] = (),
) -> dict[str, Any]:
    """Select the nodes, collect activation ranges over uint8 image `batches` (bounded memory) and plan the scales."""
    from edge_ad.export.calibration import collect_ranges

    nodes = select_nodes(model, exclude)
    act_nodes = select_activation_gemms(model, activation_gemms, exclude)
    by_name = {n.name: n for n in model.graph.node}
    tensors = set(activation_tensors(model, nodes).values()) | {t for a in act_nodes for t in by_name[a].input[:2]}
    amax = collect_ranges(model, sorted(tensors), batches, input_name, method, percentile)
    return plan_scales(model, nodes, amax, method=method, percentile=percentile, exclude=exclude,
                       activation_gemms=activation_gemms, act_nodes=act_nodes)


def check_scales(model: onnx.ModelProto, doc: dict[str, Any], where: str) -> None:
    """Refuse a scales document that is malformed or belongs to another graph or other weights (ConfigError)."""
    check_scales_document(doc, where)
    sha = onnx_sha256(model)
    if doc["fp32_onnx_sha256"] != sha:
        raise ConfigError(
            f"{where}: fp32_onnx_sha256: the scales were computed for graph {doc['fp32_onnx_sha256'][:12]}..., "
            f"this package's graph is {sha[:12]}...; recalibrate without --scales"
        )
    consts = _constant_tensors(model)
    by_name = {n.name: n for n in model.graph.node}
    for name, entry in doc["nodes"].items():
        n = by_name.get(name)
        if n is None or n.op_type not in CANDIDATE_OPS:
            raise ConfigError(
                f"{where}: nodes[{name!r}]: no such GEMM in this graph; the file belongs to another model"
            )
        for key, index in (("activation", 0), ("activation_b", 1)):
            a = entry.get(key)
            if a is None and key == "activation_b":
                continue
            a = a or {}
            s = a.get("scale")
            if isinstance(s, bool) or not isinstance(s, (int, float)) or not np.isfinite(s) or s <= 0:
                raise ConfigError(f"{where}: nodes[{name!r}].{key}.scale: expected a finite number > 0, got {s!r}")
            if a.get("tensor") != n.input[index]:
                raise ConfigError(f"{where}: nodes[{name!r}].{key}.tensor: expected {n.input[index]!r}, got "
                                  f"{a.get('tensor')!r}")
        if "activation_b" in entry:
            if n.op_type != "MatMul" or any(i in consts for i in n.input[:2]):
                raise ConfigError(f"{where}: nodes[{name!r}]: activation_b is for MatMuls between two activations")
            continue
        wi = entry.get("weight") or {}
        if wi.get("initializer") != n.input[1] or n.input[1] not in consts:
            raise ConfigError(f"{where}: nodes[{name!r}].weight.initializer: expected {n.input[1]!r}, got "
                              f"{wi.get('initializer')!r}")
        w = numpy_helper.to_array(consts[n.input[1]])
        want = weight_scales(w, _weight_axis(n, w.ndim))
        got = np.asarray(wi.get("scale", []), np.float32)
        if wi.get("axis") != _weight_axis(n, w.ndim) or got.shape != want.shape or not np.array_equal(got, want):
            raise ConfigError(f"{where}: nodes[{name!r}].weight: the stored per-channel scales differ from this "
                              "model's weights (the file belongs to other weights; recalibrate without --scales)")


def build_qdq(model: onnx.ModelProto, doc: dict[str, Any], scale_dtype: int = TensorProto.FLOAT) -> onnx.ModelProto:
    """Insert Q/DQ for every node of the scales document into a copy of `model`: Q->DQ on the activation (per
    tensor), INT8 weights with a per-channel DQ; scales stored as `scale_dtype`. The input is not modified."""
    np_scale = np.float16 if scale_dtype == TensorProto.FLOAT16 else np.float32
    m = onnx.ModelProto()
    m.CopyFrom(model)
    consts = _constant_tensors(m)
    zero = numpy_helper.from_array(np.array(0, np.int8), "qdq/zero_point")
    inits: list[onnx.TensorProto] = [zero]
    weights_done: dict[str, str] = {}
    out_nodes: list[onnx.NodeProto] = []
    for n in m.graph.node:
        entry = doc["nodes"].get(n.name)
        if entry is None:
            out_nodes.append(n)
            continue
        base = f"qdq/{n.name.strip('/')}"
        sides = [("activation", 0, "x")] + ([("activation_b", 1, "y")] if "activation_b" in entry else [])
        for key, index, tag in sides:  # per-tensor Q -> DQ in front of each quantised activation input
            s = numpy_helper.from_array(np.array(entry[key]["scale"], np_scale), f"{base}/{tag}_scale")
            inits.append(s)
            out_nodes += [
                helper.make_node("QuantizeLinear", [n.input[index], s.name, zero.name], [f"{base}/{tag}_q"],
                                 name=f"{base}/Q{'' if tag == 'x' else '_b'}"),
                helper.make_node("DequantizeLinear", [f"{base}/{tag}_q", s.name, zero.name], [f"{base}/{tag}_dq"],
                                 name=f"{base}/DQ{'' if tag == 'x' else '_b'}")]
            n.input[index] = f"{base}/{tag}_dq"
        if "activation_b" in entry:
            out_nodes.append(n)
            continue
        wname = n.input[1]
        if wname not in weights_done:
            w = numpy_helper.to_array(consts[wname])
            axis = int(entry["weight"]["axis"])
            ws = np.asarray(entry["weight"]["scale"], np.float32)
            shape = [1] * w.ndim
            shape[axis] = -1
            wq = np.clip(np.rint(w / ws.reshape(shape)), -QMAX, QMAX).astype(np.int8)
            wb = f"qdq/w/{wname.strip('/')}"
            inits += [
                numpy_helper.from_array(wq, f"{wb}/int8"),
                numpy_helper.from_array(ws.astype(np_scale), f"{wb}/scale"),
                numpy_helper.from_array(np.zeros(len(ws), np.int8), f"{wb}/zero_point"),
            ]
            out_nodes.append(helper.make_node("DequantizeLinear", [f"{wb}/int8", f"{wb}/scale", f"{wb}/zero_point"],
                                              [f"{wb}/dq"], name=f"{wb}/DQ", axis=axis))
            weights_done[wname] = f"{wb}/dq"
        n.input[1] = weights_done[wname]
        out_nodes.append(n)
    missing = sorted(set(doc["nodes"]) - {n.name for n in out_nodes})
    if missing:
        raise ConfigError(f"int8: nodes {missing[:3]} of the scales document are not in the graph")
    used = {t for nd in out_nodes for t in nd.input} | {o.name for o in m.graph.output}
    out_nodes = [nd for nd in out_nodes if nd.op_type != "Constant" or nd.output[0] in used]  # replaced weights
    del m.graph.node[:]
    m.graph.node.extend(out_nodes)
    m.graph.initializer.extend(inits)
    kept = [t for t in m.graph.initializer if t.name in used]
    del m.graph.initializer[:]
    m.graph.initializer.extend(kept)
    onnx.checker.check_model(m)
    return m


def cpu_graph(model: onnx.ModelProto, doc: dict[str, Any]) -> onnx.ModelProto:
    """The Q/DQ graph for CPU runtimes: FP32 between the INT8 GEMMs (ONNX Runtime fuses it into integer GEMMs)."""
    return build_qdq(model, doc, TensorProto.FLOAT)


def tensorrt_graph(model: onnx.ModelProto, doc: dict[str, Any], policy: Any) -> onnx.ModelProto:
    """The Q/DQ graph for a strongly typed TensorRT engine: opset 19, FP16 scales, FP16 between the INT8 GEMMs except
    the islands `policy` (an `fp16.Fp16Policy`) keeps in FP32, whose Q/DQ stay FP32 with them."""
    from onnx import version_converter

    from edge_ad.export.fp16 import convert_to_fp16

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    upgraded = version_converter.convert_version(model, QDQ_FP16_OPSET) if opset < QDQ_FP16_OPSET else model
    half, _ = convert_to_fp16(build_qdq(upgraded, doc, TensorProto.FLOAT), policy)
    return half


def quantized_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the GEMMs whose two data inputs are dequantised (what runs in INT8)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    return sorted(n.name for n in model.graph.node if n.op_type in CANDIDATE_OPS and len(n.input) > 1 and all(
        (p := producers.get(t)) is not None and p.op_type == "DequantizeLinear" for t in n.input[:2]))


def check_scales_document(doc: Any, where: str) -> None:
    """Structure check of a scales JSON document; ConfigError naming the field."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(doc).__name__}")
    if doc.get("format") != SCALES_FORMAT:
        raise ConfigError(f"{where}: format: expected {SCALES_FORMAT!r}, got {doc.get('format')!r}")
    if doc.get("version") not in SCALES_VERSIONS_READ:
        raise ConfigError(f"{where}: version: expected {SCALES_VERSION}, got {doc.get('version')!r} (files of older "
                          "edge-ad versions cannot be reused: recalibrate without --scales)")
    for key, typ in (("fp32_onnx_sha256", str), ("nodes", dict)):
        if not isinstance(doc.get(key), typ):
            raise ConfigError(f"{where}: {key}: expected a {typ.__name__}, got {doc.get(key)!r}")
    for name, entry in doc["nodes"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("activation"), dict) or not (
                isinstance(entry.get("weight"), dict) or isinstance(entry.get("activation_b"), dict)):
            raise ConfigError(f"{where}: nodes[{name!r}]: expected an object with 'activation' and 'weight' (or "
                              "'activation_b' for a MatMul between two activations)")


def load_scales(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: scales file not found")
    doc = read_json_file(p, "scales file")
    check_scales_document(doc, str(p))
    return doc
