"""The station's web HMI: its API (roles, audit, metrics) over real HTTP, and a real headless Chromium that watches
the live view and counters move, finds the NG in the gallery, logs in as engineer, changes the sensitivity and
sees the next verdict use it. Screenshots go to $EDGE_AD_HMI_SCREENSHOTS (docs/hmi for the README) or tmp."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

import pytest
from browser import BROWSER_WAIT, CHROMEDRIVER, CHROMIUM, browser, log_in, log_in_as_engineer
from plc_peers import BLOB_IMG, DARK_IMG, FAST_LINK, MemoryAdapter, QueueSource, free_port, wait_for

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

pytestmark = pytest.mark.slow  # trains/exports models or starts real peers: not in `make test-fast`

ROOT = Path(__file__).resolve().parents[1]


class StationUnderTest:
    """Inspector (in-memory PLC, queue source) + traceability + live view + HMI server on a free port."""

    def __init__(self, detector: Any, tmp: Path, source: Any = None, recipes: Any = None) -> None:
        from edge_ad.hmi.app import HmiServer, Station, create_app
        from edge_ad.hmi.auth import Sessions, load_users, set_user
        from edge_ad.hmi.live import LiveView
        from edge_ad.plc.inspector import Inspector
        from edge_ad.plc.link import PlcLink
        from edge_ad.station.recorders import Fanout
        from edge_ad.traceability import Retention, TraceRecorder, TraceStore

        users = tmp / "users.yaml"
        set_user(users, "eng", "engineer-pass", "engineer")
        set_user(users, "op", "operator-pass", "operator")
        self.store = TraceStore(tmp / "st.db", "hmi-test", retention=Retention(None, None, None))
        self.live = LiveView(max_fps=10)
        self.mem, self.src = MemoryAdapter(), source if source is not None else QueueSource()
        self.plc = self.mem.program()
        self.inspector = Inspector(recipes or detector, self.src, PlcLink(self.mem, **FAST_LINK), poll_s=0.002,
                                   backend="onnxruntime",
                                   recorder=Fanout([TraceRecorder(self.store), self.live]))
        self.station = Station(self.inspector, self.live, self.store, name="hmi-test", settings=tmp / "hmi.json",
                               dataset=tmp / "dataset")
        self.port = free_port()
        self.server = HmiServer(create_app(self.station, Sessions(load_users(users))), "127.0.0.1", self.port)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> StationUnderTest:
        self._sensitivity = self.inspector.detector.sensitivity  # the detector is a shared session fixture
        self.inspector.start()
        self.server.start()
        self.plc.run_until(lambda: self.mem.get("Ready"), what="Ready")
        return self

    def part(self, part_id: int, image: Any = None) -> dict[str, Any]:
        if image is not None:
            self.src.push(image)
        n = len(self.plc.results)
        self.plc.trigger(part_id)
        self.plc.run_until(lambda: len(self.plc.results) > n, what=f"result of part {part_id}")
        self.plc.run_until(lambda: self.mem.get("Ready") and not self.mem.get("TriggerAck"), what="Ready again")
        return self.plc.results[-1]

    def __exit__(self, *_exc: object) -> None:
        self.server.stop()
        self.inspector.stop()
        self.store.close()
        self.inspector.detector.sensitivity = self._sensitivity


def _client() -> tuple[urllib.request.OpenerDirector, CookieJar]:
    jar = CookieJar()
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar)), jar


def _call(opener: Any, url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """GET (no body) or POST JSON as the HMI page does: with the session's CSRF token from the login answer."""
    headers = {"content-type": "application/json", "x-csrf-token": getattr(opener, "csrf", "")}
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                 headers=headers, method="POST" if body is not None else "GET")
    try:
        with opener.open(req, timeout=10) as r:
            raw = r.read()
            out = json.loads(raw) if r.headers.get_content_type() == "application/json" else raw
            if isinstance(out, dict) and isinstance(out.get("csrf"), str):
                opener.csrf = out["csrf"]
            return r.status, out
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_api_roles_audit_false_reject_and_metrics(detector, plc_packages, tmp_path):
    with StationUnderTest(detector, tmp_path, recipes={1: detector, 2: plc_packages["b"]}) as st:
        st.part(501, BLOB_IMG)
        st.part(502, DARK_IMG)
        anon, _ = _client()
        code, state = _call(anon, st.url + "/api/state")
        assert code == 200 and state["stats"]["total"] == 2 and state["stats"]["ng"] == 1 and state["user"] is None
        assert state["last"]["part_id"] == 502 and state["plc"]["connected"] is True
        code, jpeg = _call(anon, st.url + "/api/live.jpg")
        assert code == 200 and jpeg[:2] == b"\xff\xd8"
        with urllib.request.urlopen(st.url + "/api/live.mjpg", timeout=10) as r:  # the MJPEG stream's first part
            assert r.headers["content-type"].startswith("multipart/x-mixed-replace")
            head = r.read(64)
            assert head.startswith(b"--frame\r\nContent-Type: image/jpeg")
        code, ng = _call(anon, st.url + "/api/ng")
        assert [r["part_id"] for r in ng] == [501] and ng[0]["image_url"] == "/api/image/1"
        wait_for(lambda: _call(anon, st.url + "/api/ng")[1][0]["overlay_url"] == "/api/image/1?overlay=1",
                 timeout=30, what="the NG's heatmap overlay stored")
        raw, overlay = _call(anon, st.url + "/api/image/1")[1], _call(anon, st.url + "/api/image/1?overlay=1")[1]
        assert overlay[:2] == b"\xff\xd8" and overlay != raw
        assert state["camera"]["frames"] == 2 and state["camera"]["gaps"] == 0
        assert _call(anon, st.url + "/api/image/1")[0] == 200 and _call(anon, st.url + "/api/image/x")[0] == 400
        code, parts = _call(anon, st.url + "/api/parts?part=502")
        assert [r["decision"] for r in parts] == ["OK"]
        assert _call(anon, st.url + "/api/parts?since=someday")[0] == 400
        assert _call(anon, st.url + "/api/sensitivity", {"value": 2})[0] == 401
        op, _ = _client()
        assert _call(op, st.url + "/api/login", {"user": "op", "password": "operator-pass"})[0] == 200
        code, msg = _call(op, st.url + "/api/sensitivity", {"value": 2})
        assert code == 403 and "engineer role needed" in msg["error"]
        bad, _ = _client()
        assert _call(bad, st.url + "/api/login", {"user": "eng", "password": "wrong"})[0] == 401
        code, msg = _call(bad, st.url + "/api/login", {"user": "eng", "password": "engineer-pass"})
        assert code == 401 and "too many failed logins" in msg["error"]  # back-off after a failure
        time.sleep(1.1)  # the back-off after one failure is 1 s (per address)
        eng, jar = _client()
        assert _call(eng, st.url + "/api/login", {"user": "eng", "password": "engineer-pass"})[0] == 200
        assert any(c.name == "edgead_session" for c in jar)
        assert _call(eng, st.url + "/api/sensitivity", {"value": 0})[0] == 400
        code, body = _call(eng, st.url + "/api/sensitivity", {"value": 1.5})
        assert code == 200 and st.inspector.detector.sensitivity == 1.5
        assert json.loads((tmp_path / "hmi.json").read_text())["sensitivity"] == 1.5  # persisted
        code, body = _call(eng, st.url + "/api/false-reject", {"id": 1})
        assert code == 200 and "train/good" in body["copied_to"]
        assert (tmp_path / "dataset" / body["copied_to"]).is_file()
        assert not Path(body["copied_to"]).is_absolute()  # paths in answers are relative to the dataset
        assert _call(eng, st.url + "/api/false-reject", {"id": 2})[0] == 400  # an OK part is not a false reject
        assert _call(op, st.url + "/api/capture", {"on": True})[0] == 403
        code, cap = _call(eng, st.url + "/api/capture", {"on": True, "category": "bracket"})
        assert code == 200 and cap["on"] is True
        st.part(503, BLOB_IMG)
        st.part(504, DARK_IMG)
        wait_for(
            lambda: _call(anon, st.url + "/api/state")[1]["capture"]["considered"] == 2, timeout=30, what="captured"
        )
        code, cap = _call(eng, st.url + "/api/capture", {"on": False})
        assert code == 200 and cap["kept"] >= 1 and cap["on"] is False
        assert len(list((tmp_path / "dataset" / "bracket" / "train" / "good").glob("*.png"))) == cap["kept"]
        assert _call(eng, st.url + "/api/sensitivity", {"value": 1.0})[0] == 200
        assert _call(anon, st.url + "/api/state")[1]["recipes"] == {"1": "brightness-test", "2": str(plc_packages["b"])}
        assert _call(eng, st.url + "/api/recipe", {"index": 9})[0] == 400
        assert _call(eng, st.url + "/api/recipe", {"index": 2})[0] == 200
        wait_for(
            lambda: st.inspector.active_recipe == 2 and st.mem.get("ModelId") == 2, timeout=30, what="recipe 2 active"
        )
        assert st.part(505, DARK_IMG)["NG"] is True  # recipe b: threshold 0.05, the dark part is NG
        st.plc.write("RecipeRequest", 1)
        wait_for(lambda: st.inspector.active_recipe == 1, timeout=30, what="the PLC's request wins")
        assert _call(anon, st.url + "/api/audit")[0] == 401  # who changed what is for logged-in users only
        audit = _call(eng, st.url + "/api/audit")[1]
        assert [(a["user"], a["action"]) for a in audit] == [
            ("eng", "recipe"), ("eng", "sensitivity"), ("eng", "capture"), ("eng", "capture"), ("eng", "false_reject"),
            ("eng", "sensitivity")]
        code, text = _call(anon, st.url + "/metrics")
        text = text.decode()
        assert 'edgead_inspections_total{decision="NG",station="hmi-test"} 3.0' in text
        assert "edgead_inspection_ms_bucket" in text and 'edgead_plc_connected{station="hmi-test"} 1.0' in text


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs chromium + chromium-driver (Debian)")
def test_in_a_real_browser(detector, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By

    shots = Path(os.environ.get("EDGE_AD_HMI_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    with StationUnderTest(detector, tmp_path) as st:
        driver = browser(webdriver)
        try:
            driver.get(st.url + "/")
            text = lambda el: driver.find_element(By.ID, el).text  # noqa: E731
            wait_for(lambda: "hmi-test" in text("station"), timeout=BROWSER_WAIT, what="page loaded")
            st.part(601, BLOB_IMG)
            wait_for(lambda: text("verdict") == "NG" and text("c-total") == "1", timeout=BROWSER_WAIT, what="NG shown")
            wait_for(lambda: driver.execute_script("return document.getElementById('frame').naturalWidth") > 0,
                     timeout=BROWSER_WAIT, what="live frame")
            st.part(602, DARK_IMG)
            wait_for(
                lambda: text("verdict") == "OK" and text("c-total") == "2" and text("c-ok") == "1",
                timeout=BROWSER_WAIT,
                what="counters moved",
            )
            assert "PLC up" in text("plc")
            driver.save_screenshot(str(shots / "live.png"))
            driver.find_element(By.CSS_SELECTOR, "nav a[data-page=gallery]").click()
            wait_for(
                lambda: len(driver.find_elements(By.CSS_SELECTOR, "#gallery figure.ng-item")) == 1,
                timeout=BROWSER_WAIT,
                what="NG in the gallery",
            )
            driver.save_screenshot(str(shots / "gallery.png"))
            driver.find_element(By.CSS_SELECTOR, "#gallery figure.ng-item").click()
            wait_for(lambda: driver.find_element(By.ID, "detail").get_attribute("open") is not None,
                     timeout=BROWSER_WAIT, what="detail")
            assert '"part_id": 601' in text("detail-meta")
            driver.find_element(By.ID, "detail-close").click()
            driver.find_element(By.CSS_SELECTOR, "nav a[data-page=lookup]").click()
            driver.find_element(By.NAME, "part").send_keys("602")
            driver.find_element(By.CSS_SELECTOR, "#lookup-form button").click()
            wait_for(lambda: "602" in text("lookup-table") and "OK" in text("lookup-table"), timeout=BROWSER_WAIT,
                     what="lookup result")
            driver.save_screenshot(str(shots / "lookup.png"))
            _engineer_sets_sensitivity(driver, "9")  # threshold / 9: the dark part is NG from now on
            wait_for(lambda: "sensitivity" in text("audit"), timeout=BROWSER_WAIT, what="audit entry")
            driver.save_screenshot(str(shots / "engineer.png"))
            res = st.part(603, DARK_IMG)
            assert res["NG"] is True  # the next verdict used the new sensitivity
            driver.find_element(By.CSS_SELECTOR, "nav a[data-page=live]").click()
            wait_for(lambda: text("verdict") == "NG" and "part 603" in text("part"), timeout=BROWSER_WAIT,
                     what="the next verdict in the browser")
        finally:
            driver.quit()
    assert {p.name for p in shots.glob("*.png")} >= {"live.png", "gallery.png", "lookup.png", "engineer.png"}


def _engineer_sets_sensitivity(driver: Any, value: str) -> None:
    """In the browser: open the engineer page, log in as the engineer, apply `value` as the sensitivity."""
    from selenium.webdriver.common.by import By

    log_in_as_engineer(driver)
    sens = driver.find_element(By.ID, "sens")
    sens.clear()
    sens.send_keys(value)
    driver.find_element(By.CSS_SELECTOR, "#sens-form button").click()
    wait_for(lambda: "applied" in driver.find_element(By.ID, "sens-msg").text, timeout=BROWSER_WAIT,
             what="sensitivity applied")


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs chromium + chromium-driver (Debian)")
def test_browser_with_a_station_fed_by_the_fake_gige_camera(detector, tmp_path):
    """The PLC triggers, the station software-triggers the (fake) GigE camera; the browser sees each new frame."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from gige_peers import FAKE, HAVE_ARAVIS, SERIAL, FakeCamera, _gvcp_bound
    from selenium.webdriver.common.by import By

    if not (FAKE and HAVE_ARAVIS) or _gvcp_bound():
        pytest.skip("needs aravis-tools + PyGObject and a free UDP 127.0.0.1:3956")
    from edge_ad.sources.aravis import GigESource

    cam = FakeCamera()
    cam.start()
    try:
        source = GigESource(f"{SERIAL}@127.0.0.1", roi=(0, 0, 320, 240), pixel_format="Mono8", trigger="software")
        with StationUnderTest(detector, tmp_path, source=source) as st:
            driver = browser(webdriver)
            try:
                driver.get(st.url + "/")
                seen = []
                for k in range(1, 4):
                    st.part(700 + k)
                    wait_for(lambda k=k: driver.find_element(By.ID, "c-total").text == str(k), timeout=BROWSER_WAIT,
                             what=f"counter at {k}")
                    wait_for(
                        lambda k=k: f"part {700 + k}" in driver.find_element(By.ID, "part").text,
                        timeout=BROWSER_WAIT,
                        what="the new part shown",
                    )
                    src = driver.execute_script("return document.getElementById('frame').src")
                    wait_for(lambda: driver.execute_script(
                        "const f = document.getElementById('frame'); return f.complete && f.naturalWidth") == 320,
                             timeout=BROWSER_WAIT, what="the camera frame")
                    seen.append(src)
                assert len(set(seen)) == 3  # a new live frame per part
                assert st.store.count() == 3 and {r["source"] for r in st.store.query()} == {"gige://EDGEADT1@127.0.0.1"}
                _engineer_sets_sensitivity(driver, "9")  # threshold / 9: whatever the camera shows is NG now
                assert st.part(704)["NG"] is True  # the next verdict used it
                driver.find_element(By.CSS_SELECTOR, "nav a[data-page=gallery]").click()
                # one read of the gallery's text: its items are rebuilt on reload, so held elements can go stale
                gallery = "return document.getElementById('gallery').innerText"
                wait_for(lambda: "part 704" in driver.execute_script(gallery), timeout=BROWSER_WAIT,
                         what="the NG in the gallery")
            finally:
                driver.quit()
    finally:
        cam.kill()


def test_multi_view_tiles_and_gallery_in_a_real_browser(detector, tmp_path):
    """Two cameras: a live tile per view with its verdict, every view of an NG part in the gallery (NG and OK views
    alike), the view images served only by id and name."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By

    from edge_ad.plc.inspector import View

    cams = [QueueSource(), QueueSource()]
    shots = Path(os.environ.get("EDGE_AD_HMI_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    with StationUnderTest(detector, tmp_path, source=[View("top", cams[0]), View("side", cams[1])]) as st:
        for img, cam in zip((DARK_IMG, BLOB_IMG), cams):
            cam.push(img)
        assert st.part(701)["ViewNG"] == 0b10
        opener, _jar = _client()
        status, state = _call(opener, st.url + "/api/state")
        assert status == 200
        assert [(v["name"], v["decision"]) for v in state["last"]["views"]] == [("top", "OK"), ("side", "NG")]
        with opener.open(st.url + "/api/live.jpg?view=side") as r:
            assert r.headers["Content-Type"] == "image/jpeg" and r.read()[:2] == b"\xff\xd8"
        for bad in ("../etc/passwd", "nope"):
            with pytest.raises(urllib.error.HTTPError) as e:
                opener.open(st.url + "/api/live.jpg?view=" + urllib.parse.quote(bad))
            assert e.value.code == 404
        status, ng = _call(opener, st.url + "/api/ng")
        assert status == 200
        views = ng[0]["view_rows"]
        assert [(v["name"], v["decision"]) for v in views] == [("top", "OK"), ("side", "NG")]
        assert all(v["image_url"] for v in views)  # every view of an NG part is kept
        wait_for(lambda: st.store._images.empty(), what="images written")
        time.sleep(0.2)
        with opener.open(st.url + views[1]["overlay_url"]) as r:
            assert r.read()[:2] == b"\xff\xd8"
        driver = browser(webdriver)
        try:
            driver.get(st.url + "/")
            tiles = lambda: driver.find_elements(By.CSS_SELECTOR, "#view-tiles figure")  # noqa: E731
            wait_for(lambda: len(tiles()) == 2, timeout=BROWSER_WAIT, what="two live tiles")
            wait_for(lambda: "side: NG" in tiles()[1].text and "top: OK" in tiles()[0].text, timeout=BROWSER_WAIT,
                     what="tile verdicts")
            wait_for(lambda: driver.execute_script(
                "return [...document.querySelectorAll('#view-tiles img')].every(i => i.naturalWidth > 0)"),
                timeout=BROWSER_WAIT, what="tile images")
            driver.save_screenshot(str(shots / "views-live.png"))
            driver.find_element(By.CSS_SELECTOR, "nav a[data-page=gallery]").click()
            wait_for(lambda: len(driver.find_elements(By.CSS_SELECTOR, "#gallery .views img")) == 2,
                     timeout=BROWSER_WAIT, what="both views of the NG part in the gallery")
            wait_for(lambda: driver.execute_script(
                "return [...document.querySelectorAll('#gallery .views img')].every(i => i.naturalWidth > 0)"),
                timeout=BROWSER_WAIT, what="gallery view images")
            assert "top OK, side NG" in driver.find_element(By.CSS_SELECTOR, "#gallery figcaption").text
            driver.save_screenshot(str(shots / "views-gallery.png"))
        finally:
            driver.quit()


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs chromium + chromium-driver (Debian)")
def test_an_operator_confirms_an_ng_with_a_drawn_region(detector, tmp_path):
    """Feedback for the next dataset revision: an operator opens an NG part in the gallery, drags a box over the
    defect and confirms it; the feedback table holds the region in image pixels."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    with StationUnderTest(detector, tmp_path) as st:
        st.part(801, BLOB_IMG)  # the blob sits at x 140..180, y 80..120 of the 300x200 frame
        driver = browser(webdriver)
        try:
            driver.get(st.url + "/")
            log_in(driver, "op", "operator-pass")
            driver.find_element(By.CSS_SELECTOR, "nav a[data-page=gallery]").click()
            wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#gallery figure.ng-item"), timeout=BROWSER_WAIT,
                     what="the NG part in the gallery")
            driver.find_element(By.CSS_SELECTOR, "#gallery figure.ng-item").click()
            img = driver.find_element(By.ID, "detail-img")
            wait_for(lambda: driver.execute_script("return arguments[0].naturalWidth", img) > 0,
                     timeout=BROWSER_WAIT, what="the stored image")
            scale = driver.execute_script("return arguments[0].clientWidth / arguments[0].naturalWidth", img)
            w, h = img.size["width"], img.size["height"]
            # drag from image pixel (130, 70) to (190, 130), offsets from the element's centre
            start = (round(130 * scale - w / 2), round(70 * scale - h / 2))
            end = (round(190 * scale - w / 2), round(130 * scale - h / 2))
            ActionChains(driver).move_to_element_with_offset(img, *start).click_and_hold() \
                .move_to_element_with_offset(img, *end).release().perform()
            wait_for(lambda: "region" in driver.find_element(By.ID, "fr-msg").text, timeout=BROWSER_WAIT,
                     what="the drawn region")
            driver.find_element(By.ID, "confirm-ng").click()
            wait_for(lambda: "confirmed NG" in driver.find_element(By.ID, "fr-msg").text, timeout=BROWSER_WAIT,
                     what="feedback stored")
        finally:
            driver.quit()
        fb = st.store.feedback()
        assert [f["label"] for f in fb] == ["confirmed_ng"] and fb[0]["user"] == "op"
        x, y, rw, rh = fb[0]["region"]
        assert abs(x - 130) <= 4 and abs(y - 70) <= 4 and abs(rw - 60) <= 6 and abs(rh - 60) <= 6
