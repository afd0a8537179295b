"""`Frame`: one image from a source plus the metadata needed to trace it (ids, timestamps, format, outages).

Contract shared by every source and the pipeline: `image` is BGR uint8 (H, W, 3), already converted from the
camera's pixel format, or None when the frame arrived but could not be decoded (`error` says why); such a frame still
travels through the pipeline and becomes an error Result, so a bad frame never stops the stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Gap:
    """An outage of a source: the camera was lost (or stalled) and came back.

    `frames_lost` is estimated from the frame rate before the outage (`seconds_down * fps - 1`, at least 0) because a
    camera that reboots restarts its frame counter; `reason` is what triggered the reconnect.
    """

    seconds_down: float
    frames_lost: int
    reason: str
    reconnects: int

    def to_dict(self) -> dict[str, Any]:
        return {"seconds_down": round(self.seconds_down, 3), "frames_lost": self.frames_lost, "reason": self.reason,
                "reconnects": self.reconnects}


@dataclass
class Frame:
    """One captured image.

    - `seq`: position in this source's output (0, 1, 2, ... across reconnects), unique per source run.
    - `frame_id`: the camera's own counter (GigE block id, GenTL frame id) or `seq` where the source has none.
    - `camera_timestamp_ns`: the device clock (None when the device has no timestamps).
    - `host_timestamp`: wall-clock seconds (time.time()) when the frame reached the host.
    - `capture_monotonic`: time.monotonic() at the same instant; latency is measured from it.
    - `pixel_format`: the format the camera delivered (e.g. "BayerRG8") before conversion to BGR.
    - `gap`: set on the first frame after an outage.
    """

    image: np.ndarray | None
    seq: int
    frame_id: int
    source_id: str
    pixel_format: str
    host_timestamp: float
    capture_monotonic: float
    camera_timestamp_ns: int | None = None
    error: str | None = None
    gap: Gap | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def meta(self) -> dict[str, Any]:
        """JSON-safe metadata for `Result.frame` (no pixels)."""
        out: dict[str, Any] = {
            "seq": self.seq,
            "frame_id": self.frame_id,
            "source_id": self.source_id,
            "pixel_format": self.pixel_format,
            "host_timestamp": self.host_timestamp,
            "camera_timestamp_ns": self.camera_timestamp_ns,
        }
        if self.image is not None:
            out["height"], out["width"] = int(self.image.shape[0]), int(self.image.shape[1])
        if self.gap is not None:
            out["gap"] = self.gap.to_dict()
        out.update(self.extra)
        return out
