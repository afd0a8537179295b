"""The inspection record: one part's verdict as the line acts on it (PLC, traceability, MQTT, HMI), and its
decision codes. Knows nothing of any protocol: the PLC layer encodes it (`edge_ad.plc.signals.result_signals`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

#: the most views (cameras) one part may have: the PLC signal set carries a result bit and a defect code per view
MAX_VIEWS = 8


class DefectCode(IntEnum):
    """Why a part is NG (0 = OK). The model is unsupervised, so there is one 'anomaly' class."""

    OK = 0
    ANOMALY = 1  #: score above the threshold
    LATE = 2  #: no result within the time budget (fail-safe NG)
    INSPECTION_ERROR = 3  #: the image could not be inspected (fail-safe NG)
    NO_IMAGE = 4  #: the source delivered no frame (fail-safe NG)
    ALIGNMENT = 5  #: the part could not be located against the package's reference (fail-safe NG, not inspected)


#: the four decisions a record is stored and shown with
DECISIONS: tuple[str, ...] = ("OK", "NG", "FAILED", "LATE")


def decision_of(ok: bool, late: bool, defect_code: int) -> str:
    """OK, or why not: LATE (time budget), FAILED (no usable image / inspection error), NG (anomaly)."""
    if ok:
        return "OK"
    if late:
        return "LATE"
    failed = (DefectCode.INSPECTION_ERROR, DefectCode.NO_IMAGE, DefectCode.ALIGNMENT)
    return "FAILED" if defect_code in failed else "NG"


#: defect codes that mean a view could not be judged (a fault of that view, not an anomaly of the part)
VIEW_FAULTS = (DefectCode.LATE, DefectCode.INSPECTION_ERROR, DefectCode.NO_IMAGE, DefectCode.ALIGNMENT)


@dataclass(frozen=True)
class ViewVerdict:
    """One view's share of a part's verdict (multi-view stations): its name, OK or the defect code, its
    normalised scores and defect area, and why it failed (`error`)."""

    name: str
    ok: bool
    defect_code: DefectCode
    anomaly_score: float
    max_pixel_score: float
    defect_area: int
    error: str | None = None

    @property
    def fault(self) -> bool:
        """The view could not be judged (no frame, late, unreadable, not aligned): NG with a fault."""
        return self.defect_code in VIEW_FAULTS

    @property
    def decision(self) -> str:
        finite = math.isfinite(self.anomaly_score) and math.isfinite(self.max_pixel_score)
        return decision_of(self.ok and finite, self.defect_code == DefectCode.LATE, int(self.defect_code))


@dataclass(frozen=True)
class InspectionRecord:
    """One result as the line sees it. `anomaly_score`/`max_pixel_score` are normalised (0.5 = threshold);
    `model_id` is the active product recipe; `inspection_ms` runs from the trigger (or capture) to the verdict. A
    multi-view part's record combines its `views`: OK only when every view is OK."""

    seq: int
    part_id: int
    ok: bool
    defect_code: DefectCode
    anomaly_score: float
    max_pixel_score: float
    defect_area: int
    inspection_ms: float
    model_id: int
    late: bool = False
    error: str | None = None
    views: tuple[ViewVerdict, ...] = ()  #: per-view verdicts of a multi-view station (empty: one camera)

    @property
    def ng(self) -> bool:
        """Every result that is not OK is NG (fail-safe)."""
        return not self.ok

    @property
    def finite(self) -> bool:
        """Both scores are finite: a record with a non-finite score is never OK."""
        return math.isfinite(self.anomaly_score) and math.isfinite(self.max_pixel_score)

    @property
    def decision(self) -> str:
        """OK / NG / FAILED / LATE (see `decision_of`)."""
        return decision_of(self.ok and self.finite, self.late, int(self.defect_code))
