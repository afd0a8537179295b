"""`edge-ad predict` and `edge-ad bench` through the real entry point."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from runtime_fixtures import DARK, blob_image

from edge_ad.cli.main import main


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    cv2.imwrite(str(d / "bad_part.png"), blob_image())
    cv2.imwrite(str(d / "sub" / "good_part.jpg"), np.full((120, 160, 3), DARK, np.uint8))
    cv2.imwrite(str(d / "sub" / "bad_part.png"), blob_image((150, 150), (60, 60, 30, 30), channels=1))
    return d


def test_predict_directory(package: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "pred"
    rc = main(["predict", str(package), str(images), "--out", str(out)])
    assert rc == 0
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    by_file = {Path(x["file"]).relative_to(images).as_posix(): x for x in lines}
    assert set(by_file) == {"bad_part.png", "sub/good_part.jpg", "sub/bad_part.png"}
    assert by_file["bad_part.png"]["status"] == "NG" and by_file["sub/good_part.jpg"]["status"] == "OK"
    assert by_file["bad_part.png"]["regions"][0]["box"][0] == pytest.approx(140, abs=8)
    overlays = sorted(p.relative_to(out).as_posix() for p in out.rglob("*_overlay.png"))
    assert overlays == ["bad_part_overlay.png", "sub/bad_part_overlay.png", "sub/good_part_overlay.png"]
    assert by_file["sub/good_part.jpg"]["overlay"] == "sub/good_part_overlay.png"  # the input's sub-folder is kept
    assert cv2.imread(str(out / by_file["sub/good_part.jpg"]["overlay"])).shape == (120, 160, 3)
    assert not (out / "results.jsonl.partial").exists()
    text = capsys.readouterr().out
    assert "NG" in text and "OK" in text and "3 inspected (1 OK, 2 NG), 0 failed" in text
    # a second run into the same folder replaces what the first wrote, and leaves other files alone
    (out / "notes.txt").write_text("mine")
    assert main(["predict", str(package), str(images / "sub" / "good_part.jpg"), "--out", str(out)]) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*_overlay.png")) == ["good_part_overlay.png"]
    assert len((out / "results.jsonl").read_text().splitlines()) == 1 and (out / "notes.txt").read_text() == "mine"


def test_predict_glob_threshold_and_failures(package: Path, images: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    (images / "corrupt.png").write_bytes(b"\x89PNG garbage")
    out = tmp_path / "pred"
    rc = main(["predict", str(package), str(images / "*.png"), str(images / "nothing*.bmp"), "--out", str(out),
               "--threshold", "2.0", "--no-overlay"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "corrupt.png: not an image of a supported format" in err and "nothing*.bmp: no image files found" in err
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert [Path(x["file"]).name for x in lines] == ["bad_part.png", "corrupt.png"]  # failures are recorded too
    assert lines[0]["status"] == "OK" and lines[0]["threshold"] == 2.0
    assert lines[1]["status"] == "ERROR" and "not an image" in lines[1]["error"] and lines[1]["fault"] == "IMAGE"
    assert not list(out.glob("*.png"))


def test_predict_errors_exit_2(package: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), blob_image())
    assert main(["predict", str(tmp_path / "nopkg"), str(img), "--out", str(tmp_path / "o")]) == 2
    assert "nopkg: model package not found" in capsys.readouterr().err
    assert main(["predict", str(package), str(tmp_path / "empty*"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "INPUTS: expected image files" in err and "Traceback" not in err


def test_bench_json(package: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bench" / "b.json"
    rc = main(["bench", str(package), "--backend", "onnxruntime", "--batch", "2", "--runs", "5", "--warmup", "1",
               "--size", "320x240", "--json", str(out)])
    assert rc == 0
    rep = json.loads(out.read_text())
    for key in ("infer_ms", "end_to_end_ms", "preprocess_ms", "postprocess_ms"):
        assert set(rep[key]) >= {"p50", "p90", "p99"} and rep[key]["p50"] > 0
        assert rep[key]["p50"] <= rep[key]["p90"] <= rep[key]["p99"]
    assert rep["end_to_end_ms"]["p50"] >= rep["infer_ms"]["p50"]
    assert rep["throughput_fps"] > 0 and rep["batch"] == 2 and rep["runs"] == 5
    assert rep["backend"] == "onnxruntime" and rep["providers"] == ["CPUExecutionProvider"]
    assert rep["precision"] == "fp32" and rep["package"] == str(package.resolve())
    assert rep["source_hw"] == [240, 320] and rep["machine"]["physical_cores"] >= 1 and rep["machine"]["cpu"]
    assert rep["edge_ad_version"] == "0.1.0"
    assert "throughput" in capsys.readouterr().out


def test_bench_given_image_and_bad_options(package: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), blob_image())
    out = tmp_path / "b.json"
    assert main(["bench", str(package), "--image", str(img), "--runs", "2", "--warmup", "0", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["source_hw"] == [200, 300]
    assert main(["bench", str(package), "--runs", "0"]) == 2
    assert main(["bench", str(package), "--size", "big"]) == 2
    assert main(["bench", str(package), "--image", str(tmp_path / "none.png")]) == 2
    err = capsys.readouterr().err
    assert "--runs: expected an integer >= 1, got 0" in err and "--size: expected WxH" in err
    assert "none.png: file not found" in err
