"""Fail-safe decisions on every path: a NaN/inf score, map or threshold and any internal error is NG with a fault,
never OK: detector, pipeline, inspector (the result as each PLC protocol puts it on the wire is in
test_plc_protocols). Plus: triggers ignored while busy are visible to the PLC, and an adapter raising an
unexpected exception restarts the link, not the station."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from plc_peers import (
    DARK_IMG,
    FAST_LINK,
    MemoryAdapter,
    QueueSource,
    SlowDetector,
    wait_for,
)
from runtime_fixtures import blob_image

from edge_ad.errors import ConfigError, DataError, PackageError
from edge_ad.pipeline import stream
from edge_ad.plc.inspector import Inspector
from edge_ad.plc.link import PlcLink
from edge_ad.plc.signals import FaultCode
from edge_ad.runtime import Detector
from edge_ad.runtime.result import Fault, Result
from edge_ad.sources.folder import FolderSource
from edge_ad.station.record import DefectCode

NAN, INF = math.nan, math.inf


class BadBackend:
    """Wraps a backend and corrupts its output: score and/or map replaced by `score`/`map_value`."""

    def __init__(self, inner: Any, score: float | None = None, map_value: float | None = None) -> None:
        self.inner, self.score, self.map_value = inner, score, map_value
        self.input_hw, self.name, self.providers = inner.input_hw, inner.name, inner.providers

    def close(self) -> None:
        self.inner.close()

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        maps, scores = self.inner.run(batch)
        maps, scores = maps.copy(), scores.copy()
        if self.score is not None:
            scores[:] = self.score
        if self.map_value is not None:
            maps[..., 3, 5] = self.map_value
        return maps, scores


def _det(package: Path, **bad: Any) -> Detector:
    det = Detector.load(package, backend="onnxruntime")
    det.backend = BadBackend(det.backend, **bad)  # type: ignore[assignment]
    return det


def _assert_failsafe(r: Result, fault: str) -> None:
    assert r.status == "ERROR" and r.is_anomalous and not r.passed and r.fault == fault, r
    assert r.to_dict()["status"] == "ERROR" and r.to_dict()["fault"] == fault


# ---- detector ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [{"score": NAN}, {"score": INF}, {"score": -INF}, {"map_value": NAN},
                                 {"map_value": INF}])
def test_detector_non_finite_output_is_ng_with_fault(package: Path, bad: dict[str, float]) -> None:
    for img in (blob_image(), blob_image(box=(0, 0, 1, 1))):  # would be NG and OK
        _assert_failsafe(_det(package, **bad).predict(img), Fault.NON_FINITE)


def test_detector_non_finite_threshold_is_refused_or_ng(package: Path) -> None:
    det = Detector.load(package, backend="onnxruntime")
    for bad in (NAN, INF, -INF, "abc"):
        with pytest.raises(ConfigError, match="threshold"):
            det.threshold = bad  # type: ignore[assignment]
    for bad in (NAN, 0.0, -1.0, INF):
        with pytest.raises(ConfigError, match="sensitivity"):
            det.sensitivity = bad
    with pytest.raises(ConfigError, match="threshold"):
        Detector.load(package, backend="onnxruntime", threshold=NAN)
    # a package object built in memory (no JSON, no digest) with a NaN threshold is refused too
    from edge_ad.runtime.package import load_package

    p = load_package(package)
    p.thresholds["image"]["value"] = NAN
    with pytest.raises(PackageError, match="thresholds.image.value: expected a finite number"):
        Detector.load(p, backend="onnxruntime")
    # and if the threshold is corrupted after construction, every decision is a fail-safe NG
    det._threshold = NAN
    _assert_failsafe(det.predict(blob_image(box=(0, 0, 1, 1))), Fault.NON_FINITE)


def test_detector_internal_errors_are_ng_with_fault(package: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    det = Detector.load(package, backend="onnxruntime")

    def broken(*_a: Any, **_k: Any) -> Any:
        raise MemoryError("cannot allocate")

    monkeypatch.setattr("edge_ad.runtime.detector.find_regions", broken)
    _assert_failsafe(det.predict(blob_image()), Fault.POSTPROCESS)
    monkeypatch.undo()

    class Dead:
        input_hw, name, providers = det.backend.input_hw, "dead", ["none"]

        def run(self, batch: np.ndarray) -> Any:
            raise RuntimeError("CUDA error: device lost")

    det.backend = Dead()  # type: ignore[assignment]
    rs = det.predict_batch([blob_image(), blob_image()], errors="result")
    assert len(rs) == 2
    for r in rs:
        _assert_failsafe(r, Fault.INFERENCE)


@pytest.mark.parametrize("shape", [(0, 0), (0, 10, 3), (10, 0, 3), (5, 5, 0), (5, 5, 2), (5, 5, 3, 1), ()])
def test_degenerate_arrays_are_data_errors_and_never_lose_the_batch(package: Path, shape: tuple[int, ...]) -> None:
    det = Detector.load(package, backend="onnxruntime")
    bad = np.zeros(shape, np.uint8)
    with pytest.raises(DataError, match="image"):
        det.predict(bad)
    rs = det.predict_batch([blob_image(), bad, blob_image(box=(0, 0, 1, 1))], errors="result")
    assert [r.status for r in rs] == ["NG", "ERROR", "OK"] and rs[1].fault == Fault.IMAGE


def test_odd_dtypes_are_refused_or_converted(package: Path) -> None:
    det = Detector.load(package, backend="onnxruntime")
    for bad in (np.full((40, 40, 3), NAN, np.float32), np.zeros((40, 40, 3), np.complex64),
                np.zeros((40, 40, 3), object), np.zeros((40, 40, 3), bool)):
        with pytest.raises(DataError):
            det.predict(bad)
    r16 = det.predict(blob_image().astype(np.uint16) * 257)  # 16-bit camera: scaled, same decision
    assert r16.status == "NG" and r16.score == pytest.approx(det.predict(blob_image()).score, abs=1e-3)


# ---- pipeline ------------------------------------------------------------------------------------------------
def test_pipeline_non_finite_score_is_a_failed_ng_result(package: Path, tmp_path: Path) -> None:
    import cv2

    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(4):
        cv2.imwrite(str(folder / f"{i}.png"), blob_image(box=(0, 0, 1, 1)))  # all would be OK
    pipe = stream(_det(package, score=NAN), FolderSource(folder), policy="all")
    results = list(pipe)
    assert len(results) == 4
    for r in results:
        _assert_failsafe(r, Fault.NON_FINITE)
    s = pipe.stats.snapshot()
    assert (s["ok"], s["failed"]) == (0, 4)


# ---- inspector -----------------------------------------------------------------------------------------------
class LyingDetector:
    """A custom detector that claims OK with a NaN score (a bug the station must not pass on)."""

    package, threshold, sensitivity = None, 0.5, 1.0

    def __init__(self, score: float = NAN) -> None:
        self.score = score

    def predict(self, image: Any, frame: dict[str, Any] | None = None) -> Any:
        return Result(score=self.score, normalized_score=self.score, is_anomalous=False, frame=frame)

    def close(self) -> None:
        """Nothing to release."""


@pytest.mark.parametrize("score", [NAN, INF])
def test_inspector_non_finite_result_is_ng_on_the_plc(score: float) -> None:
    mem, src = MemoryAdapter(), QueueSource()
    insp = Inspector(LyingDetector(score), src, PlcLink(mem, ack=False, **FAST_LINK), trigger="camera", poll_s=0.002)
    with insp:
        src.push(DARK_IMG)
        wait_for(lambda: mem.get("ResultSeq") == 1, what="result")
        assert (mem.get("OK"), mem.get("NG"), mem.get("DefectCode")) == (False, True, DefectCode.INSPECTION_ERROR)
        assert mem.get("AnomalyScore") == 1.0
    assert insp.stats.ok == 0 and insp.stats.errors == 1


def test_triggers_ignored_while_busy_are_counted_and_faulted(package: Path) -> None:
    mem, src = MemoryAdapter(), QueueSource()
    det = SlowDetector(Detector.load(package, backend="onnxruntime"), 0.3)
    insp = Inspector(det, src, PlcLink(mem, **FAST_LINK), budget_ms=2000.0, poll_s=0.002)
    with insp:
        wait_for(lambda: mem.get("Ready"), what="Ready")
        src.push(DARK_IMG)
        mem.put("PartId", 1)
        mem.put("Trigger", True)
        wait_for(lambda: mem.get("Busy"), what="Busy")
        for _ in range(2):  # the PLC re-triggers twice while vision is still busy
            mem.put("Trigger", False)
            time.sleep(0.03)
            mem.put("Trigger", True)
            time.sleep(0.03)
        wait_for(lambda: mem.get("TriggersIgnored") == 2, what="TriggersIgnored on the PLC")
        wait_for(lambda: mem.get("FaultCode") == FaultCode.TRIGGER_IGNORED and mem.get("Fault"), what="fault")
        mem.put("Trigger", False)
        mem.put("FaultReset", True)
        wait_for(lambda: not mem.get("Fault"), what="fault reset")
        assert mem.get("TriggersIgnored") == 2  # a counter, not a fault: it stays
    assert insp.stats.triggers_ignored == 2


class FlakyAdapter(MemoryAdapter):
    """Raises an unexpected (non-PLC) exception on the n-th read, like asyncua's cleanup under load did."""

    def __init__(self, fail_on: tuple[int, ...]) -> None:
        super().__init__()
        self.reads, self.fail_on, self.write_failed = 0, fail_on, set()

    def read_inputs(self) -> dict[str, Any]:
        self.reads += 1
        if self.reads in self.fail_on:
            raise RuntimeError("Task got Future attached to a different loop")
        return super().read_inputs()

    def write_outputs(self, values: Any) -> None:
        if self.reads + 1 in self.fail_on and self.reads not in self.write_failed:
            self.write_failed.add(self.reads)  # once: the write just before a failing read
            raise ValueError("unexpected")
        super().write_outputs(values)


def test_unexpected_adapter_exception_restarts_the_link_not_the_station(package: Path) -> None:
    mem, src = FlakyAdapter(fail_on=(5, 6, 40)), QueueSource()
    insp = Inspector(Detector.load(package, backend="onnxruntime"), src,
                     PlcLink(mem, ack=False, hold_s=0.0, **FAST_LINK), trigger="camera", poll_s=0.002)
    with insp:
        for _ in range(3):
            src.push(DARK_IMG)
        wait_for(lambda: mem.get("ResultSeq") == 3 and mem.reads > 60, timeout=10.0, what="three results")
        assert insp.running and insp.crashed is None
    assert insp.link.failures >= 3 and insp.link.reconnects >= 2 and insp.stats.inspections == 3
