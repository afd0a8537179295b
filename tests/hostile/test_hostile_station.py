"""The station's web and network surfaces as an attacker on the station network would try them (issue 24): an
engineer session cannot make every part pass, a foreign page cannot act for the engineer, guessing passwords from
many addresses gets nowhere, sessions end when they should, database rows cannot point the HMI at other files, data
never becomes markup or a spreadsheet formula, no request ends in a 500, the MQTT spool stays O(1), passwords stay
out of the process list, capture mode ends by itself. Each case failed on the main branch before this change."""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from plc_peers import BLOB_IMG, DARK_IMG, FAST_LINK, MemoryAdapter, QueueSource, free_port, wait_for

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

ROOT = Path(__file__).resolve().parents[2]


class Client:
    """One browser: cookies, the CSRF token of its session, an Origin it claims."""

    def __init__(self, port: int, origin: str | None = None) -> None:
        self.port, self.origin = port, origin
        self.cookie = ""
        self.csrf = ""

    def call(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
             headers: dict[str, str] | None = None, csrf: bool = True) -> tuple[int, Any]:
        con = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        h = {"content-type": "application/json", **({"cookie": self.cookie} if self.cookie else {})}
        if csrf and self.csrf:
            h["x-csrf-token"] = self.csrf
        if self.origin:
            h["origin"] = self.origin
        h.update(headers or {})
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        try:
            con.request(method, path, body=data, headers=h)
            r = con.getresponse()
            payload = r.read()
            cookie = r.getheader("set-cookie")
            if cookie:
                self.cookie = cookie.split(";")[0]
            out = json.loads(payload) if r.getheader("content-type", "").startswith("application/json") else payload
            if isinstance(out, dict) and isinstance(out.get("csrf"), str):
                self.csrf = out["csrf"]
            return r.status, out
        finally:
            con.close()

    def login(self, user: str, password: str) -> int:
        return self.call("POST", "/api/login", {"user": user, "password": password})[0]


@pytest.fixture
def station(detector: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    from edge_ad.hmi.app import HmiServer, Station, create_app, listen_names
    from edge_ad.hmi.auth import Sessions, set_user
    from edge_ad.hmi.live import LiveView
    from edge_ad.plc.inspector import Inspector
    from edge_ad.plc.link import PlcLink
    from edge_ad.station.recorders import Fanout
    from edge_ad.traceability import Retention, TraceRecorder, TraceStore

    users = tmp_path / "users.yaml"
    set_user(users, "eng", "engineer-pass", "engineer")
    set_user(users, "Jürgen 检查", "unicode-pass-1", "engineer")
    set_user(users, "op", "operator-pass", "operator")
    store = TraceStore(tmp_path / "h.db", "h", retention=Retention(None, None, None))
    live, mem, src = LiveView(), MemoryAdapter(), QueueSource()
    insp = Inspector(detector, src, PlcLink(mem, **FAST_LINK), poll_s=0.002, backend="onnxruntime",
                     recorder=Fanout([TraceRecorder(store), live]))
    before = detector.sensitivity
    settings = tmp_path / "hmi.json"
    st = Station(insp, live, store, name="h", dataset=tmp_path / "ds", settings=settings)
    port = free_port()
    sessions = Sessions.from_file(users)
    server = HmiServer(create_app(st, sessions, listen_names("127.0.0.1")), "127.0.0.1", port)
    insp.start()
    server.start()
    try:
        yield {"port": port, "store": store, "inspector": insp, "mem": mem, "src": src, "settings": settings,
               "users": users, "tmp": tmp_path, "detector": detector, "sessions": sessions}
    finally:
        server.stop()
        insp.stop()
        store.close()
        detector.sensitivity = before


def test_an_engineer_cannot_make_every_part_pass(station: dict[str, Any]) -> None:
    from edge_ad.errors import ConfigError
    from edge_ad.hmi.app import Station

    eng = Client(station["port"])
    assert eng.login("eng", "engineer-pass") == 200
    det = station["detector"]
    for value in (1e-300, 5e-324, 0, -1, 1e6, "2"):
        code, body = eng.call("POST", "/api/sensitivity", {"value": value})
        assert code == 400 and "sensitivity" in body["error"], value
        assert not station["settings"].exists() and det.sensitivity == 1.0
    assert eng.call("POST", "/api/sensitivity", raw=b'{"value": 1e400}')[0] == 400  # inf from JSON
    lo, hi = det.sensitivity_range
    assert 0 < lo < 1 < hi <= 100 and eng.call("POST", "/api/sensitivity", {"value": hi})[0] == 200
    assert np.isfinite(det.effective_threshold) and det.effective_threshold >= det._score_range[0]
    # a settings file that says otherwise is refused at start, never silently applied
    station["settings"].write_text(json.dumps({"sensitivity": 1e-300}))
    with pytest.raises(ConfigError, match="hmi.json: sensitivity"):
        Station(station["inspector"], None, None, settings=station["settings"])  # type: ignore[arg-type]
    station["settings"].write_text('["not", "a", "mapping"]')
    with pytest.raises(ConfigError, match="expected"):
        Station(station["inspector"], None, None, settings=station["settings"])  # type: ignore[arg-type]


def test_a_foreign_page_cannot_act_for_the_engineer(station: dict[str, Any]) -> None:
    port = station["port"]
    eng = Client(port)
    assert eng.login("eng", "engineer-pass") == 200
    forged = Client(port, origin="http://evil.example")
    forged.cookie, forged.csrf = eng.cookie, eng.csrf
    assert forged.call("POST", "/api/sensitivity", {"value": 2})[0] == 403  # foreign Origin
    plain = Client(port)
    plain.cookie = eng.cookie
    assert plain.call("POST", "/api/sensitivity", raw=b'{"value": 2}', headers={"content-type": "text/plain"},
                      csrf=False)[0] == 415  # what a cross-site form sends
    assert plain.call("POST", "/api/sensitivity", {"value": 2}, csrf=False)[0] == 403  # no CSRF token
    assert plain.call("POST", "/api/sensitivity", {"value": 2}, headers={"referer": "http://evil/x"})[0] == 403
    assert station["detector"].sensitivity == 1.0
    assert eng.call("POST", "/api/sensitivity", {"value": 2})[0] == 200  # the page itself still works


def test_password_guessing_gets_nowhere(station: dict[str, Any]) -> None:
    sessions = station["sessions"]
    for i in range(96):  # one guess from each of 96 addresses, the right password among them
        token, _ = sessions.login("eng", "engineer-pass" if i == 50 else f"guess{i}", f"127.0.0.{i + 2}")
        assert token is None  # the account waits after the first failure: the right guess does not count
    # X-Forwarded-For is not believed: two accounts from one peer claiming two addresses share the back-off
    c = Client(station["port"])
    assert c.call("POST", "/api/login", {"user": "op", "password": "x"},
                  headers={"x-forwarded-for": "10.0.0.1"})[0] == 401
    code, body = c.call("POST", "/api/login", {"user": "Jürgen 检查", "password": "y"},
                        headers={"x-forwarded-for": "10.0.0.2"})
    assert code == 401 and "too many failed logins" in body["error"]


def test_a_login_flood_does_not_stall_the_hmi(station: dict[str, Any]) -> None:
    port = station["port"]
    stop = threading.Event()

    def flood(k: int) -> None:
        while not stop.is_set():
            Client(port).call("POST", "/api/login", {"user": f"nobody{k}", "password": "x" * 50})

    threads = [threading.Thread(target=flood, args=(k,), daemon=True) for k in range(8)]
    for t in threads:
        t.start()
    try:
        worst = 0.0
        for _ in range(10):
            t0 = time.monotonic()
            assert Client(port).call("GET", "/api/state")[0] == 200
            worst = max(worst, time.monotonic() - t0)
        assert worst < 1.0  # hashing runs off the event loop, two at a time
    finally:
        stop.set()
        for t in threads:
            t.join(10)


def test_sessions_end_when_they_should(station: dict[str, Any]) -> None:
    from edge_ad.hmi.auth import load_users

    port = station["port"]
    a, b = Client(port), Client(port)
    assert a.login("eng", "engineer-pass") == 200 and b.login("eng", "engineer-pass") == 200
    assert a.cookie != b.cookie and a.csrf != b.csrf  # random tokens, even within one second
    old_cookie, old_csrf = a.cookie, a.csrf
    assert a.call("POST", "/api/logout", {})[0] == 200
    replay = Client(port)
    replay.cookie, replay.csrf = old_cookie, old_csrf
    assert replay.call("POST", "/api/sensitivity", {"value": 1.5})[0] == 401  # revoked on logout
    u = Client(port)
    assert u.login("Jürgen 检查", "unicode-pass-1") == 200  # any Unicode name, end to end
    assert u.call("POST", "/api/sensitivity", {"value": 1.2})[0] == 200
    users = station["users"]
    doc = {"users": {k: v for k, v in load_users(users).items() if k != "eng"}}
    import yaml

    time.sleep(0.01)
    users.write_text(yaml.safe_dump(doc))
    os.utime(users)
    time.sleep(1.1)  # the users file is re-read at most once a second
    assert b.call("POST", "/api/sensitivity", {"value": 1.3})[0] == 401  # removed from the users file
    assert u.call("POST", "/api/sensitivity", {"value": 1.0})[0] == 200


def test_database_rows_cannot_point_at_other_files(station: dict[str, Any]) -> None:
    from runtime_fixtures import event

    from edge_ad.station.record import DefectCode, InspectionRecord

    store, tmp = station["store"], station["tmp"]
    secret = tmp / "secret.jpg"
    secret.write_bytes(b"\xff\xd8 not for you")
    assert store.images_dir is not None
    store.images_dir.mkdir(parents=True, exist_ok=True)
    (store.images_dir / "link.jpg").symlink_to(secret)
    ids = []
    for path in (str(secret), "../secret.jpg", "link.jpg", "20260101/../../secret.jpg"):
        rec = InspectionRecord(seq=len(ids) + 1, part_id=7, ok=False, defect_code=DefectCode.ANOMALY,
                               anomaly_score=0.9, max_pixel_score=0.9, defect_area=1, inspection_ms=1.0, model_id=1)
        row_id = store.record(event(rec))
        store._db.execute("UPDATE inspections SET image_path = ? WHERE id = ?", (path, row_id))
        ids.append(row_id)
    eng = Client(station["port"])
    assert eng.login("eng", "engineer-pass") == 200
    for row_id in ids:
        assert eng.call("GET", f"/api/image/{row_id}")[0] == 404
        assert eng.call("POST", "/api/false-reject", {"id": row_id})[0] == 400
    assert not (tmp / "ds").exists() or not any((tmp / "ds").rglob("*.jpg"))


def test_answers_are_data_never_markup_and_carry_security_headers(station: dict[str, Any]) -> None:
    js = (ROOT / "edge_ad" / "hmi" / "static" / "app.js").read_text()
    assert "innerHTML" not in js and "outerHTML" not in js and "insertAdjacentHTML" not in js
    html = (ROOT / "edge_ad" / "hmi" / "static" / "index.html").read_text()
    assert "<script>" not in html and " on" + "click=" not in html  # no inline script: the CSP forbids it
    con = http.client.HTTPConnection("127.0.0.1", station["port"], timeout=10)
    con.request("GET", "/")
    r = con.getresponse()
    r.read()
    assert "script-src 'self'" in r.getheader("content-security-policy", "") and "frame-ancestors 'none'" in \
        r.getheader("content-security-policy", "")
    assert r.getheader("x-content-type-options") == "nosniff" and r.getheader("x-frame-options") == "DENY"
    con.request("GET", "/api/state", headers={"host": "evil.example:8080"})  # DNS rebinding
    r = con.getresponse()
    r.read()
    assert r.status == 400
    con.close()


def test_csv_export_neutralises_formulas(tmp_path: Path) -> None:
    from runtime_fixtures import event

    from edge_ad.cli.main import main
    from edge_ad.station.record import DefectCode, InspectionRecord
    from edge_ad.traceability import Retention, TraceStore

    with TraceStore(tmp_path / "c.db", "=HYPERLINK(\"http://x\")", retention=Retention(None, None, None)) as st:
        st.record(event(InspectionRecord(seq=1, part_id=1, ok=True, defect_code=DefectCode.OK, anomaly_score=0.1,
                                         max_pixel_score=0.1, defect_area=0, inspection_ms=1.0, model_id=1),
                        model={"name": "@SUM(1+1)"}))
    assert main(["results", "export", str(tmp_path / "c.db"), "--csv", str(tmp_path / "o.csv")]) == 0
    text = (tmp_path / "o.csv").read_text()
    assert "'=HYPERLINK" in text and "'@SUM" in text and ",=HYPERLINK" not in text


def test_no_request_ends_in_a_500(station: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    from edge_ad.cli.main import main

    port = station["port"]
    eng = Client(port)
    assert eng.login("eng", "engineer-pass") == 200
    anon = Client(port)
    deep = b'{"a":' * 5000 + b"1" + b"}" * 5000
    cases: list[tuple[Client, str, str, Any, bytes | None]] = [
        (anon, "GET", "/api/image/99999999999999999999", None, None), (anon, "GET", "/api/image/-1", None, None),
        (anon, "GET", "/api/parts?part=99999999999999999999", None, None), (anon, "GET", "/api/parts?part=1e400",
                                                                            None, None),
        (anon, "GET", "/api/ng?limit=1e30", None, None), (anon, "POST", "/api/login", None, deep),
        (eng, "POST", "/api/sensitivity", None, deep), (eng, "POST", "/api/false-reject", None, b'{"id": 1e400}'),
        (eng, "POST", "/api/recipe", None, b'{"index": 1e400}'), (eng, "POST", "/api/recipe", {"index": True}, None),
        (eng, "POST", "/api/capture", {"on": True, "category": "x" * 300}, None),
        (eng, "POST", "/api/capture", {"on": True, "category": "../../etc"}, None),
        (anon, "POST", "/api/login", {"user": "x" * 10_000, "password": "y"}, None),
        (eng, "POST", "/api/roi", {"png": "not base64!"}, None),
    ]
    for client, method, path, body, raw in cases:
        code, _ = client.call(method, path, body, raw=raw)
        assert 400 <= code < 500, (path, body, raw and raw[:20], code)
    assert main(["results", "query", str(station["tmp"] / "h.db"), "--part", "9223372036854775808"]) == 2
    assert "--part: expected" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # argparse's own usage error: exit 2, a message, no traceback
        main(["results", "query", str(station["tmp"] / "h.db"), "--limit", "1e30"])
    assert e.value.code == 2 and "invalid int value" in capsys.readouterr().err


def test_the_mqtt_spool_costs_the_same_when_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("paho.mqtt.client")
    from edge_ad.pipeline.mqtt import MqttPublisher, parse_mqtt_url

    spool = tmp_path / "spool"
    spool.mkdir()
    for n in range(1, 3001):  # messages waiting from an outage
        (spool / f"{n:012d}.json").write_text('{"topic": "t", "retain": false, "payload": {}}')
    pub = MqttPublisher(f"mqtt://127.0.0.1:{free_port()}", "a/b", spool, max_spool=3000)
    try:
        assert pub.pending() == 3000

        def no_scan(*_a: Any, **_k: Any) -> Any:
            raise AssertionError("queueing a message must not list the spool")

        monkeypatch.setattr(Path, "glob", no_scan)
        monkeypatch.setattr(Path, "iterdir", no_scan)
        pub.enqueue("result", {"seq": 1})
        assert pub.pending() == 3000 and pub.dropped == 1  # the oldest made room, in O(1)
        monkeypatch.undo()
        assert not (spool / f"{1:012d}.json").exists() and (spool / f"{3001:012d}.json").exists()
    finally:
        pub.close(timeout=0.2)
    monkeypatch.setenv("EDGE_AD_TEST_MQTT_PW", "s3cret")
    assert parse_mqtt_url("mqtt://u@b?password_env=EDGE_AD_TEST_MQTT_PW")["password"] == "s3cret"
    (tmp_path / "pw").write_text("from-file\n")
    assert parse_mqtt_url(f"mqtt://u@b?password_file={tmp_path / 'pw'}")["password"] == "from-file"


def test_capture_mode_switches_itself_off(tmp_path: Path) -> None:
    from edge_ad.hmi.live import CaptureWorker

    w = CaptureWorker(tmp_path / "ds", "parts", max_images=2)
    rng = np.random.default_rng(0)
    for _ in range(40):
        w.offer(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
        time.sleep(0.02)
    wait_for(lambda: w.stopped_because is not None, what="capture limit")
    assert w.stopped_because == "image limit" and w.status()["kept"] == 2 and not w.status()["on"]
    assert w.status()["folder"] == "parts/train/good"  # relative to the dataset


def test_the_station_keeps_inspecting(station: dict[str, Any]) -> None:
    plc = station["mem"].program()
    plc.run_until(lambda: station["mem"].get("Ready"), what="Ready")
    for part, img in ((1, BLOB_IMG), (2, DARK_IMG)):
        station["src"].push(img)
        n = len(plc.results)
        plc.trigger(part)
        plc.run_until(lambda n=n: len(plc.results) > n, timeout=10.0, what=f"part {part}")
        plc.run_until(lambda: station["mem"].get("Ready") and not station["mem"].get("TriggerAck"), what="Ready")
    assert [r["PartIdEcho"] for r in plc.results] == [1, 2]


def _hold(port: int, n: int, payload: bytes, stop: threading.Event, held: list[Any]) -> None:
    """Keep about `n` connections open (re-opening what the server closes) until `stop`; bounded in time."""
    import socket

    socks: list[socket.socket] = []
    end = time.monotonic() + 30
    while not stop.is_set() and time.monotonic() < end:
        alive = []
        for s in socks:
            try:
                s.setblocking(False)
                if s.recv(1) == b"":
                    s.close()
                    continue
            except BlockingIOError:
                pass
            except OSError:
                s.close()
                continue
            alive.append(s)
        socks = alive
        while len(socks) < n and not stop.is_set():
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=1)
                if payload:
                    s.sendall(payload)
                socks.append(s)
            except OSError:
                break
        held.append(len(socks))
        stop.wait(0.5)
    for s in socks:
        s.close()


@pytest.mark.slow
def test_no_number_of_connections_stops_inspection(package: Path, tmp_path: Path) -> None:
    """`edge-ad run --ui --db --mqtt` with the systemd default of 1,024 descriptors: 2,000 idle and 200 half-sent
    connections and a login flood while parts flow; every part is inspected, recorded and spooled, the log stays
    small, and the HMI answers again within a second after the attack ends."""
    import resource
    import subprocess
    import sys

    import cv2

    from edge_ad.hmi.auth import set_user

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(4):
        cv2.imwrite(str(frames / f"{i}.png"), BLOB_IMG if i % 2 else DARK_IMG)
    users = tmp_path / "users.yaml"
    set_user(users, "eng", "engineer-pass", "engineer")
    port, dead = free_port(), free_port()

    def tight() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    cmd = [sys.executable, "-m", "edge_ad.cli.main", "run", str(package), "--source", str(frames), "--source-option",
           "loop=true", "--source-option", "rate=25", "--backend", "onnxruntime", "--ui", f"127.0.0.1:{port}",
           "--ui-users", str(users), "--db", str(tmp_path / "t.db"), "--results-log", str(tmp_path / "r.jsonl"),
           "--mqtt", f"mqtt://127.0.0.1:{dead}", "--mqtt-spool", str(tmp_path / "spool"), "--status-every-s", "0",
           "--duration-s", "16", "--json", str(tmp_path / "status.jsonl")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=tight,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        wait_for(lambda: Client(port).call("GET", "/api/state")[0] == 200 if _listening(port) else False,
                 timeout=30, what="the HMI")
        stop = threading.Event()
        held_idle: list[int] = []
        held_half: list[int] = []
        attackers = [threading.Thread(target=_hold, args=(port, 2000, b"", stop, held_idle), daemon=True),
                     threading.Thread(target=_hold, args=(port, 200, b"GET /api/state HTTP/1.1\r\nHost: x\r\n", stop,
                                                          held_half), daemon=True)]
        attackers += [threading.Thread(target=lambda: [Client(port).call("POST", "/api/login", {
            "user": "eng", "password": "wrong"}) for _ in range(40)], daemon=True) for _ in range(4)]
        for t in attackers:
            t.start()
        time.sleep(7)
        stop.set()
        for t in attackers:
            t.join(20)
        t0 = time.monotonic()
        wait_for(lambda: Client(port).call("GET", "/api/state")[0] == 200, timeout=5, what="the HMI after it")
        assert time.monotonic() - t0 < 1.0
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err.decode()[-2000:]
    import sqlite3

    final = json.loads((tmp_path / "status.jsonl").read_text().splitlines()[-1])
    con = sqlite3.connect(tmp_path / "t.db")
    rows = con.execute("SELECT decision, COUNT(*) FROM inspections GROUP BY decision").fetchall()
    con.close()
    n = sum(c for _, c in rows)
    assert final["results_out"] == n > 100 and "FAILED" not in dict(rows)  # every part inspected and recorded
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == n
    spooled = [json.loads(p.read_text()) for p in (tmp_path / "spool").glob("*.json")]
    assert sum(m["topic"].endswith("/result") for m in spooled) == n  # nothing lost on the way to MQTT
    assert b"Traceback" not in err and len(err) < 50_000 and max(held_idle) > 0


def _listening(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def test_half_sent_requests_and_missing_bodies_are_dropped(station: dict[str, Any]) -> None:
    import socket

    port = station["port"]
    half = socket.create_connection(("127.0.0.1", port), timeout=10)
    half.sendall(b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # the headers never end
    body = socket.create_connection(("127.0.0.1", port), timeout=10)
    body.sendall(b"POST /api/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100\r\n\r\n{")  # the body never comes
    t0 = time.monotonic()
    assert half.recv(100) == b""  # closed by the header time-out
    answer = b""
    while b'"error"' not in answer and (chunk := body.recv(4096)):
        answer += chunk
    assert b" 400 " in answer.split(b"\r\n")[0] and b"did not arrive" in answer  # the body time-out, answered
    assert time.monotonic() - t0 < 15
    half.close()
    body.close()
    assert Client(port).call("GET", "/api/state")[0] == 200
