"""The drift monitor: a steady stream of 2,000 good frames raises nothing; a brightness ramp, blur, a new texture
and a rising NG rate raise ALARM within a stated number of parts; the PLC's Drift, the HMI state and /metrics show
it; export stores the reference (on the converted graph's scores for int8)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from plc_peers import FAST_LINK, MemoryAdapter, QueueSource, wait_for

from edge_ad.errors import ConfigError
from edge_ad.runtime.drift import (
    IMAGE_STATS,
    DriftMonitor,
    DriftReference,
    DriftSettings,
    binomial_upper_tail,
    build_reference,
    image_stats,
    ks_test,
)

WINDOW, EVERY = 200, 25
#: after a drift starts (the window full of normal parts), ALARM must come within this many parts
ALARM_WITHIN = 100


def part(rng: np.random.Generator, *, brightness: float = 0.0, blur: float = 0.0, texture: str = "grain") -> np.ndarray:
    """A line-like frame: a textured part on a background, with lighting jitter (the good-part generator)."""
    h, w = 240, 320
    img = np.full((h, w), 60.0)
    if texture == "grain":
        tex = cv2.GaussianBlur(rng.normal(0, 30, (h, w)), (0, 0), 1.2)
    else:  # another supplier's material: coarse stripes
        tex = 40 * np.sign(np.sin(np.arange(w) / 3.0))[None, :] + rng.normal(0, 5, (h, w))
    img[40:200, 60:260] = 140 + tex[40:200, 60:260]
    img += rng.normal(0, 2.0) + brightness  # lamp jitter
    img = np.clip(img, 0, 255).astype(np.uint8)
    if blur:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)


@pytest.fixture(scope="module")
def reference() -> DriftReference:
    rng = np.random.default_rng(1)
    stats = [image_stats(part(rng)) for _ in range(512)]
    scores = rng.normal(0.3, 0.05, 200)
    section = build_reference(stats, scores.tolist(), 0.01, "512 synthetic good parts")
    return DriftReference.from_manifest(section, "test")


def _monitor(reference: DriftReference) -> DriftMonitor:
    return DriftMonitor({"pkg": reference}, DriftSettings(window=WINDOW, every=EVERY))


def _feed(mon: DriftMonitor, rng: np.random.Generator, n: int, **drift: Any) -> list[int]:
    """n parts; returns the level after each."""
    levels = []
    shift = drift.pop("score_shift", 0.0)
    ng_rate = drift.pop("ng_rate", 0.0)
    for _ in range(n):
        mon.observe(part(rng, **drift), float(rng.normal(0.3 + shift, 0.05)), bool(rng.random() < ng_rate), "pkg")
        levels.append(mon.level)
    return levels


def test_a_steady_stream_of_2000_good_parts_raises_nothing(reference: DriftReference) -> None:
    mon = _monitor(reference)
    levels = _feed(mon, np.random.default_rng(2), 2000, ng_rate=0.01)
    assert max(levels) == 0, mon.status()["reasons"]
    st = mon.status()
    assert st["level"] == "OK" and st["n"] == WINDOW and set(st["tests"]) == {*IMAGE_STATS, "score", "ng_rate"}
    assert all(t["p"] > 1e-5 for t in st["tests"].values())


@pytest.mark.parametrize(("drift", "quantity"), [
    ({"brightness": 25.0}, "brightness"),     # a lamp ageing or replaced
    ({"blur": 2.0}, "sharpness"),             # a knocked camera, out of focus
    ({"texture": "stripes"}, "contrast"),     # another supplier's material
    ({"score_shift": 0.08}, "score"),         # the model sees something new
    ({"ng_rate": 0.2}, "NG rate"),            # false rejects piling up
])
def test_drifts_raise_alarm_within_the_stated_number_of_parts(reference: DriftReference, drift: dict[str, Any],
                                                              quantity: str) -> None:
    mon = _monitor(reference)
    rng = np.random.default_rng(3)
    assert max(_feed(mon, rng, WINDOW, ng_rate=0.01)) == 0
    levels = _feed(mon, rng, ALARM_WITHIN, **{"ng_rate": 0.01, **drift})
    assert 2 in levels, mon.status()
    assert any(quantity in r for r in mon.status()["reasons"]), mon.status()["reasons"]


def test_a_knocked_camera_shows_in_the_alignment_match_score(reference: DriftReference) -> None:
    """Packages that align frames carry the good frames' ECC match scores; parts that still align, but worse
    (the camera was knocked, the fixture wears), raise ALARM on that quantity alone."""
    import dataclasses

    rng = np.random.default_rng(8)
    ref = dataclasses.replace(reference, alignment=np.sort(rng.normal(0.95, 0.01, 300)))
    mon = DriftMonitor({"pkg": ref}, DriftSettings(window=WINDOW, every=EVERY))
    for _ in range(WINDOW):
        mon.observe(part(rng), float(rng.normal(0.3, 0.05)), False, "pkg", float(rng.normal(0.95, 0.01)))
    assert mon.level == 0 and "alignment" in mon.status()["tests"]
    levels = []
    for _ in range(ALARM_WITHIN):
        mon.observe(part(rng), float(rng.normal(0.3, 0.05)), False, "pkg", float(rng.normal(0.90, 0.01)))
        levels.append(mon.level)
    assert 2 in levels and any(r.startswith("alignment down") for r in mon.status()["reasons"])


def test_a_brightness_ramp_warns_before_it_alarms(reference: DriftReference) -> None:
    mon = _monitor(reference)
    rng = np.random.default_rng(4)
    _feed(mon, rng, WINDOW)
    levels = []
    for i in range(400):  # +0.1 grey level per part: 40 levels over 400 parts
        mon.observe(part(rng, brightness=0.1 * i), 0.3, False, "pkg")
        levels.append(mon.level)
    first_warn, first_alarm = levels.index(1), levels.index(2)
    assert first_warn < first_alarm < 400
    assert "brightness up" in mon.status()["reasons"][0]


def test_statistics_match_their_definitions() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 500), rng.normal(0, 1, 300)
    d, p = ks_test(a, b)
    from scipy.stats import ks_2samp  # the reference implementation (lab-side dependency)

    ref = ks_2samp(a, b, method="asymp")
    assert d == pytest.approx(ref.statistic, abs=1e-12) and p == pytest.approx(ref.pvalue, rel=0.05, abs=1e-4)
    _, p_far = ks_test(a, b + 1.0)
    assert p_far < 1e-20
    from scipy.stats import binom

    assert binomial_upper_tail(7, 200, 0.01) == pytest.approx(binom.sf(6, 200, 0.01), rel=1e-9)
    assert binomial_upper_tail(0, 10, 0.5) == 1.0
    grey = np.full((100, 100, 3), 77, np.uint8)
    s = image_stats(grey)
    assert s == {"brightness": 77.0, "contrast": 0.0, "sharpness": 0.0}
    assert image_stats(np.full((2000, 3000), 40000, np.uint16))["brightness"] == pytest.approx(156.0)


@pytest.mark.parametrize(("section", "match"), [
    ({"image": {}, "expected_ng_rate": 0.01}, "drift.image: expected"),
    ({"image": {k: [1.0] for k in IMAGE_STATS}, "expected_ng_rate": 1.5}, "expected_ng_rate"),
    ({"image": {**{k: [1.0] for k in IMAGE_STATS}, "contrast": [math.nan]}, "expected_ng_rate": 0.0},
     "drift.image.contrast: expected a non-empty list of finite numbers"),
])
def test_a_bad_reference_is_refused_by_field(section: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        DriftReference.from_manifest({"version": 1, **section}, "pkg/manifest.json")


def test_a_package_change_starts_a_new_window(reference: DriftReference) -> None:
    mon = DriftMonitor({"a": reference, "b": reference}, DriftSettings(window=WINDOW, every=EVERY))
    rng = np.random.default_rng(5)
    for _ in range(WINDOW):
        mon.observe(part(rng, brightness=40.0), 0.3, False, "a")
    assert mon.level == 2
    mon.observe(part(rng), 0.3, False, "b")  # promoted / switched: judged afresh
    assert mon.level == 0 and mon.status()["n"] == 1
    mon.observe(part(rng), 0.3, False, "unknown")  # a package without a reference is not counted
    assert mon.status()["n"] == 1


def test_the_station_publishes_drift_to_the_plc_hmi_and_metrics(package: Path, tmp_path: Path,
                                                                 reference: DriftReference) -> None:
    """A package with a drift reference in a running station: a brighter line raises the PLC's Drift to 2, the HMI
    state says why and /metrics has the gauges; verdicts themselves are untouched."""
    import json

    from edge_ad.plc.inspector import Inspector
    from edge_ad.plc.link import PlcLink
    from edge_ad.runtime import Detector
    from edge_ad.runtime.package import load_package, write_package

    src_pkg = load_package(package)
    man = json.loads((package / "manifest.json").read_text())
    rng = np.random.default_rng(6)
    hw = (src_pkg.preprocess.resize[0], src_pkg.preprocess.resize[1])
    stats = [image_stats(cv2.resize(part(rng), hw[::-1])) for _ in range(300)]
    man["drift"] = build_reference(stats, None, 0.01, "test")
    drifting = load_package(write_package(tmp_path / "pkg", {"model.onnx": package / "model.onnx"}, man))
    mon = DriftMonitor({drifting.digest: DriftReference.from_manifest(man["drift"], "m")},
                       DriftSettings(window=40, every=10))
    det = Detector.load(drifting, backend="onnxruntime")
    mem, cam = MemoryAdapter(), QueueSource()
    insp = Inspector(det, cam, PlcLink(mem, **FAST_LINK), poll_s=0.002, trigger="camera", budget_ms=2000.0,
                     recorder=mon, drift=mon)
    with insp:
        for i in range(120):
            cam.push(cv2.resize(part(rng, brightness=60.0 if i >= 40 else 0.0), hw[::-1]))
        wait_for(lambda: insp.stats.inspections == 120, timeout=60, what="120 parts")
        assert mon.flush()
        wait_for(lambda: mem.get("Drift") == 2, what="Drift = 2 on the PLC")
    st = mon.status()
    assert st["level"] == "ALARM" and any("brightness up" in r for r in st["reasons"])
    from edge_ad.hmi.app import _drift_metrics

    names = {m.name for m in _drift_metrics("st", st)}
    assert names == {"edge_ad_drift_level", "edge_ad_drift_ks", "edge_ad_drift_p", "edge_ad_drift_ng_rate"}
    det.close()
