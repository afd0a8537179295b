"""Points in time as people type them in a query (`edge-ad results --since`, the HMI's part lookup)."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta

from edge_ad.errors import ConfigError

_AGE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_time(text: str, flag: str, now: float | None = None) -> float:
    """Unix seconds of an ISO local time, today/yesterday (local midnight) or an age like 24h; ConfigError else."""
    now = time.time() if now is None else now
    t = text.strip().lower()
    midnight = datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0)
    if t == "today":
        return midnight.timestamp()
    if t == "yesterday":
        return (midnight - timedelta(days=1)).timestamp()
    if t == "now":
        return now
    m = _AGE.match(t)
    if m:
        return now - float(m.group(1)) * _UNIT_S[m.group(2)]
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: expected an ISO time (2026-12-01 or 2026-12-01T08:30), today, "
                          "yesterday or an age (90m, 24h, 7d)") from None
