"""The HMI's HTTP API and static front end (Starlette), served by uvicorn on its own thread next to the station.

Read endpoints (any visitor on the station network; log in for actions): `/api/state` (counters, yield,
throughput, latency, score trend and histogram, link and fault state, thresholds, recipes), `/api/live.jpg` (the
latest frame with its overlay, re-encoded at most `max_fps` per second; `/api/live.mjpg` streams it as MJPEG),
`/api/ng` (the last NG/failed/late parts), `/api/parts` (lookup by part id and time range), `/api/image/{id}`,
`/api/audit`, `/metrics` (Prometheus). Engineer actions (POST, session cookie with role `engineer`, audited with
who/when): `/api/sensitivity`, `/api/false-reject` (copies the part's image into the dataset's `train/good` for
the next training), `/api/capture` (capture mode on/off: quality-checked frames of the running station into the
dataset) and `/api/recipe` (switch recipe while the PLC's RecipeRequest is 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import re
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edge_ad.errors import ConfigError, EdgeADError
from edge_ad.hmi.auth import Sessions
from edge_ad.hmi.live import CaptureWorker, LiveView
from edge_ad.station.view import StationView
from edge_ad.traceability.store import TraceStore

log = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("static")
COOKIE = "edgead_session"


class Station:
    """What the HMI talks to: the station's view (`StationView`: state and engineer actions), its live view, the
    traceability store and the settings file."""

    def __init__(self, view: StationView, live: LiveView, store: TraceStore | None = None, *,
                 name: str = "station", settings: str | Path | None = None,
                 dataset: str | Path | None = None, drift: Any = None, shadow: Any = None,
                 loader: Callable[[str], Any] | None = None,
                 shadow_factory: Callable[[str], Any] | None = None) -> None:
        from edge_ad.station.shadow import ShadowSlot

        self.view, self.live, self.store, self.name = view, live, store, name
        self.loader = loader  #: loads and verifies a package for promotion (trusted keys as production)
        self.shadow_factory = shadow_factory  #: makes a ShadowRunner of a package (None: no shadow from the HMI)
        #: the station's shadow seat (a ShadowRunner given alone is seated in a slot of its own)
        self.shadow_slot = shadow if isinstance(shadow, ShadowSlot) else ShadowSlot(shadow)
        self.drift = drift  #: the station's DriftMonitor (None: off)
        self.settings = Path(settings) if settings else None
        self.dataset = Path(dataset) if dataset else None
        self.capture: CaptureWorker | None = None  # while capture mode is on
        self._capture_lock = threading.Lock()
        if self.settings is not None and self.settings.is_file():
            from edge_ad.fileio import read_json_file

            saved = read_json_file(self.settings, "HMI settings")
            value = saved.get("sensitivity") if isinstance(saved, dict) else None
            if not isinstance(saved, dict) or (value is not None and (isinstance(value, bool) or not isinstance(
                    value, (int, float)))):
                raise ConfigError(f"{self.settings}: expected {{\"sensitivity\": number, ...}}; fix or delete the file")
            if value is not None:
                try:
                    view.set_sensitivity(float(value))
                except ConfigError as e:
                    raise ConfigError(f"{self.settings}: {e}; fix or delete the file") from None
                log.info("HMI settings %s: sensitivity %.3f", self.settings, value)

    def state(self) -> dict[str, Any]:
        snap = self.view.snapshot()
        return {
            "station": self.name, "time": time.time(), "recipe": snap.recipe, "model": snap.model,
            "precision": snap.precision, "threshold": snap.threshold, "sensitivity": snap.sensitivity,
            "stats": self.live.stats(), "last": self.live.last(),
            "plc": {"connected": snap.plc_connected, "description": snap.plc_description},
            "camera": snap.camera,
            "faults": {"record_errors": snap.record_errors, "late_discarded": snap.late_discarded,
                       "triggers_ignored": snap.triggers_ignored, "source_fault": snap.source_fault},
            "running": snap.running, "database": self.store is not None,
            "capture": self.capture.status() if self.capture is not None else {"on": False},
            "recipes": {str(k): v for k, v in sorted(snap.recipes.items())},
            "roi_categories": snap.roi_categories,
            "dataset": self.dataset.name if self.dataset else None,
            "drift": self.drift.status() if self.drift is not None else {"level": "OFF", "code": 0, "reasons": [
                "no drift reference in the package (export from a training run) or drift_window 0"]},
            "shadow": self.shadow.status() if self.shadow is not None else None,
        }

    def set_capture(self, on: bool, user: str, category: str = "good_parts") -> dict[str, Any]:
        """Capture mode: keep quality-checked frames of the running station in the dataset's CATEGORY/train/good."""
        if self.dataset is None:
            raise ConfigError("capture: the station needs --ui-dataset DIR")
        with self._capture_lock:
            if self.capture is not None and self.capture.stopped_because is not None:  # it switched itself off
                self.live.tap = None
                self.capture.stop()
                self.capture = None
            if on and self.capture is None:
                self.capture = CaptureWorker(self.dataset, category)
                self.live.tap = self.capture.offer
                status = self.capture.status()
            elif not on and self.capture is not None:
                self.live.tap = None
                status = self.capture.stop()
                self.capture = None
            else:
                status = self.capture.status() if self.capture is not None else {"on": False}
        self._audit(user, "capture", {"on": on, "category": category, **{k: status.get(k) for k in
                                                                           ("kept", "considered", "folder")}})
        return status

    def close(self) -> None:
        if self.capture is not None:
            self.live.tap = None
            self.capture.stop()
            self.capture = None

    def set_recipe(self, index: int, user: str) -> None:
        old = self.view.snapshot().recipe
        self.view.request_recipe(index)
        self._audit(user, "recipe", {"from": old, "to": index})

    def set_sensitivity(self, value: float, user: str) -> None:
        old = self.view.snapshot().sensitivity
        self.view.set_sensitivity(value)
        if self.settings is not None:
            from edge_ad.fileio import atomic_write_json

            atomic_write_json(self.settings, {"sensitivity": float(value), "by": user, "time": time.time()})
        self._audit(user, "sensitivity", {"from": old, "to": float(value)})

    def set_roi(self, category: str | None, mask_png: bytes, user: str) -> str:
        """An engineer's new ROI for the active recipe (applied to the next part, audited)."""
        snap = self.view.snapshot()
        cat = self.view.set_roi(category, mask_png)
        import hashlib

        self._audit(user, "roi", {"recipe": snap.recipe, "model": snap.model, "category": cat,
                                  "mask_sha256": hashlib.sha256(mask_png).hexdigest(), "bytes": len(mask_png)})
        return cat

    def false_reject(self, row_id: int, user: str) -> Path:
        if self.store is None or self.dataset is None:
            raise ConfigError("false reject: the station needs --db and --ui-dataset DIR")
        row = self.store.row(row_id)
        src = self.store.image_file(row) if row else None
        if row is None or src is None:
            raise ConfigError(f"false reject: part row {row_id} has no stored image")
        if row["decision"] == "OK":
            raise ConfigError(f"false reject: row {row_id} was OK, not rejected")
        category = self.view.snapshot().model or "station"
        target = self.dataset / "false_rejects" / "train" / "good" / f"{self.name}_{row_id}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
        rel = target.relative_to(self.dataset)
        self.store.add_feedback(row_id, "false_reject", user)
        self._audit(user, "false_reject", {"row": row_id, "part_id": row["part_id"], "copied_to": str(rel),
                                           "model": category})
        return rel

    def feedback(self, row_id: int, label: str, region: list[int] | None, user: str) -> int:
        """An operator's verdict on a stored part (false reject / confirmed NG, optional region), for the next
        dataset revision (`edge-ad dataset from-station`). Audited."""
        if self.store is None:
            raise ConfigError("feedback: the station needs --db")
        fid = self.store.add_feedback(row_id, label, user, region)
        self._audit(user, "feedback", {"row": row_id, "label": label, "region": region})
        return fid

    @property
    def shadow(self) -> Any:
        """The shadow model judging parts now (a ShadowRunner), or None."""
        return self.shadow_slot.runner

    def _registered(self, digest: str) -> str:
        """The path of a model this station has run, by its sha256 digest (ConfigError otherwise)."""
        if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
            raise ConfigError("expected 'shadow' or the 64-hex digest of a registered model")
        known = {m["digest"]: m for m in (self.store.models(self.name) if self.store is not None else [])}
        if digest not in known or not known[digest].get("path"):
            raise ConfigError(f"{digest[:12]}... is not a model this station has run (see /api/models)")
        return str(known[digest]["path"])

    def set_shadow(self, target: str, user: str) -> dict[str, Any]:
        """Seat a registered model (its digest) as the shadow, or none ("off"), while the station runs. Audited."""
        if target == "off":
            old = self.shadow_slot.replace(None)
            detail: dict[str, Any] = {"shadow": None, "was": old.digest if old is not None else None}
        else:
            if self.shadow_factory is None:
                raise ConfigError("shadow: this station cannot seat a shadow model from the HMI")
            path = self._registered(target)
            runner = self.shadow_factory(path)
            self.shadow_slot.replace(runner)
            detail = {"shadow": runner.digest, "package": path}
            if self.store is not None and runner.digest:
                self.store.log_deployment(runner.digest, "shadow", "shadow", user, None)
        self._audit(user, "shadow", detail)
        return detail

    def promote(self, target: str, user: str) -> dict[str, Any]:
        """Promote the shadow model ("shadow") or a model of the station's register (its sha256 digest) to
        production, between two parts; never a path from the request. Loaded and verified here (signature
        checked when trusted keys are configured) before the station is touched. Audited."""
        promote = getattr(self.view, "promote", None)
        if promote is None or self.loader is None:
            raise ConfigError("promote: this station cannot switch models while running (edge-ad serve can)")
        if target == "shadow":
            if self.shadow is None:
                raise ConfigError("promote: the station runs no shadow model (--shadow PACKAGE)")
            path = str(self.shadow.detector.package.root)
        else:
            try:
                path = self._registered(target)
            except ConfigError as e:
                raise ConfigError(f"promote: {e}") from None
        det = self.loader(path)
        pkg = det.package
        if self.store is not None:
            from edge_ad.station.lifecycle import package_info

            self.store.register_model(package_info(pkg, path))
        index = promote(det, f"{pkg.name} {pkg.digest[:12]} (promoted by {user})")
        detail = {"target": target, "package": path, "digest": pkg.digest, "recipe": index}
        self._audit(user, "promote", detail)
        if self.store is not None:
            self.store.log_deployment(pkg.digest, "production", "promote", user, f"recipe {index}")
        return detail

    def rollback(self, user: str) -> dict[str, Any]:
        """Back to the model that ran before the last switch (between two parts). Audited."""
        back = getattr(self.view, "rollback", None)
        if back is None:
            raise ConfigError("rollback: this station cannot switch models while running (edge-ad serve can)")
        before = self.view.snapshot().recipe
        index = back()
        detail = {"from": before, "to": index}
        self._audit(user, "rollback", detail)
        return detail

    def _audit(self, user: str, action: str, detail: dict[str, Any]) -> None:
        log.warning("HMI: %s by %s: %s", action, user, detail)
        if self.store is not None:
            self.store.audit(user, action, detail)


MAX_BODY = 16 * 1024  # every HMI request body is a small JSON object
MAX_CONNECTIONS = 200  # concurrent HMI connections/requests; beyond it 503
MAX_SOCKETS = 256  #: HMI sockets at once; beyond it a new connection is closed as it is accepted
ACCEPT_BACKLOG = 64  #: asyncio accepts up to the backlog in one go before any connection is looked at
HEADER_TIMEOUT_S = 5.0  #: a request whose headers are not complete by then is dropped (slowloris)
BODY_TIMEOUT_S = 5.0  #: and one whose body is not
MAX_ROI_BODY = 8 * 1024 * 1024  # but an ROI mask (a PNG, base64) of a 12 MP frame


async def read_json(request: Any, max_bytes: int = MAX_BODY) -> Any:
    """The request's JSON body, read in chunks up to `max_bytes` (a larger or endless body is refused before it is
    buffered: ValueError, answered 400)."""
    import asyncio
    import json

    async def read() -> bytes:
        data = b""
        async for chunk in request.stream():
            data += chunk
            if len(data) > max_bytes:
                raise ValueError(f"request body over {max_bytes} bytes")
        return data

    try:
        data = await asyncio.wait_for(read(), BODY_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise ValueError(f"the request body did not arrive within {BODY_TIMEOUT_S:g} s") from None
    try:
        body = json.loads(data or b"null")
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object")
    return body


MAX_ID = 2**63 - 1  #: row ids and part ids are SQL BIGINTs
_CATEGORY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def bounded_int(value: Any, what: str, lo: int = 0, hi: int = MAX_ID) -> int:
    """An integer in [lo, hi] from a query string or a JSON number (no bool, no float, no overflow); ValueError
    naming `what` else."""
    if isinstance(value, (bool, float)):
        raise ValueError(f"{what}: expected an integer, got {value!r}")
    try:
        v = int(str(value).strip()) if isinstance(value, str) else int(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{what}: expected an integer, got {str(value)[:40]!r}") from None
    if not lo <= v <= hi:
        raise ValueError(f"{what}: expected {lo}..{hi}, got {str(v)[:40]}")
    return v


def finite_number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what}: expected a number, got {str(value)[:40]!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{what}: expected a finite number, got {value!r}")
    return v


def create_app(station: Station, sessions: Sessions | None, hosts: set[str] | None = None) -> Any:
    """The Starlette application of `station` (`sessions` None: no login, actions disabled) behind `Guard`
    (`hosts`: the Host names it answers to; None = any)."""
    import asyncio

    hashing = asyncio.Semaphore(2)
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    def who(request: Request) -> dict[str, Any] | None:
        return sessions.check(request.cookies.get(COOKIE)) if sessions else None

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def index(_request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def state(request: Request) -> Response:
        return JSONResponse({**station.state(), "user": who(request)}, headers={"Cache-Control": "no-store"})

    async def live(request: Request) -> Response:
        name = request.query_params.get("view")
        if name is not None:  # a multi-view station's tile: only the names the station has (never a path)
            if name not in station.live.view_names():
                return error(404, "no such view")
            data = station.live.view_jpeg(name)
        else:
            data = station.live.jpeg()
        if not data:
            return error(404, "no frame yet")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    async def mjpeg(request: Request) -> Response:
        """The live view as an MJPEG stream (multipart/x-mixed-replace) for viewers outside the HMI page; a new
        part is sent at most `max_fps` times a second, nothing while nothing changes."""
        import asyncio

        from starlette.responses import StreamingResponse

        async def frames() -> Any:
            last = -1
            while not await request.is_disconnected():
                seq = station.live.seq
                data = station.live.jpeg() if seq != last else None
                if data:
                    last = seq
                    yield (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: " + str(len(data)).encode() +
                           b"\r\n\r\n" + data + b"\r\n")
                await asyncio.sleep(1.0 / station.live.max_fps)

        return StreamingResponse(frames(), media_type="multipart/x-mixed-replace; boundary=frame",
                                 headers={"Cache-Control": "no-store"})

    def _rows(**kw: Any) -> list[dict[str, Any]]:
        if station.store is None:
            return []
        store = station.store
        rows = store.query(**kw)
        for r in rows:
            r["image_url"] = f"/api/image/{r['id']}" if r.get("image_path") else None
            r["overlay_url"] = f"/api/image/{r['id']}?overlay=1" if store.image_file(r, overlay=True) else None
            if r.get("views"):  # a multi-view part: every view, with its own picture where one was kept
                r["view_rows"] = [{"name": v["view_name"], "decision": v["decision"], "error": v["error"],
                                   "score": v["normalized_score"],
                                   "image_url": f"/api/view-image/{v['id']}" if v.get("image_path") else None,
                                   "overlay_url": f"/api/view-image/{v['id']}?overlay=1"
                                   if store.image_file(v, overlay=True) else None}
                                  for v in store.views_of(r["id"])]
        return rows

    async def ng(request: Request) -> Response:
        try:
            limit = bounded_int(request.query_params.get("limit", "24"), "limit", 1, 200)
        except ValueError as e:
            return error(400, str(e))
        return JSONResponse(_rows(decisions=["NG", "FAILED", "LATE"], limit=limit, newest_first=True))

    async def parts(request: Request) -> Response:
        from edge_ad.traceability.timespec import parse_time

        q = request.query_params
        try:
            part = bounded_int(q["part"], "part") if q.get("part") else None
            since = parse_time(q["since"], "since") if q.get("since") else None
            until = parse_time(q["until"], "until") if q.get("until") else None
            decisions = [d.strip().upper() for d in q.get("decision", "").split(",") if d.strip()]
            rows = _rows(part=part, since=since, until=until, decisions=decisions, limit=500, newest_first=True)
        except (ValueError, ConfigError) as e:
            return error(400, str(e))
        return JSONResponse(rows)

    def stored_image(request: Request, param: str, what: str, lookup: Callable[[Any, int], Any]) -> Response:
        """A stored picture (or its overlay) of a part row or a view row, by id only: the store confines the path."""
        try:
            row_id = bounded_int(request.path_params[param], f"{what} id", 1)
        except ValueError as e:
            return error(400, str(e))
        store = station.store
        row = lookup(store, row_id) if store is not None else None
        path = store.image_file(row, overlay=request.query_params.get("overlay") == "1") if store and row else None
        if path is None:
            return error(404, f"no stored image for {what} {row_id}")
        return FileResponse(path, media_type="image/jpeg")

    async def image(request: Request) -> Response:
        return stored_image(request, "row_id", "row", lambda s, i: s.row(i))

    async def view_image(request: Request) -> Response:
        return stored_image(request, "view_id", "view row", lambda s, i: s.view_row(i))

    async def models(request: Request) -> Response:
        if who(request) is None:
            return error(401, "log in first")
        if station.store is None:
            return JSONResponse([])
        rows = station.store.models(station.name)
        for r in rows:
            r.pop("path", None)  # where the files are is the station's business
        return JSONResponse(rows)

    async def model_action(request: Request, action: Callable[[str, str], Any], what: str) -> Response:
        """An engineer's {target} request run off the event loop (loading a package takes seconds)."""
        from starlette.concurrency import run_in_threadpool

        u = engineer(request)
        if isinstance(u, JSONResponse):
            return u
        try:
            target = (await read_json(request))["target"]
            if not isinstance(target, str):
                raise ValueError("target: expected a string")
            detail = await run_in_threadpool(action, target, u["user"])
        except (ValueError, KeyError, TypeError, ConfigError, EdgeADError) as e:
            return error(400, f"{what}: {e}")
        return JSONResponse(detail)

    async def promote(request: Request) -> Response:
        return await model_action(request, station.promote, "promote")

    async def shadow(request: Request) -> Response:
        return await model_action(request, station.set_shadow, "shadow")

    async def rollback(request: Request) -> Response:
        u = engineer(request)
        if isinstance(u, JSONResponse):
            return u
        try:
            await read_json(request)
            detail = station.rollback(u["user"])
        except (ValueError, KeyError, TypeError, ConfigError) as e:
            return error(400, f"rollback: {e}")
        return JSONResponse(detail)

    async def audit(request: Request) -> Response:
        if who(request) is None:
            return error(401, "log in first")
        return JSONResponse(station.store.audit_log(50) if station.store is not None else [])

    async def login(request: Request) -> Response:
        if sessions is None:
            return error(403, "no users configured (edge-ad serve --ui-users FILE)")
        try:
            body = await read_json(request)
        except ValueError as e:  # too big, too slow, not JSON: say which
            return error(400, str(e))
        try:
            name, password = body["user"], body["password"]
            if not isinstance(name, str) or not isinstance(password, str) or not 0 < len(name) <= 64 \
                    or len(password) > 1024:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            return error(400, "expected JSON {user, password} (strings; a name of 1..64 characters)")
        if hashing.locked():  # the password hash is slow on purpose: a flood waits here, not the event loop
            return error(429, "busy: try again in a moment")
        async with hashing:
            from starlette.concurrency import run_in_threadpool

            token, why = await run_in_threadpool(sessions.login, name, password,
                                                 request.client.host if request.client else "?")
        if token is None:
            return error(401, why)
        resp = JSONResponse(sessions.check(token))
        resp.set_cookie(COOKIE, token, httponly=True, samesite="strict", max_age=8 * 3600)
        return resp

    async def logout(request: Request) -> Response:
        if sessions is not None:
            sessions.logout(request.cookies.get(COOKIE))
        resp = JSONResponse({"ok": True})
        resp.delete_cookie(COOKIE)
        return resp

    def engineer(request: Request) -> dict[str, Any] | JSONResponse:
        u = who(request)
        if u is None:
            return error(401, "log in first")
        if u["role"] != "engineer":
            return error(403, f"{u['user']} is an operator: engineer role needed")
        return u

    async def sensitivity(request: Request) -> Response:
        u = engineer(request)
        if isinstance(u, JSONResponse):
            return u
        try:
            value = finite_number((await read_json(request))["value"], "value")
            station.set_sensitivity(value, u["user"])
        except (ValueError, KeyError, TypeError, ConfigError) as e:
            return error(400, f"sensitivity: {e}")
        return JSONResponse({"sensitivity": value, "threshold": station.view.snapshot().threshold})

    async def false_reject(request: Request) -> Response:
        u = engineer(request)
        if isinstance(u, JSONResponse):
            return u
        try:
            target = station.false_reject(bounded_int((await read_json(request))["id"], "id", 1), u["user"])
        except (ValueError, KeyError, TypeError, ConfigError) as e:
            return error(400, str(e))
        return JSONResponse({"copied_to": str(target)})

    async def feedback(request: Request) -> Response:
        u = who(request)
        if u is None:
            return error(401, "log in first")
        try:
            body = await read_json(request)
            region = body.get("region")
            if region is not None and (not isinstance(region, list) or len(region) != 4):
                raise ValueError("region: expected [x, y, width, height]")
            fid = station.feedback(bounded_int(body["id"], "id", 1), str(body["label"]),
                                   [bounded_int(v, "region", 0, 65535) for v in region] if region else None,
                                   u["user"])
        except (ValueError, KeyError, TypeError, ConfigError) as e:
            return error(400, f"feedback: {e}")
        return JSONResponse({"feedback": fid})

    async def recipe(request: Request) -> Response:
        u = engineer(request)
        if isinstance(u, JSONResponse):
            return u
        try:
            station.set_recipe(bounded_int((await read_json(request))["index"], "index", 1, 0xFFFF), u["user"])
        except (ValueError, KeyError, TypeError, ConfigError) as e:
            return error(400, f"recipe: {e}")
        return JSONResponse({"requested": station.view.snapshot().recipe})

    async def roi(request: Request) -> Response:
        """POST {"category": str or null, "png": base64 of the mask PNG in the reference frame}."""
        import base64
        import binascii

        u = engineer(request)
        if isinstance(u, JSONResponse):
            return u
        try:
            body = await read_json(request, max_bytes=MAX_ROI_BODY)
            png = base64.b64decode(str(body["png"]), validate=True)
            category = body.get("category")
            cat = station.set_roi(None if category in (None, "") else str(category), png, u["user"])
        except (ValueError, KeyError, TypeError, binascii.Error, EdgeADError) as e:
            return error(400, f"roi: {e}")
        return JSONResponse({"category": cat, "applied": "from the next part"})

    async def capture(request: Request) -> Response:
        u = engineer(request)
        if isinstance(u, JSONResponse):
            return u
        try:
            body = await read_json(request)
            category = body.get("category") or "good_parts"
            if not isinstance(body["on"], bool) or not isinstance(category, str) or not _CATEGORY.match(category):
                raise ValueError("expected {on: true|false, category: 1..64 of A-Z a-z 0-9 _ . -}")
            status = station.set_capture(body["on"], u["user"], category)
        except (ValueError, KeyError, TypeError, ConfigError) as e:
            return error(400, f"capture: {e}")
        return JSONResponse(status)

    async def metrics(_request: Request) -> Response:
        return PlainTextResponse(prometheus_text(station), media_type="text/plain; version=0.0.4")

    routes = [
        Route("/", index), Route("/api/state", state), Route("/api/live.jpg", live), Route("/api/live.mjpg", mjpeg),
        Route("/api/ng", ng),
        Route("/api/parts", parts), Route("/api/image/{row_id}", image), Route("/api/audit", audit),
        Route("/api/view-image/{view_id}", view_image), Route("/api/models", models),
        Route("/api/model/promote", promote, methods=["POST"]),
        Route("/api/model/rollback", rollback, methods=["POST"]), Route("/api/feedback", feedback, methods=["POST"]),
        Route("/api/model/shadow", shadow, methods=["POST"]),
        Route("/api/login", login, methods=["POST"]), Route("/api/logout", logout, methods=["POST"]),
        Route("/api/sensitivity", sensitivity, methods=["POST"]),
        Route("/api/false-reject", false_reject, methods=["POST"]), Route("/api/capture", capture, methods=["POST"]),
        Route("/api/recipe", recipe, methods=["POST"]), Route("/api/roi", roi, methods=["POST"]),
        Route("/metrics", metrics),
        Mount("/static", StaticFiles(directory=STATIC)),
    ]
    return Guard(Starlette(routes=routes), sessions, hosts)


def _drift_metrics(name: str, d: dict[str, Any]) -> Any:
    """edge_ad_drift_level (0 OK, 1 WARN, 2 ALARM), the KS distance and p-value per quantity, the NG rate."""
    from prometheus_client.core import GaugeMetricFamily

    level = GaugeMetricFamily("edge_ad_drift_level", "drift monitor level: 0 OK, 1 WARN, 2 ALARM", labels=["station"])
    level.add_metric([name], float(d["code"]))
    yield level
    ks = GaugeMetricFamily("edge_ad_drift_ks", "KS distance, last parts vs the package's good images",
                           labels=["station", "quantity"])
    pv = GaugeMetricFamily("edge_ad_drift_p", "KS p-value, last parts vs the package's good images",
                           labels=["station", "quantity"])
    for q, t in d["tests"].items():
        if "ks" in t:
            ks.add_metric([name, q], float(t["ks"]))
            pv.add_metric([name, q], float(t["p"]))
    yield ks
    yield pv
    ng = d["tests"].get("ng_rate")
    rate = GaugeMetricFamily("edge_ad_drift_ng_rate", "NG rate of the last parts (and the expected one)",
                             labels=["station", "which"])
    if ng is not None:
        rate.add_metric([name, "recent"], float(ng["rate"]))
        rate.add_metric([name, "expected"], float(ng["expected"]))
    yield rate


def _shadow_metrics(name: str, d: dict[str, Any]) -> Any:
    """edge_ad_shadow_parts{production,shadow} (the OK/NG confusion), agreement, skipped parts, score correlation."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    parts = CounterMetricFamily("edge_ad_shadow_parts", "parts judged by production and the shadow model",
                                labels=["station", "shadow_model", "production", "shadow"])
    for key, n in d["confusion"].items():
        prod, shadow = key.split("/")
        parts.add_metric([name, d["model"], prod, shadow], float(n))
    yield parts
    skipped = CounterMetricFamily("edge_ad_shadow_skipped", "parts the shadow skipped (it could not keep up)",
                                  labels=["station", "shadow_model"])
    skipped.add_metric([name, d["model"]], float(d["skipped"]))
    yield skipped
    g = GaugeMetricFamily("edge_ad_shadow_agreement", "share of parts where shadow and production agree (OK/NG)",
                          labels=["station", "shadow_model"])
    if d["agreement"] is not None:
        g.add_metric([name, d["model"]], float(d["agreement"]))
    yield g
    corr = GaugeMetricFamily("edge_ad_shadow_score_correlation", "Spearman correlation of the scores (recent parts)",
                             labels=["station", "shadow_model"])
    if d["score_spearman"] is not None:
        corr.add_metric([name, d["model"]], float(d["score_spearman"]))
    yield corr


def prometheus_text(station: Station) -> str:
    """The station's counters and latency histogram in Prometheus' text format (prometheus-client)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    class _Collector:
        def collect(self) -> Any:
            st = station.live.stats()
            c = CounterMetricFamily("edgead_inspections", "inspections by decision", labels=["station", "decision"])
            for d in ("ok", "ng", "failed", "late"):
                c.add_metric([station.name, d.upper()], st[d])
            yield c
            lat = list(station.live.latencies)
            bounds = [5, 10, 20, 50, 100, 200, 500, 1000, 2000]
            buckets = [(str(float(b)), sum(1 for v in lat if v <= b)) for b in bounds] + [("+Inf", len(lat))]
            h = HistogramMetricFamily("edgead_inspection_ms", "inspection time (last 1000)", labels=["station"])
            h.add_metric([station.name], buckets, sum_value=float(sum(lat)))
            yield h
            g = GaugeMetricFamily("edgead_plc_connected", "PLC link up", labels=["station"])
            snap = station.view.snapshot()
            g.add_metric([station.name], float(snap.plc_connected))
            yield g
            if station.drift is not None:
                yield from _drift_metrics(station.name, station.drift.status())
            if station.shadow is not None:
                yield from _shadow_metrics(station.name, station.shadow.status())
            e = CounterMetricFamily("edgead_record_errors", "traceability writes that failed", labels=["station"])
            e.add_metric([station.name], snap.record_errors)
            yield e

    reg = CollectorRegistry()
    reg.register(_Collector())
    return generate_latest(reg).decode()


SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: "
                                 b"blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
                                 b"form-action 'self'; object-src 'none'"),
    (b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"), (b"referrer-policy", b"no-referrer"),
]


class Guard:
    """ASGI middleware in front of the HMI: answers only to its own Host names (DNS rebinding), refuses
    state-changing requests that are not JSON, come from another origin or lack the session's CSRF token, adds the
    security headers to every answer, and turns any unexpected error into a plain 500 (logged at most once a
    second, never a traceback per request)."""

    def __init__(self, app: Any, sessions: Sessions | None, hosts: set[str] | None) -> None:
        self.app, self.sessions = app, sessions
        self.hosts = {h.lower() for h in hosts} if hosts is not None else None
        self._logged = 0.0
        self.errors = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        why = self._refuse(scope, headers, host)
        if why is not None:
            await _plain(send, why[0], why[1])
            return
        started = False

        async def send_secured(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        try:
            await self.app(scope, receive, send_secured)
        except Exception as e:
            self.errors += 1
            now = time.monotonic()
            if now - self._logged > 1.0:
                self._logged = now
                log.error("HMI: %s %s failed: %s: %s (%d so far)", scope.get("method"), scope.get("path"),
                          type(e).__name__, e, self.errors)
            if not started:
                await _plain(send, 500, "internal error")

    def _refuse(self, scope: Any, headers: dict[str, str], host: str) -> tuple[int, str] | None:
        from urllib.parse import urlsplit

        name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
        if self.hosts is not None and name.lower().strip("[]") not in self.hosts:
            return 400, "unexpected Host header"
        if scope.get("method") not in ("POST", "PUT", "PATCH", "DELETE"):
            return None
        if headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            return 415, "expected Content-Type: application/json"
        for key in ("origin", "referer"):
            value = headers.get(key)
            if value and value != "null" and urlsplit(value).netloc.lower() != host.lower():
                return 403, "cross-site request refused"
            if value == "null":
                return 403, "cross-site request refused"
        if scope.get("path") != "/api/login" and self.sessions is not None:
            from http.cookies import CookieError, SimpleCookie

            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(headers.get("cookie", ""))
            except CookieError:
                return None  # no usable session: the endpoint answers 401
            morsel = jar.get(COOKIE)
            sess = self.sessions.check(morsel.value if morsel is not None else None)
            if sess is not None and not hmac.compare_digest(headers.get("x-csrf-token", ""), sess["csrf"]):
                return 403, "missing or wrong CSRF token (X-CSRF-Token)"
        return None


async def _plain(send: Any, status: int, message: str) -> None:
    import json

    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *SECURITY_HEADERS]})
    await send({"type": "http.response.body", "body": body})


def bounded_protocol() -> type:
    """uvicorn's h11 protocol with the bounds it lacks: at most MAX_SOCKETS connections (more are closed as they
    are accepted, so the HMI never holds the descriptors inspection needs) and a header time-out (a connection
    that does not complete a request within HEADER_TIMEOUT_S is closed: half-sent requests cannot pile up)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class BoundedH11(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            if len(self.connections) > MAX_SOCKETS:
                transport.abort()
                return
            self._arm()

        def _idle(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(HEADER_TIMEOUT_S, self._expire)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _expire(self) -> None:
            self._header_timer = None
            if self._idle() and self.transport is not None and not self.transport.is_closing():
                self.transport.abort()

        def data_received(self, data: bytes) -> None:
            if self._idle():
                self._arm()
            super().data_received(data)
            if not self._idle():
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return BoundedH11


def reserve_descriptors(want: int = 8192) -> None:
    """Raise this process's soft descriptor limit towards its hard limit (systemd's default soft limit is 1,024),
    so the station's cameras, database and spool keep their descriptors whatever the HMI holds."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        if soft != resource.RLIM_INFINITY and soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ImportError, ValueError, OSError) as e:  # not on POSIX, or not allowed: the caps still hold
        log.debug("descriptor limit unchanged: %s", e)


class _OncePerSecond(logging.Filter):
    """Lets through at most one record per second per message template (a flood of refused connections must not
    flood the log)."""

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        key = str(record.msg)
        if now - self._last.get(key, 0.0) < 1.0:
            return False
        self._last[key] = now
        return True


def _rate_limit_logs() -> None:
    for name in ("uvicorn.error", "asyncio"):
        lg = logging.getLogger(name)
        if not any(isinstance(f, _OncePerSecond) for f in lg.filters):
            lg.addFilter(_OncePerSecond())


def listen_names(host: str, extra: Sequence[str] = ()) -> set[str]:
    """The Host names an HMI listening on `host` answers to: loopback, this machine's names and addresses (all
    of them when it listens on every interface), and `extra` (names a reverse proxy or DNS gives it)."""
    import socket

    names = {"localhost", "127.0.0.1", "::1", host.lower(), *(e.lower() for e in extra)}
    if host in ("0.0.0.0", "::", ""):
        hostname = socket.gethostname()
        names |= {hostname.lower(), socket.getfqdn().lower()}
        with contextlib.suppress(OSError):
            names |= {str(info[4][0]).lower() for info in socket.getaddrinfo(hostname, None)}
    return names


class HmiServer:
    """uvicorn on a daemon thread; `start()` returns once it listens, `stop()` shuts it down."""

    def __init__(self, app: Any, host: str, port: int, on_stop: Any = None) -> None:
        import uvicorn

        self.on_stop = on_stop
        # no X-Forwarded-* trust (a client on the station's network could claim any address), bounded
        # concurrency (503 beyond it) and short keep-alive, so the HMI cannot hold on to what inspection needs
        reserve_descriptors()
        _rate_limit_logs()
        self.config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                     lifespan="off", proxy_headers=False, limit_concurrency=MAX_CONNECTIONS,
                                     timeout_keep_alive=5, h11_max_incomplete_event_size=16 * 1024,
                                     http=bounded_protocol(), backlog=ACCEPT_BACKLOG)
        self.server = uvicorn.Server(self.config)
        self._thread = threading.Thread(target=self.server.run, name="edge-ad-hmi", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        end = time.monotonic() + timeout
        while not self.server.started and self._thread.is_alive() and time.monotonic() < end:
            time.sleep(0.02)
        if not self.server.started:
            raise ConfigError(f"HMI: could not listen on {self.config.host}:{self.config.port}")

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(10.0)
        if self.on_stop is not None:
            self.on_stop()


def parse_ui(value: str) -> tuple[str, int]:
    """HOST:PORT (or :PORT = 127.0.0.1) -> (host, port); ConfigError else."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--ui {value!r}: expected HOST:PORT, e.g. 0.0.0.0:8080 (or :8080 for this machine only)")
    return host or "127.0.0.1", int(port)
