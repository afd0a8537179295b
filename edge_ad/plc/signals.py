"""The PLC signal set and its fixed layout on every protocol (Modbus registers, S7 DB bytes, OPC UA nodes).

One table (`SIGNALS`) is the single source of truth: the adapters encode from it and `layout_markdown()` renders
the documentation in samples/README.md from it (a test keeps the two equal), so the documented addresses are
the ones on the wire.

Handshake (PLC = the line's controller, vision = edge-ad):

1. vision holds `Ready` = 1 while it can accept a trigger.
2. PLC writes `PartId`, then sets `Trigger` = 1.
3. vision answers on the rising edge with `Ready` = 0, `Busy` = 1, `TriggerAck` = 1 (one write), grabs and inspects.
4. vision writes the result fields (`OK`, `NG`, `Late`, `DefectCode`, scores, `PartIdEcho`, `ResultSeq`, ...),
   then *toggles* `ResultValid` in a second write, then writes `Busy` = 0.
5. PLC sees the toggle, reads the result, copies `ResultValid` into `ResultAck` and clears `Trigger`.
6. vision drops `TriggerAck` when `Trigger` is 0 and raises `Ready` again.

A missing result within the time budget gives a fail-safe NG with `Late` = 1. Results are queued in order and the
next one is posted only after the PLC's `ResultAck` equals `ResultValid` (ack mode), so no result is overwritten
unseen. Both sides run heartbeat counters: vision increments `Heartbeat`, the PLC increments `PlcHeartbeat`.

Multi-view stations (several cameras, one part) publish one result per part: `OK`/`NG` is the combined verdict
(any view NG -> NG; a view without a frame -> NG with its fault), and `ViewNG`, `ViewFault` and
`ViewDefectCode1..8` say which view failed and why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Literal

from edge_ad.station.record import MAX_VIEWS, DefectCode, InspectionRecord, ViewVerdict

SignalType = Literal["BOOL", "UINT16", "UINT32", "REAL"]
Direction = Literal["in", "out"]

#: Modbus registers and S7 bytes each type occupies.
TYPE_REGISTERS: dict[str, int] = {"BOOL": 1, "UINT16": 1, "UINT32": 2, "REAL": 2}
TYPE_BYTES: dict[str, int] = {"BOOL": 1, "UINT16": 2, "UINT32": 4, "REAL": 4}
#: Address prefixes in Siemens notation per type (bit address for BOOL).
_S7_PREFIX: dict[str, str] = {"BOOL": "DBX", "UINT16": "DBW", "UINT32": "DBD", "REAL": "DBD"}
_S7_TYPE: dict[str, str] = {"BOOL": "Bool", "UINT16": "UInt / Word", "UINT32": "UDInt", "REAL": "Real"}


class FaultCode(IntEnum):
    """Why `Fault` is set; `FaultCode` shows the first active one. Latched codes clear on a `FaultReset` edge."""

    NONE = 0
    SOURCE = 10  #: camera/source failed to open or to deliver frames (clears when frames arrive again)
    INSPECTION = 11  #: the detector raised (latched)
    RECIPE_UNKNOWN = 20  #: RecipeRequest names no configured recipe (latched)
    RECIPE_LOAD = 21  #: the requested recipe's package failed to load (latched)
    QUEUE_OVERFLOW = 30  #: the result queue was full and a result was refused (latched)
    PLC_HEARTBEAT = 31  #: PlcHeartbeat stopped changing (clears when it changes again)
    TRIGGER_IGNORED = 32  #: a Trigger edge came while an inspection or recipe switch was running (latched)
    LATE_REPEATED = 40  #: several consecutive late results (latched)


class VisionState(IntEnum):
    """`VisionState`: the state names of the OPC 40100 VisionStateMachine (Operational sub-states flattened)."""

    PREOPERATIONAL = 0  #: starting, loading a model
    HALTED = 1  #: stopped
    ERROR = 2  #: a fault is active
    READY = 3  #: Operational / Ready
    SINGLE_EXECUTION = 4  #: Operational / SingleExecution (inspecting on a trigger)
    CONTINUOUS_EXECUTION = 5  #: Operational / ContinuousExecution (camera-triggered or free-run)


#: OPC 40100 state names shown in the OPC UA node VisionStateMachine/CurrentState.
STATE_NAMES: dict[VisionState, str] = {
    VisionState.PREOPERATIONAL: "Preoperational",
    VisionState.HALTED: "Halted",
    VisionState.ERROR: "Error",
    VisionState.READY: "Operational.Ready",
    VisionState.SINGLE_EXECUTION: "Operational.SingleExecution",
    VisionState.CONTINUOUS_EXECUTION: "Operational.ContinuousExecution",
}


@dataclass(frozen=True)
class Signal:
    """One handshake signal: name, type, direction and its address on every protocol.

    `register` is the Modbus holding-register offset from the configured base; `s7_byte`/`s7_bit` the offset in
    the DB; `group` the OPC UA folder under the EdgeAD object (OPC 40100 names where one fits).
    """

    name: str
    type: SignalType
    direction: Direction
    group: str
    register: int
    s7_byte: int
    s7_bit: int
    doc: str

    @property
    def s7_address(self) -> str:
        """Siemens notation, e.g. DBX12.3, DBW14, DBD18."""
        addr = f"{_S7_PREFIX[self.type]}{self.s7_byte}"
        return f"{addr}.{self.s7_bit}" if self.type == "BOOL" else addr


def _s(name: str, typ: SignalType, direction: Direction, group: str, reg: int, byte: int, bit: int, doc: str) -> Signal:
    return Signal(name, typ, direction, group, reg, byte, bit, doc)


SIGNALS: tuple[Signal, ...] = (
    # ---- PLC -> vision ---------------------------------------------------------------------------------------
    _s("Trigger", "BOOL", "in", "Control", 0, 0, 0, "rising edge starts one inspection (trigger mode 'plc')"),
    _s("ResultAck", "BOOL", "in", "Control", 1, 0, 1, "PLC copies ResultValid here after reading a result"),
    _s("FaultReset", "BOOL", "in", "Control", 2, 0, 2, "rising edge clears latched faults"),
    _s("RecipeRequest", "UINT16", "in", "RecipeManagement", 3, 2, 0, "recipe index to switch to (0 = keep)"),
    _s("PartId", "UINT32", "in", "Control", 4, 4, 0, "part/sequence number, written before Trigger"),
    _s("PlcHeartbeat", "UINT16", "in", "Control", 6, 8, 0, "PLC counter; vision faults if it stops changing"),
    # ---- vision -> PLC ---------------------------------------------------------------------------------------
    _s("Ready", "BOOL", "out", "Status", 10, 12, 0, "a trigger will be accepted"),
    _s("Busy", "BOOL", "out", "Status", 11, 12, 1, "an inspection is running"),
    _s("TriggerAck", "BOOL", "out", "Status", 12, 12, 2, "trigger seen; falls when Trigger falls"),
    _s("ResultValid", "BOOL", "out", "ResultManagement", 13, 12, 3, "toggles once per new result"),
    _s("OK", "BOOL", "out", "ResultManagement", 14, 12, 4, "part good"),
    _s("NG", "BOOL", "out", "ResultManagement", 15, 12, 5, "part rejected (anomaly, late or error)"),
    _s("Late", "BOOL", "out", "ResultManagement", 16, 12, 6, "time budget exceeded: fail-safe NG"),
    _s("Fault", "BOOL", "out", "Status", 17, 12, 7, "a fault is active (see FaultCode)"),
    _s("FaultCode", "UINT16", "out", "Status", 18, 14, 0, "first active FaultCode (0 = none)"),
    _s("DefectCode", "UINT16", "out", "ResultManagement", 19, 16, 0, "DefectCode of the result (0 = OK)"),
    _s("AnomalyScore", "REAL", "out", "ResultManagement", 20, 18, 0, "image score normalised, 0.5 = threshold"),
    _s(
        "MaxPixelScore",
        "REAL",
        "out",
        "ResultManagement",
        22,
        22,
        0,
        "anomaly-map max normalised, 0.5 = pixel threshold",
    ),
    _s("DefectArea", "UINT32", "out", "ResultManagement", 24, 26, 0, "anomalous area in source pixels"),
    _s("PartIdEcho", "UINT32", "out", "ResultManagement", 26, 30, 0, "PartId latched at the trigger"),
    _s("ResultSeq", "UINT32", "out", "ResultManagement", 28, 34, 0, "result sequence number (1, 2, ...)"),
    _s("InspectionTime", "REAL", "out", "ResultManagement", 30, 38, 0, "trigger to result, milliseconds"),
    _s("ModelId", "UINT16", "out", "RecipeManagement", 32, 42, 0, "active recipe index"),
    _s("Heartbeat", "UINT16", "out", "Status", 33, 44, 0, "vision counter, +1 every heartbeat period"),
    _s("VisionState", "UINT16", "out", "VisionStateMachine", 34, 46, 0, "VisionState (OPC 40100 names)"),
    _s("QueueOverflows", "UINT32", "out", "Status", 35, 48, 0, "results refused because the queue was full"),
    _s("QueueDepth", "UINT16", "out", "Status", 37, 52, 0, "results waiting for delivery"),
    _s("TriggersIgnored", "UINT32", "out", "Status", 38, 54, 0, "Trigger edges ignored because vision was busy"),
    # ---- per view (multi-view stations; one camera: view 1 mirrors the part) -----------------------------------
    _s("ViewNG", "UINT16", "out", "ResultManagement", 40, 58, 0,
       "bit i-1 set: view i is NG (anomaly or fault); the order of `views` in the station config"),
    _s("ViewFault", "UINT16", "out", "ResultManagement", 41, 60, 0,
       "bit i-1 set: view i could not be judged (no frame, late, unreadable, not aligned)"),
    *(_s(f"ViewDefectCode{i}", "UINT16", "out", "ResultManagement", 41 + i, 60 + 2 * i, 0,
         f"DefectCode of view {i} (0 = OK or no such view)") for i in range(1, MAX_VIEWS + 1)),
    # ---- the model's life on the line --------------------------------------------------------------------------
    _s("Drift", "UINT16", "out", "Status", 50, 78, 0,
       "drift monitor: 0 OK, 1 WARN, 2 ALARM (the line no longer looks like the model's good images)"),
)

BY_NAME: dict[str, Signal] = {s.name: s for s in SIGNALS}
INPUTS: tuple[Signal, ...] = tuple(s for s in SIGNALS if s.direction == "in")
OUTPUTS: tuple[Signal, ...] = tuple(s for s in SIGNALS if s.direction == "out")
#: Output signals that make up one result (written before the ResultValid toggle).
RESULT_FIELDS: tuple[str, ...] = ("OK", "NG", "Late", "DefectCode", "AnomalyScore", "MaxPixelScore", "DefectArea",
                                  "PartIdEcho", "ResultSeq", "InspectionTime", "ModelId", "ViewNG", "ViewFault",
                                  *(f"ViewDefectCode{i}" for i in range(1, MAX_VIEWS + 1)))
#: Modbus: holding registers used from the base (inputs start at +0, outputs at +OUTPUT_REGISTER).
REGISTER_COUNT: int = max(s.register + TYPE_REGISTERS[s.type] for s in SIGNALS)
OUTPUT_REGISTER: int = min(s.register for s in OUTPUTS)
#: S7: bytes of the DB used (inputs from byte 0, outputs from OUTPUT_BYTE).
DB_SIZE: int = max(s.s7_byte + TYPE_BYTES[s.type] for s in SIGNALS)
OUTPUT_BYTE: int = min(s.s7_byte for s in OUTPUTS)
INPUT_BYTES: int = max(s.s7_byte + TYPE_BYTES[s.type] for s in INPUTS)


def default_value(sig: Signal) -> bool | int | float:
    """Zero of the signal's type."""
    return False if sig.type == "BOOL" else 0.0 if sig.type == "REAL" else 0


def coerce(sig: Signal, value: Any) -> bool | int | float:
    """Clamp a Python value to the signal's wire type (BOOL, unsigned ranges, finite REAL)."""
    if sig.type == "BOOL":
        return bool(value)
    if sig.type == "REAL":
        f = float(value)
        return f if math.isfinite(f) else 0.0
    top = 0xFFFF if sig.type == "UINT16" else 0xFFFFFFFF
    return max(0, min(top, int(value)))


def default_outputs() -> dict[str, bool | int | float]:
    """All vision -> PLC signals at their zero values."""
    return {s.name: default_value(s) for s in OUTPUTS}


def default_inputs() -> dict[str, bool | int | float]:
    """All PLC -> vision signals at their zero values (what a disconnected PLC reads as)."""
    return {s.name: default_value(s) for s in INPUTS}


def result_signals(rec: InspectionRecord) -> dict[str, bool | int | float]:
    """Wire values of the result fields (RESULT_FIELDS) of one record, clamped to their types.

    Fail-safe: a record whose scores are not finite never goes out as OK (it becomes NG, DefectCode
    INSPECTION_ERROR), and non-finite scores are sent as 1.0, so a PLC that only looks at the score rejects too
    (a plain REAL coercion would send 0.0: a perfect part)."""
    finite = rec.finite
    ok = rec.ok and finite
    code = rec.defect_code if finite or not rec.ok else DefectCode.INSPECTION_ERROR
    raw = {"OK": ok, "NG": not ok, "Late": rec.late, "DefectCode": int(code),
           "AnomalyScore": rec.anomaly_score if math.isfinite(rec.anomaly_score) else 1.0,
           "MaxPixelScore": rec.max_pixel_score if math.isfinite(rec.max_pixel_score) else 1.0,
           "DefectArea": rec.defect_area, "PartIdEcho": rec.part_id, "ResultSeq": rec.seq,
           "InspectionTime": rec.inspection_ms, "ModelId": rec.model_id}
    views = rec.views or (ViewVerdict("", ok, DefectCode(code), 0.0, 0.0, 0),)  # one camera: view 1 is the part
    raw["ViewNG"] = sum(1 << i for i, v in enumerate(views[:MAX_VIEWS]) if not v.ok)
    raw["ViewFault"] = sum(1 << i for i, v in enumerate(views[:MAX_VIEWS]) if v.fault)
    for i in range(MAX_VIEWS):
        raw[f"ViewDefectCode{i + 1}"] = int(views[i].defect_code) if i < len(views) else 0
    return {k: coerce(BY_NAME[k], v) for k, v in raw.items()}


def layout_markdown() -> str:
    """The signal table as Markdown (Modbus register, S7 address, OPC UA browse path), as in samples/README.md."""
    lines = ["| Signal | Dir | Type | Modbus HR | S7 (DBn.) | OPC UA (EdgeAD/...) | Meaning |",
             "|---|---|---|---|---|---|---|"]
    for s in SIGNALS:
        n = TYPE_REGISTERS[s.type]
        reg = str(s.register) if n == 1 else f"{s.register}-{s.register + n - 1}"
        direction = "PLC→vision" if s.direction == "in" else "vision→PLC"
        lines.append(f"| {s.name} | {direction} | {s.type} ({_S7_TYPE[s.type]}) | {reg} | {s.s7_address} | "
                     f"{s.group}/{s.name} | {s.doc} |")
    return "\n".join(lines)
