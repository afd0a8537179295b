"""Waiting for a worker thread's queue to drain (the drift monitor's and the shadow model's): tests and shutdown."""

from __future__ import annotations

import queue
import time
from typing import Any


def wait_drained(q: queue.Queue[Any], timeout: float = 30.0) -> bool:
    """True once every item put on `q` was marked done (`task_done`), False after `timeout` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if q.unfinished_tasks == 0:
            return True
        time.sleep(0.01)
    return False
