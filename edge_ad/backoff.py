"""Exponential retry delays, the one rule every reconnecting part of edge-ad uses (camera sources, the PLC link):
the first retry after `initial_s`, then twice as long each time, capped at `max_s`; a success starts over."""

from __future__ import annotations

from edge_ad.errors import ConfigError


class ExponentialBackoff:
    """Delays initial_s, 2x, 4x, ... up to max_s; `failed(now)` schedules the next try, `succeeded()` resets."""

    def __init__(self, initial_s: float = 0.25, max_s: float = 5.0) -> None:
        if not 0 < initial_s <= max_s:
            raise ConfigError(f"reconnect backoff: expected 0 < initial ({initial_s}) <= max ({max_s})")
        self.initial_s = initial_s
        self.max_s = max_s
        self.attempts = 0
        self.next_try = 0.0

    def delay(self) -> float:
        """The wait before the next try after `attempts` failures."""
        return min(self.max_s, self.initial_s * 2 ** max(0, self.attempts - 1))

    def failed(self, now: float) -> float:
        """A try failed: schedule the next one; returns the delay."""
        self.attempts += 1
        d = self.delay()
        self.next_try = now + d
        return d

    def succeeded(self) -> None:
        """A try worked: the next failure waits `initial_s` again."""
        self.attempts = 0

    def due(self, now: float) -> bool:
        return now >= self.next_try
