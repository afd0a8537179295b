"""Detector end to end on the brightness test graph: geometry, decisions, batching, errors, overlay, backends."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from runtime_fixtures import DARK, blob_image, build_package, make_manifest, make_onnx

from edge_ad.errors import ConfigError, DataError, PackageError
from edge_ad.runtime import Detector, Result, render_overlay
from edge_ad.runtime.package import write_package
from edge_ad.runtime.postprocess import find_regions, map_to_source, normalize_score
from edge_ad.runtime.preprocess import Preprocess


@pytest.fixture(scope="module")
def det(package: Path) -> Detector:
    return Detector.load(package, backend="onnxruntime", threads=1)


@pytest.mark.parametrize("hw,box", [((200, 300), (143, 77, 37, 29)), ((480, 640), (300, 200, 60, 50)),
                                    ((64, 64), (20, 24, 12, 10)), ((900, 120), (50, 400, 30, 80))])
def test_region_at_blob_in_source_coordinates(det: Detector, hw: tuple[int, int], box: tuple) -> None:
    res = det.predict(blob_image(hw, box))
    assert res.anomaly_map is not None and res.mask is not None
    assert res.anomaly_map.shape == hw and res.anomaly_map.dtype == np.float32
    assert res.mask.shape == hw and res.mask.dtype == np.uint8
    assert res.is_anomalous and res.score == pytest.approx(1.0, abs=0.02) and res.error is None
    assert len(res.regions) == 1
    r = res.regions[0]
    # one anomaly-map pixel covers (resize/crop-map scale) source pixels: the tolerance of the box edges
    tol_x = math.ceil(2 * hw[1] / 80) + 1
    tol_y = math.ceil(2 * hw[0] / 80) + 1
    x, y, w, h = box
    assert abs(r.x - x) <= tol_x and abs(r.y - y) <= tol_y
    assert abs((r.x + r.w) - (x + w)) <= tol_x and abs((r.y + r.h) - (y + h)) <= tol_y
    assert r.peak == pytest.approx(res.anomaly_map.max()) and r.area == int(res.mask.sum())
    assert r.contour is not None and r.contour.shape[-1] == 2
    assert set(res.timings) == {"preprocess", "infer", "postprocess", "total"}


def test_good_image_and_outside_crop_is_not_inspected(det: Detector) -> None:
    # the bright patch sits in the border removed by the centre crop (resize 80 -> crop 64 keeps rows 20..180)
    img = blob_image((200, 300), (0, 0, 25, 15))
    res = det.predict(img)
    assert not res.is_anomalous and res.regions == [] and res.passed
    assert res.score == pytest.approx(DARK / 255, abs=1e-3)
    assert res.anomaly_map is not None and float(res.anomaly_map[:15, :25].max()) == 0.0
    assert 0.0 <= res.normalized_score < 0.5


@pytest.mark.parametrize("channels", [1, 4])
def test_grey_and_bgra_match_bgr(det: Detector, channels: int) -> None:
    ref = det.predict(blob_image(channels=3))
    res = det.predict(blob_image(channels=channels))
    assert res.score == pytest.approx(ref.score, abs=1e-6)
    assert [g.to_dict() for g in res.regions] == [g.to_dict() for g in ref.regions]
    grey = blob_image(channels=1)[..., None]
    assert det.predict(grey).score == pytest.approx(ref.score, abs=1e-6)


def test_threshold_and_sensitivity_at_run_time(package: Path) -> None:
    d = Detector.load(package, backend="onnxruntime", threads=1)
    img = np.full((100, 100, 3), DARK, np.uint8)
    img[30:70, 30:70] = 153  # score 0.6
    res = d.predict(img)
    assert res.score == pytest.approx(0.6, abs=1e-3) and res.is_anomalous and res.threshold == 0.5
    d.threshold = 0.7
    res = d.predict(img)
    assert not res.is_anomalous and res.normalized_score < 0.5 and res.regions  # pixel threshold still 0.5
    d.sensitivity = 2.0  # effective 0.35 (image) and 0.25 (pixel)
    assert d.effective_threshold == pytest.approx(0.35) and d.pixel_threshold == pytest.approx(0.25)
    res = d.predict(img)
    assert res.is_anomalous and res.threshold == pytest.approx(0.35)
    d.threshold = None  # back to the manifest's 0.5
    d.sensitivity = 0.55  # -> effective 0.909: inside the package's score range 0.05..0.95
    res = d.predict(img)
    assert not res.is_anomalous and res.regions == []
    assert d.sensitivity_range == pytest.approx((0.5 / 0.95, 0.5 / 0.05))
    with pytest.raises(ConfigError, match="inside the package's score range"):
        d.sensitivity = 0.5  # effective 1.0: beyond score_max, every part would pass
    for bad in (1e-300, 5e-324):
        with pytest.raises(ConfigError, match="sensitivity"):
            d.sensitivity = bad
    with pytest.raises(ConfigError, match="sensitivity: expected a finite number > 0, got 0"):
        d.sensitivity = 0
    with pytest.raises(ConfigError, match="threshold: expected a number"):
        d.threshold = "high"  # type: ignore[assignment]
    assert Detector.load(package, backend="onnxruntime", threshold=0.61).predict(img).is_anomalous is False


def test_normalized_score_is_half_at_threshold(package: Path) -> None:
    img = np.full((64, 64, 3), DARK, np.uint8)
    img[20:40, 20:40] = 153
    d = Detector.load(package, backend="onnxruntime", threads=1)
    d.threshold = float(d.predict(img).score)
    res = d.predict(img)
    assert res.normalized_score == pytest.approx(0.5) and not res.is_anomalous


def test_batch_equals_single(det: Detector) -> None:
    imgs = [blob_image((200, 300)), blob_image((120, 90), (10, 50, 20, 20), channels=1),
            np.full((50, 70, 3), DARK, np.uint8)]
    singles = [det.predict(i) for i in imgs]
    batch = det.predict_batch(imgs)
    assert len(batch) == 3
    for s, b in zip(singles, batch):
        assert b.score == pytest.approx(s.score, abs=1e-6) and b.is_anomalous == s.is_anomalous
        assert b.anomaly_map is not None and s.anomaly_map is not None
        np.testing.assert_allclose(b.anomaly_map, s.anomaly_map, atol=1e-6)
        assert [r.to_dict() for r in b.regions] == [r.to_dict() for r in s.regions]


def test_fixed_batch_one_graph_runs_larger_batches(tmp_path: Path, det: Detector) -> None:
    pkg = build_package(tmp_path / "b1", batch=1)
    d1 = Detector.load(pkg, backend="onnxruntime", threads=1)
    assert d1.backend.max_batch == 1
    imgs = [blob_image(), np.full((80, 80, 3), DARK, np.uint8), blob_image((300, 200), (50, 100, 40, 40))]
    got = [r.score for r in d1.predict_batch(imgs)]
    want = [r.score for r in det.predict_batch(imgs)]
    assert got == pytest.approx(want, abs=1e-6)


def test_unreadable_inputs(det: Detector, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="missing.png: file not found"):
        det.predict(tmp_path / "missing.png")
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png: not an image of a supported format"):
        det.predict(str(bad))
    with pytest.raises(DataError, match="image: expected 8- or 16-bit pixels, got dtype float32"):
        det.predict(np.zeros((10, 10, 3), np.float32))
    for empty in (np.zeros((0, 0), np.uint8), np.zeros((0, 10, 3), np.uint8), np.zeros((10, 0), np.uint8)):
        with pytest.raises(DataError, match="empty image of shape"):
            det.predict(empty)
    res = det.predict_batch([bad, blob_image(), np.zeros((0, 0), np.uint8)], errors="result")
    assert res[0].status == "ERROR" and "broken.png" in (res[0].error or "") and not res[0].passed
    assert res[0].fault == "IMAGE" and res[0].is_anomalous  # fail-safe: rejecting on is_anomalous rejects it too
    assert math.isnan(res[0].score) and res[0].to_dict()["score"] is None and res[0].to_dict()["fault"] == "IMAGE"
    assert res[1].status == "NG" and res[2].status == "ERROR"  # the good image of the batch is still inspected


def test_read_image_from_path(det: Detector, tmp_path: Path) -> None:
    import cv2

    p = tmp_path / "blob.png"
    cv2.imwrite(str(p), blob_image())
    res = det.predict(p)
    assert res.is_anomalous and "read" in res.timings
    assert res.score == pytest.approx(det.predict(blob_image()).score)


def test_overlay(det: Detector) -> None:
    img = blob_image()
    res = det.predict(img)
    out = render_overlay(img, res)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert not np.array_equal(out, img)
    grey_out = render_overlay(img[..., 0], res, alpha=0.0)
    assert grey_out.shape == (200, 300, 3)
    err = render_overlay(img, Result.failed("camera timeout"))
    assert err.shape == img.shape and np.array_equal(err[-10:], img[-10:])
    with pytest.raises(DataError, match="anomaly map is 300x200 but the image is 10x10"):
        render_overlay(np.zeros((10, 10, 3), np.uint8), res)


def test_result_to_dict_is_json_safe(det: Detector) -> None:
    import json

    res = det.predict(blob_image(), frame={"id": np.int64(3), "ts": np.float64(1.5), "raw": np.zeros(3)})
    d = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert d["status"] == "NG" and d["regions"][0]["box"][2] > 0 and d["frame"]["id"] == 3
    assert d["map_shape"] == [200, 300]


def test_graph_manifest_mismatch_is_reported(tmp_path: Path) -> None:
    man = make_manifest()
    man["input"]["name"] = "pixels"
    pkg = write_package(tmp_path / "p", {"model.onnx": make_onnx()}, man)
    with pytest.raises(PackageError, match=r"expected one graph input named 'pixels'.*got \['image'\]"):
        Detector.load(pkg, backend="onnxruntime")
    man = make_manifest()
    man["outputs"]["anomaly_map"]["height"] = 16
    pkg = write_package(tmp_path / "q", {"model.onnx": make_onnx()}, man)
    with pytest.raises(PackageError, match=r"output 'anomaly_map': expected shape \[B, 1, 16, 32\]"):
        Detector.load(pkg, backend="onnxruntime")


def test_backend_selection(package: Path) -> None:
    with pytest.raises(ConfigError, match="backend: expected one of"):
        Detector.load(package, backend="coreml")
    if importlib.util.find_spec("tensorrt") is None:
        with pytest.raises(ConfigError, match="tensorrt Python package is not installed"):
            Detector.load(package, backend="tensorrt")
        auto = "openvino" if importlib.util.find_spec("openvino") else "onnxruntime"  # fastest CPU path installed
        assert Detector.load(package, backend="auto").backend.name == auto
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(ConfigError, match="not available in this onnxruntime build"):
            Detector.load(package, backend="onnxruntime", providers=["cuda"])
    d = Detector.load(package, backend="onnxruntime", providers="cpu", threads=1)
    assert d.backend.providers == ["CPUExecutionProvider"]


def test_map_to_source_geometry() -> None:
    pre = Preprocess(resize=(8, 8), crop=(4, 4))
    m = np.ones((2, 2), np.float32)
    out = map_to_source(m, pre, (16, 16))
    assert out.shape == (16, 16)
    assert out[0, 0] == 0.0 and out[15, 15] == 0.0 and out[8, 8] == pytest.approx(1.0)
    full = map_to_source(m, Preprocess(resize=(4, 4), crop=(4, 4)), (4, 4))
    np.testing.assert_array_equal(full, np.ones((4, 4), np.float32))


def test_find_regions_min_area_and_peaks() -> None:
    amap = np.zeros((50, 50), np.float32)
    amap[5:15, 5:15] = 0.8
    amap[7, 7] = 0.95
    amap[30:32, 30:32] = 0.9  # 4 px, below min area
    amap[40:45, 10:20] = 0.6
    mask, regions = find_regions(amap, 0.5, min_area_px=5)
    assert [(r.x, r.y, r.w, r.h, r.area) for r in regions] == [(5, 5, 10, 10, 100), (10, 40, 10, 5, 50)]
    assert [r.peak for r in regions] == pytest.approx([0.95, 0.6])
    assert mask.sum() == 150 and mask[30, 30] == 0
    mask, regions = find_regions(amap, 0.99)
    assert regions == [] and mask.sum() == 0


def test_normalize_score() -> None:
    assert normalize_score(0.5, 0.5, 0.1, 0.9) == 0.5
    assert normalize_score(0.1, 0.5, 0.1, 0.9) == 0.0
    assert normalize_score(0.3, 0.5, 0.1, 0.9) == pytest.approx(0.25)
    assert normalize_score(0.7, 0.5, 0.1, 0.9) == pytest.approx(0.75)
    assert normalize_score(5.0, 0.5, 0.1, 0.9) == 1.0 and normalize_score(-5.0, 0.5, 0.1, 0.9) == 0.0
    assert normalize_score(0.6, 0.5, 0.5, 0.5) == 1.0 and normalize_score(0.4, 0.5, 0.5, 0.5) == 0.0
    assert math.isnan(normalize_score(math.nan, 0.5, 0.1, 0.9))


def test_untrained_and_random_init_packages_say_so_on_every_output(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger="edge_ad.runtime.detector")
    untrained = Detector.load(build_package(tmp_path / "u"), backend="onnxruntime")
    assert any("UNTRAINED" in m for m in caplog.messages)
    man = make_manifest()
    man["model"].update(untrained=False, encoder_weights="random-init")
    rand = Detector.load(build_package(tmp_path / "r", manifest=man), backend="onnxruntime")
    man["model"]["encoder_weights"] = "timm:vit_small_patch14_reg4_dinov2"
    trained = Detector.load(build_package(tmp_path / "t", manifest=man), backend="onnxruntime")
    img = blob_image()
    for det, word in ((untrained, "UNTRAINED"), (rand, "RANDOM-INIT")):
        r = det.predict(img)
        assert word in (r.note or "") and word in r.to_dict()["note"]
        assert det.predict_batch([img, np.zeros((0, 0), np.uint8)], errors="result")[1].note == r.note
        plain = render_overlay(img, trained.predict(img))
        noted = render_overlay(img, r)
        assert np.abs(noted[-12:].astype(int) - plain[-12:].astype(int)).sum() > 0, "no banner on the overlay"
    assert trained.predict(img).note is None and "note" not in trained.predict(img).to_dict()


def test_ng_without_regions_is_explained(tmp_path: Path) -> None:
    """Image score over its threshold, no pixel over the (higher) pixel threshold: a diffuse anomaly."""
    det = Detector.load(build_package(tmp_path / "p", image_threshold=0.3, pixel_threshold=0.9),
                        backend="onnxruntime")
    img = np.full((200, 300, 3), 110, np.uint8)
    img[150:170, 40:60] = 130  # the hottest spot
    r = det.predict(img)
    assert r.status == "NG" and r.regions == []
    assert "no pixel is over the pixel threshold" in (r.reason or "") and r.hotspot is not None
    x, y, w, h = r.hotspot
    assert x <= 50 <= x + w and y <= 160 <= y + h
    assert r.to_dict()["hotspot"] == [x, y, w, h]
    ov = render_overlay(img, r)
    orange = (ov[..., 0] < 60) & (ov[..., 1] > 100) & (ov[..., 1] < 180) & (ov[..., 2] > 220)
    assert orange[y:y + h, x:x + w].any(), "the hottest area is not marked"
    ok = det.predict(np.full((200, 300, 3), 20, np.uint8))
    assert ok.status == "OK" and (ok.reason or "").startswith("OK: image score")
    blob = Detector.load(build_package(tmp_path / "q"), backend="onnxruntime").predict(blob_image())
    assert "1 region(s)" in (blob.reason or "")
