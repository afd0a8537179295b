"""`Inspector`: one inspection station = a model (recipe table of packages), a frame source and a PLC link.

Trigger modes:

- "plc": a rising edge of the PLC's `Trigger` starts one inspection: a software-triggered camera
  (`trigger_mode == "software"`) is fired with `source.trigger()`, then the next frame is read and inspected.
  `PartId` is latched at the edge and echoed as `PartIdEcho`.
- "camera": a hardware-triggered camera: every frame the source delivers is one part, inspected in arrival order;
  the time budget counts from the frame's capture time. `PartIdEcho` = the PLC's `PartId` if non-zero, else the
  frame id.
- "free": inspect the frames as the source delivers them, one at a time with backpressure (the reader holds at most
  one frame in reserve); the budget counts from when the inspection starts and no new inspection starts while the
  result queue is full, so a PLC that is down or slow never overflows it.

Every inspection has a time budget (`budget_ms`, from the trigger edge or the capture time): when it runs out a
fail-safe NG with `Late` = 1 and DefectCode LATE is published at once and the late result is discarded (logged);
`max_consecutive_late` late results in a row latch the LATE_REPEATED fault. A `Trigger` edge that comes while an
inspection or a recipe switch is running is not queued: it is counted in `TriggersIgnored` and latches the
TRIGGER_IGNORED fault, so the PLC sees that a part went uninspected. Errors (unreadable frame, detector
exception, no frame) are fail-safe NGs too. The PLC switches models by writing a recipe index into `RecipeRequest`;
the package is loaded off the control loop (heartbeat keeps running) and `ModelId` follows once it is active.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edge_ad.errors import ConfigError, EdgeADError
from edge_ad.plc.link import PlcAdapter, PlcError, PlcLink, open_adapter
from edge_ad.plc.signals import FaultCode, VisionState
from edge_ad.runtime.result import Result
from edge_ad.sources.base import SoftwareTriggered, Source
from edge_ad.sources.frame import Frame
from edge_ad.station.config import TRIGGERS, TriggerMode
from edge_ad.station.event import DetectorLike, PackageIdentity, RecordBuilder, part_id_of
from edge_ad.station.record import DefectCode, InspectionRecord
from edge_ad.station.recorders import Recorder
from edge_ad.station.view import StationSnapshot, apply_roi, check_sensitivity

log = logging.getLogger(__name__)


RecipeSpec = DetectorLike | str | Path


@dataclass
class InspectorStats:
    """Counters since start, for the status line and for tests."""

    inspections: int = 0
    ok: int = 0
    ng: int = 0
    late: int = 0
    errors: int = 0
    late_discarded: int = 0
    triggers_ignored: int = 0
    recipe_switches: int = 0
    record_errors: int = 0
    last: InspectionRecord | None = None
    last_ms: list[float] = field(default_factory=list)

    def p50_ms(self) -> float:
        """Median inspection time of the last 100 results (NaN before the first)."""
        return float(np.median(self.last_ms)) if self.last_ms else math.nan


@dataclass
class _Job:
    kind: Literal["inspect", "recipe"]
    future: Future[Any]
    started: float
    deadline: float = math.inf
    part_id: int = 0
    recipe: int = 0
    published: bool = False
    detector: DetectorLike | None = None  #: the one judging this part (a recipe switch never changes it)


class Inspector:
    """Runs the handshake loop. Use `start()`/`stop()` (background thread) or `run()` (blocking), or `with`.

    recipes: a Detector, a package path, or {recipe index (1..65535): Detector or package path}; the lowest index
    (or `initial_recipe`) is loaded at construction so a bad package fails early. `plc`: a PLC URL, an adapter or a
    ready PlcLink (`link_options` go to PlcLink when it is built here). `load_detector(path)` builds a Detector from
    a package path (default `Detector.load(path, backend=backend)`).
    """

    def __init__(self, recipes: RecipeSpec | Mapping[int, RecipeSpec], source: Source,
                 plc: str | PlcAdapter | PlcLink, *, trigger: TriggerMode = "plc", budget_ms: float = 200.0,
                 max_consecutive_late: int = 3, poll_s: float = 0.005, initial_recipe: int | None = None,
                 backend: str = "auto", load_detector: Callable[[str | Path], DetectorLike] | None = None,
                 link_options: Mapping[str, Any] | None = None, stop_when_source_ends: bool = False,
                 recorder: Recorder | None = None) -> None:
        if trigger not in TRIGGERS:
            raise ConfigError(f"trigger: expected one of {', '.join(TRIGGERS)}, got {trigger!r}")
        if not budget_ms > 0 or not poll_s > 0 or max_consecutive_late < 1:
            raise ConfigError(f"Inspector: expected budget_ms > 0, poll_s > 0, max_consecutive_late >= 1, got "
                              f"{budget_ms}, {poll_s}, {max_consecutive_late}")
        table = dict(recipes) if isinstance(recipes, Mapping) else {1: recipes}
        if not table:
            raise ConfigError("recipes: the recipe table is empty")
        for k in table:
            if not isinstance(k, int) or not 1 <= k <= 0xFFFF:
                raise ConfigError(f"recipes: recipe index must be an integer 1..65535 (0 means 'keep'), got {k!r}")
        self.recipes: dict[int, RecipeSpec] = table
        self.trigger = trigger
        self.budget_s = budget_ms / 1e3
        self.max_consecutive_late = max_consecutive_late
        self.poll_s = poll_s
        self.stop_when_source_ends = stop_when_source_ends
        self.recorder = recorder
        self.sensitivity: float | None = None  # None: each detector's own
        self._local_request = 0  # a recipe asked for from the HMI (request_recipe)
        self._load_detector = load_detector or (lambda p: _default_loader(p, backend))
        self.active_recipe = initial_recipe if initial_recipe is not None else min(table)
        if self.active_recipe not in table:
            raise ConfigError(f"initial_recipe: {self.active_recipe} is not in the recipe table {sorted(table)}")
        self._detectors: dict[int, DetectorLike] = {}
        self._owned: list[DetectorLike] = []  # loaded here from package paths: closed by close()
        self.detector = self._detector_for(self.active_recipe)
        self.source = source
        if isinstance(plc, PlcLink):
            self.link = plc
        else:
            adapter = open_adapter(plc) if isinstance(plc, str) else plc
            self.link = PlcLink(adapter, **dict(link_options or {}))
        self.stats = InspectorStats()
        self._job: _Job | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._frames: queue.Queue[Frame] = queue.Queue(maxsize=8 if trigger == "camera" else 1)
        self._reader: threading.Thread | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._prev_trigger = False
        self._prev_reset = False
        self._trigger_ack = False
        self._latched: list[FaultCode] = []
        self._source_fault = False
        self._source_ended = False
        self._bad_request = 0
        self._consecutive_late = 0
        self._builder = RecordBuilder(getattr(source, "source_id", None))
        self._opened = False
        self.crashed: Exception | None = None

    # ---- lifecycle -------------------------------------------------------------------------------------------
    def open(self) -> None:
        """Open the source, start the camera reader (camera mode) and publish the initial state."""
        if self._opened:
            return
        self._stop.clear()
        self.source.open()
        self._opened = True
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-ad-inspect")
        if self.recorder is not None:
            self.recorder.open()
        if self.trigger != "plc":
            self._reader = threading.Thread(target=self._read_frames, name="edge-ad-frames", daemon=True)
            self._reader.start()
        self.link.set({"ModelId": self.active_recipe, "VisionState": VisionState.PREOPERATIONAL})

    def close(self) -> None:
        """Stop the reader, wait for a running inspection, publish Halted, close link and source."""
        self._stop.set()
        if hasattr(self.source, "request_stop"):
            self.source.request_stop()
        if self._reader is not None:
            self._reader.join(5.0)
            self._reader = None
        if self._job is not None:
            try:
                self._job.future.result(timeout=5.0)
            except Exception as e:
                log.warning("closing with an unfinished %s job: %s", self._job.kind, e or type(e).__name__)
            self._job = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        if self._opened:
            self.link.set({"Ready": False, "Busy": False, "VisionState": VisionState.HALTED})
            self.link.service()
            self.link.close()
            self.source.close()
            if self.recorder is not None:
                self.recorder.close()
            self._opened = False
        for det in self._owned:
            det.close()
        self._owned.clear()
        self._detectors = {k: v for k, v in self._detectors.items() if not isinstance(self.recipes[k], (str, Path))}

    def run(self, stop: threading.Event | None = None, duration_s: float | None = None) -> InspectorStats:
        """Run the control loop until `stop` is set, `duration_s` passes or a finite source ends
        (with stop_when_source_ends); returns the counters."""
        self.open()
        end = math.inf if duration_s is None else time.monotonic() + duration_s
        try:
            while not self._stop.is_set() and not (stop is not None and stop.is_set()) and time.monotonic() < end:
                self.step()
                if self._finished():
                    break
                time.sleep(self.poll_s)
        finally:
            self.close()
        return self.stats

    def start(self) -> None:
        """Run the control loop in a background thread."""
        if self._thread is not None:
            raise ConfigError("Inspector.start: already running")
        self.open()
        self._thread = threading.Thread(target=self._loop, name="edge-ad-inspector", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                self.step()
                if self._finished():
                    break
                time.sleep(self.poll_s)
        except Exception as e:  # recorded for the caller (serve exits 1); the traceback goes to the log
            self.crashed = e
            log.exception("inspector loop stopped by an unexpected error")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the background loop and close everything."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.close()

    @property
    def running(self) -> bool:
        """True while the background loop runs."""
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> Inspector:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _finished(self) -> bool:
        return (self.stop_when_source_ends and self._source_ended and self._job is None
                and self._frames.empty() and self.link.queue_depth == 0)

    # ---- one control step ------------------------------------------------------------------------------------
    def step(self) -> None:
        """One iteration: service the link, faults, recipe requests, the running job and triggers; publish status."""
        now = time.monotonic()
        self.link.service(now)
        inp = self.link.inputs
        reset = bool(inp.get("FaultReset"))
        if reset and not self._prev_reset:
            self._reset_faults()
        self._prev_reset = reset
        if self._job is not None:
            self._check_job(now)
        # the PLC's RecipeRequest rules; an HMI request applies while the PLC asks for nothing (0 = keep)
        self._check_recipe_request(int(inp.get("RecipeRequest", 0)) or self._local_request)
        trig = bool(inp.get("Trigger"))
        if self.trigger == "plc":
            if trig and not self._prev_trigger:
                if self._job is None:
                    self._start_inspection(now, part_id=int(inp.get("PartId", 0)), frame=None)
                else:
                    self.stats.triggers_ignored += 1
                    self._latch(FaultCode.TRIGGER_IGNORED, f"trigger for part {inp.get('PartId')} ignored: still "
                                                           f"running a {self._job.kind} job")
                    log.warning("trigger for part %s ignored: still %s (%d ignored)", inp.get("PartId"),
                                self._job.kind, self.stats.triggers_ignored)
            if not trig:
                self._trigger_ack = False
        elif self._job is None:
            self._start_continuous(now, int(inp.get("PartId", 0)))
        self._prev_trigger = trig
        self._publish_status(trig)

    def _publish_status(self, trig: bool) -> None:
        faults = self.faults()
        busy = self._job is not None and self._job.kind == "inspect" and not self._job.published
        ready = (self._job is None and not (self.trigger == "plc" and trig) and self._opened
                 and not self._stop.is_set())
        if faults:
            state = VisionState.ERROR
        elif self._job is not None and self._job.kind == "recipe":
            state = VisionState.PREOPERATIONAL
        elif busy or self.trigger != "plc":
            state = VisionState.SINGLE_EXECUTION if self.trigger == "plc" else VisionState.CONTINUOUS_EXECUTION
        else:
            state = VisionState.READY
        self.link.set({"Ready": ready, "Busy": busy, "TriggerAck": self._trigger_ack, "Fault": bool(faults),
                       "FaultCode": int(faults[0]) if faults else 0, "ModelId": self.active_recipe,
                       "VisionState": state, "TriggersIgnored": self.stats.triggers_ignored})

    def faults(self) -> list[FaultCode]:
        """Active faults, first raised first."""
        out = list(self._latched) + self.link.faults()
        if self._source_fault:
            out.append(FaultCode.SOURCE)
        return list(dict.fromkeys(out))

    def _latch(self, code: FaultCode, why: str) -> None:
        if code not in self._latched:
            self._latched.append(code)
            log.error("fault %s: %s", code.name, why)

    def _reset_faults(self) -> None:
        log.info("fault reset by the PLC (was %s)", [f.name for f in self.faults()])
        self._latched.clear()
        self.link.reset_faults()
        self._consecutive_late = 0
        self._bad_request = 0

    # ---- recipes ---------------------------------------------------------------------------------------------
    def _detector_for(self, index: int) -> DetectorLike:
        if index not in self._detectors:
            spec = self.recipes[index]
            det = self._load_detector(spec) if isinstance(spec, (str, Path)) else spec
            if isinstance(spec, (str, Path)):
                self._owned.append(det)
            if self.sensitivity is not None:
                det.sensitivity = self.sensitivity
            self._detectors[index] = det
        return self._detectors[index]

    @property
    def source_fault(self) -> bool:
        """The camera delivered nothing (or failed) on the last try."""
        return self._source_fault

    def request_recipe(self, index: int) -> None:
        """Switch to recipe `index` like a PLC RecipeRequest would (loaded off the control loop, ModelId follows),
        unless the PLC itself requests a recipe (a non-zero RecipeRequest wins). ConfigError for an unknown index."""
        if isinstance(index, bool) or not isinstance(index, int) or index not in self.recipes:
            raise ConfigError(f"recipe: expected one of {sorted(self.recipes)}, got {index!r}")
        if index == self._bad_request:
            self._bad_request = 0  # an explicit new request retries a recipe that failed to load
        self._local_request = index

    def set_sensitivity(self, value: float) -> None:
        """Effective threshold = threshold / sensitivity, for every recipe, from the next inspection on (an HMI
        engineer action; no restart). ConfigError for a value outside (0, 100]."""
        self.sensitivity = check_sensitivity(value)
        for det in self._detectors.values():
            det.sensitivity = self.sensitivity

    def set_roi(self, category: str | None, mask_png: bytes) -> str:
        """The active recipe's ROI for `category` (an engineer action): from the next part on, no restart."""
        return apply_roi(self.detector, category, mask_png)

    def snapshot(self) -> StationSnapshot:
        """The station's state for the HMI (a `StationView`)."""
        det, s, link = self.detector, self.stats, self.link
        pkg = det.package
        try:
            camera = dict(self.source.stats())
        except Exception:  # a source in the middle of reconnecting
            camera = {}
        return StationSnapshot(
            command="serve", running=self.running or self._opened, recipe=self.active_recipe,
            recipes={k: _label(v) for k, v in self.recipes.items()},
            model=pkg.name if pkg is not None else None, precision=pkg.precision if pkg is not None else None,
            threshold=det.threshold, sensitivity=float(det.sensitivity),
            plc_connected=bool(link.connected), plc_description=link.adapter.description,
            record_errors=s.record_errors, late_discarded=s.late_discarded, triggers_ignored=s.triggers_ignored,
            source_fault=self._source_fault, camera=camera,
            roi_categories=sorted(getattr(getattr(det, "geometry", None), "references", {}) or {}))

    def _check_recipe_request(self, req: int) -> None:
        if req == 0 or req == self.active_recipe or req == self._bad_request or self._job is not None:
            return
        if req not in self.recipes:
            self._bad_request = req
            self._latch(FaultCode.RECIPE_UNKNOWN, f"RecipeRequest {req} is not in the recipe table "
                                                  f"{sorted(self.recipes)}")
            return
        log.info("switching to recipe %d", req)
        assert self._executor is not None
        fut = self._executor.submit(self._detector_for, req)
        self._job = _Job("recipe", fut, time.monotonic(), recipe=req)

    # ---- inspections -----------------------------------------------------------------------------------------
    def _start_inspection(self, now: float, part_id: int, frame: Frame | None) -> None:
        """Accept a trigger (frame None: grab one) or a camera frame: Busy, TriggerAck, then inspect off-loop."""
        capture = frame.capture_monotonic if self.trigger == "camera" and frame is not None else now
        start = min(now, capture)
        if self.trigger == "plc":
            self._trigger_ack = True
            self.link.set({"Ready": False, "Busy": True, "TriggerAck": True})
        else:
            self.link.set({"Ready": False, "Busy": True})
        deadline = start + self.budget_s
        assert self._executor is not None
        fut = self._executor.submit(self._inspect, self.detector, frame, deadline)
        self._job = _Job("inspect", fut, start, deadline=deadline, part_id=part_id, recipe=self.active_recipe,
                         detector=self.detector)

    def _start_continuous(self, now: float, plc_part_id: int) -> None:
        if self.trigger == "free" and self.link.queue_depth >= self.link.queue_size:
            return  # self-paced: wait for the PLC to take results
        try:
            frame = self._frames.get_nowait()
        except queue.Empty:
            return
        self._start_inspection(now, part_id_of(frame.meta(), plc_part_id), frame)

    def _inspect(self, det: DetectorLike, frame: Frame | None, deadline: float) -> tuple[Frame | None,
                                                                                          Result | None, float]:
        """Worker thread: grab (if needed) and predict -> (frame, Result or None if no frame came, finish time)."""
        if frame is None:
            try:
                if isinstance(self.source, SoftwareTriggered) and self.source.trigger_mode == "software":
                    self.source.trigger()
                frame = self.source.read(timeout=max(0.001, deadline - time.monotonic()))
            except EdgeADError as e:
                log.error("source: %s", e)
                frame = None
            if frame is None:
                return None, None, time.monotonic()
        meta = frame.meta()
        if frame.image is None:
            result = Result.failed(frame.error or "frame without image", frame=meta)
        else:
            result = det.predict(frame.image, frame=meta)
        return frame, result, time.monotonic()

    def _check_job(self, now: float) -> None:
        job = self._job
        assert job is not None
        if job.kind == "recipe":
            if job.future.done():
                self._finish_recipe(job)
            return
        if job.future.done():
            self._job = None
            self._finish_inspection(job, now)
        elif not job.published and now > job.deadline:
            job.published = True
            self._publish(job, self._failsafe(job, DefectCode.LATE, now, late=True, error="time budget exceeded"))
            log.warning("part %d: no result within %.0f ms: fail-safe NG (late)", job.part_id, self.budget_s * 1e3)

    def _finish_recipe(self, job: _Job) -> None:
        self._job = None
        try:
            self.detector = job.future.result()
        except Exception as e:
            self._bad_request = job.recipe
            if job.recipe == self._local_request:
                self._local_request = 0
            self._latch(FaultCode.RECIPE_LOAD, f"recipe {job.recipe} ({self.recipes[job.recipe]}): {e}")
            return
        self.active_recipe = job.recipe
        if job.recipe == self._local_request:
            self._local_request = 0
        self.stats.recipe_switches += 1
        log.info("recipe %d active (%s)", job.recipe, self.recipes[job.recipe])

    def _finish_inspection(self, job: _Job, now: float) -> None:
        frame: Frame | None
        result: Result | None
        try:
            frame, result, done_at = job.future.result()
        except Exception as e:
            log.exception("part %d: inspection failed", job.part_id)
            self._latch(FaultCode.INSPECTION, f"{type(e).__name__}: {e}")
            frame, done_at = None, now
            result = Result.failed(f"{type(e).__name__}: {e}")
        if frame is None and result is None:
            self._source_fault = True
        elif frame is not None:
            self._source_fault = False
        if not job.published and done_at > job.deadline:  # finished late, between two control steps
            job.published = True
            self._publish(job, self._failsafe(job, DefectCode.LATE, done_at, late=True, error="time budget exceeded"))
        if job.published:  # the fail-safe NG already went out
            self.stats.late_discarded += 1
            log.warning("part %d: late result %s after %.0f ms discarded (fail-safe NG was sent)", job.part_id,
                        result.status if result is not None else "NO_IMAGE", (now - job.started) * 1e3)
            return
        self._consecutive_late = 0
        if result is None:
            rec = self._failsafe(job, DefectCode.NO_IMAGE, done_at, error="no frame from the source")
        else:
            rec = self._builder.verdict(result, part_id=job.part_id, inspection_ms=(done_at - job.started) * 1e3,
                                        recipe=job.recipe, seq=self._next_seq())
        self._publish(job, rec, frame, result)

    def _next_seq(self) -> int:
        return self._builder.next_seq(self.link.last_seq())

    def _failsafe(self, job: _Job, code: DefectCode, now: float, late: bool = False,
                  error: str | None = None) -> InspectionRecord:
        """A fail-safe NG: scores at 1.0 so a PLC that only looks at the score rejects too."""
        return self._builder.failsafe(code, part_id=job.part_id, inspection_ms=(now - job.started) * 1e3,
                                      recipe=job.recipe, late=late, error=error, seq=self._next_seq())

    def _publish(self, job: _Job, rec: InspectionRecord, frame: Frame | None = None,
                 result: Result | None = None) -> None:
        """Record it (traceability, committed first), queue the result, post it right away if the link allows,
        then drop Busy (toggle before Busy = 0). A failing recorder is logged and counted, never blocks the line."""
        if self.recorder is not None:
            try:
                event = self._builder.event(rec, result, frame.image if frame is not None else None,
                                            frame.meta() if frame is not None else None,
                                            PackageIdentity.of(job.detector, job.recipe))
                self.recorder.write(event)
            except Exception:
                self.stats.record_errors += 1
                log.exception("part %d: traceability record failed (result still goes to the PLC)", rec.part_id)
        s = self.stats
        s.inspections += 1
        s.ok += rec.ok
        s.ng += not rec.ok
        s.late += rec.late
        s.errors += rec.defect_code in (DefectCode.INSPECTION_ERROR, DefectCode.NO_IMAGE, DefectCode.ALIGNMENT)
        s.last = rec
        s.last_ms = (s.last_ms + [rec.inspection_ms])[-100:]
        if rec.late:
            self._consecutive_late += 1
            if self._consecutive_late >= self.max_consecutive_late:
                self._latch(FaultCode.LATE_REPEATED, f"{self._consecutive_late} late results in a row")
        self.link.post(rec)
        self.link.deliver_now()
        self.link.set({"Busy": False})
        log.info("part %d: %s code %d score %.3f %.1f ms%s", rec.part_id, "OK" if rec.ok else "NG",
                 int(rec.defect_code), rec.anomaly_score, rec.inspection_ms, " LATE" if rec.late else "")

    # ---- frame reader (trigger="camera" / "free") ------------------------------------------------------------
    def _read_frames(self) -> None:
        """Reader thread: hands frames to the control loop in order; waits (bounded) for room instead of dropping."""
        while not self._stop.is_set():
            try:
                frame = self.source.read(timeout=0.2)
            except EdgeADError as e:
                self._source_fault = True
                log.error("source: %s; retrying in 1 s", e)
                self._stop.wait(1.0)
                continue
            if frame is None:
                if getattr(self.source, "finished", False):
                    self._source_ended = True
                    return
                continue
            self._source_fault = False
            while not self._stop.is_set():
                try:
                    self._frames.put(frame, timeout=0.2)
                    break
                except queue.Full:
                    continue

    def status_line(self) -> str:
        """One line for a terminal: link, recipe, counters, queue, faults."""
        s, link = self.stats, self.link
        faults = ",".join(f.name for f in self.faults()) or "-"
        return (f"plc={'up' if link.connected else 'DOWN'} recipe={self.active_recipe} n={s.inspections} ok={s.ok} "
                f"ng={s.ng} late={s.late} err={s.errors} p50={s.p50_ms():.1f}ms queue={link.queue_depth} "
                f"overflows={link.overflows} faults={faults}")


def _label(spec: RecipeSpec) -> str:
    """A recipe as shown on the HMI: the package path, or the loaded package's name."""
    if isinstance(spec, (str, Path)):
        return str(spec)
    return spec.package.name if spec.package is not None else type(spec).__name__


def _default_loader(path: str | Path, backend: str) -> DetectorLike:
    from edge_ad.runtime.detector import Detector

    return Detector.load(path, backend=backend)


__all__ = ["TRIGGERS", "Inspector", "InspectorStats", "PlcError"]
