"""`edge-ad demo`: the showcase puts NG parts with regions first, and a re-run replaces its own output."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import pytest

from edge_ad.cli.demo import MARKER, pick_showcase
from edge_ad.cli.main import main
from edge_ad.runtime.result import Region, Result

pytestmark = pytest.mark.slow  # trains/exports models or starts real peers: not in `make test-fast`

def _r(status: str, score: float, regions: int = 0) -> Result:
    rs = [Region(0, 0, 4, 4, 16, 1.0) for _ in range(regions)]
    if status == "ERROR":
        return Result.failed("x")
    return Result(score=score, normalized_score=score, is_anomalous=status == "NG", regions=rs)


def test_showcase_order() -> None:
    items = [(0, _r("OK", 0.1)), (1, _r("NG", 0.7, 2)), (0, _r("NG", 0.9, 1)), (1, _r("NG", 0.6)),
             (1, _r("OK", 0.4)), (0, _r("OK", 0.3)), (1, _r("NG", 0.95, 1)), (0, _r("ERROR", math.nan))]
    picks = pick_showcase(items, k=8)
    assert picks[:3] == [6, 1, 2]  # NG with regions: real defects first, highest score first
    assert picks[3] == 3 and picks[4:6] == [0, 5]  # then the diffuse NG, then good parts passed
    assert sorted(picks) == list(range(8))
    assert pick_showcase(items, k=3) == [6, 3, 0] and pick_showcase([], k=4) == []  # one of each kind


def test_demo_runs_and_reruns_into_its_own_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--iters", "3", "--per-category", "4", "--categories", "pcb,fabric",
            "--batch", "4"]
    assert main(args) == 0
    assert (out / MARKER).is_file() and (out / "package" / "manifest.json").is_file()
    grid = cv2.imread(str(out / "overlays.png"))
    assert grid is not None and grid.shape[1] == 4 * 256
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert lines and all("reason" in x and "note" in x for x in lines)  # random-init: every result says so
    (out / "stale.txt").write_text("from the first run")
    assert main(args) == 0, capsys.readouterr().err  # no --force needed for the demo's own folder
    assert not (out / "stale.txt").exists()
    other = tmp_path / "mine"
    other.mkdir()
    (other / "thesis.tex").write_text("keep")
    assert main(["demo", "--out", str(other)]) == 2
    assert "not a demo folder" in capsys.readouterr().err and (other / "thesis.tex").exists()
