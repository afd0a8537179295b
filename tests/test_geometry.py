"""Inspection geometry: alignment recovers the part's pose, an unalignable frame is a fail-safe NG with fault
ALIGNMENT on every path, tiles cover the ROI and blend back exactly, and a tiled package answers at the camera's
resolution."""

from __future__ import annotations

import copy
from pathlib import Path

import cv2
import numpy as np
import pytest
from plc_peers import FAST_LINK, MemoryAdapter, QueueSource, wait_for
from runtime_fixtures import make_manifest, make_onnx

from edge_ad.data.synth_line import _rng, make_frame, roi_mask
from edge_ad.errors import AlignmentError
from edge_ad.runtime.geometry import AlignSpec, Geometry, Placement, Reference, TileSpec
from edge_ad.runtime.package import write_package
from edge_ad.runtime.result import Fault
from edge_ad.station.record import DefectCode

HW = (480, 640)


@pytest.fixture(scope="module")
def reference() -> Reference:
    ref, _ = make_frame("plate_a", "good", HW, _rng(0, "ref"), nominal=True)
    return Reference("plate_a", ref, roi_mask("plate_a", HW))


def _posed(ref: np.ndarray, angle: float, dx: float, dy: float) -> tuple[np.ndarray, np.ndarray]:
    m = cv2.getRotationMatrix2D((HW[1] / 2, HW[0] / 2), angle, 1.0)
    m[:, 2] += (dx, dy)
    return cv2.warpAffine(ref, m, HW[::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE), m


@pytest.mark.parametrize(("angle", "dx", "dy"), [(0.0, 0.0, 0.0), (2.5, 14.0, -9.0), (-3.0, -16.0, 12.0)])
def test_alignment_recovers_the_pose(reference: Reference, angle: float, dx: float, dy: float) -> None:
    geo = Geometry({"plate_a": reference}, AlignSpec())
    frame, m = _posed(reference.image, angle, dx, dy)
    p = geo.locate(frame)
    # frame -> reference composed with reference -> frame is the identity, up to a pixel at the ROI's corners
    full = np.vstack([p.transform, [0, 0, 1]]) @ np.vstack([m, [0, 0, 1]])
    x, y, w, h = reference.box
    corners = np.array([[x, y, 1], [x + w, y, 1], [x, y + h, 1], [x + w, y + h, 1]], float).T
    assert np.abs((full @ corners)[:2] - corners[:2]).max() < 1.5
    assert abs(p.rotation_deg - angle) < 0.2 and p.score > 0.9  # (cv2.getRotationMatrix2D's sign)
    crop, ref_crop = geo.crop(frame, p), geo.crop(reference.image, geo.locate(reference.image))
    inner = (slice(8, -8), slice(8, -8))
    assert np.abs(crop[inner].astype(int) - ref_crop[inner].astype(int)).mean() < 6


def test_unalignable_frames_are_refused(reference: Reference) -> None:
    geo = Geometry({"plate_a": reference}, AlignSpec())
    for frame in (np.full((*HW, 3), 40, np.uint8), np.random.default_rng(0).integers(0, 255, (*HW, 3), np.uint8)):
        with pytest.raises(AlignmentError):
            geo.locate(frame)
    far, _ = _posed(reference.image, 0.0, 150.0, 0.0)  # beyond max_shift_px of a strict spec
    with pytest.raises(AlignmentError, match="moved"):
        Geometry({"plate_a": reference}, AlignSpec(max_shift_px=60)).locate(far)
    with pytest.raises(AlignmentError, match="differs from the reference size"):
        geo.locate(np.zeros((100, 100, 3), np.uint8))


def test_tiles_cover_the_roi_and_blend_back_exactly(reference: Reference) -> None:
    spec = TileSpec(160, 120)
    boxes = spec.grid(300, 410)
    covered = np.zeros((300, 410), int)
    for y, x, th, tw in boxes:
        covered[y:y + th, x:x + tw] += 1
    assert covered.min() >= 1 and {b[2:] for b in boxes} == {(160, 160)}
    geo = Geometry({"plate_a": reference}, None, spec)
    p = geo.locate(reference.image)
    bx, by, bw, bh = reference.box
    truth = np.random.default_rng(1).random((bh, bw)).astype(np.float32)
    tiles = [truth[y:y + th, x:x + tw] for y, x, th, tw in geo.tile_boxes(p)]
    stitched = geo.stitch(tiles, p)
    np.testing.assert_allclose(stitched, truth * reference.weights, atol=1e-6)  # overlaps agree: blending is exact
    frame_map = geo.to_frame(stitched, p)
    assert frame_map.shape == HW and np.allclose(frame_map[by:by + bh, bx:bx + bw], stitched, atol=1e-6)
    assert frame_map[reference.roi == 0].max() == 0  # nothing outside the ROI counts
    top = np.sort(stitched[reference.weights > 0])[::-1]
    assert geo.score(stitched, p) == pytest.approx(top[: max(1, round(top.size * 0.01))].mean(), rel=1e-6)


def _geometry_package(out: Path, reference: Reference, tiles: TileSpec | None, threshold: float = 0.5) -> Path:
    """The runtime test package (mean brightness model) with this geometry and threshold."""
    geo = Geometry({"plate_a": reference}, AlignSpec(), tiles)
    man = copy.deepcopy(make_manifest(image_threshold=threshold))
    man["input"]["preprocess"]["resize"] = man["input"]["preprocess"]["crop"]
    man["geometry"] = geo.to_dict()
    hw = (man["input"]["height"], man["input"]["width"])
    return write_package(out, {"model.onnx": make_onnx(hw), **geo.files()}, man)


def test_a_tiled_package_answers_at_the_cameras_resolution(reference: Reference, tmp_path: Path) -> None:
    from edge_ad.runtime import Detector

    big_hw = (2048, 2448)
    big = Reference("plate_a", cv2.resize(reference.image, big_hw[::-1]),
                    cv2.resize(reference.roi, big_hw[::-1], interpolation=cv2.INTER_NEAREST))
    pkg = _geometry_package(tmp_path / "pkg", big, TileSpec(512, 384))
    with Detector.load(pkg, backend="onnxruntime") as det:
        frame = cv2.resize(_posed(reference.image, 1.5, 6.0, -4.0)[0], big_hw[::-1])
        r = det.predict(frame)
        assert r.error is None and r.anomaly_map is not None and r.anomaly_map.shape == big_hw
        assert r.alignment is not None and r.alignment["category"] == "plate_a" and abs(r.alignment[
            "rotation_deg"] - 1.5) < 0.3
        assert {"align", "stitch"} <= set(r.timings)
        bad = det.predict(np.full((*big_hw, 3), 30, np.uint8))
        assert (bad.status, bad.fault, bad.passed) == ("ERROR", Fault.ALIGNMENT, False)
        assert bad.to_dict()["fault"] == "ALIGNMENT"


def test_an_unaligned_part_is_ng_alignment_on_every_path(reference: Reference, tmp_path: Path) -> None:
    from edge_ad.cli.main import main
    from edge_ad.pipeline import Pipeline
    from edge_ad.plc.inspector import Inspector
    from edge_ad.plc.link import PlcLink
    from edge_ad.runtime import Detector
    from edge_ad.station.event import RecordBuilder

    pkg = _geometry_package(tmp_path / "pkg", reference, TileSpec(160, 120))
    good = _posed(reference.image, 1.0, 5.0, 3.0)[0]
    blank = np.full((*HW, 3), 40, np.uint8)
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "0_good.png"), good)
    cv2.imwrite(str(folder / "1_blank.png"), blank)
    # predict: the result JSON says why
    assert main(["predict", str(pkg), str(folder / "1_blank.png"), "--out", str(tmp_path / "pred"),
                 "--backend", "onnxruntime"]) in (0, 1)
    saved = [*(tmp_path / "pred").rglob("*.json"), *(tmp_path / "pred").rglob("*.jsonl")]
    assert any('"ALIGNMENT"' in p.read_text() for p in saved)
    with Detector.load(pkg, backend="onnxruntime") as det:
        # the record every station output and the PLC get
        rec = RecordBuilder().verdict(det.predict(blank), part_id=1, inspection_ms=1.0, recipe=1)
        assert (rec.ok, rec.defect_code, rec.decision) == (False, DefectCode.ALIGNMENT, "FAILED")
        # run: the pipeline
        results = list(Pipeline(det, str(folder), policy="all"))
        assert [r.fault for r in results] == [None, Fault.ALIGNMENT]
        # serve: the PLC sees DefectCode 5 for the blank frame, a real verdict for the good one
        mem, src = MemoryAdapter(), QueueSource()
        insp = Inspector(det, src, PlcLink(mem, ack=False, hold_s=0.0, **FAST_LINK), trigger="camera", poll_s=0.002)
        with insp:
            src.push(good)
            wait_for(lambda: mem.get("ResultSeq") == 1, what="first result")
            assert mem.get("DefectCode") in (DefectCode.OK, DefectCode.ANOMALY)
            src.push(blank)
            wait_for(lambda: mem.get("ResultSeq") == 2, what="second result")
            assert (mem.get("OK"), mem.get("NG"), mem.get("DefectCode")) == (False, True, DefectCode.ALIGNMENT)


def test_placement_round_trips_through_json(reference: Reference) -> None:
    p = Placement("plate_a", np.array([[1.0, 0.0, 3.0], [0.0, 1.0, -2.0]]), 0.93, HW)
    d = p.to_dict()
    assert d["shift_px"] == [3.0, -2.0] and d["rotation_deg"] == 0.0 and d["score"] == 0.93


@pytest.mark.slow
def test_train_eval_export_with_align_roi_tile(tmp_path: Path) -> None:
    """The whole chain on line-like frames: the run keeps its geometry, evaluation and thresholds go through it,
    the package carries it (references and ROIs checksummed) and answers at frame resolution."""
    import json

    from edge_ad.cli.main import main
    from edge_ad.data.synth_line import generate_line
    from edge_ad.runtime import Detector
    from edge_ad.runtime.package import load_package

    data = tmp_path / "line"
    generate_line(data, categories=["plate_a"], per_category=8, size=HW, seed=3)
    run = tmp_path / "run"
    assert main(["train", "--model", "dinomaly-tiny", "--data", str(data), "--out", str(run), "--iters", "3",
                 "--batch", "4", "--no-pretrained", "--workers", "0", "--no-progress", "--val-fraction", "0.25",
                 "--align", str(data), "--roi", str(data), "--tile", "160"]) == 0
    geo = json.loads((run / "geometry.json").read_text())
    assert geo["tiles"] == {"size": 160, "stride": 120} and geo["align"] is not None
    assert main(["eval", "--run", str(run), "--no-progress", "--json", str(tmp_path / "m.json")]) == 0
    assert "plate_a" in json.loads((tmp_path / "m.json").read_text())["categories"]
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "pkg")]) == 0
    pkg = load_package(tmp_path / "pkg")
    assert {"geometry/plate_a_reference.png", "geometry/plate_a_roi.png"} <= set(pkg.manifest["files"])
    frame = cv2.imread(str(next((data / "plate_a" / "test" / "scratch").glob("*.png"))))
    with Detector.load(pkg, backend="onnxruntime") as det:
        r = det.predict(frame)
    assert r.error is None and r.anomaly_map is not None and r.anomaly_map.shape == HW and r.alignment
    # the drift reference of an aligning package holds the good frames' alignment match scores
    drift = pkg.manifest["drift"]
    assert len(drift["alignment"]) == 8 and min(drift["alignment"]) > 0.5
    assert "alignment match scores" in drift["source"]
    # the precision gate runs the tiled path; the converted package keeps the geometry
    rc = main(["export", "--run", str(run), "--precision", "fp16", "--out", str(tmp_path / "pkg16"), "--data",
               str(data)])
    assert rc in (0, 3)
    if rc == 0:
        assert load_package(tmp_path / "pkg16").geometry() is not None


def test_an_roi_change_in_the_hmi_applies_to_the_next_part_and_is_audited(reference: Reference,
                                                                          tmp_path: Path) -> None:
    """The engineer uploads a new ROI over HTTP; the next part is judged with it (a defect outside the new ROI no
    longer counts) and the audit table names who changed what."""
    import base64
    import json
    import urllib.request

    from plc_peers import free_port

    from edge_ad.hmi.app import HmiServer, Station, create_app
    from edge_ad.hmi.auth import Sessions, load_users, set_user
    from edge_ad.hmi.live import LiveView
    from edge_ad.plc.inspector import Inspector
    from edge_ad.plc.link import PlcLink
    from edge_ad.runtime import Detector
    from edge_ad.station.recorders import Fanout
    from edge_ad.traceability import Retention, TraceRecorder, TraceStore

    pkg = _geometry_package(tmp_path / "pkg", reference, None, threshold=0.93)  # the glow (1.0) is over it
    users = tmp_path / "users.yaml"
    set_user(users, "eng", "engineer-pass", "engineer")
    store = TraceStore(tmp_path / "t.db", "roi", retention=Retention(None, None, None))
    live, mem, src = LiveView(), MemoryAdapter(), QueueSource()
    det = Detector.load(pkg, backend="onnxruntime")
    insp = Inspector(det, src, PlcLink(mem, ack=False, hold_s=0.0, **FAST_LINK), trigger="camera", poll_s=0.002,
                     recorder=Fanout([TraceRecorder(store), live]))
    station = Station(insp, live, store, name="roi")
    port = free_port()
    server = HmiServer(create_app(station, Sessions(load_users(users))), "127.0.0.1", port)
    x, y, w, h = reference.box
    bright = reference.image.copy()
    bright[y:y + h // 2, x:x + w] = 255  # the top half of the part glows: anomalous for this brightness model
    insp.start()
    server.start()
    try:
        src.push(bright)
        wait_for(lambda: mem.get("ResultSeq") == 1, what="first result")
        assert mem.get("NG")
        roi = reference.roi.copy()
        roi[: y + h // 2] = 0  # the engineer leaves the glowing half out
        png = base64.b64encode(cv2.imencode(".png", roi)[1].tobytes()).decode()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        url = f"http://127.0.0.1:{port}"

        csrf = {"token": ""}

        def post(path: str, body: dict[str, object]) -> dict[str, object]:
            req = urllib.request.Request(url + path, json.dumps(body).encode(), {
                "content-type": "application/json", "x-csrf-token": csrf["token"]})
            out: dict[str, object] = json.loads(opener.open(req, timeout=10).read())
            return out

        csrf["token"] = str(post("/api/login", {"user": "eng", "password": "engineer-pass"})["csrf"])
        assert post("/api/roi", {"category": None, "png": png})["category"] == "plate_a"
        src.push(bright)
        wait_for(lambda: mem.get("ResultSeq") == 2, what="second result")
        assert mem.get("OK")  # judged with the new ROI, no restart
        audit = [a for a in store.audit_log(10) if a["action"] == "roi"]
        assert audit and audit[0]["user"] == "eng" and audit[0]["detail"]["category"] == "plate_a"
    finally:
        server.stop()
        insp.stop()
        det.close()
        store.close()


def test_a_recipe_names_the_product_to_align_to(reference: Reference, tmp_path: Path) -> None:
    from edge_ad.errors import ConfigError
    from edge_ad.services import load_detector
    from edge_ad.station.config import StationConfig

    pkg = _geometry_package(tmp_path / "pkg", reference, None)
    cfg = StationConfig(backend="onnxruntime")
    with load_detector(f"{pkg}#plate_a", cfg) as det:
        assert det.category == "plate_a" and det.predict(reference.image).alignment["category"] == "plate_a"
    with load_detector(str(pkg), cfg) as det:
        assert det.category is None  # the best-matching reference names the product on every result
    with pytest.raises(ConfigError, match="no reference for category 'plate_z'"):
        load_detector(f"{pkg}#plate_z", cfg)


def test_a_tiled_package_builds_its_engine_for_a_whole_frame(reference: Reference, tmp_path: Path) -> None:
    """TensorRT's profile batch of a tiled package is its tiles per frame (checked without TensorRT)."""
    from edge_ad.runtime.package import load_package
    from edge_ad.runtime.trt.build import engine_input_shape

    pkg = load_package(_geometry_package(tmp_path / "pkg", reference, TileSpec(160, 120)))
    geo = pkg.geometry()
    assert geo is not None
    n = len(geo.tile_boxes(geo.locate(reference.image)))
    assert n > 1 and engine_input_shape(pkg, None)[0] == geo.max_views() == n
    assert engine_input_shape(pkg, 2)[0] == 2


def test_roi_polygons_in_yaml(tmp_path: Path) -> None:
    from edge_ad.data.views import roi_from_polygons
    from edge_ad.errors import ConfigError

    path = tmp_path / "roi.yaml"
    path.write_text("all:\n  - points: [[10, 10], [90, 10], [90, 60], [10, 60]]\n"
                    "  - {points: [[40, 20], [60, 20], [60, 30], [40, 30]], weight: 0}\n"
                    "plate_b:\n  - [[0, 0], [20, 0], [20, 20]]\n")
    roi = roi_from_polygons(path, "plate_a", (80, 100))
    assert roi[40, 20] == 255 and roi[25, 50] == 0 and roi[5, 5] == 0 and roi[70, 50] == 0
    assert roi_from_polygons(path, "plate_b", (80, 100))[2, 10] == 255
    path.write_text("all:\n  - [[0, 0], [1, 1]]\n")
    with pytest.raises(ConfigError, match=r"all\[0\]: expected >= 3"):
        roi_from_polygons(path, "plate_a", (80, 100))


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mambaad-tiny", "dualad-he-tiny", "ulsad-tiny"])
def test_every_family_trains_and_evaluates_on_tiles(model: str, tmp_path: Path) -> None:
    """The geometry is model-agnostic: each family trains on aligned tiles, fits its constants on them and is
    evaluated through the same stitching."""
    import json

    from edge_ad.cli.main import main
    from edge_ad.data.synth_line import generate_line

    data = tmp_path / "line"
    generate_line(data, categories=["plate_b"], per_category=6, size=HW, seed=4)
    run = tmp_path / "run"
    assert main(["train", "--model", model, "--data", str(data), "--out", str(run), "--iters", "2", "--batch", "4",
                 "--no-pretrained", "--workers", "0", "--no-progress", "--val-fraction", "0.34", "--align", str(data),
                 "--roi", str(data), "--tile", "224"]) == 0
    assert main(["eval", "--run", str(run), "--no-progress", "--overlays", "0", "--json",
                 str(tmp_path / "m.json")]) == 0
    m = json.loads((tmp_path / "m.json").read_text())["categories"]["plate_b"]
    assert 0.0 <= m["image_auroc"] <= 1.0 and m["aupro"] is not None
