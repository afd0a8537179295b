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

Several views (cameras) per part: `source` may be a list of `View`s. One trigger (or, with trigger "camera"/"free",
one frame from every camera, paired in arrival order) is one part: every software-triggered camera is fired, one
frame per view is collected within `view_window_ms`, the views sharing a detector are inspected in one backend call
(`Detector.predict_batch`), and the part gets one record that combines them (`RecordBuilder.combine`: any view NG
-> NG; a view without a frame -> NG with NO_IMAGE for that view, never OK) with a per-view entry for the PLC's
ViewNG / ViewFault / ViewDefectCodeN, the traceability rows and the HMI.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

from edge_ad.errors import ConfigError, EdgeADError
from edge_ad.plc.link import PlcAdapter, PlcError, PlcLink, open_adapter
from edge_ad.plc.signals import FaultCode, VisionState
from edge_ad.runtime.result import Result
from edge_ad.sources.base import SoftwareTriggered, Source
from edge_ad.sources.frame import Frame
from edge_ad.station.config import TRIGGERS, TriggerMode
from edge_ad.station.event import DetectorLike, PackageIdentity, RecordBuilder, ViewEvent, judge, part_id_of
from edge_ad.station.lifecycle import RollbackBand, RollbackWatch
from edge_ad.station.record import MAX_VIEWS, DefectCode, InspectionRecord, ViewVerdict
from edge_ad.station.recorders import Recorder
from edge_ad.station.view import StationSnapshot, apply_roi, check_sensitivity

log = logging.getLogger(__name__)


RecipeSpec = DetectorLike | str | Path


@dataclass
class View:
    """One camera of a multi-view station: its name (unique, shown on the HMI and stored per part), its frame
    source, and its own package (a Detector or a path, PACKAGE#CATEGORY allowed) or None to follow the station's
    recipe (the PLC's RecipeRequest switches it)."""

    name: str
    source: Source
    package: RecipeSpec | None = None


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
    views_missing: dict[str, int] = field(default_factory=dict)  #: parts per view that got no frame in time
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

    def __init__(self, recipes: RecipeSpec | Mapping[int, RecipeSpec], source: Source | Sequence[View],
                 plc: str | PlcAdapter | PlcLink, *, trigger: TriggerMode = "plc", budget_ms: float = 200.0,
                 max_consecutive_late: int = 3, poll_s: float = 0.005, initial_recipe: int | None = None,
                 backend: str = "auto", load_detector: Callable[[str | Path], DetectorLike] | None = None,
                 link_options: Mapping[str, Any] | None = None, stop_when_source_ends: bool = False,
                 recorder: Recorder | None = None, view_window_ms: float | None = None,
                 drift: Any = None, rollback_band: RollbackBand | None = None,
                 on_lifecycle: Callable[[str, dict[str, Any]], None] | None = None) -> None:
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
        self._labels: dict[int, str] = {}  # promoted models: what the HMI shows instead of a path
        self.trigger = trigger
        self.budget_s = budget_ms / 1e3
        self.max_consecutive_late = max_consecutive_late
        self.poll_s = poll_s
        self.stop_when_source_ends = stop_when_source_ends
        self.recorder = recorder
        self.drift = drift  #: a DriftMonitor (or anything with `.level`): published as the PLC's Drift
        self.rollback_band = rollback_band or RollbackBand()
        self.on_lifecycle = on_lifecycle  #: told of every model switch and automatic rollback (audit, register)
        self._previous: int | None = None  # the recipe active before the last switch: what rollback returns to
        self._promoted: set[int] = set()  # recipe indices added by promote(): watched after their switch
        self._watch: RollbackWatch | None = None
        self.sensitivity: float | None = None  # None: each detector's own
        self._local_request = 0  # a recipe asked for from the HMI (request_recipe)
        self._load_detector = load_detector or (lambda p: _default_loader(p, backend))
        self.active_recipe = initial_recipe if initial_recipe is not None else min(table)
        if self.active_recipe not in table:
            raise ConfigError(f"initial_recipe: {self.active_recipe} is not in the recipe table {sorted(table)}")
        self._detectors: dict[int, DetectorLike] = {}
        self._owned: list[DetectorLike] = []  # loaded here from package paths: closed by close()
        self.detector = self._detector_for(self.active_recipe)
        self.views: list[View] = _check_views(source)
        self.multi_view = isinstance(source, (list, tuple))
        self.source = self.views[0].source
        window = budget_ms / 2 if view_window_ms is None else view_window_ms
        if self.multi_view and not 0 < window < budget_ms:
            raise ConfigError(f"view_window_ms: expected a number in (0, budget_ms = {budget_ms}), got {window}")
        self.view_window_s = window / 1e3
        self._view_detectors: dict[str, DetectorLike] = {}  # views with their own package
        for v in self.views:
            if v.package is not None:
                det = self._load_detector(v.package) if isinstance(v.package, (str, Path)) else v.package
                if isinstance(v.package, (str, Path)):
                    self._owned.append(det)
                self._view_detectors[v.name] = det
        if isinstance(plc, PlcLink):
            self.link = plc
        else:
            adapter = open_adapter(plc) if isinstance(plc, str) else plc
            self.link = PlcLink(adapter, **dict(link_options or {}))
        self.stats = InspectorStats()
        self._job: _Job | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._queues: list[queue.Queue[Frame]] = [queue.Queue(maxsize=8 if trigger == "camera" else 1)
                                                  for _ in self.views]
        self._frames = self._queues[0]
        self._readers: list[threading.Thread] = []
        self._grabbers: list[ThreadPoolExecutor] = []  # multi-view, trigger "plc": one grab thread per camera
        self._grabs: list[Future[Frame | None] | None] = [None] * len(self.views)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._prev_trigger = False
        self._prev_reset = False
        self._trigger_ack = False
        self._latched: list[FaultCode] = []
        self._source_fault = False
        self._view_faults: dict[str, bool] = {v.name: False for v in self.views}
        self._ended: set[int] = set()
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
        opened: list[Source] = []
        try:
            for v in self.views:
                v.source.open()
                opened.append(v.source)
        except BaseException:
            for src in opened:
                src.close()
            raise
        self._opened = True
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-ad-inspect")
        if self.multi_view and self.trigger == "plc":
            self._grabbers = [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"edge-ad-grab-{v.name}")
                              for v in self.views]
        if self.recorder is not None:
            self.recorder.open()
        if self.trigger != "plc":
            for i, v in enumerate(self.views):
                t = threading.Thread(target=self._read_frames, args=(i,), name=f"edge-ad-frames-{v.name}",
                                     daemon=True)
                t.start()
                self._readers.append(t)
        self.link.set({"ModelId": self.active_recipe, "VisionState": VisionState.PREOPERATIONAL})

    def close(self) -> None:
        """Stop the reader, wait for a running inspection, publish Halted, close link and source."""
        self._stop.set()
        for v in self.views:
            if hasattr(v.source, "request_stop"):
                v.source.request_stop()
        for t in self._readers:
            t.join(5.0)
        self._readers = []
        if self._job is not None:
            try:
                self._job.future.result(timeout=5.0)
            except Exception as e:
                log.warning("closing with an unfinished %s job: %s", self._job.kind, e or type(e).__name__)
            self._job = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        for g in self._grabbers:  # a grab stuck in a camera call ends with the camera's own time-out
            g.shutdown(wait=False, cancel_futures=True)
        self._grabbers, self._grabs = [], [None] * len(self.views)
        if self._opened:
            self.link.set({"Ready": False, "Busy": False, "VisionState": VisionState.HALTED})
            self.link.service()
            self.link.close()
            for v in self.views:
                try:
                    v.source.close()
                except Exception as e:  # one camera failing to close must not keep the others open
                    log.warning("view %s: closing the source failed: %s", v.name, e)
            if self.recorder is not None:
                self.recorder.close()
            self._opened = False
        for det in self._owned:
            det.close()
        self._owned.clear()
        self._detectors = {k: v for k, v in self._detectors.items()
                           if not isinstance(self.recipes[k], (str, Path)) and k not in self._promoted}
        self._view_detectors = {v.name: self._view_detectors[v.name] for v in self.views
                                if v.name in self._view_detectors and not isinstance(v.package, (str, Path))}

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
        return (self.stop_when_source_ends and len(self._ended) == len(self.views) and self._job is None
                and all(q.empty() for q in self._queues) and self.link.queue_depth == 0)

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
                       "VisionState": state, "TriggersIgnored": self.stats.triggers_ignored,
                       "Drift": int(self.drift.level) if self.drift is not None else 0})

    def faults(self) -> list[FaultCode]:
        """Active faults, first raised first."""
        out = list(self._latched) + self.link.faults()
        if self._source_fault or any(self._view_faults.values()):
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

    def promote(self, detector: DetectorLike, label: str) -> int:
        """Make `detector` (loaded and verified by the caller, off the control loop) the production model from the
        next part on: it gets a new recipe index (the PLC's ModelId), the switch happens between two parts like a
        recipe switch, and its first parts are watched against `rollback_band`. Returns the new index. Like an HMI
        recipe request, a non-zero RecipeRequest from the PLC wins."""
        index = max(self.recipes) + 1
        if index > 0xFFFF:
            raise ConfigError("promote: no free recipe index (65535 used)")
        self._owned.append(detector)
        self._detectors[index] = detector
        self.recipes[index] = detector
        self._labels[index] = label
        self._promoted.add(index)
        self.request_recipe(index)
        return index

    def rollback(self) -> int:
        """Switch back to the model that was active before the last switch (between two parts); ConfigError when
        there was no switch."""
        if self._previous is None or self._previous not in self.recipes:
            raise ConfigError("rollback: no earlier model on this station since it started")
        target = self._previous
        self.request_recipe(target)
        return target

    @property
    def previous_recipe(self) -> int | None:
        return self._previous

    def recipe_label(self, index: int) -> str:
        """A recipe as the HMI and the log show it: the package path, a promoted model's label, or its name."""
        return self._labels.get(index) or _label(self.recipes[index])

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
            recipes={k: self.recipe_label(k) for k in self.recipes},
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
    def _start_inspection(self, now: float, part_id: int, frame: Frame | list[Frame | None] | None) -> None:
        """Accept a trigger (frame None: grab one per view) or camera frames (one, or one per view: None where a
        view delivered nothing): Busy, TriggerAck, then inspect off-loop."""
        first = next((f for f in frame if f is not None), None) if isinstance(frame, list) else frame
        capture = first.capture_monotonic if self.trigger == "camera" and first is not None else now
        start = min(now, capture)
        if self.trigger == "plc":
            self._trigger_ack = True
            self.link.set({"Ready": False, "Busy": True, "TriggerAck": True})
        else:
            self.link.set({"Ready": False, "Busy": True})
        deadline = start + self.budget_s
        assert self._executor is not None
        fut: Future[Any]
        if self.multi_view:
            frames = frame if isinstance(frame, list) else None
            fut = self._executor.submit(self._inspect_views, self.detector, frames, start, deadline)
        else:
            assert not isinstance(frame, list)
            fut = self._executor.submit(self._inspect, self.detector, frame, deadline)
        self._job = _Job("inspect", fut, start, deadline=deadline, part_id=part_id, recipe=self.active_recipe,
                         detector=self.detector)

    def _start_continuous(self, now: float, plc_part_id: int) -> None:
        if self.trigger == "free" and self.link.queue_depth >= self.link.queue_size:
            return  # self-paced: wait for the PLC to take results
        if self.multi_view:
            self._start_views(now, plc_part_id)
            return
        try:
            frame = self._frames.get_nowait()
        except queue.Empty:
            return
        self._start_inspection(now, part_id_of(frame.meta(), plc_part_id), frame)

    def _start_views(self, now: float, plc_part_id: int) -> None:
        """Continuous multi-view: a part is the next frame of every view, paired in arrival order; once the oldest
        waiting frame is `view_window_ms` old the part starts without the views that delivered nothing."""
        heads = [q.queue[0] if q.queue else None for q in self._queues]
        waiting = [f for f in heads if f is not None]
        if not waiting:
            return
        oldest = min(f.capture_monotonic for f in waiting)
        if len(waiting) < len(self.views) and now - oldest < self.view_window_s:
            return
        frames: list[Frame | None] = []
        for q, head in zip(self._queues, heads):
            frames.append(q.get_nowait() if head is not None else None)
        first = next(f for f in frames if f is not None)
        self._start_inspection(now, part_id_of(first.meta(), plc_part_id), frames)

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

    def _inspect_views(self, det: DetectorLike, frames: list[Frame | None] | None, start: float,
                       deadline: float) -> tuple[list[Frame | None], list[Result | None], float]:
        """Worker thread, multi-view: fire and collect one frame per view (frames None) within the view window,
        then inspect the views of each detector in one batched call -> (frames, results, finish time); a view
        without a frame has None for both."""
        if frames is None:
            frames = self._grab_views(min(start + self.view_window_s, deadline))
        results: list[Result | None] = [None] * len(self.views)
        groups: dict[int, tuple[DetectorLike, list[int]]] = {}
        images: dict[int, tuple[np.ndarray, dict[str, Any]]] = {}
        for i, (v, f) in enumerate(zip(self.views, frames)):
            if f is None:
                continue
            if f.image is None:
                results[i] = Result.failed(f.error or "frame without image", frame=f.meta())
                continue
            images[i] = (f.image, f.meta())
            d = self._view_detectors.get(v.name, det)
            groups.setdefault(id(d), (d, []))[1].append(i)
        for d, idx in groups.values():
            metas = [images[i][1] for i in idx]
            batch = getattr(d, "predict_batch", None)
            if batch is not None:
                got = batch([images[i][0] for i in idx], frames=metas, errors="result")
            else:  # a stand-in without batching
                got = [d.predict(images[i][0], frame=images[i][1]) for i in idx]
            for i, r in zip(idx, got):
                results[i] = r
        return frames, results, time.monotonic()

    def _grab_views(self, until: float) -> list[Frame | None]:
        """Fire and read every view in parallel on its own grabber thread, until `until`. A camera that hangs (a
        trigger write timing out on a pulled cable takes seconds) costs its own view only: its frame is None for
        this part, and while its previous grab is still running it is not fired again."""
        futures: dict[int, Future[Frame | None]] = {}
        frames: list[Frame | None] = [None] * len(self.views)
        for i, v in enumerate(self.views):
            running = self._grabs[i]
            if running is not None and not running.done():
                log.warning("view %s: previous grab still running (camera not answering): no frame this part", v.name)
                continue
            futures[i] = self._grabbers[i].submit(_grab_view, v, until)
            self._grabs[i] = futures[i]
        for i, fut in futures.items():
            try:
                frames[i] = fut.result(timeout=max(0.0, until - time.monotonic()) + 0.05)
            except FutureTimeout:  # the grab goes on; whatever it returns later is dropped with it
                log.warning("view %s: no frame within the view window", self.views[i].name)
            except Exception as e:
                log.error("view %s: %s", self.views[i].name, e)
        return frames

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
        old = self.active_recipe
        self.active_recipe = job.recipe
        if job.recipe == self._local_request:
            self._local_request = 0
        self.stats.recipe_switches += 1
        self._previous = old
        self._watch = RollbackWatch(self.rollback_band, job.recipe) if job.recipe in self._promoted else None
        log.info("recipe %d active (%s)", job.recipe, self.recipe_label(job.recipe))
        if self.on_lifecycle is not None:
            pkg = self.detector.package
            self.on_lifecycle("switched", {"from": old, "to": job.recipe, "label": self.recipe_label(job.recipe),
                                           "digest": pkg.digest if pkg is not None else None})

    def _finish_views(self, job: _Job, now: float) -> None:
        """Multi-view: one record combining every view (missing views NG with NO_IMAGE), then publish."""
        try:
            frames, results, done_at = job.future.result()
        except Exception as e:
            log.exception("part %d: inspection failed", job.part_id)
            self._latch(FaultCode.INSPECTION, f"{type(e).__name__}: {e}")
            frames, results, done_at = [None] * len(self.views), [Result.failed(f"{type(e).__name__}: {e}")] * len(
                self.views), now
        for v, f in zip(self.views, frames):
            self._view_faults[v.name] = f is None
            if f is None:
                self.stats.views_missing[v.name] = self.stats.views_missing.get(v.name, 0) + 1
                log.warning("part %d: view %s delivered no frame within %.0f ms: NG (no image)", job.part_id,
                            v.name, self.view_window_s * 1e3)
        if not job.published and done_at > job.deadline:
            job.published = True
            self._publish(job, self._failsafe(job, DefectCode.LATE, done_at, late=True, error="time budget exceeded"))
        if job.published:
            self.stats.late_discarded += 1
            log.warning("part %d: late multi-view result discarded (fail-safe NG was sent)", job.part_id)
            return
        self._consecutive_late = 0
        verdicts = [judge(r, v.name, error=None if r is not None else
                          f"no frame within {self.view_window_s * 1e3:.0f} ms") for v, r in zip(self.views, results)]
        rec = self._builder.combine(verdicts, part_id=job.part_id, inspection_ms=(done_at - job.started) * 1e3,
                                    recipe=job.recipe, seq=self._next_seq())
        events = tuple(ViewEvent(vd, r, f.image if f is not None else None, f.meta() if f is not None else {},
                                 PackageIdentity.of(self._view_detectors.get(v.name, job.detector), job.recipe),
                                 getattr(v.source, "source_id", None) or v.name)
                       for v, vd, r, f in zip(self.views, verdicts, results, frames))
        self._publish(job, rec, views=events)

    def _finish_inspection(self, job: _Job, now: float) -> None:
        if self.multi_view:
            self._finish_views(job, now)
            return
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
        """A fail-safe NG: scores at 1.0 so a PLC that only looks at the score rejects too (every view of a
        multi-view part with the same code)."""
        if self.multi_view:
            views = [ViewVerdict(v.name, False, code, 1.0, 1.0, 0, error) for v in self.views]
            return self._builder.combine(views, part_id=job.part_id, inspection_ms=(now - job.started) * 1e3,
                                         recipe=job.recipe, seq=self._next_seq())
        return self._builder.failsafe(code, part_id=job.part_id, inspection_ms=(now - job.started) * 1e3,
                                      recipe=job.recipe, late=late, error=error, seq=self._next_seq())

    def _publish(self, job: _Job, rec: InspectionRecord, frame: Frame | None = None,
                 result: Result | None = None, views: tuple[ViewEvent, ...] = ()) -> None:
        """Record it (traceability, committed first), queue the result, post it right away if the link allows,
        then drop Busy (toggle before Busy = 0). A failing recorder is logged and counted, never blocks the line."""
        if self.recorder is not None:
            try:
                if views:  # the deciding view (first NG, else first) stands for the part in one-image outputs
                    lead = next((v for v in views if not v.verdict.ok), views[0])
                    event = replace(self._builder.event(rec, lead.result, lead.image, lead.frame, lead.package),
                                    views=views, source=lead.source)
                else:
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
        watch = self._watch
        if watch is not None and (reason := watch.observe(rec)) is not None and self._previous is not None:
            self._watch = None
            log.error("automatic rollback of recipe %d to %d: %s", watch.recipe, self._previous, reason)
            target = self.rollback()
            if self.on_lifecycle is not None:
                self.on_lifecycle("auto-rollback", {"from": watch.recipe, "to": target, "reason": reason})
        log.info("part %d: %s code %d score %.3f %.1f ms%s", rec.part_id, "OK" if rec.ok else "NG",
                 int(rec.defect_code), rec.anomaly_score, rec.inspection_ms, " LATE" if rec.late else "")

    # ---- frame reader (trigger="camera" / "free") ------------------------------------------------------------
    def _read_frames(self, index: int = 0) -> None:
        """Reader thread of view `index`: hands its frames to the control loop in order; waits (bounded) for room
        instead of dropping."""
        view, frames = self.views[index], self._queues[index]
        while not self._stop.is_set():
            try:
                frame = view.source.read(timeout=0.2)
            except EdgeADError as e:
                self._set_source_fault(view.name, True)
                log.error("source %s: %s; retrying in 1 s", view.name, e)
                self._stop.wait(1.0)
                continue
            if frame is None:
                if getattr(view.source, "finished", False):
                    self._ended.add(index)
                    return
                continue
            self._set_source_fault(view.name, False)
            while not self._stop.is_set():
                try:
                    frames.put(frame, timeout=0.2)
                    break
                except queue.Full:
                    continue

    def _set_source_fault(self, view: str, down: bool) -> None:
        if self.multi_view:
            self._view_faults[view] = down
        else:
            self._source_fault = down

    def status_line(self) -> str:
        """One line for a terminal: link, recipe, counters, queue, faults."""
        s, link = self.stats, self.link
        faults = ",".join(f.name for f in self.faults()) or "-"
        return (f"plc={'up' if link.connected else 'DOWN'} recipe={self.active_recipe} n={s.inspections} ok={s.ok} "
                f"ng={s.ng} late={s.late} err={s.errors} p50={s.p50_ms():.1f}ms queue={link.queue_depth} "
                f"overflows={link.overflows} faults={faults}")


def _grab_view(view: View, until: float) -> Frame | None:
    """One view's frame for a PLC-triggered part: a software-triggered camera is drained of stale frames (a frame
    that came after an earlier part's window must not judge this part), fired, then read until `until`."""
    src = view.source
    if isinstance(src, SoftwareTriggered) and src.trigger_mode == "software":
        for _ in range(16):
            if src.read(timeout=0.0) is None:
                break
        src.trigger()
    return src.read(timeout=max(0.001, until - time.monotonic()))


def _check_views(source: Source | Sequence[View]) -> list[View]:
    """One source -> one unnamed view; a list of views is checked: 1..MAX_VIEWS views, unique names."""
    if not isinstance(source, (list, tuple)):
        return [View("main", cast(Source, source))]  # a Sequence that is not a list/tuple is a duck-typed source
    views = list(source)
    if not 1 <= len(views) <= MAX_VIEWS or not all(isinstance(v, View) for v in views):
        raise ConfigError(f"views: expected 1..{MAX_VIEWS} View entries, got {len(views)}")
    names = [v.name for v in views]
    if len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"views: expected unique non-empty names, got {names}")
    return views


def _label(spec: RecipeSpec) -> str:
    """A recipe as shown on the HMI: the package path, or the loaded package's name."""
    if isinstance(spec, (str, Path)):
        return str(spec)
    return spec.package.name if spec.package is not None else type(spec).__name__


def _default_loader(path: str | Path, backend: str) -> DetectorLike:
    from edge_ad.runtime.detector import Detector

    return Detector.load(path, backend=backend)


__all__ = ["TRIGGERS", "Inspector", "InspectorStats", "PlcError", "View"]
