"""Explicit INT8 quantisation: FP32 ONNX -> Q/DQ ONNX for TensorRT (and ONNX Runtime), with a reviewable scales file.

TensorRT 10.1 deprecated and 11.x removed implicit INT8 calibration; explicit Q/DQ is the path that works on both
(field-notes 4.1, 4.3). The rules followed here are TensorRT's: symmetric INT8 (zero point 0), per-tensor
activation scales, per-output-channel weight scales, a Q/DQ pair in front of each quantised GEMM input.

Only GEMMs/convolutions with a constant weight are candidates; `exclude` (regexes on node names or op types)
removes sensitive ones, so for Dinomaly only the qkv/proj/fc1/fc2 GEMMs of the encoder and decoder blocks are
quantised (dinomaly.md 11.3). The scales of every Q node are written to a JSON file; passing that file back skips
calibration and reproduces the same graph byte for byte (ONNX Runtime's `TensorQuantOverrides`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from edge_ad.errors import ConfigError

log = logging.getLogger(__name__)

SCALES_FORMAT = "edge-ad/int8-scales"
SCALES_VERSION = 1
CANDIDATE_OPS = ("MatMul", "Gemm", "Conv")
_WEIGHT_INPUT = {"MatMul": 1, "Gemm": 1, "Conv": 1}


def _is_op_type(entry: str) -> bool:
    return re.fullmatch(r"[A-Z][A-Za-z0-9]*", entry) is not None and onnx.defs.has(entry)


def select_nodes(model: onnx.ModelProto, exclude: Sequence[str]) -> list[str]:
    """Names of the candidate nodes (GEMM/Conv with a constant weight) not removed by `exclude`."""
    inits = {t.name for t in model.graph.initializer}
    inits.update(n.output[0] for n in model.graph.node if n.op_type == "Constant")
    op_ex = {e for e in exclude if _is_op_type(e)}
    rx = [re.compile(e) for e in exclude if e not in op_ex]
    out = []
    for n in model.graph.node:
        if n.op_type not in CANDIDATE_OPS or len(n.input) <= _WEIGHT_INPUT[n.op_type]:
            continue
        if n.input[_WEIGHT_INPUT[n.op_type]] not in inits or n.op_type in op_ex:
            continue
        if any(r.search(n.name) for r in rx):
            continue
        out.append(n.name)
    if not out:
        raise ConfigError(f"int8: no node left to quantise after exclude={list(exclude)}; candidates are "
                          f"{list(CANDIDATE_OPS)} nodes with a constant weight")
    return out


def _extra_options(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},  # weight [K, N]: one scale per output column
        "OpTypesToExcludeOutputQuantization": list(CANDIDATE_OPS),  # GEMM outputs (residual branches) stay float
    }
    if overrides:
        opts["TensorQuantOverrides"] = overrides
    return opts


def _method(name: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    return {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile,
            "minmax": CalibrationMethod.MinMax}[name]


def _quantize(model: onnx.ModelProto, nodes: list[str], tensors_range: Any, overrides: dict[str, Any] | None
              ) -> onnx.ModelProto:
    """ONNX Runtime's QDQ quantiser on given tensor ranges (no calibration pass)."""
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer

    with tempfile.TemporaryDirectory(prefix="edge-ad-int8-") as tmp:
        src = Path(tmp) / "model.onnx"
        onnx.save(model, str(src))
        inferred = load_model_with_shape_infer(src)
        q = QDQQuantizer(inferred, True, False, QuantType.QInt8, QuantType.QInt8, tensors_range, nodes, [],
                         list(CANDIDATE_OPS), _extra_options(overrides))
        q.quantize_model()
        out = q.model.model
    out.graph.ClearField("value_info")
    return out


def calibrate(model: onnx.ModelProto, reader: Any, method: str, percentile: float = 99.999) -> Any:
    """Activation ranges (ONNX Runtime TensorsData) of the inputs/outputs of every candidate op, from `reader`."""
    from onnxruntime.quantization import create_calibrator

    extra: dict[str, Any] = {"symmetric": True}
    if method == "percentile":
        extra["percentile"] = percentile
    with tempfile.TemporaryDirectory(prefix="edge-ad-calib-") as tmp:
        src = Path(tmp) / "model.onnx"
        onnx.save(model, str(src))
        cal = create_calibrator(src, list(CANDIDATE_OPS), augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                calibrate_method=_method(method), extra_options=extra)
        cal.collect_data(reader)
        return cal.compute_data()


def extract_scales(qmodel: onnx.ModelProto) -> dict[str, Any]:
    """{"activations": {tensor: {scale, zero_point}}, "weights": {initializer: {axis, scale[], zero_point}},
    "nodes": [quantised node names]} read back from the Q/DQ graph."""
    inits = {t.name: numpy_helper.to_array(t) for t in qmodel.graph.initializer}
    acts: dict[str, Any] = {}
    weights: dict[str, Any] = {}
    for n in qmodel.graph.node:
        if n.op_type == "QuantizeLinear":
            acts[n.input[0]] = {"scale": float(inits[n.input[1]]), "zero_point": int(inits[n.input[2]])}
        elif n.op_type == "DequantizeLinear" and n.input[0] in inits:
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            zp = inits[n.input[2]] if len(n.input) > 2 else np.zeros(1, np.int8)
            weights[n.input[0]] = {"axis": int(axis), "scale": [float(v) for v in np.ravel(inits[n.input[1]])],
                                   "zero_point": int(np.max(np.abs(zp)))}
    producers = {o: n for n in qmodel.graph.node for o in n.output}
    nodes = sorted({n.name for n in qmodel.graph.node if n.op_type in CANDIDATE_OPS
                    and any(producers.get(i) is not None and producers[i].op_type == "DequantizeLinear"
                            for i in n.input)})
    return {"activations": dict(sorted(acts.items())), "weights": dict(sorted(weights.items())), "nodes": nodes}


def onnx_sha256(model: onnx.ModelProto) -> str:
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()


def quantize_with_scales(model: onnx.ModelProto, scales: dict[str, Any], where: str = "scales") -> onnx.ModelProto:
    """Rebuild the Q/DQ graph from a scales document (no calibration): same model + same file = same bytes."""
    from onnxruntime.quantization.calibrate import TensorData, TensorsData

    names = {n.name for n in model.graph.node}
    missing = [n for n in scales["nodes"] if n not in names]
    if missing:
        raise ConfigError(f"{where}: nodes {missing[:3]} are not in this graph; the scales file belongs to another "
                          "model (recalibrate without --scales)")
    overrides: dict[str, Any] = {}
    ranges: dict[str, Any] = {}
    for tensor, q in scales["activations"].items():
        if int(q["zero_point"]) != 0:
            raise ConfigError(f"{where}: activations[{tensor!r}].zero_point: expected 0 (TensorRT INT8 is symmetric), "
                              f"got {q['zero_point']}")
        s = np.float32(q["scale"])
        if not np.isfinite(s) or s <= 0:
            raise ConfigError(f"{where}: activations[{tensor!r}].scale: expected a finite number > 0, got {q['scale']}")
        overrides[tensor] = [{"scale": np.array(s, np.float32), "zero_point": np.array(0, np.int8)}]
        ranges[tensor] = TensorData(lowest=np.float32(-127.0) * s, highest=np.float32(127.0) * s)
    from onnxruntime.quantization import CalibrationMethod

    qmodel = _quantize(model, list(scales["nodes"]), TensorsData(CalibrationMethod.MinMax, ranges), overrides)
    got = extract_scales(qmodel)
    for w, q in scales.get("weights", {}).items():
        have = got["weights"].get(w)
        if have is None or not np.allclose(have["scale"], q["scale"], rtol=1e-6, atol=0):
            raise ConfigError(f"{where}: weights[{w!r}]: the stored per-channel scales differ from this model's "
                              "weights (the file belongs to other weights; recalibrate without --scales)")
    return qmodel


def quantize_int8(model: onnx.ModelProto, *, reader: Any | None, method: str = "entropy", percentile: float = 99.999,
                  exclude: Sequence[str] = (), scales: dict[str, Any] | None = None, scales_where: str = "scales"
                  ) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """(Q/DQ model, scales document). With `scales` no calibration runs; otherwise `reader` feeds calibration."""
    sha = onnx_sha256(model)
    if scales is None:
        if reader is None:
            raise ConfigError("int8: calibration images or an existing scales file are required")
        nodes = select_nodes(model, exclude)
        ranges = calibrate(model, reader, method, percentile)
        first = _quantize(model, nodes, ranges, None)
        scales = {"format": SCALES_FORMAT, "version": SCALES_VERSION, "fp32_onnx_sha256": sha, "method": method,
                  "percentile": percentile if method == "percentile" else None, "exclude": list(exclude),
                  **extract_scales(first)}
    else:
        check_scales_document(scales, scales_where)
        if scales["fp32_onnx_sha256"] != sha:
            raise ConfigError(f"{scales_where}: fp32_onnx_sha256: the scales were computed for graph "
                              f"{scales['fp32_onnx_sha256'][:12]}..., this package's graph is {sha[:12]}...; "
                              "recalibrate without --scales")
    return quantize_with_scales(model, scales, scales_where), scales


def check_scales_document(doc: Any, where: str) -> None:
    """Structure check of a scales JSON document; ConfigError naming the field."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(doc).__name__}")
    if doc.get("format") != SCALES_FORMAT:
        raise ConfigError(f"{where}: format: expected {SCALES_FORMAT!r}, got {doc.get('format')!r}")
    if doc.get("version") != SCALES_VERSION:
        raise ConfigError(f"{where}: version: expected {SCALES_VERSION}, got {doc.get('version')!r}")
    for key, typ in (("fp32_onnx_sha256", str), ("activations", dict), ("weights", dict), ("nodes", list)):
        if not isinstance(doc.get(key), typ):
            raise ConfigError(f"{where}: {key}: expected a {typ.__name__}, got {doc.get(key)!r}")


def load_scales(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: scales file not found")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{p}: invalid JSON at line {e.lineno}: {e.msg}") from e
    check_scales_document(doc, str(p))
    return doc


def qdq_problems(qmodel: onnx.ModelProto, allowed: Sequence[str] | None = None) -> list[str]:
    """Violations of TensorRT's explicit-quantisation rules; empty list = clean.

    Every Q/DQ is INT8 with zero point 0; activation scales are scalars; every quantised node has a DQ on each
    of its first two inputs; only nodes in `allowed` (if given) are quantised; no other op reads dequantised
    values (shape queries excepted), so quantisation error stays inside the chosen GEMMs.
    """
    inits = {t.name: numpy_helper.to_array(t) for t in qmodel.graph.initializer}
    producers = {o: n for n in qmodel.graph.node for o in n.output}
    problems = []
    for n in qmodel.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zp = inits.get(n.input[2]) if len(n.input) > 2 else None
            if zp is None or zp.dtype != np.int8:
                problems.append(f"{n.name}: zero point must be an int8 initializer, got {None if zp is None else zp.dtype}")
            elif np.any(zp != 0):
                problems.append(f"{n.name}: zero point must be 0 (symmetric), got {np.unique(zp)[:4].tolist()}")
            if n.op_type == "QuantizeLinear" and np.size(inits.get(n.input[1], np.zeros(2))) != 1:
                problems.append(f"{n.name}: activation scale must be per-tensor")
        dq_inputs = [i for i in n.input if i in producers and producers[i].op_type == "DequantizeLinear"]
        if n.op_type in CANDIDATE_OPS and dq_inputs:
            if len(dq_inputs) < 2:
                problems.append(f"{n.name}: quantised {n.op_type} needs Q/DQ on both inputs, got {len(dq_inputs)}")
            if allowed is not None and n.name not in allowed:
                problems.append(f"{n.name}: quantised but not in the allowed node list")
        elif dq_inputs and n.op_type not in ("QuantizeLinear", "DequantizeLinear", "Shape", "Size"):
            problems.append(f"{n.name}: {n.op_type} consumes a DequantizeLinear output but is not a quantised GEMM")
    return problems
