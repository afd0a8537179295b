"""The source interface (open, iterate Frames, close; a context manager) and the reconnect logic of live cameras.

A source is iterated from one thread (the pipeline's capture thread); `request_stop()` may be called from any
thread and ends the iteration within about `poll_s`. Every wait is bounded, so a pulled cable never hangs a caller:
live sources reconnect with exponential backoff and report the outage as a `Gap` on the next frame.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import numpy as np

from edge_ad.backoff import ExponentialBackoff
from edge_ad.errors import ConnectionLost, SourceError
from edge_ad.sources.frame import Frame, Gap

log = logging.getLogger(__name__)
__all__ = ["Backoff", "ConnectionLost", "LiveSource", "Pacer", "Source", "SourceError"]


@runtime_checkable
class SoftwareTriggered(Protocol):
    """A camera that can be fired from software (`trigger_mode == "software"`, e.g. GigE Vision)."""

    trigger_mode: str

    def trigger(self) -> None: ...


class Source(ABC):
    """Base of every frame source.

    Subclasses implement `_open`, `_close` and `_grab(timeout) -> Frame | None` (None: no frame yet) and set
    `self._finished = True` when a finite source (file, folder) is exhausted.
    """

    #: True for cameras and streams (frames keep coming whether or not they are read); False for replays
    live: bool = False

    def __init__(self, source_id: str, poll_s: float = 0.5) -> None:
        self.source_id = source_id
        self.poll_s = poll_s
        self.gaps: list[Gap] = []
        self._seq = 0
        self._stop = threading.Event()
        self._opened = False
        self._finished = False

    # ---- public interface ---------------------------------------------------------------------------------------
    def open(self) -> None:
        """Connect and start acquisition (idempotent); SourceError when the source cannot be opened."""
        if not self._opened:
            self._stop.clear()
            self._finished = False
            self._open()
            self._opened = True

    def close(self) -> None:
        """Stop acquisition and release the device (idempotent, never raises)."""
        if self._opened:
            self._opened = False
            try:
                self._close()
            except Exception:  # closing a device that is already gone must not mask the real error
                log.warning("%s: error while closing", self.source_id, exc_info=True)

    def request_stop(self) -> None:
        """Make the current iteration end soon (thread-safe)."""
        self._stop.set()

    @property
    def finished(self) -> bool:
        """True when a finite source has delivered its last frame."""
        return self._finished

    def read(self, timeout: float | None = None) -> Frame | None:
        """The next frame, or None when none arrived within `timeout` seconds (default `poll_s`) or the source ended."""
        if not self._opened:
            self.open()
        if self._finished:
            return None
        return self._grab(self.poll_s if timeout is None else timeout)

    def __iter__(self) -> Iterator[Frame]:
        """Frames until the source ends or `request_stop()` is called."""
        if not self._opened:
            self.open()
        while not self._stop.is_set() and not self._finished:
            frame = self._grab(self.poll_s)
            if frame is not None:
                yield frame

    def stats(self) -> dict[str, Any]:
        """Counters of this source (frames delivered, outages)."""
        return {"source_id": self.source_id, "frames": self._seq, "gaps": len(self.gaps),
                "frames_lost": sum(g.frames_lost for g in self.gaps),
                "seconds_down": round(sum(g.seconds_down for g in self.gaps), 3)}

    def __enter__(self) -> Source:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source_id!r})"

    # ---- for subclasses -----------------------------------------------------------------------------------------
    @abstractmethod
    def _open(self) -> None: ...

    @abstractmethod
    def _close(self) -> None: ...

    @abstractmethod
    def _grab(self, timeout: float) -> Frame | None: ...

    def _emit(self, image: np.ndarray | None, pixel_format: str, frame_id: int | None = None,
              camera_timestamp_ns: int | None = None, error: str | None = None,
              extra: dict[str, Any] | None = None) -> Frame:
        """Build the next Frame (sequence number, host timestamps)."""
        frame = Frame(image=image, seq=self._seq, frame_id=self._seq if frame_id is None else int(frame_id),
                      source_id=self.source_id, pixel_format=pixel_format, host_timestamp=time.time(),
                      capture_monotonic=time.monotonic(), camera_timestamp_ns=camera_timestamp_ns, error=error,
                      extra=extra or {})
        self._seq += 1
        return frame


class Backoff(ExponentialBackoff):
    """The exponential reconnect rule (edge_ad.backoff) plus the outage bookkeeping of one source: when it went
    down, why, and the Gap reported on the first frame after it."""

    def __init__(self, initial_s: float = 0.25, max_s: float = 5.0, give_up_s: float | None = None) -> None:
        if initial_s <= 0 or max_s < initial_s:
            raise SourceError(f"reconnect backoff: expected 0 < initial ({initial_s}) <= max ({max_s})")
        super().__init__(initial_s, max_s)
        self.give_up_s = give_up_s
        self.down_since: float | None = None
        self.reason = ""
        self.last_frame: float | None = None
        self._interval: float | None = None  # EMA of the frame interval, for the frames-lost estimate

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def lost(self, reason: str, now: float) -> None:
        """The connection broke: start the outage at the last good frame (or now) and retry immediately."""
        if self.down_since is None:
            self.down_since = self.last_frame if self.last_frame is not None else now
            self.reason = reason
            self.attempts = 0
        self.next_try = now

    def failed(self, now: float) -> float:
        """A reconnect attempt failed: schedule the next one; SourceError after give_up_s. Returns the delay."""
        delay = super().failed(now)
        if self.give_up_s is not None and self.down_since is not None and now - self.down_since > self.give_up_s:
            raise SourceError(f"camera lost ({self.reason}) and not back after {now - self.down_since:.1f} s "
                              f"({self.attempts} reconnect attempts); giving up")
        return delay

    def frame(self, now: float) -> Gap | None:
        """A good frame arrived: update the rate estimate; return the Gap when it ends an outage."""
        gap = None
        if self.down_since is not None:
            down = max(0.0, now - self.down_since)
            fps = 1.0 / self._interval if self._interval else 0.0
            gap = Gap(seconds_down=down, frames_lost=max(0, round(down * fps) - 1), reason=self.reason,
                      reconnects=max(1, self.attempts + 1))
            self.down_since = None
            self.attempts = 0
        elif self.last_frame is not None:
            dt = now - self.last_frame
            self._interval = dt if self._interval is None else 0.9 * self._interval + 0.1 * dt
        self.last_frame = now
        return gap


class Pacer:
    """Delivers frames at a fixed rate like a free-running camera (None: as fast as possible)."""

    def __init__(self, rate: float | None, what: str) -> None:
        if rate is not None and rate <= 0:
            raise SourceError(f"{what}: rate: expected frames per second > 0, got {rate}")
        self.rate = rate
        self.next_due = time.monotonic()

    def reset(self) -> None:
        self.next_due = time.monotonic()

    def wait(self, timeout: float, stop: threading.Event) -> bool:
        """Wait for the next slot; False when it is more than `timeout` away (the caller returns no frame yet)."""
        if self.rate is None:
            return True
        period = 1.0 / self.rate
        wait = self.next_due - time.monotonic()
        if wait > timeout:
            stop.wait(timeout)
            return False
        if wait > 0:
            stop.wait(wait)
        self.next_due = max(self.next_due + period, time.monotonic() - period)  # no burst after a pause
        return True


class LiveSource(Source):
    """A camera stream that may drop out: connects, detects loss or stall, reconnects with backoff, reports gaps.

    Subclasses implement `_connect()` (raise on failure), `_disconnect()` (best effort), `_fetch(timeout)`
    (a Frame, None on timeout, ConnectionLost when the device is gone) and optionally `_alive()` (cheap
    control-channel check used when a triggered camera is silent: no trigger is not an outage).
    """

    live = True

    def __init__(self, source_id: str, stall_timeout_s: float = 2.0, backoff: Backoff | None = None,
                 continuous: bool = True, poll_s: float = 0.5) -> None:
        super().__init__(source_id, poll_s=poll_s)
        self.stall_timeout_s = stall_timeout_s
        self.backoff = backoff or Backoff()
        self.continuous = continuous
        self._connected = False
        self._last_activity = 0.0

    @abstractmethod
    def _connect(self) -> None: ...

    @abstractmethod
    def _disconnect(self) -> None: ...

    @abstractmethod
    def _fetch(self, timeout: float) -> Frame | None: ...

    def _alive(self) -> bool:
        return False

    def _open(self) -> None:
        try:
            self._connect()
        except SourceError:
            self._disconnect()
            raise
        except Exception as e:
            self._disconnect()
            raise SourceError(f"{self.source_id}: cannot open: {e}") from e
        self._connected = True
        self._last_activity = time.monotonic()

    def _close(self) -> None:
        self._connected = False
        self._disconnect()

    def _drop(self, reason: str) -> None:
        log.warning("%s: %s; reconnecting", self.source_id, reason)
        self._connected = False
        self._disconnect()
        self.backoff.lost(reason, time.monotonic())

    def _grab(self, timeout: float) -> Frame | None:
        now = time.monotonic()
        if not self._connected:
            wait = self.backoff.next_try - now
            if wait > 0:
                self._stop.wait(min(wait, timeout))
                return None
            try:
                self._connect()
            except Exception as e:
                self._disconnect()
                delay = self.backoff.failed(time.monotonic())
                log.info("%s: reconnect attempt %d failed (%s); next in %.2f s", self.source_id,
                         self.backoff.attempts, e, delay)
                return None
            log.warning("%s: reconnected after %d attempt(s)", self.source_id, self.backoff.attempts + 1)
            self._connected = True
            self._last_activity = time.monotonic()
            return None
        try:
            frame = self._fetch(timeout)
        except ConnectionLost as e:
            self._drop(str(e))
            return None
        now = time.monotonic()
        if frame is None:
            if now - self._last_activity > self.stall_timeout_s:
                if self.continuous or not self._alive():
                    self._drop(f"stream stalled: no frame for {now - self._last_activity:.1f} s")
                else:
                    self._last_activity = now  # triggered camera, control channel fine: waiting for a trigger
            return None
        self._last_activity = now
        gap = self.backoff.frame(now)
        if gap is not None:
            self.gaps.append(gap)
            log.warning("%s: stream resumed after %.2f s down (~%d frames lost, %s)", self.source_id,
                        gap.seconds_down, gap.frames_lost, gap.reason)
            frame.gap = gap
        return frame
