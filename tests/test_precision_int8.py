"""INT8: Q/DQ only on the allowed GEMMs, TensorRT rules (symmetric, per-channel weights), reusable scales file."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edge_ad.errors import ConfigError
from edge_ad.export.calibration import (
    DEFAULT_EXCLUDE,
    ImageCalibrationReader,
    load_calibration_config,
    select_images,
    validate_config,
)
from edge_ad.export.int8 import qdq_problems, quantize_int8, select_nodes
from edge_ad.export.precision import convert_package
from edge_ad.runtime.package import load_package

ALLOWED = r"^/model/(blocks|decoder)\.\d+/(attn/(qkv|proj)|mlp/(fc1|fc2))/MatMul$"


@pytest.fixture(scope="module")
def fp32(tiny_fp32, tmp_path_factory):
    data, run, pkg = tiny_fp32
    root = tmp_path_factory.mktemp("int8")  # this module's conversions
    return root, data, run, pkg


@pytest.fixture(scope="module")
def packages(fp32):
    """int8 package calibrated from images, then rebuilt from its scales file (permissive gate: structure tests)."""
    root, _, _, pkg = fp32
    scales = root / "scales.json"
    a, ra = convert_package(pkg, "int8", root / "int8", method="minmax", scales_out=scales, min_agreement=0.0,
                            max_drop=1.0, progress=False)
    b, rb = convert_package(pkg, "int8", root / "int8b", scales=scales, min_agreement=0.0, max_drop=1.0,
                            progress=False)
    return a, b, scales, ra, rb


def test_default_exclusions_leave_only_block_gemms(fp32):
    import re

    model = onnx.load(str(fp32[3] / "model.onnx"))
    nodes = select_nodes(model, DEFAULT_EXCLUDE)
    assert len(nodes) == 10 * 4 + 8 * 4  # encoder + decoder blocks x (qkv, proj, fc1, fc2)
    assert all(re.match(ALLOWED, n) for n in nodes)
    everything = select_nodes(model, [])
    assert "/model/MatMul_1" in everything and "/model/proj/Conv" in everything  # head (a A^T) and patch embed
    assert any("bottleneck" in n for n in everything)
    with pytest.raises(ConfigError, match="no node left"):
        select_nodes(model, ["MatMul", "Conv"])


def test_qdq_follows_tensorrt_rules_and_runs(packages):
    a, _, scales, _ra, _ = packages
    q = onnx.load(str(a / "model.onnx"))
    doc = json.loads(scales.read_text())
    assert qdq_problems(q, doc["nodes"]) == []
    ops = [n.op_type for n in q.graph.node]
    assert ops.count("QuantizeLinear") == len(doc["activations"]) > 0
    assert all(q_["zero_point"] == 0 for q_ in doc["activations"].values())
    inits = {t.name: t for t in q.graph.initializer}
    for w, info in doc["weights"].items():
        assert inits[w].data_type == onnx.TensorProto.INT8
        assert info["axis"] == 1 and len(info["scale"]) == inits[w].dims[1] > 1  # per output channel
    assert len(doc["nodes"]) == 72
    man = json.loads((a / "manifest.json").read_text())
    assert man["precision"] == "int8" and "int8_scales.json" in man["files"]
    assert man["export_metrics"]["conversion"]["scales_file"] == str(scales)
    x = np.random.default_rng(0).integers(0, 256, size=(1, 224, 224, 3), dtype=np.uint8)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    m, s = ort.InferenceSession(str(a / "model.onnx"), so, providers=["CPUExecutionProvider"]).run(None, {"image": x})
    assert m.shape == (1, 1, 256, 256) and np.isfinite(m).all() and s.shape == (1,)


def test_qdq_check_flags_nonzero_zero_point(packages):
    q = onnx.load(str(packages[0] / "model.onnx"))
    zp = next(t for t in q.graph.initializer if t.data_type == onnx.TensorProto.INT8 and not t.dims)
    zp.CopyFrom(onnx.numpy_helper.from_array(np.array(3, np.int8), zp.name))
    assert any("zero point must be 0" in p for p in qdq_problems(q))


def test_scales_file_reuse_reproduces_identical_onnx(packages):
    a, b, _, ra, rb = packages
    assert (a / "model.onnx").read_bytes() == (b / "model.onnx").read_bytes()
    assert rb["conversion"]["reused_scales"] is True and ra["conversion"]["reused_scales"] is False


def test_scales_file_for_other_weights_is_refused(fp32, packages, tmp_path):
    _root, _, _, pkg = fp32
    doc = json.loads(packages[2].read_text())
    doc["fp32_onnx_sha256"] = "0" * 64
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="fp32_onnx_sha256"):
        convert_package(pkg, "int8", tmp_path / "p", scales=bad, progress=False)
    assert not (tmp_path / "p").exists()


def test_calibration_manifest_validation_and_sampling(fp32, tmp_path):
    _root, data, run, pkg = fp32
    cfg = load_calibration_config("dinomaly-tiny")
    assert cfg.exclude == DEFAULT_EXCLUDE and cfg.method == "entropy"
    for raw, match in (({"split": "test"}, "split: expected 'train'"), ({"num_images": 0}, "num_images"),
                       ({"sampling": "all"}, "sampling"), ({"method": "kl"}, "method"),
                       ({"exclude": ["("]}, "not a valid regular expression"), ({"color": 1}, "unknown key"),
                       ({"model": "dinomaly-s"}, "package holds 'dinomaly-tiny'")):
        with pytest.raises(ConfigError, match=match):
            validate_config({"model": "dinomaly-tiny", **raw} if "model" not in raw else raw, "x.yaml", "dinomaly-tiny")
    holdout = json.loads((run / "val_split.json").read_text())["holdout"]
    strat = validate_config({"num_images": 4, "sampling": "stratified"}, "x.yaml", "dinomaly-tiny")
    paths = select_images(strat, data, exclude_paths=holdout)
    assert len(paths) == 4 and {p.parts[-4] for p in paths} == {"pcb", "fabric"}
    assert not {str(p) for p in paths} & set(holdout)
    p = load_package(pkg)
    reader = ImageCalibrationReader(paths[:2], p.preprocess, "image", progress=False)
    batch = reader.get_next()
    assert batch["image"].dtype == np.uint8 and batch["image"].shape == (1, 224, 224, 3)
    y = tmp_path / "c.yaml"
    y.write_text("model: dinomaly-tiny\nnum_images: 3\nsampling: first\nmethod: percentile\npercentile: 99.9\n")
    c = load_calibration_config("dinomaly-tiny", y)
    assert (c.num_images, c.sampling, c.method, c.percentile) == (3, "first", "percentile", 99.9)
    q, doc = quantize_int8(onnx.load(str(pkg / "model.onnx")),
                           reader=ImageCalibrationReader(select_images(c, data), p.preprocess, "image", progress=False),
                           method=c.method, percentile=c.percentile, exclude=c.exclude)
    assert doc["method"] == "percentile" and doc["percentile"] == 99.9 and qdq_problems(q, doc["nodes"]) == []
