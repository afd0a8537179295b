"""The station HMI under attack: forged and tampered session cookies, path traversal, injection-shaped queries,
malformed, oversized and endless request bodies, out-of-range values. Every try is refused with a 4xx (never a
500, never a change to the station) and the station keeps inspecting."""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path

import pytest
from hostile_tally import Tally
from plc_peers import DARK_IMG, FAST_LINK, MemoryAdapter, QueueSource, free_port

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")


def _request(port: int, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> int:
    con = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        con.request(method, path, body=body, headers=headers or {})
        return con.getresponse().status
    finally:
        con.close()


def test_hmi_refuses_every_attack_and_keeps_inspecting(detector, tmp_path: Path, tally: Tally) -> None:
    from edge_ad.hmi.app import HmiServer, Station, create_app
    from edge_ad.hmi.auth import Sessions, load_users, set_user
    from edge_ad.hmi.live import LiveView
    from edge_ad.plc.inspector import Inspector
    from edge_ad.plc.link import PlcLink
    from edge_ad.station.recorders import Fanout
    from edge_ad.traceability import Retention, TraceRecorder, TraceStore

    users = tmp_path / "users.yaml"
    set_user(users, "op", "operator-pass", "operator")
    store = TraceStore(tmp_path / "h.db", "h", retention=Retention(None, None, None))
    live, mem, src = LiveView(), MemoryAdapter(), QueueSource()
    plc = mem.program()
    insp = Inspector(detector, src, PlcLink(mem, **FAST_LINK), poll_s=0.002, backend="onnxruntime",
                     recorder=Fanout([TraceRecorder(store), live]))
    before = detector.sensitivity
    station = Station(insp, live, store, name="h", dataset=tmp_path / "ds")
    port = free_port()
    server = HmiServer(create_app(station, Sessions(load_users(users))), "127.0.0.1", port)
    insp.start()
    server.start()
    try:
        js = {"content-type": "application/json"}
        attacks: list[tuple[str, str, str, bytes | None, dict[str, str]]] = [
            ("forged-cookie", "POST", "/api/sensitivity", b'{"value": 100}',
             {**js, "cookie": "edgead_session=eng:engineer:9999999999:" + "0" * 64}),
            ("tampered-role", "POST", "/api/recipe", b'{"index": 1}',
             {**js, "cookie": "edgead_session=op:engineer:9999999999:abc"}),
            ("no-cookie", "POST", "/api/capture", b'{"on": true}', js),
            ("traversal", "GET", "/api/image/..%2F..%2Fetc%2Fpasswd", None, {}),
            ("traversal-static", "GET", "/static/..%2Fapp.py", None, {}),
            ("injection", "GET", "/api/parts?part=1%20OR%201%3D1", None, {}),
            ("injection-time", "GET", "/api/parts?since=1%3BDROP%20TABLE%20inspections", None, {}),
            ("bad-limit", "GET", "/api/ng?limit=-1e9x", None, {}),
            ("not-json", "POST", "/api/login", b"user=op&password=x", js),
            ("json-array", "POST", "/api/login", b"[1, 2]", js),
            ("oversized", "POST", "/api/login", b'{"user": "' + b"A" * 200_000 + b'"}', js),
            ("missing-fields", "POST", "/api/login", b"{}", js),
            ("null-bytes", "POST", "/api/login", b'{"user": "op\\u0000", "password": "operator-pass"}', js),
        ]
        for name, method, path, body, headers in attacks:
            status = _request(port, method, path, body, headers)
            ok = 400 <= status < 500
            tally.count("hmi", "clear" if ok else "accepted-bad" if status < 400 else "crash")
            if not ok:
                tally.accepted_bad.append(f"hmi/{name}: {status}")
            assert ok, (name, status)
        # an operator session cannot act, whatever values it sends (after the 1 s back-off the failed login above
        # earned this address)
        time.sleep(1.1)
        con = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        con.request("POST", "/api/login", body=json.dumps({"user": "op", "password": "operator-pass"}), headers=js)
        r = con.getresponse()
        cookie = r.getheader("set-cookie").split(";")[0]
        r.read()
        con.close()
        for value in ("NaN", "1e308", "-1", "true"):
            status = _request(port, "POST", "/api/sensitivity", f'{{"value": {json.dumps(value)}}}'.encode(),
                              {**js, "cookie": cookie})
            assert status == 403, (value, status)
            tally.count("hmi", "clear")
        assert detector.sensitivity == before and store.audit_log() == []  # nothing changed
        src.push(DARK_IMG)  # and the station still inspects
        n = len(plc.results)
        plc.run_until(lambda: mem.get("Ready"), what="Ready")
        plc.trigger(42)
        plc.run_until(lambda: len(plc.results) > n, what="result after the attacks")
        assert _request(port, "GET", "/api/state") == 200
    finally:
        server.stop()
        insp.stop()
        store.close()
