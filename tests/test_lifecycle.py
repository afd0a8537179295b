"""The model's life on a running station: package A in production, B as shadow; B promoted with frames flowing
(frames in = rows out, nothing lost, every row names the package that judged it, the PLC's ModelId follows), a
rollback, an automatic rollback of a model that answers NG to everything, refusal of an unsigned package when
trusted keys are configured, the register (`edge-ad station models`), all over the authenticated HMI API and its
CLI client."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from browser import BROWSER_WAIT, CHROMEDRIVER, CHROMIUM, browser, log_in_as_engineer
from plc_peers import DARK_IMG, FAST_LINK, MemoryAdapter, QueueSource, free_port, wait_for

from edge_ad.cli.main import main
from edge_ad.errors import ConfigError
from edge_ad.runtime.package import load_package
from edge_ad.station.config import StationConfig

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytestmark = pytest.mark.slow  # starts an HMI server and real HTTP clients


class LiveStation:
    """A camera-triggered station (in-memory PLC) with traceability, a shadow model and the HMI API."""

    def __init__(self, tmp: Path, prod: Path, shadow: Path, trusted: list[str] | None = None,
                 band: dict[str, Any] | None = None) -> None:
        from edge_ad.hmi.app import HmiServer, Station, create_app
        from edge_ad.hmi.auth import Sessions, load_users, set_user
        from edge_ad.hmi.live import LiveView
        from edge_ad.plc.inspector import Inspector
        from edge_ad.plc.link import PlcLink
        from edge_ad.services import load_detector
        from edge_ad.station.recorders import Fanout
        from edge_ad.station.shadow import ShadowRunner
        from edge_ad.traceability import Retention, TraceRecorder, TraceStore

        users = tmp / "users.yaml"
        set_user(users, "eng", "engineer-pass", "engineer")
        set_user(users, "op", "operator-pass", "operator")
        self.cfg = StationConfig(package=str(prod), shadow=str(shadow), backend="onnxruntime", station="st-life",
                                 trusted_keys=trusted or [], **(band or {}))
        self.db = tmp / "life.db"
        self.store = TraceStore(self.db, "st-life", retention=Retention(None, None, None))
        self.shadow = ShadowRunner(load_detector(str(shadow), self.cfg, threads=1), store=self.store)
        from edge_ad.station.shadow import ShadowSlot

        self._slot = ShadowSlot(self.shadow)
        self.mem, self.cam = MemoryAdapter(), QueueSource()
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.inspector = Inspector({1: str(prod)}, self.cam, PlcLink(self.mem, **FAST_LINK), trigger="camera",
                                   poll_s=0.002, budget_ms=3000.0, backend="onnxruntime",
                                   load_detector=lambda p: load_detector(p, self.cfg),
                                   recorder=Fanout([TraceRecorder(self.store), self._slot]),
                                   rollback_band=self.cfg.rollback_band(),
                                   on_lifecycle=lambda what, d: self.events.append((what, d)))
        self.station = Station(self.inspector, LiveView(), self.store, name="st-life", shadow=self._slot,
                               loader=lambda p: load_detector(p, self.cfg),
                               shadow_factory=lambda p: ShadowRunner(load_detector(p, self.cfg, threads=1),
                                                                     store=self.store))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = HmiServer(create_app(self.station, Sessions(load_users(users))), "127.0.0.1", self.port)
        self.pushed = 0
        self._stop = threading.Event()
        self._feeder = threading.Thread(target=self._feed, daemon=True)

    def _feed(self) -> None:
        while not self._stop.is_set():  # a part every 20 ms while the test switches models
            self.cam.push(DARK_IMG)
            self.pushed += 1
            time.sleep(0.02)

    def __enter__(self) -> LiveStation:
        from edge_ad.services import register_models

        self.inspector.start()
        self.server.start()
        register_models(self.store, {1: self.cfg.package or ""}, 1, self.cfg.shadow, None)
        self._feeder.start()
        return self

    def shadow_now(self) -> Any:
        return self.station.shadow

    def stop_feeding(self) -> int:
        self._stop.set()
        self._feeder.join(5)
        wait_for(lambda: self.inspector.stats.inspections == self.pushed, timeout=30, what="every frame judged")
        return self.pushed

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self.server.stop()
        self.inspector.stop()
        self._slot.close()
        self.store.close()


def _cli(monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    monkeypatch.setenv("EDGE_AD_HMI_PASSWORD", "engineer-pass")
    return main(["station", *argv])


def test_promote_rollback_and_the_register_with_frames_flowing(plc_packages: dict[str, Path], tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    a, b = plc_packages["a"], plc_packages["b"]  # b: threshold 0.05, every dark part NG
    # the band allows b's NG rate, so only the explicit rollback switches back
    with LiveStation(tmp_path, a, b, band={"rollback_max_ng_rate": 1.0}) as st:
        wait_for(lambda: st.inspector.stats.inspections >= 20, timeout=30, what="parts judged by A")
        assert st.mem.get("ModelId") == 1
        assert _cli(monkeypatch, "promote", st.url, "shadow", "--user", "eng") == 0
        wait_for(lambda: st.mem.get("ModelId") == 2, timeout=30, what="ModelId of the promoted model")
        n_promoted = st.inspector.stats.inspections
        wait_for(lambda: st.inspector.stats.inspections >= n_promoted + 20, timeout=30, what="parts judged by B")
        assert _cli(monkeypatch, "rollback", st.url, "--user", "eng") == 0
        wait_for(lambda: st.mem.get("ModelId") == 1, timeout=30, what="ModelId after the rollback")
        n_back = st.inspector.stats.inspections
        wait_for(lambda: st.inspector.stats.inspections >= n_back + 10, timeout=30, what="parts judged by A again")
        pushed = st.stop_feeding()
        rows = st.store.query()
        assert len(rows) == pushed and st.inspector.stats.late == 0  # frames in = rows out, nothing lost
        digests = [r["package_digest"] for r in rows]
        da, db = load_package(a).digest, load_package(b).digest
        assert set(digests) == {da, db}
        switches = [i for i in range(1, len(digests)) if digests[i] != digests[i - 1]]
        assert len(switches) == 2, "A, then B, then A: every row names the model that judged it"
        for r in rows:  # each model's verdicts are its own: B says NG to a dark part, A says OK
            assert (r["decision"] == "OK") == (r["package_digest"] == da)
        audit = [e["action"] for e in st.store.audit_log()]
        assert "promote" in audit and "rollback" in audit
        st.store.apply_retention()
    capsys.readouterr()
    assert _cli(monkeypatch, "models", str(tmp_path / "life.db"), "--json") == 0
    import json

    models = {m["digest"]: m for m in json.loads(capsys.readouterr().out)}
    assert set(models) == {da, db} and models[da]["parts"] + models[db]["parts"] == pushed
    assert models[db]["last_deployment"]["action"] in ("switch", "promote")
    assert models[da]["dataset_revision"] is None and models[da]["precision"] == "fp32"


def test_a_model_that_rejects_everything_is_rolled_back_automatically(plc_packages: dict[str, Path],
                                                                       tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = plc_packages["a"], plc_packages["b"]
    with LiveStation(tmp_path, a, b, band={"rollback_parts": 30, "rollback_max_ng_rate": 0.5}) as st:
        wait_for(lambda: st.inspector.stats.inspections >= 5, timeout=30, what="parts")
        assert _cli(monkeypatch, "promote", st.url, "shadow", "--user", "eng") == 0
        wait_for(lambda: any(w == "auto-rollback" for w, _ in st.events), timeout=30, what="automatic rollback")
        wait_for(lambda: st.mem.get("ModelId") == 1, timeout=30, what="ModelId back to 1")
        reason = next(d for w, d in st.events if w == "auto-rollback")["reason"]
        assert "NG rate" in reason and "above 50%" in reason
        pushed = st.stop_feeding()
        assert len(st.store.query()) == pushed
        ng_by_b = sum(r["decision"] == "NG" for r in st.store.query())
        assert 10 <= ng_by_b <= 20  # rolled back as soon as the band was left (min 10 parts seen)


def test_promotion_is_refused_for_unsigned_packages_operators_and_paths(plc_packages: dict[str, Path],
                                                                        tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(plc_packages["a"], a)
    shutil.copytree(plc_packages["b"], b)
    assert main(["keygen", "--out", str(tmp_path / "owner.pem")]) == 0
    assert main(["sign", str(a), "--key", str(tmp_path / "owner.pem")]) == 0
    # production is signed, the shadow is not (it runs here only because the station's keys are set afterwards)
    with LiveStation(tmp_path, a, b) as st:
        st.cfg = StationConfig(**{**st.cfg.to_dict(), "trusted_keys": [str(tmp_path / "owner.pub.pem")]})
        capsys.readouterr()

        def refused(*argv: str, password: str = "engineer-pass") -> str:
            monkeypatch.setenv("EDGE_AD_HMI_PASSWORD", password)
            assert main(["station", *argv]) == 2
            return capsys.readouterr().err

        assert "400: promote:" in (err := refused("promote", st.url, "shadow", "--user", "eng")) and \
            "unsigned package" in err
        assert "403" in refused("promote", st.url, "shadow", "--user", "op", password="operator-pass")
        assert "expected 'shadow' or the 64-hex digest" in refused(
            "promote", st.url, "../../etc/passwd", "--user", "eng")
        assert "is not a model this station has run" in refused("promote", st.url, "ab" * 32, "--user", "eng")
        assert "no earlier model" in refused("rollback", st.url, "--user", "eng")
        assert st.mem.get("ModelId") == 1
        st.stop_feeding()
    # seating a shadow from the HMI API: a registered model (verified with the station's keys), then none
    import urllib.request
    from http.cookiejar import CookieJar

    from edge_ad.cli.station import _post

    with LiveStation(tmp_path / "again", a, b) as st:
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        csrf = _post(opener, st.url, "/api/login", {"user": "eng", "password": "engineer-pass"}, "")["csrf"]
        digest_a = load_package(a).digest
        assert _post(opener, st.url, "/api/model/shadow", {"target": digest_a}, csrf)["shadow"] == digest_a
        wait_for(lambda: st.shadow_now() is not None and st.shadow_now().judged >= 3, timeout=30,
                 what="the new shadow judging parts")
        assert st.shadow_now().status()["agreement"] == 1.0  # A shadowing A agrees on every part
        assert _post(opener, st.url, "/api/model/shadow", {"target": "off"}, csrf)["shadow"] is None
        assert st.shadow_now() is None
        with pytest.raises(ConfigError, match="400: shadow: expected 'shadow' or the 64-hex digest"):
            _post(opener, st.url, "/api/model/shadow", {"target": "/etc"}, csrf)
        st.stop_feeding()


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs chromium + chromium-driver (Debian)")
def test_models_panel_promotes_and_rolls_back_in_a_real_browser(plc_packages: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    """The engineer page lists the station's models; Promote shadow and Roll back switch production between parts;
    the shadow's agreement shows on the live page."""
    import os

    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By

    shots = Path(os.environ.get("EDGE_AD_HMI_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    a, b = plc_packages["a"], plc_packages["b"]
    with LiveStation(tmp_path, a, b, band={"rollback_max_ng_rate": 1.0}) as st:
        driver = browser(webdriver)
        try:
            driver.get(st.url + "/")
            wait_for(lambda: "shadow" in driver.find_element(By.ID, "shadow").text, timeout=BROWSER_WAIT,
                     what="shadow agreement on the live page")
            assert "agrees on" in driver.find_element(By.ID, "shadow").text
            driver.save_screenshot(str(shots / "shadow-live.png"))
            log_in_as_engineer(driver)
            options = lambda: driver.find_elements(By.CSS_SELECTOR, "#model-pick option")  # noqa: E731
            wait_for(lambda: len(options()) == 2, timeout=BROWSER_WAIT, what="the register: production and shadow")
            driver.find_element(By.ID, "promote-shadow").click()
            wait_for(lambda: "promoted as recipe 2" in driver.find_element(By.ID, "model-msg").text,
                     timeout=BROWSER_WAIT, what="promotion answered")
            wait_for(lambda: st.mem.get("ModelId") == 2, timeout=30, what="ModelId 2 on the PLC")
            driver.save_screenshot(str(shots / "models.png"))
            driver.find_element(By.ID, "rollback").click()
            wait_for(lambda: st.mem.get("ModelId") == 1, timeout=30, what="ModelId 1 after the rollback")
            wait_for(lambda: "rollback" in driver.find_element(By.ID, "audit").text, timeout=BROWSER_WAIT,
                     what="audited")
        finally:
            driver.quit()
            st.stop_feeding()


def test_promote_with_the_fake_gige_camera_and_a_modbus_plc(plc_packages: dict[str, Path], tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The same promotion and rollback with frames from the fake GigE Vision camera (free-running, every frame a
    part) and a real Modbus TCP PLC client acknowledging every result: parts = rows, each names its package, the
    PLC reads the new ModelId."""
    from gige_peers import FAKE, HAVE_ARAVIS, SERIAL, FakeCamera, _gvcp_bound
    from plc_peers import PlcProgram, make_peer

    if not (FAKE and HAVE_ARAVIS) or _gvcp_bound():
        pytest.skip("needs aravis-tools, gir1.2-aravis-0.8, PyGObject and a free 127.0.0.1:3956")
    pytest.importorskip("pymodbus")
    from edge_ad.hmi.app import HmiServer, Station, create_app
    from edge_ad.hmi.auth import Sessions, load_users, set_user
    from edge_ad.hmi.live import LiveView
    from edge_ad.plc.inspector import Inspector
    from edge_ad.services import load_detector, register_models
    from edge_ad.sources.aravis import GigESource
    from edge_ad.station.recorders import Fanout
    from edge_ad.station.shadow import ShadowRunner
    from edge_ad.traceability import Retention, TraceRecorder, TraceStore

    a, b = plc_packages["a"], plc_packages["b"]
    cfg = StationConfig(package=str(a), shadow=str(b), backend="onnxruntime", station="st-gige")
    users = tmp_path / "users.yaml"
    set_user(users, "eng", "engineer-pass", "engineer")
    store = TraceStore(tmp_path / "g.db", "st-gige", retention=Retention(None, None, None))
    shadow = ShadowRunner(load_detector(str(b), cfg, threads=1), store=store)
    url, peer = make_peer("modbus-server")
    cam = FakeCamera()
    cam.start()
    src = GigESource(f"{SERIAL}@127.0.0.1", roi=(0, 0, 320, 240), pixel_format="Mono8", frame_rate=15.0)
    insp = Inspector({1: str(a)}, src, url, trigger="camera", budget_ms=3000.0, poll_s=0.002,
                     load_detector=lambda p: load_detector(p, cfg), recorder=Fanout([TraceRecorder(store), shadow]),
                     link_options=FAST_LINK, rollback_band=cfg.with_(rollback_max_ng_rate=1.0).rollback_band())
    port = free_port()
    server = HmiServer(create_app(Station(insp, LiveView(), store, name="st-gige", shadow=shadow,
                                          loader=lambda p: load_detector(p, cfg)),
                                  Sessions(load_users(users))), "127.0.0.1", port)
    plc = PlcProgram(peer.read, peer.write, peer.refresh)
    try:
        insp.start()
        server.start()
        register_models(store, {1: str(a)}, 1, str(b), None)
        plc.run_until(lambda: len(plc.results) >= 15, timeout=60, what="parts from the camera")
        assert _cli(monkeypatch, "promote", f"http://127.0.0.1:{port}", "shadow", "--user", "eng") == 0
        plc.run_until(lambda: peer.read("ModelId") == 2, timeout=60, what="ModelId 2 at the PLC")
        n = len(plc.results)
        plc.run_until(lambda: len(plc.results) >= n + 15, timeout=60, what="parts judged by the promoted model")
        assert _cli(monkeypatch, "rollback", f"http://127.0.0.1:{port}", "--user", "eng") == 0
        plc.run_until(lambda: peer.read("ModelId") == 1, timeout=60, what="ModelId 1 at the PLC")
        n = len(plc.results)
        plc.run_until(lambda: len(plc.results) >= n + 5, timeout=60, what="parts after the rollback")
    finally:
        server.stop()
        insp.stop()
        peer.stop()
        cam.kill()
        shadow.close()
    rows = store.query()
    store.close()
    assert len(rows) == insp.stats.inspections and insp.stats.late == 0  # parts = rows, nothing lost
    digests = [r["package_digest"] for r in rows]
    assert len({d for d in digests}) == 2
    assert sum(digests[i] != digests[i - 1] for i in range(1, len(digests))) == 2  # A, B, A
    assert [r["ModelId"] for r in plc.results].count(2) >= 15
