"""Results on the plant network: every inspection as JSON over MQTT (QoS 1), spooled on disk so a broker outage
loses nothing.

    MqttPublisher("mqtt://user:pass@broker:1883", topic="acme/plant1/line3/station7", spool="spool/")
    mqtts://...?ca=/etc/ca.pem (TLS; ca= optional, the system store otherwise)

Topics (Unified-Namespace style, under `topic`): `<topic>/result` one message per inspection (QoS 1, not
retained), `<topic>/state` the station's state (QoS 1, retained; the broker publishes `{"online": false}` as the
client's last will when the station vanishes). Each message is first written to the spool directory (one file
per message, atomically, fsynced), then a background thread publishes the oldest file and deletes it only after
the broker's PUBACK. A broker restart, a pulled cable or a station restart therefore loses nothing: the spool is
drained on reconnect, in order. Subscribers deduplicate on `seq` (QoS 1 is at-least-once). The spool is bounded
by `max_spool` messages; beyond it the oldest are dropped, counted and logged (a week-long outage must not fill
the disk). Torch-free; needs `paho-mqtt` (`pip install "edge-ad[mqtt]"`).
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from edge_ad.backoff import ExponentialBackoff
from edge_ad.errors import ConfigError
from edge_ad.fileio import atomic_write_bytes
from edge_ad.optional import require
from edge_ad.station.event import InspectionEvent
from edge_ad.station.recorders import event_dict

log = logging.getLogger(__name__)

DEFAULT_MAX_SPOOL = 100_000


def parse_mqtt_url(url: str) -> dict[str, Any]:
    """mqtt[s]://[user[:password]@]host[:port][?ca=FILE&client_id=ID&password_env=VAR&password_file=FILE] ->
    connection settings (ConfigError else). Give the password through an environment variable or a file
    (`password_env`, `password_file`), not in the URL: a URL on a command line is in the process list."""
    u = urlsplit(url)
    if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
        raise ConfigError(f"MQTT URL {redact(url)!r}: expected mqtt://[user[:password]@]host[:port] or mqtts://...")
    q = {k: v[-1] for k, v in parse_qs(u.query).items()}
    known = {"ca", "client_id", "password_env", "password_file"}
    unknown = sorted(set(q) - known)
    if unknown:
        raise ConfigError(f"MQTT URL {redact(url)!r}: unknown option(s) {unknown} (known: {sorted(known)})")
    password = unquote(u.password) if u.password else None
    if q.get("password_env"):
        password = os.environ.get(q["password_env"])
        if password is None:
            raise ConfigError(f"MQTT URL: password_env={q['password_env']}: that environment variable is not set")
    elif q.get("password_file"):
        try:
            password = Path(q["password_file"]).read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ConfigError(f"MQTT URL: password_file={q['password_file']}: cannot read it ({e.strerror})") from None
    try:
        port = u.port or (8883 if u.scheme == "mqtts" else 1883)
    except ValueError:
        raise ConfigError(f"MQTT URL {url!r}: the port is not a number 1..65535") from None
    return {"host": u.hostname, "port": port, "tls": u.scheme == "mqtts", "ca": q.get("ca"),
            "client_id": q.get("client_id"), "username": unquote(u.username) if u.username else None,
            "password": password}


def redact(url: str) -> str:
    """The URL without its password (for messages and logs)."""
    u = urlsplit(url)
    if not u.password:
        return url
    return url.replace(f":{u.password}@", ":***@", 1)


class MqttPublisher:
    """Disk-spooled QoS-1 publisher of a station's results and state (see the module docstring)."""

    def __init__(self, url: str, topic: str, spool: str | Path, *, station: str = "station",
                 max_spool: int = DEFAULT_MAX_SPOOL, keepalive: int = 30) -> None:
        mqtt = require("paho.mqtt.client", "MQTT")
        topic = topic.strip("/")
        if not topic or any(c in topic for c in "#+\0"):
            raise ConfigError(f"MQTT topic {topic!r}: expected a topic path like site/area/line/station, without "
                              "wildcards")
        if isinstance(max_spool, bool) or not isinstance(max_spool, int) or max_spool < 1:
            raise ConfigError(f"max_spool: expected an integer >= 1, got {max_spool!r}")
        self.settings = parse_mqtt_url(url)
        self.topic, self.station, self.max_spool = topic, station, max_spool
        self.spool = Path(spool)
        self.spool.mkdir(parents=True, exist_ok=True)
        for tmp in self.spool.glob(".*"):  # half-written files of a crash: never published, never complete
            tmp.unlink(missing_ok=True)
        # the spool's index: sequence numbers in order, read once here; enqueue appends, a PUBACK pops the oldest,
        # so queueing a message costs the same with 100,000 waiting as with none
        self._queue: deque[int] = deque(sorted(int(p.stem) for p in self.spool.glob("*.json") if p.stem.isdigit()))
        self._next = self._queue[-1] + 1 if self._queue else 1
        self.published = 0
        self.dropped = 0
        self.connected = False
        self._lock = threading.Lock()
        self._closed = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        s = self.settings
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=s["client_id"] or f"edge-ad-{station}",
                             protocol=mqtt.MQTTv311, clean_session=True)
        if s["username"]:
            client.username_pw_set(s["username"], s["password"])
        if s["tls"]:
            ctx = ssl.create_default_context(cafile=s["ca"]) if s["ca"] else ssl.create_default_context()
            client.tls_set_context(ctx)
        client.will_set(f"{topic}/state", json.dumps({"station": station, "online": False}), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client = client
        self._keepalive = keepalive
        self._thread = threading.Thread(target=self._run, name="edge-ad-mqtt", daemon=True)
        self._thread.start()

    # ---- producer side (the station's control loop) -----------------------------------------------------------
    def enqueue(self, topic_suffix: str, payload: dict[str, Any], retain: bool = False) -> None:
        """Spool one message (durable when this returns); the publisher thread sends it."""
        body = json.dumps({"topic": f"{self.topic}/{topic_suffix}", "retain": retain, "payload": payload},
                          allow_nan=False).encode()
        with self._lock:
            n, self._next = self._next, self._next + 1
            atomic_write_bytes(self.spool / f"{n:012d}.json", body, fsync=True)
            self._queue.append(n)
            self._trim()
        self._wake.set()

    def open(self) -> None:
        """Connected at construction (the publisher thread reconnects by itself)."""

    def write(self, event: InspectionEvent) -> None:
        """Publish one verdict (`event_dict`, with the station's name) on `<topic>/result`."""
        self.enqueue("result", event_dict(event, self.station))

    def publish_state(self, state: dict[str, Any]) -> None:
        """The station's state (counters, link states), retained so a new dashboard sees it at once."""
        self.enqueue("state", {"station": self.station, "online": True, **state}, retain=True)

    def _path(self, n: int) -> Path:
        return self.spool / f"{n:012d}.json"

    def _trim(self) -> None:
        """Beyond `max_spool` waiting messages the oldest go (caller holds the lock)."""
        while len(self._queue) > self.max_spool:
            n = self._queue.popleft()
            self._path(n).unlink(missing_ok=True)
            self.dropped += 1
            log.error("MQTT spool full (%d messages): dropped the oldest, %012d", self.max_spool, n)

    def pending(self) -> int:
        return len(self._queue)

    # ---- publisher thread ------------------------------------------------------------------------------------
    def _on_connect(self, _client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            log.error("MQTT %s:%s refused the connection: %s", self.settings["host"], self.settings["port"], reason)
            return
        self.connected = True
        log.info("MQTT connected to %s:%s", self.settings["host"], self.settings["port"])
        self._wake.set()

    def _on_disconnect(self, *_args: Any) -> None:
        if self.connected:
            log.warning("MQTT connection to %s:%s lost; spooling", self.settings["host"], self.settings["port"])
        self.connected = False

    def _run(self) -> None:
        backoff = ExponentialBackoff(1.0, 30.0)
        self._client.loop_start()
        started = False
        while not self._stop.is_set():
            if not started:
                try:
                    self._client.connect(self.settings["host"], self.settings["port"], keepalive=self._keepalive)
                    started = True
                    backoff.succeeded()
                except (OSError, ValueError) as e:
                    delay = backoff.failed(time.monotonic())
                    log.warning("MQTT connect to %s:%s failed (%s); retrying in %.0f s", self.settings["host"],
                                self.settings["port"], e, delay)
                    self._stop.wait(delay)
                    continue
            if not self.connected or not self._drain_one():
                self._wake.wait(0.5)
                self._wake.clear()
        self._client.loop_stop()

    def _drain_one(self) -> bool:
        """Publish the oldest spooled message and wait for its PUBACK; True if one went out."""
        with self._lock:
            if not self._queue:
                return False
            n = self._queue[0]
        path = self._path(n)
        try:
            msg = json.loads(path.read_bytes())
        except (OSError, ValueError) as e:
            log.error("MQTT spool: unreadable %s (%s): removed", path.name, e)
            path.unlink(missing_ok=True)
            self._pop(n)
            return True
        info = self._client.publish(msg["topic"], json.dumps(msg["payload"]), qos=1, retain=bool(msg["retain"]))
        deadline = time.monotonic() + 10.0
        while not info.is_published() and self.connected and time.monotonic() < deadline and not self._stop.is_set():
            time.sleep(0.005)
        if not info.is_published():
            return False  # kept: sent again after the reconnect
        path.unlink(missing_ok=True)
        self._pop(n)
        self.published += 1
        return True

    def _pop(self, n: int) -> None:
        with self._lock:
            if self._queue and self._queue[0] == n:
                self._queue.popleft()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the spool is empty (True) or `timeout` passes (False)."""
        end = time.monotonic() + timeout
        while self.pending() and time.monotonic() < end:
            self._wake.set()
            time.sleep(0.02)
        return self.pending() == 0

    def close(self, timeout: float = 5.0) -> None:
        """Spool `online: false`, drain what can be drained within `timeout` (waiting for a connection that is
        still being made), disconnect. What is left stays in the spool for the next start. Idempotent: the
        scheduler closes its recorders at the end of the stream and the station's services close what they own."""
        if self._closed:
            return
        self._closed = True
        end = time.monotonic() + timeout
        while not self.connected and time.monotonic() < end and self._thread.is_alive():
            time.sleep(0.02)  # a station that stops right after it started still hands over what it has
        self.enqueue("state", {"station": self.station, "online": False}, retain=True)
        if self.connected:
            self.flush(max(0.0, end - time.monotonic()))
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout + 5.0)
        try:
            self._client.disconnect()
        except Exception as e:  # closing a socket of a dead broker
            log.debug("MQTT disconnect: %s", e)

