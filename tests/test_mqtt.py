"""MQTT results against a real Mosquitto broker started here (Debian `mosquitto`): QoS 1 JSON per inspection, a
retained state with a last will, authentication, and a broker restart mid-stream with 0 results lost."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from plc_peers import free_port, wait_for
from runtime_fixtures import event

from edge_ad.errors import ConfigError
from edge_ad.station.record import DefectCode, InspectionRecord

mqtt = pytest.importorskip("paho.mqtt.client", reason="needs paho-mqtt (edge-ad[mqtt])")
MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(MOSQUITTO is None, reason="needs the mosquitto broker (apt install mosquitto)")]


class Broker:
    """A Mosquitto process on a free local port with persistence (so queued QoS-1 messages survive a restart)."""

    def __init__(self, root: Path, users: dict[str, str] | None = None, port: int | None = None) -> None:
        self.port, self.root = port or free_port(), root
        root.mkdir(parents=True, exist_ok=True)
        conf = [f"listener {self.port} 127.0.0.1", "persistence true", f"persistence_location {root}/",
                "autosave_interval 1"]
        if os.geteuid() == 0:  # as root Mosquitto drops to user `mosquitto`, who cannot read pytest's tmp dirs
            conf.append("user root")
        if users:
            pw = root / "passwd"
            pw.write_text("".join(f"{u}:{p}\n" for u, p in users.items()))
            subprocess.run(["mosquitto_passwd", "-U", str(pw)], check=True)
            conf += ["allow_anonymous false", f"password_file {pw}"]
        else:
            conf.append("allow_anonymous true")
        (root / "mosquitto.conf").write_text("\n".join(conf) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.root / "mosquitto.conf")], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        import socket

        def up() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0
        wait_for(up, what="mosquitto listening")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()  # SIGTERM: Mosquitto writes its persistence file on the way out
            self.proc.wait(10)
            self.proc = None


class Subscriber:
    """A persistent-session QoS-1 subscriber that records (topic, payload) in arrival order."""

    def __init__(self, port: int, topic: str, **auth: str) -> None:
        self.msgs: list[tuple[str, dict]] = []
        self.lock = threading.Lock()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-sub", clean_session=False)
        if auth:
            c.username_pw_set(auth["username"], auth["password"])
        c.on_connect = lambda cl, *_a: cl.subscribe(topic, qos=1)
        c.on_message = self._on_message
        c.reconnect_delay_set(0.2, 1)
        c.connect("127.0.0.1", port)
        c.loop_start()
        self.client = c

    def _on_message(self, _c, _u, msg) -> None:
        with self.lock:
            self.msgs.append((msg.topic, json.loads(msg.payload)))

    def results(self) -> list[dict]:
        with self.lock:
            return [p for t, p in self.msgs if t.endswith("/result")]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _rec(seq: int) -> InspectionRecord:
    return InspectionRecord(seq=seq, part_id=1000 + seq, ok=seq % 4 != 0,
                            defect_code=DefectCode.OK if seq % 4 else DefectCode.ANOMALY, anomaly_score=0.3,
                            max_pixel_score=0.2, defect_area=0, inspection_ms=20.0, model_id=1)


MODEL = {"name": "dinomaly-tiny", "precision": "fp32", "digest": "cd" * 32}


def test_results_state_and_last_will(tmp_path):
    from edge_ad.pipeline.mqtt import MqttPublisher

    broker = Broker(tmp_path)
    broker.start()
    sub = Subscriber(broker.port, "acme/p1/l3/st7/#")
    try:
        pub = MqttPublisher(f"mqtt://127.0.0.1:{broker.port}", "acme/p1/l3/st7/", tmp_path / "spool", station="st7")
        wait_for(lambda: pub.connected, what="publisher connected")
        pub.publish_state({"inspections": 0})
        for i in range(1, 6):
            pub.write(event(_rec(i), model=MODEL))
        assert pub.flush(10) and pub.published == 6
        wait_for(lambda: len(sub.results()) == 5, what="5 results at the subscriber")
        first = sub.results()[0]
        assert (first["part_id"], first["decision"], first["model"], first["package_digest"]) == (
            1001, "OK", "dinomaly-tiny", "cd" * 32)
        assert sub.results()[3]["decision"] == "NG"
        state = [p for t, p in sub.msgs if t == "acme/p1/l3/st7/state"]
        assert state and state[0]["online"] is True
        # a multi-view part: one message with every view's verdict
        from dataclasses import replace

        from edge_ad.station.event import PackageIdentity, RecordBuilder, ViewEvent, judge
        from edge_ad.station.record import ViewVerdict

        vds = [judge(None, "top"), ViewVerdict("side", True, DefectCode.OK, 0.2, 0.1, 0)]
        rec = RecordBuilder().combine(vds, part_id=77, inspection_ms=3.0, recipe=1)
        ident = PackageIdentity(MODEL["name"], MODEL["precision"], MODEL["digest"])
        pub.write(replace(event(rec, model=MODEL), views=tuple(ViewEvent(v, None, None, {}, ident, v.name)
                                                               for v in vds)))
        assert pub.flush(10)
        wait_for(lambda: len(sub.results()) == 6, what="the multi-view result")
        mv = sub.results()[-1]
        assert (mv["part_id"], mv["decision"]) == (77, "FAILED")
        assert [(v["name"], v["decision"], v["defect_code"]) for v in mv["views"]] == [
            ("top", "FAILED", int(DefectCode.NO_IMAGE)), ("side", "OK", 0)]
        pub._client._sock.close()  # the station vanishes without a DISCONNECT: the broker sends the last will
        wait_for(lambda: any(t.endswith("/state") and p["online"] is False for t, p in sub.msgs), timeout=60,
                 what="last will")
        pub.close(timeout=1)
    finally:
        sub.close()
        broker.stop()


def test_broker_restart_mid_stream_loses_nothing(tmp_path):
    from edge_ad.pipeline.mqtt import MqttPublisher

    broker = Broker(tmp_path)
    broker.start()
    sub = Subscriber(broker.port, "plant/line/st/#")
    pub = MqttPublisher(f"mqtt://127.0.0.1:{broker.port}", "plant/line/st", tmp_path / "spool")
    try:
        wait_for(lambda: pub.connected, what="publisher connected")
        n = 0
        for _ in range(20):
            n += 1
            pub.write(event(_rec(n), model=MODEL))
        wait_for(lambda: len(sub.results()) >= 10, what="first results")
        broker.stop()  # mid-stream: results keep coming while the broker is away
        for _ in range(30):
            n += 1
            pub.write(event(_rec(n), model=MODEL))
            time.sleep(0.01)
        wait_for(lambda: not pub.connected, what="publisher noticed the outage")
        assert pub.pending() > 0  # spooled on disk, not lost
        broker.start()
        for _ in range(10):
            n += 1
            pub.write(event(_rec(n), model=MODEL))
        assert pub.flush(60), f"{pub.pending()} messages still spooled"
        wait_for(lambda: {r["seq"] for r in sub.results()} >= set(range(1, n + 1)), timeout=60,
                 what=f"all {n} results at the subscriber")
        seqs = [r["seq"] for r in sub.results()]
        assert sorted(set(seqs)) == list(range(1, n + 1))  # 0 lost (QoS 1 may duplicate: consumers dedupe on seq)
        assert pub.dropped == 0
    finally:
        pub.close(timeout=1)
        sub.close()
        broker.stop()


def test_spool_survives_a_station_restart_and_is_bounded(tmp_path):
    from edge_ad.pipeline.mqtt import MqttPublisher

    port = free_port()  # nothing listens: every message stays in the spool
    pub = MqttPublisher(f"mqtt://127.0.0.1:{port}", "a/b", tmp_path / "spool", max_spool=5)
    for i in range(1, 8):
        pub.write(event(_rec(i), model=MODEL))
    assert pub.pending() == 5 and pub.dropped == 2
    pub.close(timeout=0.1)
    broker = Broker(tmp_path / "b", port=port)
    broker.start()
    sub = Subscriber(port, "a/b/#")
    try:
        time.sleep(0.3)
        again = MqttPublisher(f"mqtt://127.0.0.1:{port}", "a/b", tmp_path / "spool", max_spool=5)
        assert again.flush(20)
        # the stop spooled its offline state too, so the cap of 5 kept results 4..7 and that state, in order
        wait_for(lambda: len(sub.results()) == 4, what="the 4 spooled results after the restart")
        assert [r["seq"] for r in sub.results()] == [4, 5, 6, 7]
        wait_for(lambda: any(t == "a/b/state" and p["online"] is False for t, p in sub.msgs), what="spooled state")
        again.close(timeout=1)
    finally:
        sub.close()
        broker.stop()


def test_authentication_and_bad_settings(tmp_path):
    from edge_ad.pipeline.mqtt import MqttPublisher, parse_mqtt_url

    broker = Broker(tmp_path, users={"station": "s3cret"})
    broker.start()
    sub = Subscriber(broker.port, "sec/#", username="station", password="s3cret")
    try:
        bad = MqttPublisher(f"mqtt://station:wrong@127.0.0.1:{broker.port}", "sec", tmp_path / "bad")
        bad.write(event(_rec(1), model=MODEL))
        time.sleep(1.5)
        assert not bad.connected and bad.pending() == 1  # refused: kept, never lost
        bad.close(timeout=0.1)
        good = MqttPublisher(f"mqtt://station:s3cret@127.0.0.1:{broker.port}", "sec", tmp_path / "good")
        good.write(event(_rec(2), model=MODEL))
        assert good.flush(10)
        wait_for(lambda: len(sub.results()) == 1, what="authenticated result")
        good.close(timeout=1)
    finally:
        sub.close()
        broker.stop()
    assert parse_mqtt_url("mqtts://u:p%40ss@h?ca=/x.pem")["password"] == "p@ss"
    assert parse_mqtt_url("mqtts://h")["port"] == 8883
    for url, match in (("http://h", "expected mqtt://"), ("mqtt://h:99999", "port"), ("mqtt://h?qos=2", "unknown")):
        with pytest.raises(ConfigError, match=match):
            parse_mqtt_url(url)
    with pytest.raises(ConfigError, match="without wildcards"):
        MqttPublisher("mqtt://127.0.0.1:1", "a/#", tmp_path / "w")


def test_serve_publishes_every_result(plc_packages, tmp_path, capsys):
    import cv2
    from plc_peers import BLOB_IMG, DARK_IMG

    from edge_ad.cli.main import main

    broker = Broker(tmp_path / "broker")
    broker.start()
    sub = Subscriber(broker.port, "acme/l1/st2/#")
    images = tmp_path / "images"
    images.mkdir()
    for i, img in enumerate((BLOB_IMG, DARK_IMG, BLOB_IMG)):
        cv2.imwrite(str(images / f"{i}.png"), img)
    try:
        rc = main(["serve", str(plc_packages["a"]), "--source", str(images), "--plc",
                   f"modbus://127.0.0.1:{free_port()}", "--trigger", "free", "--no-ack", "--hold-ms", "0",
                   "--stop-at-end", "--duration-s", "30", "--backend", "onnxruntime", "--status-every-s", "0.2",
                   "--station", "st2", "--mqtt", f"mqtt://127.0.0.1:{broker.port}", "--mqtt-topic", "acme/l1/st2",
                   "--mqtt-spool", str(tmp_path / "spool")])
        assert rc == 0, capsys.readouterr().err
        wait_for(lambda: len(sub.results()) == 3, what="3 results over MQTT")
        assert [r["decision"] for r in sub.results()] == ["NG", "OK", "NG"]
        states = [p for t, p in sub.msgs if t == "acme/l1/st2/state"]
        assert states and states[-1]["online"] is False  # the clean stop says so
        assert not list((tmp_path / "spool").glob("*.json"))
    finally:
        sub.close()
        broker.stop()
