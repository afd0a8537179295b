"""The one-object API: edge_ad.fit / evaluate / export return typed results; Result.save / Result.plot."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import edge_ad
from edge_ad.api import EvalReport, ExportResult, Run

pytestmark = pytest.mark.slow  # trains/exports models or starts real peers: not in `make test-fast`

def test_fit_evaluate_export_detect_save(tiny_fp32, tmp_path: Path) -> None:
    data, _run, _pkg = tiny_fp32
    run = edge_ad.fit("dinomaly-tiny", data, tmp_path / "run", iters=2, batch=4, pretrained=False, workers=0,
                      val_fraction=0.34, progress=False)
    assert isinstance(run, Run) and run.model == "dinomaly-tiny" and sorted(run.categories) == ["fabric", "pcb"]
    assert run.encoder_weights == "random-init" and run.thresholds is not None
    report = run.evaluate(out_dir=tmp_path / "eval", progress=False, overlays_per_category=0)
    assert isinstance(report, EvalReport) and set(report.categories) == {"fabric", "pcb"}
    assert 0.0 <= report.mean["image_auroc"] <= 1.0 and "I-AUROC" in report.table()
    pkg = run.export(out=tmp_path / "pkg")
    assert isinstance(pkg, ExportResult) and pkg.precision == "fp32" and (pkg.package / "manifest.json").is_file()
    assert pkg.parity is not None and pkg.parity["score_spearman"] > 0.99
    det = pkg.detector(backend="onnxruntime")
    img = cv2.imread(str(next((Path(data) / "pcb" / "test").rglob("*.png"))))
    res = det.predict(img)
    overlay = res.plot(img)
    assert overlay.shape == img.shape and overlay.dtype == np.uint8
    files = res.save(tmp_path / "out" / "part1", img)
    assert [f.name for f in files] == ["part1.json", "part1_overlay.png"]
    saved = json.loads(files[0].read_text())
    assert saved["status"] == res.status and "RANDOM-INIT" in saved["note"]
    assert cv2.imread(str(files[1])).shape == img.shape
