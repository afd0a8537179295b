"""Station recorders: the fan-out of several (traceability, MQTT, HMI live view) behind one Inspector `recorder`;
and for `edge-ad run` (a pipeline without a PLC) results as InspectionRecords for them, plus the Inspector-shaped
view of the pipeline the HMI reads."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_ad.errors import ConfigError
from edge_ad.plc.signals import DefectCode, InspectionRecord
from edge_ad.runtime.result import Result


@dataclass
class _Frame:
    image: np.ndarray | None
    info: dict[str, Any]

    def meta(self) -> dict[str, Any]:
        return self.info


def record_of(result: Result, seq: int) -> InspectionRecord:
    """What a PLC would have been sent for this result (fail-safe: errors and non-finite scores are NG)."""
    frame = result.frame or {}
    failed = result.error is not None or not math.isfinite(result.normalized_score)
    code = DefectCode.INSPECTION_ERROR if failed else DefectCode.OK if result.passed else DefectCode.ANOMALY
    total = result.timings.get("total")
    ms = float(total) if total is not None else float(sum(result.timings.values()))
    return InspectionRecord(seq=seq, part_id=int(frame.get("seq") or seq), ok=code == DefectCode.OK,
                            defect_code=code, anomaly_score=1.0 if failed else float(result.normalized_score),
                            max_pixel_score=0.0, defect_area=int(sum(r.area for r in result.regions)),
                            inspection_ms=ms, model_id=1, error=result.error)


class RecordSink:
    """A pipeline Sink that hands every result, as an InspectionRecord, to a station recorder."""

    def __init__(self, recorder: Any, detector: Any) -> None:
        self.recorder, self.detector = recorder, detector
        self.seq = 0
        self.errors = 0

    def write(self, result: Result, image: np.ndarray | None) -> None:
        self.seq += 1
        try:
            self.recorder(record_of(result, self.seq), _Frame(image, dict(result.frame or {})), result, self.detector)
        except Exception:
            self.errors += 1
            raise  # the pipeline logs and counts a failing sink; the stream goes on

    def close(self) -> None:
        """Nothing buffered here; the services close themselves."""


class _NoLink:
    connected = False

    class adapter:
        description = "no PLC (edge-ad run)"


@dataclass
class _Stats:
    record_errors: int = 0
    late_discarded: int = 0
    triggers_ignored: int = 0


class StreamStation:
    """What the HMI reads from an Inspector, for a pipeline: detector, stats, link (none), sensitivity."""

    active_recipe = 1
    link = _NoLink()

    def __init__(self, detector: Any, pipeline: Any, sink: RecordSink | None) -> None:
        self.detector, self.pipeline, self.sink = detector, pipeline, sink
        self.recipes: dict[int, Any] = {1: detector}
        self._lock = threading.Lock()

    @property
    def stats(self) -> _Stats:
        return _Stats(record_errors=self.sink.errors if self.sink else 0)

    @property
    def running(self) -> bool:
        return bool(getattr(self.pipeline, "running", True))

    def request_recipe(self, index: int) -> None:
        raise ConfigError("recipe: `edge-ad run` runs one package; recipes need `edge-ad serve --recipe N=PACKAGE`")

    def set_sensitivity(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 100:
            raise ConfigError(f"sensitivity: expected a number in (0, 100], got {value!r}")
        with self._lock:
            self.detector.sensitivity = float(value)

class Fanout:
    """Several Inspector recorders in order (traceability first, then the network): one failing does not stop the
    others; the first exception is raised after all ran, so the Inspector counts it."""

    def __init__(self, *recorders: Any) -> None:
        self.recorders = [r for r in recorders if r is not None]

    def __call__(self, rec: Any, frame: Any, result: Any, detector: Any) -> None:
        first: Exception | None = None
        for r in self.recorders:
            try:
                r(rec, frame, result, detector)
            except Exception as e:
                first = first or e
        if first is not None:
            raise first
