"""Every registered model's graphs pass the TensorRT parser model in fp32, fp16 and int8, and the reduced-precision
graphs run >= 90 % of their GEMM FLOPs in FP16/INT8 (the tiny variants of each family, and dinomaly-s itself)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from edge_ad.export.calibration import load_calibration_config
from edge_ad.export.fp16 import convert_to_fp16
from edge_ad.export.gemm_share import gemm_precision
from edge_ad.export.graph_check import check_graph, format_problems
from edge_ad.export.int8 import (
    calibrate_scales,
    cpu_graph,
    quantized_nodes,
    tensorrt_graph,
)
from edge_ad.export.onnx_export import export_onnx
from edge_ad.export.precision import fp16_policy
from edge_ad.export.profile import load_profile
from edge_ad.models.registry import create_model, list_models

pytestmark = pytest.mark.slow  # trains/exports models or starts real peers: not in `make test-fast`

TINY = [m for m in list_models() if m.endswith("-tiny")]


def _export(name: str) -> onnx.ModelProto:
    profile = load_profile(name)
    kw = dict(profile.get("model_kwargs") or {})
    kw.update({k: int(profile[k]) for k in ("resize", "crop") if profile.get(k)})
    return export_onnx(create_model(name, **kw).eval(), opset=int(profile["opset"]))


def _images(model: onnx.ModelProto, n: int = 2) -> list[np.ndarray]:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (1, dims[1].dim_value, dims[2].dim_value, 3), dtype=np.uint8) for _ in range(n)]


def _assert_clean(graph: onnx.ModelProto, what: str) -> None:
    problems = check_graph(graph)
    assert problems == [], f"{what}:\n  {format_problems(problems)}"


def _all_precisions(name: str) -> dict[str, onnx.ModelProto]:
    fp32 = _export(name)
    fp16, _ = convert_to_fp16(fp32, fp16_policy(name))
    cfg = load_calibration_config(name)
    doc = calibrate_scales(fp32, _images(fp32), method="minmax", exclude=cfg.exclude)
    return {"fp32": fp32, "fp16": fp16, "int8": tensorrt_graph(fp32, doc, fp16_policy(name)),
            "int8-cpu": cpu_graph(fp32, doc)}


def test_every_family_has_a_tiny_variant():
    assert {n.rsplit("-tiny", 1)[0].split("-")[0] for n in TINY} == {"dinomaly", "mambaad", "ulsad", "dualad"}


@pytest.mark.parametrize("name", TINY)
def test_tiny_graphs_pass_the_parser_model_in_every_precision(name):
    graphs = _all_precisions(name)
    for prec, graph in graphs.items():
        _assert_clean(graph, f"{name} {prec}")
    assert quantized_nodes(graphs["int8"]) == quantized_nodes(graphs["int8-cpu"]) != []
    islands = fp16_policy(name).keep_name_patterns  # FP32 by the model's spec (MambaAD: the selective scan)
    for prec in ("fp16", "int8"):
        share = gemm_precision(graphs[prec], islands)
        assert share["reduced_share"]["flops"] >= 0.9, (name, prec, share)
        if "islands" in share:  # what the islands hold runs in FP32, as the spec demands
            assert share["islands"]["fp32_flops"] == share["islands"]["flops"] > 0, share
    assert gemm_precision(graphs["int8"])["nodes"]["int8"] == len(quantized_nodes(graphs["int8"]))


@pytest.mark.slow
def test_dinomaly_s_reduced_precision_uses_the_hardware():
    graphs = _all_precisions("dinomaly-s")
    for prec in ("fp16", "int8"):
        _assert_clean(graphs[prec], f"dinomaly-s {prec}")
        share = gemm_precision(graphs[prec])
        assert share["reduced_share"]["flops"] >= 0.9, (prec, share)
    assert gemm_precision(graphs["int8"])["nodes"]["int8"] == 72  # qkv/proj/fc1/fc2 of 10 encoder + 8 decoder blocks


def test_tensor_volumes_are_checked_at_the_engine_batch():
    """A real graph: shape inference at a fixed batch makes its activations concrete, and a batch that pushes one
    past 2^31-1 elements is refused where a modest batch passes."""
    name = next(n for n in TINY if n.startswith("dualad"))
    graph = _export(name)
    assert check_graph(graph, batch=16) == []
    hits = [p for p in check_graph(graph, batch=4096) if p.rule == "volume"]
    assert hits and all("batch 4096" in p.message for p in hits)
