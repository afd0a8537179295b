"""Thread-safe counters and latency percentiles of a running pipeline, and the status line printed from them.

Accounting invariant once a pipeline has drained: `frames_in == results_out + dropped` (every frame the source
delivered is either a result, possibly an error result counted in `failed`, or a counted drop).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

import numpy as np


class PipelineStats:
    """Counters (in, out, dropped, failed, NG, OK, recorder errors), latency window and output rate."""

    def __init__(self, window: int = 2048, rate_window_s: float = 5.0) -> None:
        self._lock = threading.Lock()
        self.frames_in = 0
        self.results_out = 0
        self.dropped = 0
        self._pending_drops = 0
        self.failed = 0
        self.ng = 0
        self.ok = 0
        self.record_errors = 0
        self.gaps: list[dict[str, Any]] = []
        self.started = time.monotonic()
        self._latency_ms: deque[float] = deque(maxlen=window)
        self._out_times: deque[float] = deque()
        self._rate_window_s = rate_window_s

    def add_in(self) -> None:
        with self._lock:
            self.frames_in += 1

    def add_dropped(self, n: int = 1) -> None:
        with self._lock:
            self.dropped += n
            self._pending_drops += n

    def take_pending_drops(self) -> int:
        """Frames dropped since the last call (attached to the next result as `frame["dropped_before"]`)."""
        with self._lock:
            n, self._pending_drops = self._pending_drops, 0
            return n

    def add_gap(self, gap: dict[str, Any]) -> None:
        with self._lock:
            self.gaps.append(gap)

    def add_record_error(self) -> None:
        with self._lock:
            self.record_errors += 1

    def add_result(self, status: str, latency_ms: float) -> None:
        """Count one result ('OK', 'NG' or 'ERROR') and its capture-to-result latency."""
        now = time.monotonic()
        with self._lock:
            self.results_out += 1
            if status == "ERROR":
                self.failed += 1
            elif status == "NG":
                self.ng += 1
            else:
                self.ok += 1
            self._latency_ms.append(latency_ms)
            self._out_times.append(now)
            while self._out_times and now - self._out_times[0] > self._rate_window_s:
                self._out_times.popleft()

    def snapshot(self) -> dict[str, Any]:
        """A JSON-safe copy of every counter plus fps (recent window and overall) and latency p50/p99 (ms)."""
        now = time.monotonic()
        with self._lock:
            lat = np.asarray(self._latency_ms, dtype=np.float64)
            recent = [t for t in self._out_times if now - t <= self._rate_window_s]
            elapsed = now - self.started
            span = min(self._rate_window_s, elapsed)
            return {
                "elapsed_s": round(elapsed, 3),
                "frames_in": self.frames_in,
                "results_out": self.results_out,
                "dropped": self.dropped,
                "failed": self.failed,
                "ng": self.ng,
                "ok": self.ok,
                "record_errors": self.record_errors,
                "fps": round(len(recent) / span, 2) if span > 0 else 0.0,
                "fps_overall": round(self.results_out / elapsed, 2) if elapsed > 0 else 0.0,
                "latency_p50_ms": round(float(np.percentile(lat, 50)), 2) if lat.size else None,
                "latency_p99_ms": round(float(np.percentile(lat, 99)), 2) if lat.size else None,
                "gaps": len(self.gaps),
                "frames_lost": sum(int(g.get("frames_lost", 0)) for g in self.gaps),
                "seconds_down": round(sum(float(g.get("seconds_down", 0.0)) for g in self.gaps), 3),
            }


def status_line(s: dict[str, Any]) -> str:
    """One human-readable line from `PipelineStats.snapshot()`."""
    p50 = "-" if s["latency_p50_ms"] is None else f"{s['latency_p50_ms']:.1f}"
    p99 = "-" if s["latency_p99_ms"] is None else f"{s['latency_p99_ms']:.1f}"
    line = (f"fps {s['fps']:.1f} | latency p50 {p50} ms p99 {p99} ms | in {s['frames_in']} out {s['results_out']} "
            f"dropped {s['dropped']} failed {s['failed']} | NG {s['ng']}")
    if s["gaps"]:
        line += f" | outages {s['gaps']} ({s['seconds_down']:.1f} s, ~{s['frames_lost']} frames lost)"
    return line
