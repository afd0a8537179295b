"""Dataset layouts beyond MVTec AD, each on a generated miniature copy: MVTec AD 2, VisA (split CSV), Real-IAD
(JSON) and a mask-less folder dataset (image metrics only)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_ad.data.mvtec import discover_categories, layout_of, load_samples
from edge_ad.errors import DataError

IMG = np.full((32, 32, 3), 100, np.uint8)
MASK = np.zeros((32, 32), np.uint8)
MASK[8:16, 8:16] = 255


def _put(path: Path, img: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)
    return str(path)


def test_mvtec_ad2(tmp_path: Path) -> None:
    for i in range(3):
        _put(tmp_path / "can" / "train" / "good" / f"{i}.png", IMG)
    _put(tmp_path / "can" / "validation" / "good" / "0.png", IMG)
    _put(tmp_path / "can" / "test_public" / "good" / "0.png", IMG)
    _put(tmp_path / "can" / "test_public" / "bad" / "7.png", IMG)
    _put(tmp_path / "can" / "test_public" / "ground_truth" / "bad" / "7_mask.png", MASK)
    assert layout_of(tmp_path) == "mvtec_ad2" and discover_categories(tmp_path) == ["can"]
    assert len(load_samples(tmp_path, split="train")) == 3 and len(load_samples(tmp_path, split="validation")) == 1
    test = load_samples(tmp_path, split="test")
    assert [(s.label, s.mask_path is not None) for s in test] == [(0, False), (1, True)]
    (tmp_path / "can" / "test_public" / "ground_truth" / "bad" / "7_mask.png").unlink()
    with pytest.raises(DataError, match="ground-truth mask missing"):
        load_samples(tmp_path, split="test")


def test_visa(tmp_path: Path) -> None:
    rows = ["object,split,label,image,mask"]
    for i in range(2):
        rows.append(f"pcb1,train,normal,pcb1/Data/Images/Normal/{i}.JPG,")
        _put(tmp_path / "pcb1" / "Data" / "Images" / "Normal" / f"{i}.JPG", IMG)
    rows.append("pcb1,test,normal,pcb1/Data/Images/Normal/5.JPG,")
    _put(tmp_path / "pcb1" / "Data" / "Images" / "Normal" / "5.JPG", IMG)
    rows.append("pcb1,test,anomaly,pcb1/Data/Images/Anomaly/9.JPG,pcb1/Data/Masks/Anomaly/9.png")
    _put(tmp_path / "pcb1" / "Data" / "Images" / "Anomaly" / "9.JPG", IMG)
    _put(tmp_path / "pcb1" / "Data" / "Masks" / "Anomaly" / "9.png", MASK)
    (tmp_path / "split_csv").mkdir()
    (tmp_path / "split_csv" / "1cls.csv").write_text("\n".join(rows) + "\n")
    assert layout_of(tmp_path) == "visa" and discover_categories(tmp_path) == ["pcb1"]
    assert len(load_samples(tmp_path, split="train")) == 2
    assert sorted((s.label, s.mask_path is not None) for s in load_samples(tmp_path, split="test")) == [
        (0, False), (1, True)]
    (tmp_path / "split_csv" / "1cls.csv").write_text("\n".join([*rows, "pcb1,test,normal,../../etc/passwd,"]))
    with pytest.raises(DataError, match="outside the dataset"):
        load_samples(tmp_path, split="test")


def test_realiad(tmp_path: Path) -> None:
    doc = {"meta": {"prefix": "realiad_256"}, "train": [], "test": []}
    for i in range(2):
        rel = f"audiojack/OK/S{i}/a_{i}_OK_C1.jpg"
        _put(tmp_path / "realiad_256" / rel, IMG)
        doc["train"].append({"category": "audiojack", "anomaly_class": "OK", "image_path": rel, "mask_path": None})
    rel, mrel = "audiojack/NG/QS/S9/a_9_NG_C1.jpg", "audiojack/NG/QS/S9/a_9_NG_C1.png"
    _put(tmp_path / "realiad_256" / rel, IMG)
    _put(tmp_path / "realiad_256" / mrel, MASK)
    doc["test"].append({"category": "audiojack", "anomaly_class": "QS", "image_path": rel, "mask_path": mrel})
    (tmp_path / "realiad_jsons").mkdir()
    (tmp_path / "realiad_jsons" / "audiojack.json").write_text(json.dumps(doc))
    assert layout_of(tmp_path) == "realiad" and discover_categories(tmp_path) == ["audiojack"]
    assert len(load_samples(tmp_path, split="train")) == 2
    (t,) = load_samples(tmp_path, split="test")
    assert (t.label, t.defect_type, t.mask_path is not None) == (1, "QS", True)


def test_folder_dataset_trains_and_evaluates_on_image_metrics(tmp_path: Path) -> None:
    from edge_ad.evaluate.metrics import CategoryPredictions, evaluate_categories

    for i in range(8):
        _put(tmp_path / "widget" / "good" / f"{i:02d}.png", IMG)
    _put(tmp_path / "widget" / "bad" / "x.png", IMG)
    assert layout_of(tmp_path) == "folder" and discover_categories(tmp_path) == ["widget"]
    assert len(load_samples(tmp_path, split="train")) == 6
    test = load_samples(tmp_path, split="test")
    assert [(s.label, s.mask_path) for s in test] == [(0, None), (0, None), (1, None)]
    rep = evaluate_categories({"widget": CategoryPredictions(
        labels=np.array([0, 0, 1]), scores=np.array([0.1, 0.2, 0.9], np.float32), masks=None,
        maps=np.zeros((3, 4, 4), np.float32), defect_types=["good", "good", "bad"])})
    assert rep["categories"]["widget"]["image_auroc"] == 1.0
    assert np.isnan(rep["categories"]["widget"]["pixel_ap"]) and any("no ground-truth masks" in n for n in rep["notes"])


@pytest.mark.slow
def test_a_folder_dataset_through_train_and_eval(tmp_path: Path) -> None:
    import shutil

    from edge_ad.cli.main import main
    from edge_ad.data.synth import generate

    generate(tmp_path / "src", categories=["pcb"], per_category=8, size=64, seed=1)
    (tmp_path / "f" / "widget" / "good").mkdir(parents=True)
    (tmp_path / "f" / "widget" / "bad").mkdir()
    for i, p in enumerate(sorted((tmp_path / "src" / "pcb").glob("t*/good/*.png"))):
        shutil.copy(p, tmp_path / "f" / "widget" / "good" / f"{i:03d}.png")
    for i, p in enumerate(sorted(p for p in (tmp_path / "src" / "pcb" / "test").glob("*/*.png")
                                 if p.parent.name != "good")):
        shutil.copy(p, tmp_path / "f" / "widget" / "bad" / f"{i:03d}.png")
    run = tmp_path / "run"
    assert main(["train", "--model", "dinomaly-tiny", "--data", str(tmp_path / "f"), "--out", str(run), "--iters",
                 "2", "--batch", "4", "--no-pretrained", "--workers", "0", "--no-progress"]) == 0
    assert main(["eval", "--run", str(run), "--no-progress", "--overlays", "0", "--json",
                 str(tmp_path / "m.json")]) == 0
    m = json.loads((tmp_path / "m.json").read_text())["categories"]["widget"]
    assert 0.0 <= m["image_auroc"] <= 1.0 and m["pixel_ap"] is None  # image metrics only (NaN is null in JSON)
