"""Lab to line on a tiny synthetic set: synth -> train -> eval -> export -> torch-free Detector, all real code."""

import json

import numpy as np
import pytest
import torch

from edge_ad.cli.main import main
from edge_ad.data.synth import generate
from edge_ad.errors import ConfigError, PackageError
from edge_ad.evaluate import rundir
from edge_ad.export import exporter
from edge_ad.export.exporter import ExportError, export_package
from edge_ad.runtime import Detector

pytestmark = pytest.mark.slow  # trains/exports models or starts real peers: not in `make test-fast`

SEVEN = {"image_auroc", "image_ap", "image_f1max", "pixel_auroc", "pixel_ap", "pixel_f1max", "aupro"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    data = root / "data"
    cats = None
    generate(data, categories=cats, per_category=6, size=128, seed=3)
    run = root / "run"
    rc = main(["train", "--model", "dinomaly-tiny", "--data", str(data), "--out", str(run), "--iters", "3",
               "--batch", "4", "--no-pretrained", "--workers", "0", "--no-progress", "--val-fraction", "0.2"])
    assert rc == 0
    return root, data, run


def test_run_directory_contents(trained):
    _, _, run = trained
    for name in (
        rundir.CONFIG,
        rundir.WEIGHTS,
        rundir.CHECKPOINT,
        rundir.THRESHOLDS,
        rundir.VAL_SPLIT,
        rundir.TRAIN_LOG,
    ):
        assert (run / name).is_file(), name
    thr = json.loads((run / rundir.THRESHOLDS).read_text())
    assert thr["image"]["method"] and thr["image"]["value"] > 0
    info = json.loads((run / rundir.RUN_INFO).read_text())
    assert info["encoder_weights"] == "random-init"
    assert len(info["categories"]) >= 2  # multi-class: one model for all categories


def test_resume_continues_and_refuses_overwrite(trained):
    _, data, run = trained
    with pytest.raises(ConfigError, match="already holds a run"):
        _train_again(data, run)
    rc = main(
        [
            "train",
            "--model",
            "dinomaly-tiny",
            "--data",
            str(data),
            "--out",
            str(run),
            "--iters",
            "5",
            "--batch",
            "4",
            "--no-pretrained",
            "--workers",
            "0",
            "--no-progress",
            "--val-fraction",
            "0.2",
            "--resume",
        ]
    )
    assert rc == 0
    steps = [json.loads(line)["step"] for line in (run / rundir.TRAIN_LOG).read_text().splitlines()]
    assert steps[-1] == 5


def test_resume_never_unpickles(trained, tmp_path, capsys):
    """A run directory with a crafted pickle checkpoint (or a forged resume state) is refused, never executed."""
    import pickle
    import shutil

    _, data, run = trained
    evil = tmp_path / "evil_run"
    shutil.copytree(run, evil)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (evil / rundir.CHECKPOINT).unlink()
    (evil / rundir.LEGACY_CHECKPOINT).write_bytes(pickle.dumps(Payload()))
    args = ["train", "--model", "dinomaly-tiny", "--data", str(data), "--out", str(evil), "--iters", "4", "--batch",
            "4", "--no-pretrained", "--workers", "0", "--no-progress", "--val-fraction", "0.2", "--resume"]
    assert main(args) == 2 and "pickle from an older edge-ad" in capsys.readouterr().err
    (evil / rundir.CHECKPOINT).write_bytes(pickle.dumps(Payload()))  # a pickle under the new name
    assert main(args) == 2 and "not a readable safetensors" in capsys.readouterr().err
    assert not marker.exists()


def _train_again(data, run):
    from edge_ad.train.options import resolve_config
    from edge_ad.train.trainer import train

    train(resolve_config({}, None, {"model": "dinomaly-tiny", "data": str(data), "out": str(run), "iters": 3,
                                     "pretrained": False, "workers": 0}), progress=False)


def test_eval_json_has_seven_metrics_per_category_and_mean(trained, tmp_path):
    _, _, run = trained
    out = tmp_path / "m.json"
    assert main(["eval", "--run", str(run), "--json", str(out), "--no-progress", "--overlays", "1"]) == 0
    rep = json.loads(out.read_text())
    assert set(rep["mean"]) >= SEVEN
    for m in rep["categories"].values():
        assert set(m) >= SEVEN
        assert all(0.0 <= m[k] <= 1.0 for k in SEVEN if m[k] == m[k])
    assert any("RANDOM-INIT" in n for n in rep["notes"])
    assert (run / "eval" / "metrics.md").is_file()


def test_export_parity_and_runtime_agree_with_pytorch(trained, tmp_path):
    _, data, run = trained
    pkg, summary = export_package(run=str(run), out=tmp_path / "pkg")
    assert summary["parity"]["max_abs_map_diff"] <= 1e-4
    assert summary["parity"]["score_spearman"] >= 0.999
    man = json.loads((pkg / "manifest.json").read_text())
    assert man["model"]["untrained"] is False and man["precision"] == "fp32"
    assert man["input"]["dtype"] == "uint8" and man["input"]["layout"] == "NHWC"
    assert man["onnx"]["opset"] >= 17
    # The torch-free runtime gives the PyTorch score on a real image.
    model, _, _ = rundir.load_run(run)
    img_path = next((data).glob("*/test/*/*.png"))
    import cv2

    img = cv2.imread(str(img_path))
    crop = model.preprocess.apply(img)
    with torch.no_grad():
        _, ref = exporter.PackagedModel(model, model.preprocess)(torch.from_numpy(crop[None]))
    res = Detector.load(pkg, backend="onnxruntime").predict(img)
    assert abs(res.score - float(ref[0])) <= 1e-4
    assert res.anomaly_map.shape == img.shape[:2]


def test_untrained_export_is_labelled(tmp_path):
    pkg, summary = export_package(model_name="dinomaly-tiny", out=tmp_path / "u")
    man = json.loads((pkg / "manifest.json").read_text())
    assert man["model"]["untrained"] is True and summary["untrained"] is True
    assert man["model"]["encoder_weights"] == "random-init"


def test_parity_failure_writes_nothing(trained, tmp_path, monkeypatch):
    _, _, run = trained
    real = exporter.check_parity

    def broken(*a, **k):
        p = real(*a, **k)
        p.max_abs_map_diff = 0.5
        return p

    monkeypatch.setattr(exporter, "check_parity", broken)
    with pytest.raises(ExportError, match="no package written"):
        export_package(run=str(run), out=tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "bad2")]) == 2


def test_flipped_byte_in_real_package_is_refused(trained, tmp_path):
    _, _, run = trained
    pkg, _ = export_package(run=str(run), out=tmp_path / "p")
    onnx_path = pkg / "model.onnx"
    b = bytearray(onnx_path.read_bytes())
    b[len(b) // 2] ^= 0xFF
    onnx_path.write_bytes(bytes(b))
    with pytest.raises(PackageError, match="model.onnx"):
        Detector.load(pkg)


def test_export_cli_fp16_goes_through_the_gate(trained, tmp_path):
    _, _, run = trained
    out = tmp_path / "fp16"
    # a 3-iteration model has scores packed near the threshold; the agreement budget is relaxed accordingly
    rc = main(["export", "--run", str(run), "--precision", "fp16", "--out", str(out), "--min-agreement", "0.9",
               "--json", str(tmp_path / "s.json")])
    assert rc == 0
    man = json.loads((out / "manifest.json").read_text())
    assert man["precision"] == "fp16" and "gate" in man["export_metrics"]
    assert Detector.load(out, backend="onnxruntime").predict(np.zeros((64, 64, 3), np.uint8)).error is None
    # an impossible budget is refused before anything is written
    assert main(["export", "--run", str(run), "--precision", "fp16", "--out", str(tmp_path / "x"),
                 "--min-agreement", "1.5"]) == 2
    assert not (tmp_path / "x").exists()


def test_labelled_validation_split_adds_f1_optimal_threshold(tmp_path):
    import shutil

    data = tmp_path / "data"
    generate(data, categories=["fabric", "cap"], per_category=6, size=96, seed=5)
    for cat in ("fabric", "cap"):  # a labelled validation split, as MVTec LOCO has: reuse some test images
        for d in (data / cat / "test").iterdir():
            (data / cat / "validation" / d.name).mkdir(parents=True)
            for p in sorted(d.glob("*.png"))[:2]:
                shutil.copy(p, data / cat / "validation" / d.name / p.name)
    run = tmp_path / "run"
    assert main(["train", "--model", "dinomaly-tiny", "--data", str(data), "--out", str(run), "--iters", "1",
                 "--batch", "2", "--no-pretrained", "--workers", "0", "--no-progress"]) == 0
    thr = json.loads((run / rundir.THRESHOLDS).read_text())
    assert thr["image"]["f1_optimal"] is not None and thr["source"]["validation_images"] > 0
