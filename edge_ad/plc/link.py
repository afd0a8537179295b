"""The PLC link: one adapter protocol for every transport, plus the reliability every transport needs.

`PlcAdapter` is what a protocol module implements (OPC UA, Modbus TCP, S7): connect, read the PLC -> vision
signals, write vision -> PLC signals. `PlcLink` wraps one adapter and adds what the line relies on:

- reconnect with exponential backoff (a PLC restart never crashes the caller; `service()` just reports "down").
  Any exception an adapter raises, not only PlcConnectionError (a library bug, an event-loop error under load),
  closes the adapter and restarts the link the same way, and is counted in `failures`;
- a bounded, ordered result queue: results produced while the link is down, or while the PLC has not yet
  acknowledged the previous one, wait and are delivered in order; a full queue refuses the new result, counts it
  in `QueueOverflows` and raises the latched QUEUE_OVERFLOW fault (never a silent drop);
- heartbeat both ways: `Heartbeat` is incremented every `heartbeat_s`; `PlcHeartbeat` is watched and the
  PLC_HEARTBEAT fault is raised when it stops changing for `plc_watchdog_s` (armed after its first change, so
  PLC programs without a heartbeat are not faulted);
- the handshake order of a result: result fields in one write, then the `ResultValid` toggle in a second write.
  After a reconnect the whole output image is rewritten (fields first, toggle last), so a PLC that restarted
  with zeroed memory sees the current state again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Protocol

from edge_ad.backoff import ExponentialBackoff
from edge_ad.errors import PlcConnectionError, PlcError
from edge_ad.plc.signals import (
    BY_NAME,
    FaultCode,
    coerce,
    default_inputs,
    default_outputs,
    result_signals,
)
from edge_ad.plc.transport import LoopThread, Value, parse_url, require
from edge_ad.plugins import Plugin, Registry
from edge_ad.station.record import InspectionRecord

log = logging.getLogger(__name__)


class PlcAdapter(Protocol):
    """A transport. Every method may raise PlcConnectionError; values are keyed by signal name."""

    description: str

    def connect(self) -> None:
        """Open the connection (client) or start serving (server)."""

    def close(self) -> None:
        """Release sockets/threads; safe to call twice and after a failed connect."""

    def read_inputs(self) -> dict[str, Value]:
        """All PLC -> vision signals."""

    def read_outputs(self) -> dict[str, Value]:
        """All vision -> PLC signals as the peer holds them now (used once to resume ResultValid/ResultSeq)."""

    def write_outputs(self, values: Mapping[str, Value]) -> None:
        """Write some vision -> PLC signals in one transaction where the protocol allows it."""


#: URL scheme -> the protocol module's `adapter_from_url` (protocol libraries are imported only on connect)
#: PLC URL scheme -> adapter; each factory is the protocol module's `adapter_from_url(url)`
PLC_ADAPTERS: Registry[PlcAdapter] = Registry("PLC adapter")
for _scheme, _module, _needs, _what in (
        ("opcua", "opcua", "asyncua", "OPC UA server (the PLC reads/writes the EdgeAD node tree)"),
        ("opcua-client", "opcua", "asyncua", "OPC UA client writing into the PLC's server"),
        ("modbus", "modbus", "pymodbus", "Modbus TCP server (the PLC is the client)"),
        ("modbus-client", "modbus", "pymodbus", "Modbus TCP client writing the PLC's holding registers"),
        ("s7", "s7", "snap7", "Siemens S7 data block (python-snap7)")):
    PLC_ADAPTERS.register(Plugin(_scheme, f"edge_ad.plc.{_module}:adapter_from_url", _what, needs=(_needs,)))


def open_adapter(url: str) -> PlcAdapter:
    """Adapter for a PLC URL (not yet connected). Schemes: opcua, opcua-client, modbus, modbus-client, s7."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in PLC_ADAPTERS:
        raise PlcError(f"--plc {url!r}: unknown scheme {scheme!r}; expected "
                       f"{', '.join(s + '://' for s in PLC_ADAPTERS.names())}")
    return PLC_ADAPTERS.get(scheme).load()(url)


class PlcLink:
    """Reliable result delivery and status over one adapter; call `service()` from one thread, periodically.

    ack=True: the next queued result is posted only once the PLC's `ResultAck` equals `ResultValid`.
    ack=False: results are posted as they come, at least `hold_s` apart so each toggle is seen by the PLC scan.
    """

    def __init__(self, adapter: PlcAdapter, *, queue_size: int = 64, ack: bool = True, hold_s: float = 0.05,
                 heartbeat_s: float = 0.5, plc_watchdog_s: float = 2.0, backoff_s: tuple[float, float] = (0.2, 5.0),
                 ) -> None:
        if queue_size < 1:
            raise PlcError(f"queue_size: expected >= 1, got {queue_size}")
        if heartbeat_s <= 0 or hold_s < 0 or plc_watchdog_s < 0 or not 0 < backoff_s[0] <= backoff_s[1]:
            raise PlcError(f"PlcLink timing: expected heartbeat_s > 0, hold_s >= 0, plc_watchdog_s >= 0 and "
                           f"0 < backoff min <= max, got {heartbeat_s}, {hold_s}, {plc_watchdog_s}, {backoff_s}")
        self.adapter = adapter
        self.ack = ack
        self.hold_s = hold_s
        self.heartbeat_s = heartbeat_s
        self.plc_watchdog_s = plc_watchdog_s
        self.queue_size = queue_size
        self._backoff = ExponentialBackoff(*backoff_s)
        self._queue: deque[InspectionRecord] = deque()
        self._outputs: dict[str, Value] = default_outputs()
        self._lock = threading.Lock()
        self._connected = False
        self._resumed = False
        self._posted_at = -1e9
        self._hb_at = 0.0
        self._plc_hb: Value | None = None
        self._plc_hb_changed_at: float | None = None
        self.inputs: dict[str, Value] = default_inputs()
        self.overflows = 0
        self.delivered = 0
        self.reconnects = 0
        self.failures = 0
        self.latched_overflow = False
        self.plc_heartbeat_lost = False
        self.last_error: str | None = None

    # ---- state -----------------------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def queue_depth(self) -> int:
        """Results waiting to be posted."""
        return len(self._queue)

    @property
    def outputs(self) -> dict[str, Value]:
        """Copy of the output image (what the PLC sees once connected)."""
        with self._lock:
            return dict(self._outputs)

    def faults(self) -> list[FaultCode]:
        """Faults owned by the link: QUEUE_OVERFLOW (latched) and PLC_HEARTBEAT (condition)."""
        out = [FaultCode.QUEUE_OVERFLOW] if self.latched_overflow else []
        return out + ([FaultCode.PLC_HEARTBEAT] if self.plc_heartbeat_lost else [])

    def reset_faults(self) -> None:
        """Clear the latched overflow fault (the PLC's FaultReset)."""
        self.latched_overflow = False

    # ---- producer side ---------------------------------------------------------------------------------------
    def post(self, record: InspectionRecord) -> bool:
        """Queue a result for in-order delivery; False (counted, fault latched) when the queue is full."""
        with self._lock:
            if len(self._queue) >= self.queue_size:
                self.overflows += 1
                self.latched_overflow = True
                log.error("PLC result queue full (%d): result seq %d part %d refused (overflow #%d)",
                          self.queue_size, record.seq, record.part_id, self.overflows)
                accepted = False
            else:
                self._queue.append(record)
                accepted = True
            self._outputs["QueueOverflows"] = coerce(BY_NAME["QueueOverflows"], self.overflows)
            self._outputs["QueueDepth"] = coerce(BY_NAME["QueueDepth"], len(self._queue))
        return accepted

    def set(self, values: Mapping[str, Value]) -> None:
        """Update status outputs (not result fields) and write the changed ones now if connected."""
        changed: dict[str, Value] = {}
        with self._lock:
            for name, v in values.items():
                sig = BY_NAME.get(name)
                if sig is None or sig.direction != "out":
                    raise PlcError(f"PlcLink.set: {name!r} is not a vision -> PLC signal")
                cv = coerce(sig, v)
                if self._outputs[name] != cv:
                    self._outputs[name] = cv
                    changed[name] = cv
        if changed:
            self._write(changed)

    # ---- service loop ----------------------------------------------------------------------------------------
    def service(self, now: float | None = None) -> bool:
        """One step: reconnect if due, heartbeat, read inputs, watchdog, post the next result. True if connected."""
        now = time.monotonic() if now is None else now
        if not self._connected and self._backoff.due(now):
            self._try_connect(now)
        if not self._connected:
            return False
        try:
            inputs = self.adapter.read_inputs()
        except Exception as e:
            self._lost(e, now)
            return False
        self.inputs = inputs
        self._watch_plc_heartbeat(inputs, now)
        if now - self._hb_at >= self.heartbeat_s:
            self._hb_at = now
            with self._lock:
                self._outputs["Heartbeat"] = (int(self._outputs["Heartbeat"]) + 1) & 0xFFFF
                hb = self._outputs["Heartbeat"]
            self._write({"Heartbeat": hb})
        if self._connected:
            self._deliver(inputs, now)
        return self._connected

    def deliver_now(self) -> None:
        """Post the next queued result now if the link and the ack state allow (uses the last inputs read)."""
        if self._connected:
            self._deliver(self.inputs, time.monotonic())

    def _deliver(self, inputs: Mapping[str, Value], now: float) -> None:
        with self._lock:
            if not self._queue:
                return
            if self.ack and bool(inputs.get("ResultAck")) != bool(self._outputs["ResultValid"]):
                return  # previous result not yet acknowledged
            if not self.ack and now - self._posted_at < self.hold_s:
                return
            rec = self._queue.popleft()
            fields = result_signals(rec)
            fields["QueueDepth"] = len(self._queue)
            self._outputs.update(fields)
            self._outputs["ResultValid"] = not self._outputs["ResultValid"]
            toggle = {"ResultValid": self._outputs["ResultValid"]}
            self._posted_at = now
        # from here the record lives in the output image: a failed write is repeated by the reconnect rewrite
        if self._write(fields):
            self._write(toggle)
        self.delivered += 1
        log.debug("posted result seq %d part %d (%s)", rec.seq, rec.part_id, "OK" if rec.ok else "NG")

    def _write(self, values: Mapping[str, Value]) -> bool:
        if not self._connected:
            return False
        try:
            self.adapter.write_outputs(values)
            return True
        except Exception as e:
            self._lost(e, time.monotonic())
            return False

    def _try_connect(self, now: float) -> None:
        try:
            self.adapter.connect()
            if not self._resumed:
                self._resume(self.adapter.read_outputs())
            with self._lock:
                image = dict(self._outputs)
            toggle = {"ResultValid": image.pop("ResultValid")}
            self.adapter.write_outputs(image)
            self.adapter.write_outputs(toggle)
        except Exception as e:
            if not isinstance(e, PlcConnectionError):
                log.error("PLC adapter %s failed unexpectedly while connecting: %s: %s", self.adapter.description,
                          type(e).__name__, e)
            self.last_error = _describe(e)
            self._safe_close()
            delay = self._backoff.failed(now)
            log.warning("PLC %s unreachable (%s); retry in %.1f s", self.adapter.description, e, delay)
            return
        if self._resumed:
            self.reconnects += 1
        self._resumed = True
        self._connected = True
        self._backoff.succeeded()
        self._plc_hb, self._plc_hb_changed_at = None, None
        log.info("PLC link up: %s", self.adapter.description)

    def _resume(self, current: Mapping[str, Value]) -> None:
        """First connect: continue the PLC's ResultValid phase and ResultSeq, so no spurious toggle is seen."""
        with self._lock:
            self._outputs["ResultValid"] = bool(current.get("ResultValid", False))
            self._outputs["ResultSeq"] = coerce(BY_NAME["ResultSeq"], current.get("ResultSeq", 0))

    def last_seq(self) -> int:
        """Highest result sequence number posted or queued (so a producer continues the numbering)."""
        with self._lock:
            return int(self._queue[-1].seq) if self._queue else int(self._outputs["ResultSeq"])

    def _lost(self, err: Exception, now: float) -> None:
        if not isinstance(err, PlcConnectionError):
            log.error("PLC adapter %s failed unexpectedly: %s: %s; restarting the link", self.adapter.description,
                      type(err).__name__, err)
        self.failures += 1
        self._connected = False
        self.last_error = _describe(err)
        self.inputs = default_inputs()
        self._safe_close()
        self._backoff.failed(now)
        log.warning("PLC link lost (%s): %s; reconnecting", self.adapter.description, err)

    def _safe_close(self) -> None:
        try:
            self.adapter.close()
        except Exception as e:
            log.debug("closing %s: %s: %s", self.adapter.description, type(e).__name__, e)

    def _watch_plc_heartbeat(self, inputs: Mapping[str, Value], now: float) -> None:
        hb = inputs.get("PlcHeartbeat")
        if self._plc_hb is None:
            self._plc_hb = hb
        elif hb != self._plc_hb:
            self._plc_hb, self._plc_hb_changed_at = hb, now
            if self.plc_heartbeat_lost:
                log.info("PLC heartbeat back")
            self.plc_heartbeat_lost = False
        elif (self.plc_watchdog_s > 0 and self._plc_hb_changed_at is not None
              and now - self._plc_hb_changed_at > self.plc_watchdog_s and not self.plc_heartbeat_lost):
            self.plc_heartbeat_lost = True
            log.error("PLC heartbeat unchanged for %.1f s", now - self._plc_hb_changed_at)

    def close(self) -> None:
        """Write Ready = Busy = 0 if connected (best effort), then close the adapter."""
        self.set({"Ready": False, "Busy": False})
        self._connected = False
        self._safe_close()
        if self._queue:
            log.warning("PLC link closed with %d undelivered result(s): seq %s", len(self._queue),
                        [r.seq for r in self._queue])


def _describe(err: Exception) -> str:
    """Message of an adapter error; unexpected ones keep their type name, so the log says what broke."""
    return str(err) if isinstance(err, PlcConnectionError) else f"{type(err).__name__}: {err}"


__all__ = ["LoopThread", "PlcAdapter", "PlcConnectionError", "PlcError", "PlcLink", "open_adapter", "parse_url",
           "require"]
