"""What every station output receives: one `InspectionEvent` per published verdict, built by the one
`RecordBuilder` that both schedulers use (the PLC-triggered `Inspector` and the free-running `Pipeline`)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from edge_ad.runtime.package import ModelPackage
from edge_ad.runtime.postprocess import normalize_score
from edge_ad.runtime.result import Fault, Result
from edge_ad.station.record import DefectCode, InspectionRecord, ViewVerdict


class DetectorLike(Protocol):
    """What a station needs from `edge_ad.runtime.Detector` (a stand-in such as capture mode's has no package)."""

    @property
    def package(self) -> ModelPackage | None: ...

    @property
    def threshold(self) -> float | None: ...

    @property
    def sensitivity(self) -> float: ...

    @sensitivity.setter
    def sensitivity(self, value: float) -> None: ...

    def predict(self, image: np.ndarray, frame: dict[str, Any] | None = None) -> Result: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class PackageIdentity:
    """Which model package judged a part: name, precision, digest, and the product recipe it serves."""

    name: str | None = None
    precision: str | None = None
    digest: str | None = None
    recipe: int = 1

    @classmethod
    def of(cls, detector: DetectorLike | None, recipe: int = 1) -> PackageIdentity:
        pkg = detector.package if detector is not None else None
        if pkg is None:
            return cls(recipe=recipe)
        return cls(name=pkg.name, precision=pkg.precision, digest=pkg.digest, recipe=recipe)


@dataclass(frozen=True)
class ViewEvent:
    """One view of a multi-view part: its verdict, the detector's Result (None when the view delivered no frame),
    the frame's pixels and metadata, the package that judged it and its source."""

    verdict: ViewVerdict
    result: Result | None
    image: np.ndarray | None
    frame: dict[str, Any]
    package: PackageIdentity
    source: str | None = None

    @property
    def name(self) -> str:
        return self.verdict.name


@dataclass(frozen=True)
class InspectionEvent:
    """One published verdict: the record the PLC gets, the detector's Result (None for a fail-safe verdict without
    one), the frame's pixels and metadata, the package that judged it, the source and the wall-clock time."""

    record: InspectionRecord
    result: Result | None
    image: np.ndarray | None
    frame: dict[str, Any]
    package: PackageIdentity
    source: str | None = None
    time: float = field(default_factory=time.time)
    #: a multi-view part's views, in the station's order (`result`/`image` are then those of the deciding view:
    #: the first NG one, else the first)
    views: tuple[ViewEvent, ...] = ()

    @property
    def decision(self) -> str:
        return self.record.decision

    @property
    def timings(self) -> dict[str, float]:
        """Milliseconds per stage of the detector, plus `inspection` (trigger or capture to verdict)."""
        out = {k: float(v) for k, v in (self.result.timings if self.result is not None else {}).items()}
        out["inspection"] = float(self.record.inspection_ms)
        return out


def part_id_of(frame: dict[str, Any], plc_part_id: int = 0) -> int:
    """The part number of a verdict: the PLC's PartId when it gave one, else the camera's frame id, else the
    source's sequence number (so `serve` and `run` number the same frames alike)."""
    if plc_part_id:
        return int(plc_part_id)
    for key in ("frame_id", "seq"):
        v = frame.get(key)
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0:
            return int(v)
    return 0


class RecordBuilder:
    """Numbers verdicts (ResultSeq 1, 2, ...) and turns a detector Result, or a failure, into the record and the
    event. Fail-safe: an error or a non-finite score is NG with INSPECTION_ERROR and scores 1.0, so a PLC that
    only looks at the score rejects too."""

    def __init__(self, source: str | None = None) -> None:
        self.source = source
        self.seq = 0

    def next_seq(self, at_least: int = 0) -> int:
        """The next sequence number (above `at_least`, e.g. the PLC link's last delivered one after a restart)."""
        self.seq = max(self.seq, at_least) + 1
        return self.seq

    def verdict(self, result: Result, *, part_id: int, inspection_ms: float, recipe: int,
                seq: int | None = None) -> InspectionRecord:
        """The record of an inspected frame."""
        seq = self.next_seq() if seq is None else seq
        v = judge(result)
        if not v.ok and v.defect_code != DefectCode.ANOMALY:
            return self.failsafe(v.defect_code, part_id=part_id, inspection_ms=inspection_ms, recipe=recipe,
                                 error=v.error, seq=seq)
        return InspectionRecord(seq=seq, part_id=part_id, ok=v.ok, defect_code=v.defect_code,
                                anomaly_score=v.anomaly_score, max_pixel_score=v.max_pixel_score,
                                defect_area=v.defect_area, inspection_ms=inspection_ms, model_id=recipe)

    def combine(self, views: Sequence[ViewVerdict], *, part_id: int, inspection_ms: float, recipe: int,
                seq: int | None = None) -> InspectionRecord:
        """One part's record from its views: OK only when there are views and every one is OK; the defect code is
        the first view fault's (NO_IMAGE, LATE, ...) when a view could not be judged, else ANOMALY; scores are the
        worst view's and the defect area is the sum."""
        if not views:
            return self.failsafe(DefectCode.NO_IMAGE, part_id=part_id, inspection_ms=inspection_ms, recipe=recipe,
                                 error="no views", seq=seq)
        ok = all(v.ok for v in views)
        fault = next((v for v in views if v.fault), None)
        code = DefectCode.OK if ok else fault.defect_code if fault is not None else DefectCode.ANOMALY
        errors = [f"{v.name}: {v.error}" for v in views if v.error]
        return InspectionRecord(
            seq=self.next_seq() if seq is None else seq, part_id=part_id, ok=ok, defect_code=code,
            anomaly_score=max(v.anomaly_score for v in views), max_pixel_score=max(v.max_pixel_score for v in views),
            defect_area=sum(v.defect_area for v in views), inspection_ms=inspection_ms, model_id=recipe,
            late=code == DefectCode.LATE, error="; ".join(errors) or None, views=tuple(views))

    def failsafe(self, code: DefectCode, *, part_id: int, inspection_ms: float, recipe: int, late: bool = False,
                 error: str | None = None, seq: int | None = None) -> InspectionRecord:
        """A fail-safe NG (late, no image, inspection error): scores at 1.0."""
        return InspectionRecord(seq=self.next_seq() if seq is None else seq, part_id=part_id, ok=False,
                                defect_code=code, anomaly_score=1.0, max_pixel_score=1.0, defect_area=0,
                                inspection_ms=inspection_ms, model_id=recipe, late=late, error=error)

    def event(self, record: InspectionRecord, result: Result | None, image: np.ndarray | None,
              frame: dict[str, Any] | None, package: PackageIdentity) -> InspectionEvent:
        meta = dict(frame or (result.frame if result is not None and result.frame is not None else {}))
        return InspectionEvent(record=record, result=result, image=image, frame=meta, package=package,
                               source=self.source or _str(meta.get("source_id")))


def judge(result: Result | None, name: str = "", missing: DefectCode = DefectCode.NO_IMAGE,
          error: str | None = None) -> ViewVerdict:
    """The verdict of one Result (None: the view delivered nothing, `missing` says why). Fail-safe: alignment
    failures, errors and non-finite scores are NG with their code and scores 1.0."""
    if result is None:
        return ViewVerdict(name, False, missing, 1.0, 1.0, 0, error or "no frame from the source")
    if result.fault == Fault.ALIGNMENT:
        return ViewVerdict(name, False, DefectCode.ALIGNMENT, 1.0, 1.0, 0, result.error)
    if result.error is not None:
        return ViewVerdict(name, False, DefectCode.INSPECTION_ERROR, 1.0, 1.0, 0, result.error)
    if not (_finite(result.score) and _finite(result.normalized_score)):
        return ViewVerdict(name, False, DefectCode.INSPECTION_ERROR, 1.0, 1.0, 0, "non-finite score: fail-safe NG")
    ok = bool(result.passed)
    return ViewVerdict(name, ok, DefectCode.OK if ok else DefectCode.ANOMALY, float(result.normalized_score),
                       max_pixel_score(result), int(sum(r.area for r in result.regions)))


def max_pixel_score(result: Result) -> float:
    """Anomaly-map maximum normalised like the image score: 0.5 = the effective pixel threshold (0.0 when the
    result carries no map)."""
    amap, rng, thr = result.anomaly_map, result.map_range, result.pixel_threshold
    if amap is None or amap.size == 0 or rng is None or thr is None:
        return 0.0
    v = float(normalize_score(float(np.max(amap)), float(thr), float(rng[0]), float(rng[1])))
    return v if math.isfinite(v) else 1.0


def _finite(x: object) -> bool:
    try:
        return math.isfinite(float(x))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def _str(v: object) -> str | None:
    return None if v is None else str(v)
