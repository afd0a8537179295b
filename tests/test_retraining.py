"""The loop from the line back to the lab: operator feedback on stored parts (false reject, confirmed NG with a
drawn region) -> `edge-ad dataset from-station` (a reproducible MVTec revision) -> `edge-ad train --init-from` ->
`edge-ad compare NEW OLD` as the gate before a package becomes a shadow."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from plc_peers import BLOB_IMG, DARK_IMG, FAST_LINK, MemoryAdapter, QueueSource, wait_for

from edge_ad.cli.main import main
from edge_ad.errors import ConfigError
from edge_ad.plc.inspector import Inspector
from edge_ad.plc.link import PlcLink
from edge_ad.runtime import Detector
from edge_ad.traceability import Retention, TraceRecorder, TraceStore

pytestmark = pytest.mark.slow  # trains a model


@pytest.fixture
def station_db(detector: Detector, tmp_path: Path) -> Path:
    """A station's database: 20 parts (every 4th a bright blob: NG), every OK image kept."""
    db = tmp_path / "st.db"
    store = TraceStore(db, "st9", keep_ok_every=1, retention=Retention(None, None, None))
    mem, cam = MemoryAdapter(), QueueSource()
    insp = Inspector(detector, cam, PlcLink(mem, **FAST_LINK), trigger="camera", poll_s=0.002, budget_ms=2000.0,
                     recorder=TraceRecorder(store))
    with insp:
        for i in range(20):
            cam.push(BLOB_IMG if i % 4 == 0 else DARK_IMG)
        wait_for(lambda: insp.stats.inspections == 20, timeout=30, what="20 parts")
    wait_for(lambda: store._images.empty(), what="images written")
    time.sleep(0.3)
    store.close()
    return db


def test_feedback_to_a_dataset_revision(station_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with TraceStore(station_db, "st9") as s:
        ng = [r["id"] for r in s.query(decisions=["NG"])]
        ok = [r["id"] for r in s.query(decisions=["OK"])]
        assert len(ng) == 5 and len(ok) == 15
        s.add_feedback(ng[0], "false_reject", "olga")
        s.add_feedback(ng[1], "confirmed_ng", "olga", region=[140, 80, 40, 40])
        s.add_feedback(ng[2], "confirmed_ng", "olga")  # no region drawn: the model's regions make the mask
        with pytest.raises(ConfigError, match="was OK, not rejected"):
            s.add_feedback(ok[0], "false_reject", "olga")
        with pytest.raises(ConfigError, match="region: expected"):
            s.add_feedback(ng[3], "confirmed_ng", "olga", region=[1, 2, 0, 4])
        with pytest.raises(ConfigError, match="label"):
            s.add_feedback(ng[3], "maybe", "olga")
    out = tmp_path / "rev1"
    assert main(["dataset", "from-station", str(station_db), "--out", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    c = doc["counts"]
    assert (c["train_good"], c["test_good"], c["false_rejects"], c["confirmed_ng"]) == (13, 3, 1, 2)
    root = out / "station"
    assert len(list((root / "train" / "good").glob("*.jpg"))) == 13
    assert len(list((root / "test" / "good").glob("*.jpg"))) == 3
    drawn = cv2.imread(str(root / "ground_truth" / "station_ng" / f"st9_{ng[1]}_mask.png"), cv2.IMREAD_GRAYSCALE)
    assert drawn[100, 160] == 255 and drawn[0, 0] == 0 and int((drawn > 0).sum()) == 40 * 40
    model_mask = cv2.imread(str(root / "ground_truth" / "station_ng" / f"st9_{ng[2]}_mask.png"), cv2.IMREAD_GRAYSCALE)
    assert model_mask.any()  # the model's own region of the blob
    # the same database gives the same revision; --force replaces it atomically
    assert main(["dataset", "from-station", str(station_db), "--out", str(tmp_path / "rev2"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["revision"] == doc["revision"]
    assert main(["dataset", "from-station", str(station_db), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    from edge_ad.data.mvtec import load_samples

    test = load_samples(out, None, split="test")
    assert sorted(s.label for s in test) == [0, 0, 0, 1, 1] and all(
        s.mask_path is not None for s in test if s.label == 1)


def test_compare_is_the_gate_before_a_shadow(station_db: Path, plc_packages: dict[str, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    with TraceStore(station_db, "st9") as s:
        for rid in [r["id"] for r in s.query(decisions=["NG"])]:
            s.add_feedback(rid, "confirmed_ng", "olga")
    data = tmp_path / "rev"
    assert main(["dataset", "from-station", str(station_db), "--out", str(data)]) == 0
    a, b = plc_packages["a"], plc_packages["b"]  # b rejects every dark (good) part
    capsys.readouterr()
    assert main(["compare", str(b), str(a), "--data", str(data), "--json"]) == 3
    rep = json.loads(capsys.readouterr().out)
    assert rep["old"]["false_reject_rate"] == 0.0 and rep["new"]["false_reject_rate"] == 1.0
    assert rep["old"]["recall"] == 1.0 and rep["old"]["auroc"] == 1.0 and not rep["passed"]
    assert "false-reject rate 0.000 -> 1.000" in rep["failures"][0]
    assert main(["compare", str(a), str(b), "--data", str(data)]) == 0
    assert "PASSED" in capsys.readouterr().out  # no --json: the table is the data on stdout
    assert main(["compare", str(a), str(b), "--data", str(data), "--max-frr-increase", "2"]) == 2


def test_train_init_from_a_run_or_its_package(tiny_fp32: Any, tmp_path: Path) -> None:
    from edge_ad.evaluate import rundir
    from edge_ad.train.trainer import init_run

    data, run, pkg = tiny_fp32
    assert init_run(pkg, "dinomaly-tiny") == Path(run)  # a package leads to the run it was exported from
    with pytest.raises(ConfigError, match="trained 'dinomaly-tiny', this run trains 'dinomaly-s'"):
        init_run(run, "dinomaly-s")
    with pytest.raises(ConfigError, match="expected a run directory"):
        init_run(tmp_path, "dinomaly-tiny")
    out = tmp_path / "finetuned"
    assert main(["train", "--model", "dinomaly-tiny", "--data", str(data), "--out", str(out), "--iters", "1",
                 "--batch", "4", "--no-pretrained", "--workers", "0", "--no-progress", "--val-fraction", "0.34",
                 "--init-from", str(pkg), "--lr", "1e-12", "--final-lr", "0", "--warmup-iters", "0"]) == 0
    from safetensors.numpy import load_file

    before, after = load_file(str(Path(run) / rundir.WEIGHTS)), load_file(str(out / rundir.WEIGHTS))
    trained = [k for k in before if "decoder" in k or "bottleneck" in k]
    assert trained and all(np.allclose(before[k], after[k], atol=1e-6) for k in trained)  # started from the run
