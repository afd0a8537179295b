"""INT8: Q/DQ only on the allowed GEMMs, on top of the FP16 graph (TensorRT rules, strongly typed), calibrated
image by image, with a reusable scales file."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edge_ad.errors import ConfigError
from edge_ad.export.calibration import (
    DEFAULT_EXCLUDE,
    RangeCollector,
    collect_ranges,
    image_batches,
    load_calibration_config,
    select_images,
    validate_config,
)
from edge_ad.export.graph_check import check_graph
from edge_ad.export.int8 import (
    calibrate_scales,
    cpu_graph,
    fp16_scale,
    quantized_nodes,
    select_nodes,
    tensorrt_graph,
)
from edge_ad.export.precision import convert_package, fp16_policy
from edge_ad.runtime.package import load_package

pytestmark = pytest.mark.slow  # trains/exports models or starts real peers: not in `make test-fast`

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


def test_qdq_follows_tensorrt_rules_on_the_fp16_graph_and_runs(packages):
    import re

    a, _, scales, ra, _ = packages
    q = onnx.load(str(a / "model.onnx"))
    doc = json.loads(scales.read_text())
    assert check_graph(q, allowed_quantized=doc["nodes"]) == []
    assert quantized_nodes(q) == sorted(doc["nodes"]) and len(doc["nodes"]) == 72
    assert all(re.match(ALLOWED, n) for n in doc["nodes"])
    assert [o.version for o in q.opset_import if o.domain in ("", "ai.onnx")] == [19]  # FP16 scales need Q/DQ-19
    inits = {t.name: t for t in q.graph.initializer}
    producers = {o: n for n in q.graph.node for o in n.output}
    by_name = {n.name: n for n in q.graph.node}
    for name, entry in doc["nodes"].items():
        gemm = by_name[name]
        wdq = producers[gemm.input[1]]
        w, ws = inits[wdq.input[0]], inits[wdq.input[1]]
        assert w.data_type == onnx.TensorProto.INT8 and ws.data_type == onnx.TensorProto.FLOAT16
        assert entry["weight"]["axis"] == 1 and len(entry["weight"]["scale"]) == w.dims[1] > 1  # per output channel
        xdq = producers[gemm.input[0]]
        assert inits[xdq.input[1]].data_type == onnx.TensorProto.FLOAT16  # DQ outputs FP16: no Cast before the GEMM
    # between the INT8 GEMMs the graph is FP16: >= 90 % of the GEMM FLOPs run in reduced precision
    man = json.loads((a / "manifest.json").read_text())
    share = man["onnx"]["gemm_precision"]
    assert share["nodes"]["int8"] == 72 and share["reduced_share"]["flops"] >= 0.9 and share["flops"]["fp16"] > 0
    assert man["onnx"]["opset"] == 19 and ra["gemm_precision"] == share
    assert man["precision"] == "int8" and "int8_scales.json" in man["files"]
    assert man["export_metrics"]["conversion"]["scales_file"] == str(scales)
    x = np.random.default_rng(0).integers(0, 256, size=(1, 224, 224, 3), dtype=np.uint8)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    m, s = ort.InferenceSession(str(a / "model.onnx"), so, providers=["CPUExecutionProvider"]).run(None, {"image": x})
    assert m.shape == (1, 1, 256, 256) and np.isfinite(m).all() and s.shape == (1,)


def test_int8_package_carries_a_gated_cpu_graph_that_cpu_backends_run(packages):
    from edge_ad.runtime.backends.onnxruntime import OnnxRuntimeBackend

    a, _, _, ra, _ = packages
    pkg = load_package(a)
    man = pkg.manifest
    assert man["onnx"]["cpu"]["file"] == "model_cpu.onnx" and "model_cpu.onnx" in man["files"]
    cpu = onnx.load(str(pkg.cpu_onnx_path()))
    assert quantized_nodes(cpu) == quantized_nodes(onnx.load(str(pkg.onnx_path()))) and check_graph(cpu) == []
    assert man["onnx"]["cpu"]["opset"] == 17 and man["onnx"]["cpu"]["gemm_precision"]["nodes"]["int8"] == 72
    gate = man["export_metrics"]["gate"]
    ort_run = next(e for e in gate["engines"] if e["backend"] == "onnxruntime")
    assert ort_run["file"] == "model_cpu.onnx" and set(ort_run["categories"]) == {"pcb", "fabric"}
    assert ort_run["chosen"] and "onnxruntime-cpu on model_cpu.onnx (same thresholds; chosen)" in ra["table"]
    # the manifest names each engine's graph, as the gate ran it
    assert man["onnx"]["backends"] == gate["choices"]
    assert man["onnx"]["backends"]["onnxruntime"] == {"file": "model_cpu.onnx",
                                                      "checked": "export gate: onnxruntime-cpu on model_cpu.onnx"}
    assert man["onnx"]["backends"]["tensorrt"]["file"] == "model.onnx"
    ov_choice = pkg.graph_for("openvino")
    ov_runs = [e for e in gate["engines"] if e["backend"] == "openvino"]
    if ov_runs:  # openvino installed: its fastest passing candidate is the one the manifest names
        chosen = next(e for e in ov_runs if e["chosen"])
        assert (ov_choice.file, ov_choice.inference_precision) == (chosen["file"], chosen["inference_precision"])
        assert ov_choice.checked == f"export gate: {chosen['label']}"
        assert all(e["failures"] for e in ov_runs[: ov_runs.index(chosen)])
    else:
        assert ov_choice.inference_precision == "f32" and "not installed" in ov_choice.checked
    assert OnnxRuntimeBackend(pkg, providers="cpu").onnx_path.name == "model_cpu.onnx"  # CPU-only: the CPU graph
    assert OnnxRuntimeBackend(pkg, providers="cpu", graph="main").onnx_path.name == "model.onnx"
    with pytest.raises(ConfigError, match="no CPU graph"):
        OnnxRuntimeBackend(load_package(ra["conversion"]["from"]), providers="cpu", graph="cpu")


def test_cpu_and_tensorrt_graphs_quantise_identically(fp32):
    _root, _, _, pkg = fp32
    model = onnx.load(str(pkg / "model.onnx"))
    rng = np.random.default_rng(1)
    batches = [rng.integers(0, 256, (1, 224, 224, 3), dtype=np.uint8) for _ in range(2)]
    doc = calibrate_scales(model, batches, method="minmax", exclude=DEFAULT_EXCLUDE)
    cpu, trt = cpu_graph(model, doc), tensorrt_graph(model, doc, fp16_policy("dinomaly-tiny"))
    assert quantized_nodes(cpu) == quantized_nodes(trt) == sorted(doc["nodes"])
    assert check_graph(cpu) == [] and check_graph(trt) == []
    so = ort.SessionOptions()
    so.log_severity_level = 3
    outs = [ort.InferenceSession(g.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(
        None, {"image": batches[0]}) for g in (model, cpu, trt)]
    scale = float(np.abs(outs[0][0]).max())
    for o in outs[1:]:  # same scales, so both are close to fp32 and to each other
        assert np.max(np.abs(o[0] - outs[0][0])) < 0.05 * scale
    assert np.max(np.abs(outs[1][0] - outs[2][0])) < 0.05 * scale


def test_scales_are_fp16_safe():
    s = fp16_scale(np.array([1e-9, 0.1, 3.0e-3], np.float32))
    assert s.dtype == np.float32 and np.all(s.astype(np.float16).astype(np.float32) == s)
    assert np.all(s >= np.array([np.finfo(np.float16).tiny, 0.1, 3.0e-3], np.float32))  # rounded up, never to 0


def test_range_collector_is_incremental():
    rng = np.random.default_rng(0)
    data = [rng.normal(0, 1, (4, 64)).astype(np.float32) for _ in range(5)]
    data[3][0, 0] = 9.0
    mm = RangeCollector("minmax")
    for d in data:
        mm.update({"t": d})
    assert mm.amax() == {"t": pytest.approx(9.0)}
    ent = RangeCollector("entropy")
    for d in data:
        ent.update({"t": d})
    assert 0 < ent.amax()["t"] <= 9.0 + 1e-6  # entropy clips the outlier
    with pytest.raises(ConfigError, match="non-finite"):
        mm.update({"t": np.array([np.nan], np.float32)})


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
    assert cfg.exclude == DEFAULT_EXCLUDE and cfg.method == "percentile"
    for raw, match in (({"split": "test"}, "split: expected 'train'"), ({"num_images": 0}, "num_images"),
                       ({"sampling": "all"}, "sampling"), ({"method": "kl"}, "method"),
                       ({"exclude": ["("]}, "not a valid regular expression"), ({"color": 1}, "unknown key"),
                       ({"activation_gemms": ["("]}, "activation_gemms.*not a valid regular expression"),
                       ({"model": "dinomaly-s"}, "package holds 'dinomaly-tiny'")):
        with pytest.raises(ConfigError, match=match):
            validate_config({"model": "dinomaly-tiny", **raw} if "model" not in raw else raw, "x.yaml", "dinomaly-tiny")
    holdout = json.loads((run / "val_split.json").read_text())["holdout"]
    strat = validate_config({"num_images": 4, "sampling": "stratified"}, "x.yaml", "dinomaly-tiny")
    paths = select_images(strat, data, exclude_paths=holdout)
    assert len(paths) == 4 and {p.parts[-4] for p in paths} == {"pcb", "fabric"}
    assert not {str(p) for p in paths} & set(holdout)
    p = load_package(pkg)
    batch = next(image_batches(paths[:2], p.preprocess, batch=2, progress=False))
    assert batch.dtype == np.uint8 and batch.shape == (2, 224, 224, 3)
    y = tmp_path / "c.yaml"
    y.write_text("model: dinomaly-tiny\nnum_images: 3\nsampling: first\nmethod: percentile\npercentile: 99.9\n")
    c = load_calibration_config("dinomaly-tiny", y)
    assert (c.num_images, c.sampling, c.method, c.percentile) == (3, "first", "percentile", 99.9)
    model = onnx.load(str(pkg / "model.onnx"))
    doc = calibrate_scales(model, image_batches(select_images(c, data), p.preprocess, progress=False),
                           method=c.method, percentile=c.percentile, exclude=c.exclude)
    assert doc["method"] == "percentile" and doc["percentile"] == 99.9 and len(doc["nodes"]) == 72
    acts = {e["activation"]["tensor"] for e in doc["nodes"].values()}
    amax = collect_ranges(model, sorted(acts), image_batches(select_images(c, data), p.preprocess, progress=False),
                          "image", "percentile", 99.9)
    assert all(doc["nodes"][n]["activation"]["amax"] == pytest.approx(amax[e["activation"]["tensor"]])
               for n, e in doc["nodes"].items())


def test_activation_gemms_quantise_both_inputs_and_follow_the_rules(fp32, tmp_path):
    from edge_ad.export.int8 import check_scales, select_activation_gemms

    _root, _, _, pkg = fp32
    model = onnx.load(str(pkg / "model.onnx"))
    qk = r"^/model/blocks\.\d+/attn/MatMul$"  # the encoder's q k^T
    names = select_activation_gemms(model, [qk], DEFAULT_EXCLUDE)
    assert names and all(n.endswith("/attn/MatMul") for n in names)
    with pytest.raises(ConfigError, match="match no MatMul between two activations"):
        select_activation_gemms(model, [r"/mlp/fc1/"], DEFAULT_EXCLUDE)  # weight GEMMs are not activation GEMMs
    rng = np.random.default_rng(2)
    batches = [rng.integers(0, 256, (1, 224, 224, 3), dtype=np.uint8) for _ in range(2)]
    doc = calibrate_scales(model, batches, method="minmax", exclude=DEFAULT_EXCLUDE, activation_gemms=[qk])
    assert doc["version"] == 3 and doc["activation_gemms"] == [qk] and len(doc["nodes"]) == 72 + len(names)
    by_name = {n.name: n for n in model.graph.node}
    for name in names:
        entry = doc["nodes"][name]
        assert "weight" not in entry and entry["activation_b"]["tensor"] == by_name[name].input[1]
        assert entry["activation_b"]["scale"] > 0
    check_scales(model, doc, "s.json")
    cpu, trt = cpu_graph(model, doc), tensorrt_graph(model, doc, fp16_policy("dinomaly-tiny"))
    assert set(names) <= set(quantized_nodes(cpu)) and quantized_nodes(cpu) == quantized_nodes(trt)
    assert check_graph(trt, allowed_quantized=doc["nodes"]) == [] and check_graph(cpu) == []
    so = ort.SessionOptions()
    so.log_severity_level = 3
    ref, q = (ort.InferenceSession(g.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(
        None, {"image": batches[0]})[0] for g in (model, cpu))
    assert np.max(np.abs(q - ref)) < 0.05 * float(np.abs(ref).max())
    bad = json.loads(json.dumps(doc))
    bad["nodes"][names[0]]["activation_b"]["tensor"] = "elsewhere"
    with pytest.raises(ConfigError, match=r"activation_b\.tensor: expected"):
        check_scales(model, bad, "s.json")
    bad = json.loads(json.dumps(doc))
    gemm = next(n for n in doc["nodes"] if "weight" in doc["nodes"][n])
    bad["nodes"][gemm]["activation_b"] = {"tensor": by_name[gemm].input[1], "scale": 0.1}
    with pytest.raises(ConfigError, match="activation_b is for MatMuls between two activations"):
        check_scales(model, bad, "s.json")


def test_peers_benchmark_compares_each_precision_and_tiled_frames(packages, tmp_path):
    """benchmarks/peers.py on the tiny packages: every edge-ad path and raw OpenVINO on the same files, the
    best-per-precision rows and the tiled-frame rows (speed figures themselves come from the dinomaly-s run)."""
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("openvino")
    a, _, _, ra, _ = packages
    out = tmp_path / "peers.json"
    proc = subprocess.run([sys.executable, str(Path(__file__).parents[1] / "benchmarks" / "peers.py"),
                           "--model", "dinomaly-tiny", "--package", ra["conversion"]["from"], "--int8", str(a),
                           "--runs", "1", "--warmup", "0", "--tiles", "1,3", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    ran = {r["path"] for r in doc["rows"] if "ms" in r}
    assert {"edge-ad OpenVINO int8", "OpenVINO raw defaults (int8 model.onnx)",
            "OpenVINO raw defaults (int8 model_cpu.onnx)", "edge-ad ONNX Runtime int8"} <= ran
    assert {b["precision"] for b in doc["best"]} >= {"fp32", "int8"}
    assert all(b["ratio"] > 0 for b in doc["best"])
    assert {(t["tiles"], t["path"]) for t in doc["tiles"] if "ms" in t} >= {
        (3, "edge-ad OpenVINO throughput"), (3, "edge-ad OpenVINO latency"), (3, "edge-ad ONNX Runtime"),
        (3, f"OpenVINO raw defaults ({load_package(a).graph_for('openvino').file})")}
    assert "best CPU path per precision" in proc.stdout and "frames of N tiles (int8 package)" in proc.stdout


def test_packages_carry_a_drift_reference_measured_on_their_own_graph(fp32, packages):
    """Export stores the training images' statistics and the held-out scores (fp32); the int8 conversion
    re-measures the scores on its own graph, since int8 shifts them."""
    from edge_ad.runtime.drift import IMAGE_STATS, DriftReference

    _, _, _, pkg32 = fp32
    d32 = load_package(pkg32).manifest["drift"]
    ref = DriftReference.from_manifest(d32, "fp32")
    assert set(ref.image) == set(IMAGE_STATS) and ref.image["brightness"].size == 12  # every good training image
    assert ref.score is not None and ref.score.size == 4 and "4 held-out good images scored" in d32["source"]
    d8 = load_package(packages[0]).manifest["drift"]
    assert d8["image"] == d32["image"] and "re-measured on the int8 graph" in d8["source"]
    assert len(d8["score"]) == 4 and d8["score"] != d32["score"]
