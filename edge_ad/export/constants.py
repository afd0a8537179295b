"""Re-derive output-normalisation constants of a converted (fp16/int8) graph on held-out good images.

Some models normalise their anomaly maps with statistics of their own outputs: ULSAD maps each branch with
m' = (m - q_0.9) * 0.1 / (q_0.995 - q_0.9), quantiles taken on held-out good images. FP16/INT8 shift the map
distribution, so these constants must be recomputed on the converted graph itself (ulsad.md section 10).

Protocol: the model's `package_constants()` (the manifest's `constants`) carries a `rederive` entry

    {"kind": "quantile_map_normalization", "shift_initializer": "model.map_shift",
     "scale_initializer": "model.map_scale", "branches": ["local", "global"], "levels": [0.9, 0.995],
     "target": 0.1}

naming two graph initializers of shape [1, C, 1, 1] used as `Sub(raw, shift)` then `Mul(., scale)`, where `raw`
[B, C, h, w] holds the C un-normalised branch maps. `rederive_constants` exposes `raw` as an extra output of a
probe copy of the graph (calibration only, never shipped), runs it with ONNX Runtime, takes the quantiles per
branch, writes the new shift/scale into the two initializers (dtype kept, so FP16 copies stay FP16) and returns
updated `constants`. Models without a `rederive` entry pass through unchanged.

The precision path calls, after converting and before staging/gating the candidate:

    converted, manifest["constants"], info = rederive_package_constants(converted, pkg, images.good)

(`pkg` the fp32 ModelPackage, `images.good` the held-out good Samples of `gate.gate_set`), and records `info`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edge_ad.errors import ConfigError

KIND = "quantile_map_normalization"
#: torch.quantile's element limit, kept so results match the PyTorch calibration on the same pixels
MAX_ELEMS = 2**24


def _initializer(model: onnx.ModelProto, name: str) -> onnx.TensorProto:
    """The initializer `name`, or its single converted copy (`name__fp16` from the fp16 converter)."""
    hits = [t for t in model.graph.initializer if t.name == name or t.name.startswith(name + "__")]
    used = {i for n in model.graph.node for i in n.input}
    hits = [t for t in hits if t.name in used]
    if len(hits) != 1:
        raise ConfigError(f"graph: expected one used initializer named {name!r} (the map normalisation), found "
                          f"{[t.name for t in hits]}; was the graph exported by edge-ad from this model?")
    return hits[0]


def _raw_maps_tensor(model: onnx.ModelProto, shift: str) -> str:
    """Name of the tensor the shift is subtracted from (the un-normalised maps)."""
    users = [n for n in model.graph.node if shift in n.input]
    if len(users) != 1 or users[0].op_type != "Sub" or users[0].input[1] != shift:
        raise ConfigError(f"graph: initializer {shift!r} must feed exactly one Sub as its second input, found "
                          f"{[(n.name, n.op_type) for n in users]}")
    return str(users[0].input[0])


def quantiles(values: np.ndarray, levels: Sequence[float], seed: int = 0) -> np.ndarray:
    """Linear-interpolation quantiles (torch.quantile's default) of a flat array; more than 2^24 values are
    subsampled at random (seeded), as the PyTorch calibration does."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size > MAX_ELEMS:
        v = v[np.random.default_rng(seed).permutation(v.size)[:MAX_ELEMS]]
    return np.quantile(v, list(levels))


def _probe(model: onnx.ModelProto, tensor: str, elem_type: int) -> bytes:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.append(helper.make_tensor_value_info(tensor, elem_type, None))
    return m.SerializeToString()


def rederive_constants(
    model: onnx.ModelProto,
    constants: dict[str, Any],
    batches: Iterable[np.ndarray],
    *,
    input_name: str = "image",
    providers: Sequence[str] = ("CPUExecutionProvider",),
) -> tuple[onnx.ModelProto, dict[str, Any], dict[str, Any]]:
    """(graph with re-derived normalisation, updated constants, report) from uint8 [B,H,W,3] batches of held-out
    GOOD images run through `model` itself. The input graph is not modified. Constants without a `rederive`
    entry are returned unchanged (report["rederived"] is False)."""
    spec = constants.get("rederive")
    if not spec:
        return model, constants, {"rederived": False, "reason": "the model's constants need no re-derivation"}
    if spec.get("kind") != KIND:
        raise ConfigError(f"constants.rederive.kind: expected {KIND!r}, got {spec.get('kind')!r}")
    import onnxruntime as ort

    shift = _initializer(model, spec["shift_initializer"])
    scale = _initializer(model, spec["scale_initializer"])
    raw = _raw_maps_tensor(model, shift.name)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(_probe(model, raw, shift.data_type), so, providers=list(providers))
    maps = [np.asarray(sess.run([raw], {input_name: b})[0], dtype=np.float32) for b in batches if len(b)]
    if not maps:
        raise ConfigError("rederive_constants: no images given; the held-out good images are needed")
    m = np.concatenate(maps)
    branches = list(spec["branches"])
    if m.ndim != 4 or m.shape[1] != len(branches):
        raise ConfigError(f"graph: tensor {raw!r} has shape {m.shape}, expected [N, {len(branches)}, h, w]")
    lo, hi = float(spec["levels"][0]), float(spec["levels"][1])
    q = np.stack([quantiles(m[:, i], (lo, hi)) for i in range(len(branches))])  # [C, 2]
    if not np.isfinite(q).all() or (q[:, 1] <= q[:, 0]).any():
        raise ConfigError(f"rederive_constants: quantiles {q.tolist()} are not finite/increasing on {len(m)} "
                          "images (constant or NaN maps from the converted graph?)")

    out = onnx.ModelProto()
    out.CopyFrom(model)
    values = {shift.name: q[:, 0], scale.name: float(spec["target"]) / (q[:, 1] - q[:, 0])}
    for init in out.graph.initializer:
        if init.name in values:
            old = numpy_helper.to_array(init)
            init.CopyFrom(numpy_helper.from_array(values[init.name].reshape(old.shape).astype(old.dtype), init.name))

    new = copy.deepcopy(constants)
    before = dict(new.get("quantiles") or {})
    after = {}
    for i, br in enumerate(branches):
        after[f"qa_{br}"], after[f"qb_{br}"] = float(q[i, 0]), float(q[i, 1])
    new["quantiles"] = after
    new.setdefault("status", {})["quantiles"] = f"re-derived on the converted graph ({len(m)} held-out good images)"
    report = {"rederived": True, "n_images": len(m), "tensor": raw, "quantiles_before": before,
              "quantiles_after": after}
    return out, new, report


def rederive_package_constants(
    model: onnx.ModelProto, pkg: Any, samples: Sequence[Any], *, batch: int = 4
) -> tuple[onnx.ModelProto, dict[str, Any], dict[str, Any]]:
    """`rederive_constants` for a converted graph of the fp32 package `pkg` (an `edge_ad.runtime.package.
    ModelPackage`) on `samples` (held-out good `Sample`s), read and preprocessed exactly as the runtime does."""
    from edge_ad.imageio import read_image
    from edge_ad.runtime.geometry import model_inputs

    geometry = pkg.geometry()

    def batches() -> Iterable[np.ndarray]:
        for i in range(0, len(samples), batch):
            yield np.stack([x for s in samples[i : i + batch]
                            for x in model_inputs(read_image(s.path), pkg.preprocess, geometry)])

    return rederive_constants(model, dict(pkg.manifest.get("constants") or {}), batches(),
                              input_name=pkg.input_name)
