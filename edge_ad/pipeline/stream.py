"""The streaming pipeline: capture -> preprocess -> infer -> postprocess -> recorders, one thread per stage.

Stages are joined by bounded queues. The queues in front of preprocessing and inference apply the policy:
- `latest`: when full, the oldest waiting frame is dropped and counted, so results stay fresh (about one
  inference time old) when the model is slower than the camera;
- `all`: the producer waits (backpressure; a live camera then loses frames in its own buffer pool).
The default is `all` for replayed sources (folders, video files: every image gets a result) and `latest` for live
cameras. A drop is never silent: the first is logged, `Pipeline.dropped` and `stats["dropped"]` count them, and the
next result carries `frame["dropped_before"]` (frames dropped since the previous result).
The queues after inference always block, so an inferred frame is never lost: after a stop the pipeline drains and
`frames_in == results_out + dropped`. A frame that cannot be inspected (decode error, wrong size,
preprocessing or inference failure) becomes `Result.failed(...)` with the frame's metadata and the stream goes on.

Each stage runs the Detector's own code (its Preprocess, backend and post-processing), so results equal
`Detector.predict` on the same image.
"""

from __future__ import annotations

import logging
import math
import queue
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

from edge_ad.errors import AlignmentError, ConfigError, DataError
from edge_ad.pipeline.stats import PipelineStats
from edge_ad.runtime.detector import Detector, Prepared
from edge_ad.runtime.result import Fault, Result
from edge_ad.sources.base import Source
from edge_ad.sources.factory import open_source
from edge_ad.sources.frame import Frame
from edge_ad.station.config import Policy
from edge_ad.station.event import PackageIdentity, RecordBuilder, part_id_of
from edge_ad.station.recorders import Recorder
from edge_ad.station.view import StationSnapshot, apply_roi, check_sensitivity

log = logging.getLogger(__name__)



def default_policy(source: Source) -> Policy:
    """`latest` for a live camera (fresh results), `all` for a replayed source (a result for every frame)."""
    return "latest" if getattr(source, "live", False) else "all"
_END = object()  # end-of-stream marker passed down the stages
_POLL_S = 0.2


@dataclass
class _Item:
    """One frame on its way through the stages."""

    frame: Frame
    meta: dict[str, Any]
    prepared: Prepared | None = None
    amap: np.ndarray | None = None  #: the backend's maps of the prepared crops [T,h,w]
    scores: np.ndarray | None = None  #: and their scores [T]
    timing: dict[str, float] = field(default_factory=dict)
    result: Result | None = None


def _carry_gap(dropped: dict[str, Any], into: dict[str, Any]) -> None:
    """A dropped frame reported an outage: the next delivered frame reports it instead (merged with its own),
    so under policy `latest` a camera gap never vanishes with the frame that carried it."""
    g, mine = dict(dropped["gap"]), into.get("gap")
    if mine is not None:
        g = {"seconds_down": round(float(g["seconds_down"]) + float(mine["seconds_down"]), 3),
             "frames_lost": int(g["frames_lost"]) + int(mine["frames_lost"]),
             "reason": f"{g['reason']}; {mine['reason']}", "reconnects": int(g["reconnects"]) + int(mine["reconnects"])}
    g["carried_from_seq"] = dropped["gap"].get("carried_from_seq", dropped.get("seq"))
    into["gap"] = g


class Pipeline:
    """A running stream of Results from a source through a detector.

    Args:
        detector: a Detector or a model package path (loaded with `backend`).
        source: a Source or a URI for `edge_ad.sources.open_source` (`source_options` are passed along).
        policy: "latest" (drop the oldest waiting frame) or "all" (backpressure); None: `default_policy(source)`.
        queue_size: capacity of the capture queue (frames waiting for preprocessing).
        recorders: receive every verdict in order as an `InspectionEvent` (see edge_ad.station.recorders).
        max_frames: stop after this many frames from the source (None: until the source ends or stop()).
        max_batch: run up to this many already-waiting frames in one backend call (dynamic-batch packages).
        expect_size: (height, width) every frame must have; other frames become error results.
        output: False when nobody iterates the results (callback form); True keeps them for `__iter__`.
        name: the view this pipeline serves when `edge-ad run` has several cameras (stored as each record's source).
    """

    def __init__(self, detector: Detector | str | Path, source: Source | str | int, *, policy: Policy | None = None,
                 queue_size: int = 2, recorders: Sequence[Recorder] = (), max_frames: int | None = None,
                 backend: str = "auto", max_batch: int = 1, expect_size: tuple[int, int] | None = None,
                 output: bool = True, name: str | None = None, **source_options: Any) -> None:
        if policy not in ("latest", "all", None):
            raise ConfigError(f"policy: expected 'latest' or 'all', got {policy!r}")
        if queue_size < 1:
            raise ConfigError(f"queue_size: expected >= 1, got {queue_size}")
        if max_frames is not None and max_frames < 1:
            raise ConfigError(f"max_frames: expected >= 1 or None, got {max_frames}")
        if max_batch < 1:
            raise ConfigError(f"max_batch: expected >= 1, got {max_batch}")
        self.detector = detector if isinstance(detector, Detector) else Detector.load(detector, backend=backend)
        if max_batch > 1 and self.detector.package.manifest["input"].get("batch") != "dynamic":
            raise ConfigError(f"max_batch={max_batch}: the package's input batch is fixed; use max_batch=1")
        self.source = open_source(source, **source_options)
        self.policy: Policy = policy or default_policy(self.source)
        self.max_frames, self.max_batch = max_frames, max_batch
        self._drop_logged = False
        self.expect_size = expect_size
        self.recorders = list(recorders)
        self.name = name  #: the view (camera) this pipeline serves in a several-camera `run`; records carry it
        self._builder = RecordBuilder(name or self.source.source_id)
        self.stats = PipelineStats()
        self._output = output
        self._q_in: queue.Queue[Any] = queue.Queue(queue_size)
        self._q_infer: queue.Queue[Any] = queue.Queue(1)
        self._q_post: queue.Queue[Any] = queue.Queue(1)
        self._q_sink: queue.Queue[Any] = queue.Queue(8)
        self._q_out: queue.Queue[Any] = queue.Queue(8)
        self._abort = threading.Event()
        self._threads: list[threading.Thread] = []
        self._error: BaseException | None = None
        self._started = False
        self._done = threading.Event()

    # ---- control ------------------------------------------------------------------------------------------------
    def start(self) -> Pipeline:
        """Open the source (errors raise here) and start the stage threads."""
        if self._started:
            return self
        self.source.open()
        for recorder in self.recorders:
            recorder.open()
        self._started = True
        self.stats.started = time.monotonic()
        for name, fn in (("capture", self._capture), ("preprocess", self._preprocess), ("infer", self._infer),
                         ("postprocess", self._postprocess), ("record", self._record)):
            t = threading.Thread(target=self._guard, args=(fn,), name=f"edge-ad-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        """Graceful stop: capture ends (camera closed), frames already queued are still inspected (thread-safe)."""
        self.source.request_stop()

    def abort(self) -> None:
        """Immediate stop: queued frames are abandoned (used on a second Ctrl-C)."""
        self.source.request_stop()
        self._abort.set()

    def join(self, timeout: float = 30.0) -> bool:
        """Wait for every stage to finish; False when some did not within `timeout` (then aborted)."""
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in self._threads):
            log.warning("pipeline did not drain within %.0f s; aborting", timeout)
            self.abort()
            for t in self._threads:
                t.join(5.0)
            return False
        return True

    @property
    def running(self) -> bool:
        return self._started and not self._done.is_set()

    def __iter__(self) -> Iterator[Result]:
        """Results in frame order until the stream ends; a fatal source error is raised after the drain."""
        if not self._output:
            raise ConfigError("this pipeline was created with output=False; its results go to the recorders only")
        self.start()
        try:
            while True:
                item = self._get(self._q_out)
                if item is _END or item is None:
                    break
                yield item
        finally:
            self.stop()
            self.join()
        if self._error is not None:
            raise self._error

    def run(self) -> dict[str, Any]:
        """Run to the end without yielding (results go to the recorders); returns the final stats snapshot."""
        if self._output:
            for _ in self:
                pass
        else:
            self.start()
            try:
                while not self._done.wait(_POLL_S):
                    pass
            finally:
                self.stop()
                self.join()
            if self._error is not None:
                raise self._error
        return self.stats.snapshot()

    def __enter__(self) -> Pipeline:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.join()

    def install_signal_handlers(self) -> Any:
        """SIGINT/SIGTERM: first = graceful stop, second = abort. Returns a function that restores the old ones."""
        old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        count = [0]

        def handler(signum: int, _frame: FrameType | None) -> None:
            count[0] += 1
            if count[0] == 1:
                log.warning("%s: stopping (draining queued frames, closing the source)", signal.Signals(signum).name)
                self.stop()
            else:
                log.warning("%s again: aborting", signal.Signals(signum).name)
                self.abort()

        for s in old:
            signal.signal(s, handler)

        def restore() -> None:
            for s, h in old.items():
                signal.signal(s, h)

        return restore

    # ---- queue helpers ------------------------------------------------------------------------------------------
    def _put(self, q: queue.Queue[Any], item: Any) -> bool:
        while not self._abort.is_set():
            try:
                q.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _offer_latest(self, q: queue.Queue[Any], item: Any) -> None:
        """Policy `latest`: put without waiting; when full, the oldest waiting frame is dropped (and counted)."""
        while True:
            try:
                q.put_nowait(item)
                return
            except queue.Full:
                try:
                    old = q.get_nowait()
                except queue.Empty:
                    continue
                self._count_drop()
                if isinstance(old, _Item) and "gap" in old.meta:
                    _carry_gap(old.meta, item.meta)

    def _count_drop(self) -> None:
        self.stats.add_dropped()
        if not self._drop_logged:
            self._drop_logged = True
            log.warning("%s: the model is slower than the source: policy 'latest' drops the oldest waiting frames "
                        "(counted in stats['dropped'] and on each result as frame['dropped_before']; policy 'all' "
                        "inspects every frame)", self.source.source_id)

    @property
    def dropped(self) -> int:
        """Frames dropped so far (policy `latest`, or an abort while frames were waiting)."""
        return self.stats.dropped

    def _get(self, q: queue.Queue[Any]) -> Any:
        """Next item, or None once aborted."""
        while not self._abort.is_set():
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                continue
        return None

    def _guard(self, fn: Any) -> None:
        """Run a stage; an unexpected exception is kept (raised to the consumer) and stops the pipeline."""
        try:
            fn()
        except BaseException as e:  # a bug in a stage must end the stream visibly, not hang it
            log.exception("pipeline stage %s failed", threading.current_thread().name)
            if self._error is None:
                self._error = e
            self.abort()
            self._done.set()

    # ---- stages -------------------------------------------------------------------------------------------------
    def _capture(self) -> None:
        n = 0
        try:
            for frame in self.source:
                self.stats.add_in()
                if frame.gap is not None:
                    self.stats.add_gap(frame.gap.to_dict())
                item = _Item(frame=frame, meta=frame.meta())
                if self.policy == "latest":
                    self._offer_latest(self._q_in, item)
                elif not self._put(self._q_in, item):
                    self._count_drop()  # aborted while waiting: account for the frame
                    return
                n += 1
                if self.max_frames is not None and n >= self.max_frames:
                    break
        except Exception as e:  # a camera that cannot be recovered: report it after the drain
            log.error("%s: %s", self.source.source_id, e)
            self._error = e
        finally:
            self.source.close()
            self._put(self._q_in, _END)

    def _preprocess(self) -> None:
        while True:
            item = self._get(self._q_in)
            if item is None:
                return
            if item is _END:
                self._put(self._q_infer, _END)
                return
            frame = item.frame
            if frame.error is not None or frame.image is None:
                item.result = Result.failed(frame.error or "no image", frame=item.meta, fault=Fault.FRAME)
            elif self.expect_size is not None and tuple(frame.image.shape[:2]) != tuple(self.expect_size):
                h, w = self.expect_size
                item.result = Result.failed(f"{frame.source_id}: frame {frame.frame_id}: expected {w}x{h}, got "
                                            f"{frame.image.shape[1]}x{frame.image.shape[0]}", frame=item.meta,
                                            fault=Fault.FRAME)
            else:
                t0 = time.perf_counter()
                try:
                    item.prepared = self.detector.prepare(frame.image)
                except AlignmentError as e:
                    item.result = Result.failed(f"{frame.source_id}: frame {frame.frame_id}: not aligned: {e}",
                                                frame=item.meta, fault=Fault.ALIGNMENT)
                except DataError as e:
                    item.result = Result.failed(f"{frame.source_id}: frame {frame.frame_id}: {e}", frame=item.meta,
                                                fault=Fault.FRAME)
                except Exception as e:
                    item.result = Result.failed(f"{frame.source_id}: frame {frame.frame_id}: preprocessing failed: "
                                                f"{type(e).__name__}: {e}", frame=item.meta, fault=Fault.INTERNAL)
                item.timing["preprocess"] = (time.perf_counter() - t0) * 1e3
            if self.policy == "latest":  # a frame waiting for inference is replaced by a fresher one
                self._offer_latest(self._q_infer, item)
            elif not self._put(self._q_infer, item):
                return

    def _infer(self) -> None:
        backend = self.detector.backend
        while True:
            item = self._get(self._q_infer)
            if item is None:
                return
            batch = [item]
            end = item is _END
            while not end and len(batch) < self.max_batch:
                try:
                    nxt = self._q_infer.get_nowait()
                except queue.Empty:
                    break
                if nxt is _END:
                    end = True
                else:
                    batch.append(nxt)
            todo = [it for it in batch if it is not _END and it.result is None]
            if todo:
                t0 = time.perf_counter()
                try:
                    maps, scores = backend.run(np.stack([c for it in todo for c in it.prepared.crops]))
                except Exception as e:  # a backend failure fails these frames, not the stream
                    log.error("inference failed: %s", e)
                    for it in todo:
                        it.result = Result.failed(f"inference failed: {e}", frame=it.meta, fault=Fault.INFERENCE)
                else:
                    ms = (time.perf_counter() - t0) * 1e3 / len(todo)
                    k = 0
                    for it in todo:
                        t = len(it.prepared.crops)
                        it.amap, it.scores = maps[k:k + t, 0], scores[k:k + t]
                        it.timing["infer"] = ms
                        k += t
            for it in batch:
                if it is not _END and not self._put(self._q_post, it):
                    return
            if end:
                self._put(self._q_post, _END)
                return

    def _postprocess(self) -> None:
        det = self.detector
        while True:
            item = self._get(self._q_post)
            if item is None:
                return
            if item is _END:
                self._put(self._q_sink, _END)
                return
            result = item.result
            if result is None:
                assert item.prepared is not None and item.amap is not None and item.scores is not None
                try:
                    # the Detector's own post-processing, so streamed results equal Detector.predict
                    item.prepared.timing.update(item.timing)
                    result = det.finish_prepared(item.prepared, item.amap, item.scores, item.meta)
                except Exception as e:
                    result = Result.failed(f"postprocess failed: {e}", frame=item.meta, fault=Fault.POSTPROCESS)
            latency_ms = (time.monotonic() - item.frame.capture_monotonic) * 1e3
            result.timings["latency"] = latency_ms
            self.stats.add_result(result.status, latency_ms)
            if not self._put(self._q_sink, (result, item.frame.image)):
                return

    def _record(self) -> None:
        identity = PackageIdentity.of(self.detector)
        try:
            while True:
                item = self._get(self._q_sink)
                if item is None:
                    return
                if item is _END:
                    break
                result, image = item
                dropped = self.stats.take_pending_drops()
                if dropped and result.frame is not None:
                    result.frame["dropped_before"] = dropped
                if self.recorders:
                    meta = result.frame or {}
                    rec = self._builder.verdict(result, part_id=part_id_of(meta),
                                                inspection_ms=float(result.timings.get("latency", math.nan)),
                                                recipe=identity.recipe)
                    event = self._builder.event(rec, result, image, meta, identity)
                    for recorder in self.recorders:
                        try:
                            recorder.write(event)
                        except Exception:  # a full disk or a failing callback must not stop inspection
                            self.stats.add_record_error()
                            log.exception("recorder %s failed on frame %s", type(recorder).__name__,
                                          meta.get("seq"))
                if self._output and not self._put(self._q_out, result):
                    return
        finally:
            for recorder in self.recorders:
                try:
                    recorder.close()
                except Exception:
                    log.exception("closing recorder %s failed", type(recorder).__name__)
            if self._output:
                self._put(self._q_out, _END)
            self._done.set()


class PipelineView:
    """The pipeline as a `StationView`, so `edge-ad run --ui` shows the same HMI as `edge-ad serve`: one recipe (the
    package), no PLC, the pipeline's counters; sensitivity changes apply from the next frame."""

    def __init__(self, pipeline: Pipeline, package: str | None = None) -> None:
        self.pipeline = pipeline
        self.package = package
        self._lock = threading.Lock()

    def snapshot(self) -> StationSnapshot:
        det, stats = self.pipeline.detector, self.pipeline.stats
        try:
            camera = dict(self.pipeline.source.stats())
        except Exception:  # a source in the middle of reconnecting
            camera = {}
        return StationSnapshot(
            command="run", running=self.pipeline.running, recipe=1,
            recipes={1: self.package or det.package.name}, model=det.package.name,
            precision=det.package.precision, threshold=det.threshold, sensitivity=det.sensitivity,
            plc_connected=False, plc_description="no PLC (edge-ad run)", record_errors=stats.record_errors,
            camera=camera, roi_categories=sorted(det.geometry.references) if det.geometry is not None else [])

    def set_sensitivity(self, value: float) -> None:
        v = check_sensitivity(value)
        with self._lock:
            self.pipeline.detector.sensitivity = v

    def set_roi(self, category: str | None, mask_png: bytes) -> str:
        with self._lock:
            return apply_roi(self.pipeline.detector, category, mask_png)

    def request_recipe(self, index: int) -> None:
        raise ConfigError("recipe: `edge-ad run` runs one package; recipes need `edge-ad serve --recipe N=PACKAGE`")
