"""The traceability store: one row per inspection, committed before the result goes to the PLC; SQLite (WAL) on the
station by default, or a plant-level PostgreSQL (`postgresql://user:pass@host/db`, same schema, PostgreSQL types).

Durability: WAL journal with `synchronous=FULL`, one transaction per row, so a row that `record()` returned for
survives `kill -9` and power loss, and the file is never left corrupt (SQLite's atomic commit). The station calls
`record()` before it posts the result to the PLC, so every result the line acted on has its row. Images are not in
the database: NG frames always, and every `keep_ok_every`-th OK frame, are written beside it by a background
thread (`images/YYYYMMDD/<id>_<decision>.jpg`, atomically; NG ones also `..._overlay.jpg` with the heatmap); the row
holds the path. Retention by age, row count and
image disk budget runs every `RETENTION_EVERY` rows and at open.

The schema is versioned (`schema_version`); `MIGRATIONS[i]` takes version i to i+1. A database written by a newer
edge-ad is refused rather than guessed at. Torch-free: sqlite3 (or psycopg) and numpy/OpenCV only.
"""

from __future__ import annotations

import abc
import contextlib
import json
import logging
import math
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from edge_ad.errors import ConfigError
from edge_ad.station.event import InspectionEvent, ViewEvent
from edge_ad.station.record import DECISIONS

log = logging.getLogger(__name__)

SCHEMA_VERSION = 6
RETENTION_EVERY = 200
COLUMNS = ("id", "time", "station", "seq", "part_id", "frame_id", "source", "model", "precision", "package_digest",
           "recipe", "decision", "defect_code", "score", "normalized_score", "threshold", "late", "fault", "error",
           "regions", "timings", "inspection_ms", "image_path", "alignment", "views", "shadow_model",
           "shadow_digest", "shadow_score", "shadow_decision")
JSON_COLUMNS = ("regions", "timings", "alignment")

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 0 -> 1
        """CREATE TABLE inspections (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            time REAL NOT NULL,
            station TEXT NOT NULL,
            seq INTEGER NOT NULL,
            part_id INTEGER NOT NULL,
            frame_id INTEGER,
            source TEXT,
            model TEXT,
            precision TEXT,
            package_digest TEXT,
            recipe INTEGER,
            decision TEXT NOT NULL CHECK (decision IN ('OK', 'NG', 'FAILED', 'LATE')),
            defect_code INTEGER NOT NULL,
            score REAL,
            normalized_score REAL,
            threshold REAL,
            late INTEGER NOT NULL,
            fault TEXT,
            error TEXT,
            regions TEXT,
            timings TEXT,
            inspection_ms REAL,
            image_path TEXT)""",
        "CREATE INDEX ix_inspections_time ON inspections (time)",
        "CREATE INDEX ix_inspections_part ON inspections (part_id, time)",
        "CREATE INDEX ix_inspections_decision ON inspections (decision, time)",
    ),
    (  # 1 -> 2: who changed what on the station (HMI engineer actions)
        """CREATE TABLE audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            time REAL NOT NULL,
            station TEXT NOT NULL,
            username TEXT NOT NULL,
            action TEXT NOT NULL,
            detail TEXT)""",
    ),
    (  # 2 -> 3: where the part was (geometry packages): category, transform, match score as JSON
        "ALTER TABLE inspections ADD COLUMN alignment TEXT",
    ),
    (  # 3 -> 4: multi-view stations: one row per view of a part, beside the part's row in `inspections`
        """CREATE TABLE inspection_views (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            inspection_id INTEGER NOT NULL,
            view_name TEXT NOT NULL,
            source TEXT,
            frame_id INTEGER,
            model TEXT,
            package_digest TEXT,
            decision TEXT NOT NULL CHECK (decision IN ('OK', 'NG', 'FAILED', 'LATE')),
            defect_code INTEGER NOT NULL,
            score REAL,
            normalized_score REAL,
            max_pixel_score REAL,
            defect_area INTEGER,
            fault TEXT,
            error TEXT,
            regions TEXT,
            image_path TEXT)""",
        "CREATE INDEX ix_views_inspection ON inspection_views (inspection_id)",
        "CREATE INDEX ix_views_view ON inspection_views (view_name, decision)",
        "ALTER TABLE inspections ADD COLUMN views INTEGER",
    ),
    (  # 4 -> 5: the model's life on the station: the shadow's verdict beside production's, every package the
       # station has seen, and every deployment (promote, rollback, shadow) with who and why
        "ALTER TABLE inspections ADD COLUMN shadow_model TEXT",
        "ALTER TABLE inspections ADD COLUMN shadow_digest TEXT",
        "ALTER TABLE inspections ADD COLUMN shadow_score REAL",
        "ALTER TABLE inspections ADD COLUMN shadow_decision TEXT",
        """CREATE TABLE models (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            station TEXT NOT NULL,
            digest TEXT NOT NULL,
            name TEXT,
            version TEXT,
            precision TEXT,
            dataset_revision TEXT,
            metrics TEXT,
            signer TEXT,
            path TEXT,
            first_seen REAL NOT NULL,
            UNIQUE (station, digest))""",
        """CREATE TABLE deployments (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            time REAL NOT NULL,
            station TEXT NOT NULL,
            digest TEXT NOT NULL,
            role TEXT NOT NULL,
            action TEXT NOT NULL,
            username TEXT,
            reason TEXT)""",
    ),
    (  # 5 -> 6: operator feedback on a part (false reject; confirmed NG with an optional drawn region)
        """CREATE TABLE feedback (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            time REAL NOT NULL,
            station TEXT NOT NULL,
            inspection_id INTEGER NOT NULL,
            label TEXT NOT NULL CHECK (label IN ('false_reject', 'confirmed_ng')),
            region TEXT,
            username TEXT)""",
        "CREATE INDEX ix_feedback_inspection ON feedback (inspection_id)",
    ),
)
FEEDBACK_LABELS = ("false_reject", "confirmed_ng")
VIEW_COLUMNS = ("id", "inspection_id", "view_name", "source", "frame_id", "model", "package_digest", "decision",
                "defect_code", "score", "normalized_score", "max_pixel_score", "defect_area", "fault", "error",
                "regions", "image_path")


@dataclass(frozen=True)
class Retention:
    """What is kept: rows younger than `max_age_days`, at most `max_rows` rows, images within `image_budget_mb`
    (oldest first out; None = no limit)."""

    max_age_days: float | None = 90.0
    max_rows: int | None = None
    image_budget_mb: float | None = 2048.0

    def __post_init__(self) -> None:
        for name in ("max_age_days", "max_rows", "image_budget_mb"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0):
                raise ConfigError(f"retention.{name}: expected a number > 0 or null, got {v!r}")


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


class TraceStore:
    """SQLite traceability store of one station. Thread-safe: `record` may be called from the control loop while
    `query` runs elsewhere (each call holds the store's lock; WAL lets other processes read meanwhile)."""

    def __init__(self, path: str | Path, station: str = "station", *, keep_ok_every: int = 0,
                 retention: Retention | None = None, images: bool = True, writer: bool = True,
                 images_dir: str | Path | None = None) -> None:
        if not isinstance(station, str) or not station.strip():
            raise ConfigError(f"station: expected a non-empty name, got {station!r}")
        if isinstance(keep_ok_every, bool) or not isinstance(keep_ok_every, int) or keep_ok_every < 0:
            raise ConfigError(f"keep_ok_every: expected an integer >= 0 (0 = no OK images), got {keep_ok_every!r}")
        self.url = str(path)
        if is_postgres_url(path):
            self.path = Path(images_dir or f"trace_images_{station}")  # where images go: a local folder
            default_images = self.path
        else:
            self.path = Path(path)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            default_images = self.path.parent / (self.path.stem + "_images")
        self.station, self.keep_ok_every = station, keep_ok_every
        self.retention = retention or Retention()
        self.images_dir = (Path(images_dir) if images_dir else default_images) if images else None
        self._lock = threading.Lock()
        self._db = self._connect(self.url)
        self._ok_count = 0
        self._since_retention = 0
        self.images_dropped = 0
        self._images: queue.Queue[tuple[Path, np.ndarray, Any] | None] = queue.Queue(maxsize=64)
        self._writer: threading.Thread | None = None
        self.writable = writer
        if not writer:
            return
        if self.images_dir is not None:
            self._writer = threading.Thread(target=self._write_images, name="edge-ad-trace-images", daemon=True)
            self._writer.start()
        self.apply_retention()

    # ---- schema ------------------------------------------------------------------------------------------------
    @staticmethod
    def _connect(target: str | Path) -> _Database:
        db: _Database = _Postgres(str(target)) if is_postgres_url(target) else _SQLite(Path(target))
        try:
            with db.transaction():  # one writer migrates at a time: stations sharing a database may start together
                db.lock_schema()
                version = db.schema_version()
                if version > SCHEMA_VERSION:
                    raise ConfigError(f"{db.name}: schema version {version} is newer than this edge-ad's "
                                      f"{SCHEMA_VERSION}; upgrade edge-ad to write to it")
                for v in range(version, SCHEMA_VERSION):
                    for stmt in MIGRATIONS[v]:
                        db.execute(db.ddl(stmt))
                    log.info("%s: schema migrated to version %d", db.name, v + 1)
                if version < SCHEMA_VERSION:
                    db.execute("DELETE FROM schema_version")
                    db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        except BaseException as e:
            db.close()
            if isinstance(e, sqlite3.Error) or type(e).__module__.startswith("psycopg"):
                raise ConfigError(f"{db.name}: cannot set up the traceability schema ({str(e).strip()})") from None
            raise
        return db

    # ---- writing -----------------------------------------------------------------------------------------------
    def record(self, event: InspectionEvent) -> int:
        """Commit one inspection and queue its image; returns the row id. Returns only after the commit is
        durable."""
        if not self.writable:
            raise ConfigError(f"{self.path}: opened for reading only")
        rec, result, image, frame, model = event.record, event.result, event.image, event.frame, event.package
        decision = rec.decision
        now = event.time
        keep_image = image is not None and self.images_dir is not None and (
            decision != "OK" or (self.keep_ok_every and self._ok_count % self.keep_ok_every == 0))
        if decision == "OK":
            self._ok_count += 1
        regions = [r.to_dict() for r in result.regions] if result is not None else []
        timings = {k: _finite(v) for k, v in (result.timings if result is not None else {}).items()}
        row = {
            "time": now, "station": self.station, "seq": int(rec.seq), "part_id": int(rec.part_id),
            "frame_id": frame.get("frame_id"), "source": event.source,
            "model": model.name, "precision": model.precision, "package_digest": model.digest,
            "recipe": int(rec.model_id), "decision": decision, "defect_code": int(rec.defect_code),
            "score": _finite(result.score) if result is not None else None,
            "normalized_score": _finite(result.normalized_score) if result is not None else None,
            "threshold": _finite(result.threshold) if result is not None else None, "late": int(bool(rec.late)),
            "fault": result.fault if result is not None else None,
            "error": rec.error or (result.error if result is not None else None),
            "regions": json.dumps(regions), "timings": json.dumps(timings),
            "inspection_ms": _finite(rec.inspection_ms), "image_path": None,
            "alignment": json.dumps(result.alignment) if result is not None and result.alignment else None,
            "views": len(event.views) or None,
            "shadow_model": None, "shadow_digest": None, "shadow_score": None, "shadow_decision": None,
        }
        cols = [c for c in COLUMNS if c != "id"]
        with self._lock:
            with self._db.transaction():
                cur = self._db.execute(f"INSERT INTO inspections ({', '.join(cols)}) VALUES "
                                       f"({', '.join('?' for _ in cols)}) RETURNING id", [row[c] for c in cols])
                row_id = int(cur.fetchone()[0])
                keep_views = decision != "OK" or bool(keep_image)
                kept = [(v.verdict.decision, self._record_view(row_id, v, now, keep=keep_views)) for v in event.views]
                shown = next((rel for d, rel in kept if rel and d != "OK"), None) or next(
                    (rel for _d, rel in kept if rel), None)  # the part's picture: its first NG view, else the first
                if shown is not None:
                    self._db.execute("UPDATE inspections SET image_path = ? WHERE id = ?", (shown, row_id))
                if keep_image and not event.views:
                    rel = Path(time.strftime("%Y%m%d", time.localtime(now))) / f"{row_id}_{decision}.jpg"
                    try:
                        assert image is not None
                        overlay = result if decision != "OK" and getattr(result, "anomaly_map", None) is not None \
                            else None  # NG: the heatmap overlay too, rendered on the writer thread
                        self._images.put_nowait((rel, np.ascontiguousarray(image), overlay))
                        self._db.execute("UPDATE inspections SET image_path = ? WHERE id = ?", (str(rel), row_id))
                    except queue.Full:
                        self.images_dropped += 1
                        log.warning("traceability: image writer behind, image of row %d not kept", row_id)
            self._since_retention += 1
            due = self._since_retention >= RETENTION_EVERY
        if due:
            self.apply_retention()
        return row_id

    def set_shadow(self, event: InspectionEvent, shadow: dict[str, Any], keep_image: bool = False) -> int | None:
        """The shadow model's verdict in the row of the part it judged (found by station, seq and time); with
        `keep_image` (shadow and production disagree) the part's image is kept if it was not already. Returns the
        row id (None: the row is gone, e.g. retention)."""
        if not self.writable:
            raise ConfigError(f"{self.path}: opened for reading only")
        rec = event.record
        with self._lock:
            row = self._db.execute("SELECT id, image_path FROM inspections WHERE station = ? AND seq = ? AND time = ?",
                                   (self.station, int(rec.seq), event.time)).fetchone()
            if row is None:
                return None
            row_id, image_path = int(row[0]), row[1]
            with self._db.transaction():
                self._db.execute("UPDATE inspections SET shadow_model = ?, shadow_digest = ?, shadow_score = ?, "
                                 "shadow_decision = ? WHERE id = ?",
                                 (shadow.get("model"), shadow.get("digest"), _finite(shadow.get("score")),
                                  shadow.get("decision"), row_id))
                if keep_image and image_path is None and event.image is not None and self.images_dir is not None:
                    rel = Path(time.strftime("%Y%m%d", time.localtime(event.time))) / f"{row_id}_shadow.jpg"
                    try:
                        self._images.put_nowait((rel, np.ascontiguousarray(event.image), None))
                        self._db.execute("UPDATE inspections SET image_path = ? WHERE id = ?", (str(rel), row_id))
                    except queue.Full:
                        self.images_dropped += 1
        return row_id

    def register_model(self, info: dict[str, Any]) -> bool:
        """Remember a package this station has run (`station.lifecycle.package_info`); False if already known."""
        with self._lock, self._db.transaction():
            known = self._db.execute("SELECT 1 FROM models WHERE station = ? AND digest = ?",
                                     (self.station, info["digest"])).fetchone()
            if known:
                return False
            self._db.execute("INSERT INTO models (station, digest, name, version, precision, dataset_revision, "
                             "metrics, signer, path, first_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             (self.station, info["digest"], info.get("name"), info.get("version"),
                              info.get("precision"), info.get("dataset_revision"), json.dumps(info.get("metrics")),
                              info.get("signer"), info.get("path"), time.time()))
        return True

    def log_deployment(self, digest: str, role: str, action: str, user: str | None, reason: str | None) -> None:
        """One deployment event (start, promote, rollback, auto-rollback, shadow) of a package on this station."""
        with self._lock, self._db.transaction():
            self._db.execute("INSERT INTO deployments (time, station, digest, role, action, username, reason) VALUES "
                             "(?, ?, ?, ?, ?, ?, ?)", (time.time(), self.station, digest, role, action, user, reason))

    def models(self, station: str | None = None) -> list[dict[str, Any]]:
        """Every package the station (all stations of a plant database: None) has run, with its latest deployment
        event and the parts it judged."""
        where, args = ("WHERE m.station = ?", [station]) if station is not None else ("", [])
        with self._lock:
            rows = self._db.execute(
                "SELECT m.station, m.digest, m.name, m.version, m.precision, m.dataset_revision, m.metrics, m.signer, "
                "m.path, m.first_seen, "
                "(SELECT COUNT(*) FROM inspections i WHERE i.station = m.station AND i.package_digest = m.digest) "
                f"FROM models m {where} ORDER BY m.first_seen", args).fetchall()
            out = []
            for r in rows:
                d = dict(zip(("station", "digest", "name", "version", "precision", "dataset_revision", "metrics",
                              "signer", "path", "first_seen", "parts"), r))
                d["metrics"] = json.loads(d["metrics"]) if d["metrics"] else None
                last = self._db.execute("SELECT time, role, action, username, reason FROM deployments WHERE "
                                        "station = ? AND digest = ? ORDER BY id DESC LIMIT 1",
                                        (d["station"], d["digest"])).fetchone()
                d["last_deployment"] = dict(zip(("time", "role", "action", "user", "reason"), last)) if last else None
                out.append(d)
        return out

    def deployments(self, limit: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT time, station, digest, role, action, username, reason FROM deployments "
                                    "ORDER BY id DESC LIMIT ?", (int(limit),)).fetchall()
        return [dict(zip(("time", "station", "digest", "role", "action", "user", "reason"), r)) for r in rows]

    def add_feedback(self, row_id: int, label: str, user: str, region: list[int] | None = None) -> int:
        """An operator's verdict on a part: `false_reject` (it was good) or `confirmed_ng`, with an optional region
        [x, y, w, h] in image pixels. The part must have a stored image (NG parts always do). Returns the feedback id;
        a newer feedback on the same part supersedes the older one."""
        if label not in FEEDBACK_LABELS:
            raise ConfigError(f"feedback: label: expected one of {list(FEEDBACK_LABELS)}, got {label!r}")
        if region is not None and (len(region) != 4 or not all(isinstance(v, int) and not isinstance(v, bool)
                                                               and 0 <= v <= 65535 for v in region)
                                   or region[2] < 1 or region[3] < 1):
            raise ConfigError(f"feedback: region: expected [x, y, width, height] in pixels, got {region!r}")
        row = self.row(row_id)
        if row is None or self.image_file(row) is None:
            raise ConfigError(f"feedback: part row {row_id} has no stored image to learn from")
        if label == "false_reject" and row["decision"] == "OK":
            raise ConfigError(f"feedback: row {row_id} was OK, not rejected")
        with self._lock, self._db.transaction():
            cur = self._db.execute("INSERT INTO feedback (time, station, inspection_id, label, region, username) "
                                   "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                                   (time.time(), self.station, int(row_id), label,
                                    json.dumps(region) if region else None, user))
            return int(cur.fetchone()[0])

    def feedback(self, since: float | None = None, until: float | None = None) -> list[dict[str, Any]]:
        """The latest feedback per part (of parts inspected in [since, until)), with the part's row."""
        with self._lock:
            rows = self._db.execute("SELECT f.inspection_id, f.label, f.region, f.username, f.time FROM feedback f "
                                    "WHERE f.id IN (SELECT MAX(id) FROM feedback GROUP BY inspection_id) "
                                    "ORDER BY f.inspection_id").fetchall()
        out = []
        for rid, label, region, user, t in rows:
            part = self.row(int(rid))
            if part is None or (since is not None and part["time"] < since) or (until is not None
                                                                               and part["time"] >= until):
                continue
            out.append({"row": part, "label": label, "region": json.loads(region) if region else None,
                        "user": user, "time": t})
        return out

    def shadow_rows(self, *, disagreements_only: bool = False, limit: int = 100) -> list[dict[str, Any]]:
        """The newest rows a shadow judged (or only those where it disagreed with production)."""
        where = "shadow_decision IS NOT NULL"
        if disagreements_only:
            where += " AND ((decision = 'OK') <> (shadow_decision = 'OK'))"
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(COLUMNS)} FROM inspections WHERE {where} ORDER BY id DESC "
                                    f"LIMIT {int(limit)}").fetchall()
        return [row_dict(r) for r in rows]

    def _record_view(self, row_id: int, view: ViewEvent, now: float, keep: bool) -> str | None:
        """One view's row (inside the part's transaction) and its image when `keep` (every view of a part that is
        not OK, so its gallery entry shows all of them; OK parts by `keep_ok_every`)."""
        vd, result = view.verdict, view.result
        decision = vd.decision
        row = {
            "inspection_id": row_id, "view_name": vd.name, "source": view.source,
            "frame_id": view.frame.get("frame_id"),
            "model": view.package.name, "package_digest": view.package.digest, "decision": decision,
            "defect_code": int(vd.defect_code),
            "score": _finite(result.score) if result is not None else None,
            "normalized_score": _finite(vd.anomaly_score), "max_pixel_score": _finite(vd.max_pixel_score),
            "defect_area": int(vd.defect_area), "fault": result.fault if result is not None else None,
            "error": vd.error or (result.error if result is not None else None),
            "regions": json.dumps([r.to_dict() for r in result.regions] if result is not None else []),
            "image_path": None,
        }
        cols = [c for c in VIEW_COLUMNS if c != "id"]
        cur = self._db.execute(f"INSERT INTO inspection_views ({', '.join(cols)}) VALUES "
                               f"({', '.join('?' for _ in cols)}) RETURNING id", [row[c] for c in cols])
        view_id = int(cur.fetchone()[0])
        if not (keep and view.image is not None and self.images_dir is not None):
            return None
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in vd.name)[:40]
        rel = Path(time.strftime("%Y%m%d", time.localtime(now))) / f"{row_id}_{safe}_{decision}.jpg"
        try:
            assert view.image is not None
            overlay = result if decision != "OK" and getattr(result, "anomaly_map", None) is not None else None
            self._images.put_nowait((rel, np.ascontiguousarray(view.image), overlay))
        except queue.Full:
            self.images_dropped += 1
            log.warning("traceability: image writer behind, image of view %s of row %d not kept", vd.name, row_id)
            return None
        self._db.execute("UPDATE inspection_views SET image_path = ? WHERE id = ?", (str(rel), view_id))
        return str(rel)

    def _write_images(self) -> None:
        import cv2

        from edge_ad.fileio import atomic_write_bytes

        assert self.images_dir is not None
        while True:
            item = self._images.get()
            if item is None:
                return
            rel, image, result = item
            try:
                target = self.images_dir / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                pictures = [(target, image)]
                if result is not None:
                    from edge_ad.runtime.overlay import render_overlay

                    pictures.append((overlay_path(target), render_overlay(image, result)))
                for path, picture in pictures:
                    ok, buf = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, 92])
                    if not ok:
                        raise ValueError(f"cannot encode a {picture.shape} image")
                    atomic_write_bytes(path, buf.tobytes())
            except Exception as e:  # a full disk must not stop inspection; the row stays, the image is missing
                log.error("traceability: could not write %s: %s", rel, e)

    def apply_retention(self) -> dict[str, int]:
        """Delete rows past the age/count limits (with their images), then the oldest images over the budget."""
        r, removed = self.retention, {"rows": 0, "images": 0}
        with self._lock:
            self._since_retention = 0
            doomed: list[tuple[int, str | None]] = []
            if r.max_age_days is not None:
                cutoff = time.time() - r.max_age_days * 86400.0
                doomed += self._db.execute("SELECT id, image_path FROM inspections WHERE time < ?",
                                           (cutoff,)).fetchall()
            if r.max_rows is not None:
                doomed += self._db.execute(
                    "SELECT id, image_path FROM inspections WHERE id <= (SELECT id FROM inspections ORDER BY id DESC "
                    "LIMIT 1 OFFSET ?)", (r.max_rows,)).fetchall()
            if doomed:
                ids = sorted({i for i, _ in doomed})
                view_images = [p for i in ids for (p,) in self._db.execute(
                    "SELECT image_path FROM inspection_views WHERE inspection_id = ? AND image_path IS NOT NULL",
                    (i,)).fetchall()]
                with self._db.transaction():
                    self._db.executemany("DELETE FROM inspection_views WHERE inspection_id = ?", [(i,) for i in ids])
                    self._db.executemany("DELETE FROM feedback WHERE inspection_id = ?", [(i,) for i in ids])
                    self._db.executemany("DELETE FROM inspections WHERE id = ?", [(i,) for i in ids])
                removed["rows"] = len(ids)
                removed["images"] += self._unlink(iter({p for _, p in doomed} | set(view_images)))
            if r.image_budget_mb is not None and self.images_dir is not None and self.images_dir.is_dir():
                removed["images"] += self._trim_images(int(r.image_budget_mb * 2**20))
        if removed["rows"] or removed["images"]:
            log.info("traceability retention: %d rows, %d images removed", removed["rows"], removed["images"])
        return removed

    def _unlink(self, rels: Iterator[str | None]) -> int:
        n = 0
        for rel in rels:
            if rel and self.images_dir is not None:
                p = self.images_dir / rel
                overlay_path(p).unlink(missing_ok=True)
                if p.is_file():
                    p.unlink()
                    n += 1
        return n

    def _trim_images(self, budget: int) -> int:
        assert self.images_dir is not None
        files = sorted((p for p in self.images_dir.rglob("*.jpg") if p.is_file() and not p.stem.endswith("_overlay")),
                       key=lambda p: (p.parent.name, int(p.stem.split("_")[0]) if p.stem.split("_")[0].isdigit()
                                      else 0))
        sizes = [p.stat().st_size + (overlay_path(p).stat().st_size if overlay_path(p).is_file() else 0) for p in files]
        total, n = sum(sizes), 0
        gone: list[str] = []
        for p, size in zip(files, sizes):
            if total <= budget:
                break
            p.unlink()
            overlay_path(p).unlink(missing_ok=True)
            total -= size
            n += 1
            gone.append(str(p.relative_to(self.images_dir)))
        if gone:
            with self._db.transaction():
                self._db.executemany("UPDATE inspections SET image_path = NULL WHERE image_path = ?",
                                     [(g,) for g in gone])
                self._db.executemany("UPDATE inspection_views SET image_path = NULL WHERE image_path = ?",
                                     [(g,) for g in gone])
        return n

    # ---- reading -----------------------------------------------------------------------------------------------
    def query(self, *, since: float | None = None, until: float | None = None, part: int | None = None,
              decisions: Sequence[str] = (), station: str | None = None, limit: int | None = None,
              newest_first: bool = False) -> list[dict[str, Any]]:
        """Rows matching every given filter (time in unix seconds, half-open [since, until))."""
        sql, args = build_query(since=since, until=until, part=part, decisions=decisions, station=station,
                                limit=limit, newest_first=newest_first)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [row_dict(r) for r in rows]

    def views_of(self, row_id: int) -> list[dict[str, Any]]:
        """The view rows of one part (multi-view stations), in the station's view order."""
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(VIEW_COLUMNS)} FROM inspection_views WHERE inspection_id = ? "
                                    "ORDER BY id", (int(row_id),)).fetchall()
        return [view_row_dict(r) for r in rows]

    def view_row(self, view_id: int) -> dict[str, Any] | None:
        """One view row by id (its `image_path` works with `image_file`)."""
        with self._lock:
            r = self._db.execute(f"SELECT {', '.join(VIEW_COLUMNS)} FROM inspection_views WHERE id = ?",
                                 (int(view_id),)).fetchone()
        return view_row_dict(r) if r else None

    def query_views(self, view: str, *, since: float | None = None, until: float | None = None,
                    part: int | None = None, decisions: Sequence[str] = (), station: str | None = None,
                    limit: int | None = None, newest_first: bool = False) -> list[dict[str, Any]]:
        """Rows of one view (`view` name) of the parts matching the filters; `decisions` filter the view's own
        decision. Each row has the view's columns plus the part's time, seq, part_id, station and decision."""
        sql, args = build_query(since=since, until=until, part=part, decisions=(), station=station, limit=None,
                                newest_first=newest_first)
        parts = sql.replace(f"SELECT {', '.join(COLUMNS)} FROM inspections", "SELECT id FROM inspections")
        parts = parts.split(" ORDER BY ")[0]
        bad = [d for d in decisions if d not in DECISIONS]
        if bad:
            raise ConfigError(f"decision: expected any of {list(DECISIONS)}, got {bad}")
        vsql = (f"SELECT {', '.join('v.' + c for c in VIEW_COLUMNS)}, i.time, i.seq, i.part_id, i.station, "
                f"i.decision FROM inspection_views v JOIN inspections i ON i.id = v.inspection_id "
                f"WHERE v.view_name = ? AND v.inspection_id IN ({parts})")
        vargs: list[Any] = [view, *args]
        if decisions:
            vsql += f" AND v.decision IN ({', '.join('?' for _ in decisions)})"
            vargs += list(decisions)
        vsql += " ORDER BY v.id " + ("DESC" if newest_first else "ASC")
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise ConfigError(f"limit: expected an integer >= 1, got {limit!r}")
            vsql += f" LIMIT {int(limit)}"
        with self._lock:
            rows = self._db.execute(vsql, vargs).fetchall()
        out = []
        for r in rows:
            d = view_row_dict(r[: len(VIEW_COLUMNS)])
            d.update(zip(("time", "seq", "part_id", "station", "part_decision"), r[len(VIEW_COLUMNS):]))
            out.append(d)
        return out

    def audit(self, user: str, action: str, detail: dict[str, Any]) -> None:
        """Log an operator/engineer action (committed at once)."""
        with self._lock, self._db.transaction():
            self._db.execute("INSERT INTO audit (time, station, username, action, detail) VALUES (?, ?, ?, ?, ?)",
                             (time.time(), self.station, user, action, json.dumps(detail)))

    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT time, station, username, action, detail FROM audit ORDER BY id DESC "
                                    "LIMIT ?",
                                    (int(limit),)).fetchall()
        return [{"time": t, "station": st, "user": u, "action": a, "detail": json.loads(d or "{}")}
                for t, st, u, a, d in rows]

    def row(self, row_id: int) -> dict[str, Any] | None:
        with self._lock:
            r = self._db.execute(f"SELECT {', '.join(COLUMNS)} FROM inspections WHERE id = ?",
                                 (int(row_id),)).fetchone()
        return row_dict(r) if r else None

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM inspections").fetchone()[0])

    def image_file(self, row: dict[str, Any], overlay: bool = False) -> Path | None:
        """The stored image (or, for NG rows, its heatmap overlay) of a row, if it is (still) on disk. Only a
        relative path inside the image directory is followed, through no symbolic link, whatever the row says (a
        plant database is written by others too)."""
        rel = row.get("image_path")
        if not isinstance(rel, str) or not rel or self.images_dir is None:
            return None
        rp = Path(rel)
        if rp.is_absolute() or ".." in rp.parts or rp.name.startswith("."):
            log.warning("traceability: row %s: image path %r refused (outside the image directory)", row.get("id"),
                        rel)
            return None
        root = os.path.realpath(self.images_dir)
        p = Path(root) / rp
        p = overlay_path(p) if overlay else p
        if os.path.realpath(p) != str(p) or not p.is_file():  # a link anywhere below the root, or gone
            return None
        return p

    def close(self) -> None:
        """Finish the queued images, then close the database."""
        if self._writer is not None:
            self._images.put(None)
            self._writer.join(30.0)
            self._writer = None
        with self._lock:
            self._db.close()

    def __enter__(self) -> TraceStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def build_query(*, since: float | None, until: float | None, part: int | None, decisions: Sequence[str],
                station: str | None, limit: int | None, newest_first: bool) -> tuple[str, list[Any]]:
    """The SELECT for `TraceStore.query` (parameterised: user values never enter the SQL text)."""
    where: list[str] = []
    args: list[Any] = []
    if since is not None:
        where.append("time >= ?")
        args.append(float(since))
    if until is not None:
        where.append("time < ?")
        args.append(float(until))
    if part is not None:
        where.append("part_id = ?")
        args.append(int(part))
    bad = [d for d in decisions if d not in DECISIONS]
    if bad:
        raise ConfigError(f"decision: expected any of {list(DECISIONS)}, got {bad}")
    if decisions:
        where.append(f"decision IN ({', '.join('?' for _ in decisions)})")
        args += list(decisions)
    if station is not None:
        where.append("station = ?")
        args.append(station)
    sql = f"SELECT {', '.join(COLUMNS)} FROM inspections"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id " + ("DESC" if newest_first else "ASC")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigError(f"limit: expected an integer >= 1, got {limit!r}")
        sql += f" LIMIT {int(limit)}"
    return sql, args


def row_dict(row: Sequence[Any]) -> dict[str, Any]:
    d = dict(zip(COLUMNS, row))
    for c in JSON_COLUMNS:
        d[c] = json.loads(d[c]) if d[c] else ([] if c == "regions" else {})
    d["late"] = bool(d["late"])
    return d


def view_row_dict(row: Sequence[Any]) -> dict[str, Any]:
    d = dict(zip(VIEW_COLUMNS, row))
    d["regions"] = json.loads(d["regions"]) if d["regions"] else []
    return d


def open_readonly(path: str | Path, images_dir: str | Path | None = None) -> TraceStore:
    """Open an existing database for queries (no image writer, no retention run)."""
    if is_postgres_url(path):
        return TraceStore(path, "reader", writer=False, images_dir=images_dir)
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no traceability database here (edge-ad serve --db {p} writes one)")
    return TraceStore(p, "reader", writer=False)


def overlay_path(image: Path) -> Path:
    """Where the heatmap overlay of a stored NG image is kept: beside it, `<stem>_overlay.jpg`."""
    return image.with_name(image.stem + "_overlay.jpg")


def is_postgres_url(target: str | Path) -> bool:
    return str(target).startswith(("postgresql://", "postgres://"))


class _Database(abc.ABC):
    """What both database kinds share (subclasses set `name` and `con` and implement `execute`)."""

    name: str
    con: Any

    @abc.abstractmethod
    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """Run one statement for every row."""

    @abc.abstractmethod
    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """A write transaction (committed on leaving, rolled back on an exception)."""

    @abc.abstractmethod
    def lock_schema(self) -> None:
        """Inside a transaction: make concurrent schema set-ups wait for this one."""

    @abc.abstractmethod
    def ddl(self, stmt: str) -> str:
        """A CREATE statement in this database's dialect."""

    @abc.abstractmethod
    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        """Run one statement with `?` placeholders; returns a cursor."""

    def schema_version(self) -> int:
        row = self.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def close(self) -> None:
        self.con.close()


class _SQLite(_Database):
    """sqlite3 in autocommit mode with explicit BEGIN IMMEDIATE transactions; WAL, synchronous=FULL."""

    def __init__(self, path: Path) -> None:
        self.name = str(path)
        try:
            self.con = sqlite3.connect(str(path), timeout=10.0, check_same_thread=False, isolation_level=None)
            self.con.execute("PRAGMA journal_mode=WAL")
            self.con.execute("PRAGMA synchronous=FULL")  # a returned commit survives power loss
            self.con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        except sqlite3.DatabaseError as e:
            raise ConfigError(f"{path}: not a usable SQLite traceability database ({e})") from None

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        return self.con.execute(sql, tuple(args))

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        self.con.executemany(sql, rows)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self.con.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    def ddl(self, stmt: str) -> str:
        return stmt

    def lock_schema(self) -> None:
        """BEGIN IMMEDIATE already holds the database's write lock."""



class _Postgres(_Database):
    """psycopg 3 (`pip install "edge-ad[postgres]"`): the same schema with PostgreSQL types; `?` placeholders are
    rewritten to `%s`. Commits are durable with the server's default synchronous_commit."""

    def __init__(self, url: str) -> None:
        from edge_ad.optional import require

        psycopg = require("psycopg", "a postgresql:// database")
        u = urlsplit(url)
        self.name = f"postgresql://{u.hostname or ''}{':' + str(u.port) if u.port else ''}{u.path}"  # no password
        try:
            self.con = psycopg.connect(url, autocommit=True, connect_timeout=10)
        except psycopg.Error as e:
            raise ConfigError(f"{self.name}: cannot use this PostgreSQL database ({str(e).strip()})") from None

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        return self.con.execute(sql.replace("?", "%s"), tuple(args))

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        with self.con.cursor() as cur:
            cur.executemany(sql.replace("?", "%s"), rows)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self.con.transaction():
            yield

    def lock_schema(self) -> None:
        """A transaction-scoped advisory lock, then the version table: concurrent CREATE TABLE IF NOT EXISTS
        races in PostgreSQL (a unique violation in pg_type), so even that waits for the lock."""
        self.execute("SELECT pg_advisory_xact_lock(hashtext('edge-ad traceability schema'))")
        self.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")

    def ddl(self, stmt: str) -> str:
        return (stmt.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY")
                .replace(" INTEGER", " BIGINT").replace(" REAL", " DOUBLE PRECISION"))


class TraceRecorder:
    """The store as a station `Recorder`: one row per published verdict. The store belongs to the station's
    services (they close it), so `close()` here does nothing."""

    def __init__(self, store: TraceStore) -> None:
        self.store = store

    def open(self) -> None:
        """The store is opened by whoever made it."""

    def write(self, event: InspectionEvent) -> None:
        self.store.record(event)

    def close(self) -> None:
        """The store is closed by whoever made it."""
