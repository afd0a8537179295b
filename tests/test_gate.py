"""Accuracy gate: budgets are validated, failures name category and metric, a refused conversion writes no package."""

import json

import pytest

from edge_ad.errors import ConfigError, GateError
from edge_ad.export.gate import GateBudget, _failures, format_gate_report
from edge_ad.export.precision import convert_package

pytestmark = pytest.mark.slow  # trains/exports models or starts real peers: not in `make test-fast`

@pytest.fixture(scope="module")
def fp32(tiny_fp32, tmp_path_factory):
    data, _run, pkg = tiny_fp32
    root = tmp_path_factory.mktemp("gate")  # this module's conversions
    return root, data, pkg


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"min_agreement": 1.01}, "min_agreement"),
        ({"max_drop": -0.1}, "max_drop"),
        ({"max_drop": float("nan")}, "max_drop"),
        ({"min_agreement": True}, "min_agreement"),
    ],
)
def test_impossible_budget_is_a_config_error(kw, match):
    with pytest.raises(ConfigError, match=match):
        GateBudget(**kw)


def test_failures_name_category_and_metric():
    rows = {"pcb": {"n": 10, "flips": 0, "score_spearman": 1.0, "agreement": 1.0,
                    "image_auroc": {"fp32": 0.95, "converted": 0.90, "drop": 0.05},
                    "pixel_auroc": {"fp32": 0.9, "converted": 0.9, "drop": 0.0},
                    "aupro": {"fp32": 0.8, "converted": 0.7, "drop": 0.1}},
            "fabric": {"n": 10, "flips": 3, "score_spearman": 0.9, "agreement": 0.7,
                       "image_auroc": {"fp32": 0.9, "converted": 0.9, "drop": 0.0}}}
    overall = {"n": 20, "flips": 3, "agreement": 0.85, "score_spearman": 0.95}
    f = _failures(rows, overall, GateBudget(max_drop=0.005, min_agreement=0.99, max_pixel_drop=0.05))
    assert {(x["category"], x["metric"]) for x in f} == {("pcb", "image_auroc"), ("pcb", "aupro"), ("all", "agreement")}
    assert "most in 'fabric'" in next(x["message"] for x in f if x["metric"] == "agreement")
    report = {"passed": False, "failures": f, "budget": {"max_drop": 0.005, "min_agreement": 0.99},
              "backend": "onnxruntime-cpu", "precision": "int8", "images": {"good": "4 held-out", "test": 16},
              "categories": rows, "overall": overall}
    text = format_gate_report(report)
    assert "pcb FAIL" in text and "fabric" in text and "pcb: image_auroc dropped by 0.0500" in text
    assert _failures(rows, overall, GateBudget(max_drop=0.06, min_agreement=0.8, max_pixel_drop=None)) == []


def test_fp16_passes_default_image_budget(fp32):
    root, _, pkg = fp32
    out, rep = convert_package(pkg, "fp16", root / "fp16", min_agreement=0.9, progress=False)
    g = rep["gate"]
    assert g["passed"] and out.is_dir()
    assert set(g["categories"]) == {"pcb", "fabric"}
    for row in g["categories"].values():
        assert abs(row["image_auroc"]["drop"]) <= 0.005
        assert row["aupro"]["fp32"] is None or row["aupro"]["drop"] is not None
    assert g["overall"]["score_spearman"] > 0.99


def test_degraded_int8_is_refused_and_nothing_is_written(fp32):
    root, _, pkg = fp32
    scales = root / "s.json"
    # calibrate normally (permissive budget), then corrupt the stored activation scales 1000x: a real, badly
    # degraded Q/DQ graph built through the scales-reuse path
    convert_package(pkg, "int8", root / "ok8", method="minmax", scales_out=scales, min_agreement=0.0, max_drop=1.0,
                    progress=False)
    doc = json.loads(scales.read_text())
    for entry in doc["nodes"].values():
        entry["activation"]["scale"] *= 1e-3
    bad = root / "bad.json"
    bad.write_text(json.dumps(doc))
    out = root / "int8"
    with pytest.raises(GateError) as e:
        convert_package(pkg, "int8", out, scales=bad, max_drop=0.0, min_agreement=1.0, progress=False)
    msg = str(e.value)
    assert "no package written" in msg and "FAILED" in msg
    assert all(k in msg for k in ("--max-drop", "--exclude", "--method", "calibration images"))  # the knobs
    assert not out.exists()
    assert not [p for p in root.iterdir() if p.name.startswith(".int8") or p.name.startswith(".edge-ad-gate")]
    report = json.loads((root / "int8.gate-report.json").read_text())
    assert not report["passed"] and report["failures"]
    for f in report["failures"]:
        assert f["category"] in ("pcb", "fabric", "all") and f["metric"] in msg and f["category"] in msg
    assert report["overall"]["score_spearman"] < 0.99
