"""Station outputs: the `Recorder` protocol every output implements (traceability, MQTT, HMI live view, NG folder,
JSONL log, a Python callback), the `Fanout` of several, and the two file recorders.

A recorder gets every published `InspectionEvent` in order, on the scheduler's thread, *before* the PLC sees the
verdict; `open()` is called once before the first event and `close()` after the last (and must be idempotent: the
station's services close what they own too). A recorder that raises is logged and counted by the scheduler and
never stops inspection.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np

from edge_ad.errors import ConfigError
from edge_ad.fileio import atomic_write_bytes
from edge_ad.runtime.result import Result, json_safe
from edge_ad.station.event import InspectionEvent, ViewEvent

log = logging.getLogger(__name__)


@runtime_checkable
class Recorder(Protocol):
    """Receives each published verdict in order."""

    def open(self) -> None: ...

    def write(self, event: InspectionEvent) -> None: ...

    def close(self) -> None: ...


def event_dict(event: InspectionEvent, station: str | None = None) -> dict[str, Any]:
    """The one JSON form of a verdict (JSONL log, NG folder, MQTT): the detector's result (`Result.to_dict()`) if
    there is one, then what the PLC got and which package judged it."""
    rec, pkg = event.record, event.package
    out: dict[str, Any] = event.result.to_dict() if event.result is not None else {
        "status": "ERROR", "score": None, "normalized_score": None, "regions": [], "error": rec.error}
    out.update({
        "time": event.time, "seq": rec.seq, "part_id": rec.part_id, "decision": rec.decision,
        "ok": rec.decision == "OK",
        "defect_code": int(rec.defect_code), "anomaly_score": rec.anomaly_score if rec.finite else 1.0,
        "max_pixel_score": rec.max_pixel_score if rec.finite else 1.0, "defect_area": rec.defect_area,
        "late": rec.late, "inspection_ms": rec.inspection_ms, "model": pkg.name, "precision": pkg.precision,
        "package_digest": pkg.digest, "recipe": pkg.recipe, "source": event.source,
        "frame": event.frame, "timings": event.timings,
    })
    if rec.error is not None:
        out["error"] = rec.error
    if event.views:  # multi-view part: every view's verdict, score and regions
        out["views"] = [view_dict(v) for v in event.views]
    if station is not None:
        out["station"] = station
    return dict(json_safe(out))


def view_dict(view: ViewEvent) -> dict[str, Any]:
    """One view of a multi-view part in `event_dict`: name, decision, codes, scores, regions, frame, package."""
    vd, result = view.verdict, view.result
    return {"name": vd.name, "decision": vd.decision, "ok": vd.decision == "OK", "defect_code": int(vd.defect_code),
            "fault": vd.fault, "anomaly_score": vd.anomaly_score, "max_pixel_score": vd.max_pixel_score,
            "defect_area": vd.defect_area, "error": vd.error, "source": view.source,
            "score": result.score if result is not None else None,
            "regions": [r.to_dict() for r in result.regions] if result is not None else [],
            "frame": view.frame, "model": view.package.name, "package_digest": view.package.digest,
            "timings": dict(result.timings) if result is not None else {}}


class SharedRecorder:
    """One recorder fed by several schedulers (`edge-ad run` with several cameras: one pipeline per camera): writes
    are serialised, `open()` reaches the recorder once and `close()` only when the last of its `users` closes."""

    def __init__(self, recorder: Recorder, users: int) -> None:
        if users < 1:
            raise ConfigError(f"SharedRecorder: expected users >= 1, got {users}")
        self.recorder, self.users = recorder, users
        self._lock = threading.Lock()
        self._opened = False
        self._closed = 0

    def open(self) -> None:
        with self._lock:
            if not self._opened:
                self.recorder.open()
                self._opened = True

    def write(self, event: InspectionEvent) -> None:
        with self._lock:
            self.recorder.write(event)

    def close(self) -> None:
        with self._lock:
            self._closed += 1
            if self._closed == self.users:
                self.recorder.close()


class Fanout:
    """Several recorders in order (traceability first, then the network, then the screens): one failing does not
    stop the others; the first exception is raised after all ran, so the scheduler counts it."""

    def __init__(self, recorders: Sequence[Recorder]) -> None:
        self.recorders = list(recorders)

    def open(self) -> None:
        for r in self.recorders:
            r.open()

    def write(self, event: InspectionEvent) -> None:
        first: Exception | None = None
        for r in self.recorders:
            try:
                r.write(event)
            except Exception as e:
                first = first or e
                if first is not e:
                    log.exception("recorder %s failed too", type(r).__name__)
        if first is not None:
            raise first

    def close(self) -> None:
        for r in self.recorders:
            try:
                r.close()
            except Exception:
                log.exception("closing recorder %s failed", type(r).__name__)


class CallbackRecorder:
    """Calls `fn(result, image)` for every verdict that has a detector Result (the Python API's `on_result`)."""

    def __init__(self, fn: Callable[[Result, np.ndarray | None], object]) -> None:
        if not callable(fn):
            raise ConfigError(f"callback: expected a callable fn(result, image), got {type(fn).__name__}")
        self.fn = fn

    def open(self) -> None:
        """Nothing to open."""

    def write(self, event: InspectionEvent) -> None:
        if event.result is not None:
            self.fn(event.result, event.image)

    def close(self) -> None:
        """Nothing to flush."""


class JsonlRecorder:
    """One JSON line per verdict (`event_dict`), rotated at `max_bytes` keeping `backups` files.

    Rotation renames `results.jsonl` -> `results.jsonl.1` -> ... like logging's RotatingFileHandler; each line is
    flushed as written, so a crash loses at most the line being written.
    """

    def __init__(self, path: str | Path, max_bytes: int = 50_000_000, backups: int = 5) -> None:
        if max_bytes < 1024 or backups < 0:
            raise ConfigError(f"{path}: expected max_bytes >= 1024 and backups >= 0, got {max_bytes}, {backups}")
        self.path = Path(path)
        self.max_bytes, self.backups = max_bytes, backups
        self._f: Any = None

    def open(self) -> None:
        if self._f is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (kept open for the stream)

    def write(self, event: InspectionEvent) -> None:
        self.open()
        line = json.dumps(event_dict(event), allow_nan=False) + "\n"
        if self._f.tell() + len(line) > self.max_bytes and self._f.tell() > 0:
            self._rotate()
        self._f.write(line)
        self._f.flush()

    def _rotate(self) -> None:
        self._f.close()
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            for i in range(self.backups - 1, 0, -1):
                src = self.path.with_name(f"{self.path.name}.{i}")
                if src.exists():
                    os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


_NAME = re.compile(r"^(\d{8}T\d{6}_\d{6}_\d+)[_.]")


class NGFolderRecorder:
    """Saves NG parts (and FAILED/LATE ones with `errors=True`): image, overlay and JSON, newest `keep` kept.

    Files: `<time>_<seq>_image.<ext>`, `<time>_<seq>_overlay.<ext>`, `<time>_<seq>.json`, written atomically. Files
    of earlier runs in the folder count towards the limit, oldest deleted first, so the disk cannot fill up.
    """

    def __init__(self, folder: str | Path, keep: int = 500, overlays: bool = True, errors: bool = False,
                 ext: str = ".jpg") -> None:
        if keep < 1:
            raise ConfigError(f"{folder}: keep: expected >= 1 saved items, got {keep}")
        if ext not in (".jpg", ".png", ".bmp"):
            raise ConfigError(f"{folder}: ext: expected .jpg, .png or .bmp, got {ext!r}")
        self.folder = Path(folder)
        self.keep, self.overlays, self.errors, self.ext = keep, overlays, errors, ext
        self._items: deque[str] | None = None
        self.saved = 0

    def open(self) -> None:
        if self._items is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._items = deque(sorted({m.group(1) for p in self.folder.iterdir() if (m := _NAME.match(p.name))}))

    def write(self, event: InspectionEvent) -> None:
        decision = event.decision
        if decision == "OK" or (decision != "NG" and not self.errors):
            return
        self.open()
        assert self._items is not None
        from edge_ad.runtime.overlay import render_overlay

        ts = float(event.frame.get("host_timestamp") or event.time)
        stem = (time.strftime("%Y%m%dT%H%M%S", time.localtime(ts)) + f"_{int(ts % 1 * 1e6):06d}_"
                f"{event.frame.get('seq', event.record.seq)}")
        image, result = event.image, event.result
        if image is not None:
            atomic_write_bytes(self.folder / f"{stem}_image{self.ext}", _encode(image, self.ext))
            if self.overlays and result is not None and result.anomaly_map is not None:
                atomic_write_bytes(self.folder / f"{stem}_overlay{self.ext}",
                                   _encode(render_overlay(image, result), self.ext))
        atomic_write_bytes(self.folder / f"{stem}.json",
                           (json.dumps(event_dict(event), indent=1, allow_nan=False) + "\n").encode())
        self._items.append(stem)
        self.saved += 1
        while len(self._items) > self.keep:
            old = self._items.popleft()
            for p in [*self.folder.glob(f"{old}_*"), self.folder / f"{old}.json"]:
                p.unlink(missing_ok=True)

    def close(self) -> None:
        """Nothing buffered: every item is on disk when write returns."""


def _encode(image: np.ndarray, ext: str) -> bytes:
    ok, buf = cv2.imencode(ext, image)
    if not ok:
        raise ConfigError(f"cannot encode a {image.shape} image as {ext}")
    return buf.tobytes()
