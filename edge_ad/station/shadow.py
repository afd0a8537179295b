"""A shadow model: a candidate package judges the same parts as production, off the critical path, so it can be
trusted (or not) on this line's own parts before it is promoted.

`ShadowRunner` is a station recorder: `write(event)` only hands the part's image(s) over (a queue of 2; when the
shadow cannot keep up the part is skipped and counted, production never waits); a worker thread at the lowest CPU
priority runs the shadow detector and records its score and decision in the part's traceability row (`shadow_...`
columns) and in the agreement statistics: the OK/NG confusion of production against shadow, the score
correlation over the last parts, and the parts where they disagree (their images kept). Production's verdict and
the PLC never see any of it. Line side: the runtime only.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from edge_ad.station.event import InspectionEvent, RecordBuilder, judge

log = logging.getLogger(__name__)
#: the parts the score correlation and the disagreement list look back on
RECENT = 500


class ShadowRunner:
    """Runs `detector` (a Detector of the shadow package) on every part production judged, when it can keep up.

    `store` (a TraceStore, optional) receives each shadow verdict in the part's row. `on_result(event, shadow)` is
    called after each judged part (tests, the HMI)."""

    def __init__(self, detector: Any, store: Any = None, queue_size: int = 2,
                 on_result: Callable[[InspectionEvent, dict[str, Any]], None] | None = None) -> None:
        self.detector, self.store, self.on_result = detector, store, on_result
        pkg = detector.package
        self.name = pkg.name if pkg is not None else "shadow"
        self.digest = pkg.digest if pkg is not None else None
        self._q: queue.Queue[InspectionEvent | None] = queue.Queue(queue_size)
        self._lock = threading.Lock()
        self.judged = self.skipped = self.errors = 0
        self.confusion = {"OK/OK": 0, "OK/NG": 0, "NG/OK": 0, "NG/NG": 0}  # production/shadow
        self._scores: deque[tuple[float, float]] = deque(maxlen=RECENT)
        self.disagreements: deque[dict[str, Any]] = deque(maxlen=50)
        self._thread: threading.Thread | None = None
        self._builder = RecordBuilder()

    # ---- recorder ----------------------------------------------------------------------------------------------
    def open(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="edge-ad-shadow", daemon=True)
            self._thread.start()

    def write(self, event: InspectionEvent) -> None:
        """Hand the part over; never blocks (a busy shadow skips the part, counted)."""
        if event.image is None and not event.views:
            return  # nothing to judge (no frame): production's fail-safe verdict stands alone
        try:
            self._q.put_nowait(event)
        except queue.Full:
            with self._lock:
                self.skipped += 1

    def close(self) -> None:
        if self._thread is not None:
            self._q.put(None)
            self._thread.join(30.0)
            self._thread = None
        self.detector.close()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every handed-over part is judged (tests, shutdown)."""
        from edge_ad.runtime.queues import wait_drained

        return wait_drained(self._q, timeout)

    def _run(self) -> None:
        try:  # Linux: this thread only, at the lowest priority; production's threads keep theirs
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except (AttributeError, OSError) as e:
            log.debug("shadow: cannot lower the thread priority: %s", e)
        while True:
            event = self._q.get()
            try:
                if event is None:
                    return
                self._judge(event)
            except Exception:
                with self._lock:
                    self.errors += 1
                log.exception("shadow %s: part %s not judged", self.name, event.record.part_id if event else "-")
            finally:
                self._q.task_done()

    # ---- judging -----------------------------------------------------------------------------------------------
    def _judge(self, event: InspectionEvent) -> None:
        rec = event.record
        if event.views:
            present = [v for v in event.views if v.image is not None]
            results = self.detector.predict_batch([v.image for v in present], [v.frame for v in present],
                                                  errors="result") if present else []
            by_name = {v.name: r for v, r in zip(present, results)}
            verdicts = [judge(by_name.get(v.name), v.name) for v in event.views]
            shadow = self._builder.combine(verdicts, part_id=rec.part_id, inspection_ms=0.0, recipe=rec.model_id)
        else:
            result = self.detector.predict_batch([event.image], [event.frame], errors="result")[0]
            shadow = self._builder.verdict(result, part_id=rec.part_id, inspection_ms=0.0, recipe=rec.model_id)
        score = float(shadow.anomaly_score) if shadow.finite else None
        out: dict[str, Any] = {"model": self.name, "digest": self.digest, "decision": shadow.decision, "score": score}
        prod_ng, shadow_ng = not rec.ok, not shadow.ok
        with self._lock:
            self.judged += 1
            self.confusion[f"{'NG' if prod_ng else 'OK'}/{'NG' if shadow_ng else 'OK'}"] += 1
            if score is not None and math.isfinite(rec.anomaly_score):
                self._scores.append((float(rec.anomaly_score), score))
            if prod_ng != shadow_ng:
                self.disagreements.append({"seq": rec.seq, "part_id": rec.part_id, "time": event.time,
                                           "production": rec.decision, "shadow": shadow.decision,
                                           "production_score": float(rec.anomaly_score), "shadow_score": score})
        if self.store is not None:
            self.store.set_shadow(event, out, keep_image=prod_ng != shadow_ng)
        if self.on_result is not None:
            self.on_result(event, out)

    # ---- reading -----------------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Agreement of shadow with production: counts, the OK/NG confusion (production/shadow), the agreement
        rate, the score correlation (Pearson and Spearman) over the last parts, the latest disagreements."""
        with self._lock:
            c = dict(self.confusion)
            pairs = np.asarray(self._scores, np.float64).reshape(-1, 2)
            dis = list(self.disagreements)[-20:]
            judged, skipped, errors = self.judged, self.skipped, self.errors
        pearson = spearman = None
        if len(pairs) >= 3 and np.ptp(pairs[:, 0]) > 0 and np.ptp(pairs[:, 1]) > 0:
            pearson = float(np.corrcoef(pairs[:, 0], pairs[:, 1])[0, 1])
            from edge_ad.runtime.ranking import spearman as rank_corr

            spearman = rank_corr(pairs[:, 0], pairs[:, 1])
        agree = c["OK/OK"] + c["NG/NG"]
        return {"model": self.name, "digest": self.digest, "judged": judged, "skipped": skipped, "errors": errors,
                "confusion": c, "agreement": agree / judged if judged else None,
                "score_pearson": pearson, "score_spearman": spearman, "recent": len(pairs), "disagreements": dis}


class ShadowSlot:
    """The station's seat for a shadow model, a recorder: it forwards every part to the current ShadowRunner (None:
    no shadow). An engineer can seat another model, or none, while the station runs (`replace`)."""

    def __init__(self, runner: ShadowRunner | None = None) -> None:
        self.runner = runner
        self._opened = False
        self._lock = threading.Lock()

    def open(self) -> None:
        with self._lock:
            self._opened = True
            if self.runner is not None:
                self.runner.open()

    def write(self, event: InspectionEvent) -> None:
        runner = self.runner
        if runner is not None:
            runner.write(event)

    def replace(self, runner: ShadowRunner | None) -> ShadowRunner | None:
        """Seat `runner` (started if the station runs); the previous one is stopped and closed. Returns it."""
        with self._lock:
            if runner is not None and self._opened:
                runner.open()
            old, self.runner = self.runner, runner
        if old is not None:
            old.close()
        return old

    def close(self) -> None:
        self.replace(None)
