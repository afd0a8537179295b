"""What the HMI shows, gathered without slowing inspection: the control loop only hands over references
(`LiveView.__call__`, an Inspector recorder); overlays are rendered and JPEG-encoded lazily, at most `max_fps` per
second and only while a browser asks, on the HMI's own threads."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge_ad.runtime.result import Result
from edge_ad.station.event import InspectionEvent
from edge_ad.station.record import InspectionRecord, ViewVerdict

TREND = 300  # scores kept for the trend chart
HIST_BINS = 20  # normalised-score histogram bins over [0, 1]


class LiveView:
    """Latest frame/result of a station plus rolling statistics; a station `Recorder` (cheap to call)."""

    def __init__(self, max_fps: float = 5.0) -> None:
        self.max_fps = max_fps
        self._lock = threading.Lock()
        self._latest: tuple[np.ndarray, Result | None, InspectionRecord, float] | None = None
        self._jpeg: tuple[int, bytes] | None = None
        self._seq = 0
        self._encoded_at = 0.0
        self.trend: deque[tuple[float, float, str]] = deque(maxlen=TREND)
        self.hist = [0] * HIST_BINS
        self.latencies: deque[float] = deque(maxlen=1000)
        self.counts = {d: 0 for d in ("OK", "NG", "FAILED", "LATE")}
        self.started = time.time()
        self.done_times: deque[float] = deque(maxlen=2000)
        self.tap: Callable[[np.ndarray], None] | None = None  # capture mode: gets each frame (must not block)
        #: multi-view stations: the latest frame, result and verdict of each view, and its encoded JPEG
        self._views: dict[str, tuple[np.ndarray | None, Result | None, ViewVerdict, int]] = {}
        self._view_jpeg: dict[str, tuple[int, bytes]] = {}

    def open(self) -> None:
        """Nothing to open."""

    def close(self) -> None:
        """Nothing to release."""

    def write(self, event: InspectionEvent) -> None:
        rec, result, image = event.record, event.result, event.image
        decision = rec.decision
        now = time.time()
        tap = self.tap
        if tap is not None and isinstance(image, np.ndarray):
            tap(image)
        with self._lock:
            self._seq += 1
            if isinstance(image, np.ndarray):
                self._latest = (image, result, rec, now)
            for v in event.views:
                self._views[v.name] = (v.image if isinstance(v.image, np.ndarray) else None, v.result, v.verdict,
                                       self._seq)
            self.counts[decision] += 1
            self.done_times.append(now)
            if math.isfinite(rec.inspection_ms):
                self.latencies.append(float(rec.inspection_ms))
            score = float(rec.anomaly_score)
            if math.isfinite(score):
                self.trend.append((now, score, decision))
                self.hist[min(HIST_BINS - 1, max(0, int(score * HIST_BINS)))] += 1

    @property
    def seq(self) -> int:
        """Results seen so far: a new value means a new frame to show."""
        return self._seq

    def stats(self) -> dict[str, Any]:
        with self._lock:
            total = sum(self.counts.values())
            lat = np.asarray(self.latencies, np.float64)
            now = time.time()
            recent = [t for t in self.done_times if t > now - 60.0]
            return {
                "total": total, **{k.lower(): v for k, v in self.counts.items()},
                "yield": self.counts["OK"] / total if total else None,
                "throughput_per_min": len(recent) * (60.0 / min(60.0, max(1e-9, now - self.started))),
                "p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
                "p99_ms": float(np.percentile(lat, 99)) if lat.size else None,
                "trend": [[round(t, 3), round(s, 4), d] for t, s, d in self.trend],
                "hist": list(self.hist), "seq": self._seq,
            }

    def last(self) -> dict[str, Any] | None:
        with self._lock:
            if self._latest is None:
                return None
            _image, result, rec, t = self._latest
            views = [{"name": name, "decision": vd.decision, "score": float(vd.anomaly_score), "error": vd.error,
                      "fault": vd.fault, "seq": seq, "image": image is not None}
                     for name, (image, _r, vd, seq) in self._views.items()]
        return {"time": t, "part_id": int(rec.part_id), "seq": int(rec.seq),
                "decision": rec.decision,
                "score": float(rec.anomaly_score), "inspection_ms": float(rec.inspection_ms), "error": rec.error,
                "regions": [r.to_dict() for r in result.regions] if result is not None else [],
                "reason": result.reason if result is not None else None, "views": views}

    def view_names(self) -> list[str]:
        with self._lock:
            return list(self._views)

    def view_jpeg(self, name: str) -> bytes | None:
        """The latest frame of view `name` with its overlay as JPEG (None: no such view or it had no frame);
        encoded once per new result of that view."""
        with self._lock:
            entry, cached = self._views.get(name), self._view_jpeg.get(name)
        if entry is None:
            return None
        image, result, _vd, seq = entry
        if image is None:
            return None
        if cached is not None and cached[0] == seq:
            return cached[1]
        data = _encode(image, result)
        with self._lock:
            self._view_jpeg[name] = (seq, data)
        return data

    def jpeg(self) -> bytes | None:
        """The latest frame with its overlay as JPEG; re-encoded only for a new result and at most max_fps."""
        with self._lock:
            latest, seq, cached = self._latest, self._seq, self._jpeg
            fresh = cached is not None and (cached[0] == seq or time.monotonic() - self._encoded_at < 1 / self.max_fps)
        if latest is None:
            return None
        if fresh and cached is not None:
            return cached[1]
        image, result, _rec, _t = latest
        data = _encode(image, result)
        with self._lock:
            self._jpeg, self._encoded_at = (seq, data), time.monotonic()
        return data


def _encode(image: np.ndarray, result: Result | None) -> bytes:
    """A frame with its heatmap overlay (when the result has a map) as JPEG; b"" if it cannot be encoded."""
    import cv2

    from edge_ad.runtime.overlay import render_overlay

    try:
        shown = render_overlay(image, result) if result is not None and result.anomaly_map is not None else image
    except Exception:  # an odd result must not break the view: show the plain frame
        shown = image
    ok, buf = cv2.imencode(".jpg", shown, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return buf.tobytes() if ok else b""


class CaptureWorker:
    """HMI capture mode: frames passing the station are quality-checked and kept (`edge_ad.capture.Capturer`) on
    this worker's thread; the control loop only enqueues (a full queue drops the frame, counted as `busy`). Bounded:
    it switches itself off after `max_images` kept images, `budget_mb` written or `max_s` seconds, whichever comes
    first (a forgotten capture mode must not fill the disk over a shift)."""

    def __init__(self, out: Path, category: str, *, max_images: int = 1000, budget_mb: float = 1024.0,
                 max_s: float = 3600.0) -> None:
        import queue

        from edge_ad.capture import Capturer

        self.capturer = Capturer(out, category)
        self.out, self.max_images, self.budget, self.max_s = Path(out), max_images, budget_mb * 2**20, max_s
        self.busy = 0
        self.written = 0
        self.stopped_because: str | None = None
        self._started = time.monotonic()
        self._q: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=4)
        self._thread = threading.Thread(target=self._run, name="edge-ad-capture", daemon=True)
        self._thread.start()

    def offer(self, image: np.ndarray) -> None:
        import queue

        if self.stopped_because is not None:
            return
        try:
            self._q.put_nowait(image)
        except queue.Full:
            self.busy += 1

    def _run(self) -> None:
        while (image := self._q.get()) is not None:
            kept = self.capturer.report.kept
            self.capturer.offer(image)
            if self.capturer.report.kept > kept:
                newest = max(self.capturer.folder.glob("*.png"), key=lambda p: p.stat().st_mtime_ns, default=None)
                self.written += newest.stat().st_size if newest is not None else 0
            why = ("image limit" if self.capturer.report.kept >= self.max_images else
                   "disk budget" if self.written >= self.budget else
                   "time limit" if time.monotonic() - self._started >= self.max_s else None)
            if why is not None:
                self.stopped_because = why
                return

    def stop(self) -> dict[str, Any]:
        self._q.put(None)
        self._thread.join(10.0)
        return self.status()

    def status(self) -> dict[str, Any]:
        r = self.capturer.report
        return {"on": self._thread.is_alive(), "folder": str(self.capturer.folder.relative_to(self.out)),
                "kept": r.kept, "considered": r.considered, "skipped": dict(r.skipped), "busy": self.busy,
                "bytes": self.written, "stopped_because": self.stopped_because}
