"""metrics.json/metrics.md, text tables and overlay grids."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_ad.errors import ConfigError, DataError
from edge_ad.evaluate.metrics import CategoryPredictions, evaluate_categories
from edge_ad.evaluate.report import format_table, save_overlay_grid, write_report


def _report() -> dict:
    rng = np.random.default_rng(0)
    preds = {}
    for cat, types in {"bottle": ["crack"] * 3, "box": ["missing_part"] * 2 + ["scratch"] * 2, "none": []}.items():
        dtypes = ["good"] * 4 + types
        labels = np.array([int(t != "good") for t in dtypes])
        masks = np.zeros((len(dtypes), 16, 16), np.uint8)
        masks[labels == 1, 4:9, 4:9] = 1
        maps = (rng.random(masks.shape) * 0.5 + masks * 0.4).astype(np.float32)
        preds[cat] = CategoryPredictions(labels, maps.reshape(len(dtypes), -1).max(1), masks, maps, dtypes)
    return evaluate_categories(preds)


def test_write_report_json_and_markdown(tmp_path: Path) -> None:
    rep = _report()
    rep["model"] = "dinomaly-tiny"
    js, md = write_report(rep, tmp_path / "eval", title="dinomaly on synth")
    assert js == tmp_path / "eval" / "metrics.json" and md.name == "metrics.md"
    data = json.loads(js.read_text())  # strict JSON: undefined metrics are null, not NaN
    assert data["categories"]["none"]["image_auroc"] is None
    assert data["mean"]["image_auroc"] == pytest.approx(rep["mean"]["image_auroc"])
    text = md.read_text()
    assert text.startswith("# dinomaly on synth")
    assert "- model: dinomaly-tiny" in text
    lines = text.splitlines()
    bottle = next(line for line in lines if line.startswith("| bottle"))
    assert f"{100 * rep['categories']['bottle']['pixel_auroc']:.1f}" in bottle
    assert bottle.count("|") == 9  # category + seven metrics
    mean = next(line for line in lines if line.startswith("| **mean**"))
    assert f"{100 * rep['mean']['aupro']:.1f}" in mean
    assert "n/a" in next(line for line in lines if line.startswith("| none"))
    assert "## Defect kinds" in text and any(line.startswith("| logical") for line in lines)
    assert "| box      | missing_part" in text
    assert "## Notes" in text and any("none:" in line for line in lines)
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == ["metrics.json", "metrics.md"]  # no temp left


def test_write_report_rejects_non_report(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="categories"):
        write_report({"mean": {}}, tmp_path, "x")


def test_format_table_aligned() -> None:
    out = format_table([["bottle", "99.1"], ["screw_long", "n/a"]], ["category", "I-AUROC"])
    lines = out.splitlines()
    assert len(lines) == 4 and len({len(line) for line in lines}) == 1
    assert lines[0] == "| category   | I-AUROC |"
    assert lines[1] == "|------------|--------:|"  # numeric column right-aligned
    assert lines[2] == "| bottle     |    99.1 |"
    with pytest.raises(ConfigError, match="row 1: expected 2 cells"):
        format_table([["a", "1"], ["b"]], ["x", "y"])


def test_overlay_grid_shape_and_colour_scale(tmp_path: Path) -> None:
    img = np.full((32, 48, 3), 200, np.uint8)
    mask = np.zeros((64, 96), np.uint8)
    mask[10:30, 10:40] = 1
    rows = [
        (img, np.ones((64, 96), np.float32), mask, "crack 0.91"),  # map/mask at another size: resized
        (img, np.zeros((32, 48), np.float32), None, "good 0.10"),
    ]
    out = save_overlay_grid(tmp_path / "ov" / "cat.png", rows, vmin=0.0, vmax=1.0, alpha=1.0)
    grid = cv2.imread(str(out))
    assert grid.shape == (24 + 2 * (24 + 32), 3 * 48, 3)
    jet = cv2.applyColorMap(np.array([[0, 255]], np.uint8), cv2.COLORMAP_JET)[0]
    overlay_1 = grid[24 + 24: 24 + 24 + 32, 48:96]
    overlay_2 = grid[24 + 56 + 24:, 48:96]
    assert np.abs(overlay_1.astype(int) - jet[1]).max() <= 1  # map == vmax -> top of the colour map
    assert np.abs(overlay_2.astype(int) - jet[0]).max() <= 1  # map == vmin -> bottom
    truth = grid[48:80, 96:]
    assert truth[10, 10, 2] > truth[10, 10, 0] and truth[25, 40, 2] == truth[25, 40, 0]  # defect tinted red
    assert list(tmp_path.joinpath("ov").iterdir()) == [out]


def test_overlay_grid_bad_rows(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="at least one"):
        save_overlay_grid(tmp_path / "x.png", [])
    with pytest.raises(DataError, match="uint8 HxWx3"):
        save_overlay_grid(tmp_path / "x.png", [(np.zeros((8, 8), np.uint8), np.zeros((8, 8)), None, "c")])
    with pytest.raises(DataError, match="anomaly map"):
        save_overlay_grid(tmp_path / "x.png", [(np.zeros((8, 8, 3), np.uint8), np.zeros((1, 8, 8)), None, "c")])


def test_package_exports_resolve() -> None:
    import edge_ad.evaluate as ev

    assert all(callable(getattr(ev, n)) or n == "METRIC_KEYS" for n in ev.__all__)
    with pytest.raises(AttributeError):
        _ = ev.no_such_name
