"""The services a station runs next to inspection, for `edge-ad serve` and `edge-ad run` alike: the traceability
database, the JSONL log, the NG folder, MQTT results and the web HMI, built from one `StationConfig`; every one
of them is a `Recorder` of the same `InspectionEvent`s, whichever scheduler produces them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_ad.errors import ConfigError
from edge_ad.plugins import Plugin, Registry
from edge_ad.runtime.detector import Detector
from edge_ad.station.config import StationConfig
from edge_ad.station.recorders import Fanout, JsonlRecorder, NGFolderRecorder, Recorder
from edge_ad.station.view import StationView
from edge_ad.traceability.store import TraceRecorder, TraceStore, is_postgres_url

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from edge_ad.hmi.app import HmiServer
    from edge_ad.hmi.live import LiveView
    from edge_ad.pipeline.mqtt import MqttPublisher
    from edge_ad.runtime.drift import DriftMonitor
    from edge_ad.station.shadow import ShadowRunner


def load_detector(spec: str | Path, config: StationConfig, threads: int | None = None) -> Detector:
    """The Detector of a recipe: `PACKAGE` or `PACKAGE#CATEGORY` (a multi-product package with geometry aligns every
    frame to that category's reference; without one, to the best-matching reference)."""
    path, _, category = str(spec).partition("#")
    det = Detector.load(path, backend=config.backend, threshold=config.threshold, sensitivity=config.sensitivity,
                        trusted_keys=config.trusted_keys or None, engine=config.engine(), threads=threads)
    if category:
        refs = det.geometry.references if det.geometry is not None else {}
        if category not in refs:
            det.close()
            raise ConfigError(f"recipe {spec}: the package has no reference for category {category!r} (it has "
                              f"{sorted(refs) or 'no geometry'})")
        det.category = category
    return det


def views_engine_batch(config: StationConfig) -> StationConfig:
    """A multi-view station whose views share the station's package runs them in one backend call: on TensorRT the
    engine must take views x tiles inputs, so that becomes the engine batch unless one was chosen (`batch`). Other
    engines take any batch; nothing changes for them (and OpenVINO stays eligible for `backend: auto`)."""
    shared = sum(1 for c in config.sources() if c["package"] is None)
    if shared < 2 or config.batch is not None or config.backend not in ("auto", "tensorrt") or config.package is None:
        return config
    from edge_ad.runtime.package import load_package
    from edge_ad.runtime.trt import tensorrt_available

    if not tensorrt_available():
        return config
    geometry = load_package(config.package.partition("#")[0], verify=False).geometry()
    return config.with_(batch=shared * (geometry.max_views() if geometry is not None else 1))


def register_models(store: TraceStore, recipes: dict[int, str], active: int, shadow: str | Path | None,
                    trusted_keys: list[str] | None) -> None:
    """The packages a station starts with, in its register (traceability database) with a deployment event each:
    the active recipe as production, the other recipes as recipes, the shadow as shadow."""
    from edge_ad.runtime.package import load_package
    from edge_ad.station.lifecycle import package_info

    entries = [(str(p).partition("#")[0], "production" if i == active else "recipe") for i, p in recipes.items()]
    if shadow is not None:
        entries.append((str(shadow), "shadow"))
    for path, role in entries:
        pkg = load_package(path, trusted_keys=trusted_keys)
        store.register_model(package_info(pkg, path))
        store.log_deployment(pkg.digest, role, "start", None, None)


def local_dir(config: StationConfig) -> Path:
    """Where station files go by default: beside a SQLite database, else the working directory."""
    return Path(config.db).parent if config.db and not is_postgres_url(config.db) else Path(".")


class StationServices:
    """Store, MQTT publisher, live view and HMI of one station; `recorder()` is what the scheduler writes every
    event to, `start_hmi(view, command)` serves the HMI, `close()` stops all of it (idempotent)."""

    def __init__(self, config: StationConfig) -> None:
        self.config = config
        self.store: TraceStore | None = None
        self.publisher: MqttPublisher | None = None
        self.live: LiveView | None = None
        self.hmi: HmiServer | None = None
        self.drift: DriftMonitor | None = None
        from edge_ad.station.shadow import ShadowSlot

        self.shadow_slot = ShadowSlot()  # the shadow model's seat (none until start_shadow or the HMI seats one)
        c = config
        try:
            if c.db:
                from edge_ad.traceability import Retention

                self.store = TraceStore(c.db, c.station, keep_ok_every=c.keep_ok_every, images_dir=c.db_images,
                                        retention=Retention(c.retention_days, c.retention_rows, c.image_budget_mb))
            if c.mqtt:
                from edge_ad.pipeline.mqtt import MqttPublisher

                spool = c.mqtt_spool or local_dir(c) / f"mqtt_spool_{c.station}"
                self.publisher = MqttPublisher(c.mqtt, c.mqtt_topic or f"edge-ad/{c.station}", spool,
                                               station=c.station)
            if c.ui:
                from edge_ad.hmi.app import parse_ui
                from edge_ad.hmi.live import LiveView

                parse_ui(c.ui)  # a bad listen address fails before anything starts
                self.live = LiveView(max_fps=c.ui_fps)
        except BaseException:
            self.close()
            raise

    def start_drift(self, packages: list[str]) -> DriftMonitor | None:
        """The drift monitor over the packages' references (recipes and views; `PACKAGE#CATEGORY` allowed), or None
        when `drift_window` is 0 or no package carries a reference (then the PLC's Drift stays 0 and the HMI says
        why). Call before `recorder()`: the monitor is one of the recorders."""
        from edge_ad.runtime.drift import DriftMonitor, DriftSettings, references_for
        from edge_ad.runtime.package import load_package

        c = self.config
        if c.drift_window == 0:
            return None
        pkgs = [load_package(str(p).partition("#")[0], verify=False) for p in dict.fromkeys(packages)]
        refs = references_for(pkgs)
        if not refs:
            log.info("drift monitor off: no package carries a drift reference (export with a training run)")
            return None
        self.drift = DriftMonitor(refs, DriftSettings(window=c.drift_window, every=max(1, c.drift_window // 8),
                                                      ng_rate=c.drift_ng_rate))
        return self.drift

    @property
    def shadow(self) -> ShadowRunner | None:
        """The shadow model judging parts now (None: none)."""
        return self.shadow_slot.runner

    def make_shadow(self, package: str) -> ShadowRunner:
        """A ShadowRunner of `package` (`PACKAGE#CATEGORY` allowed), verified like production. On a CPU it runs ONNX
        Runtime on its own thread, whose lowest priority the engine then keeps (OpenVINO's worker threads would run
        at production's priority: benchmarks/shadow_cost.py); on a GPU it shares the device."""
        from edge_ad.runtime.trt import tensorrt_available
        from edge_ad.station.shadow import ShadowRunner

        c = self.config
        gpu = c.backend in ("auto", "tensorrt") and tensorrt_available()
        return ShadowRunner(load_detector(package, c if gpu else c.with_(backend="onnxruntime"), threads=1),
                            store=self.store)

    def start_shadow(self) -> ShadowRunner | None:
        """Seat the shadow model of `shadow`, or nothing. Call before `recorder()`."""
        if not self.config.shadow:
            return None
        runner = self.make_shadow(self.config.shadow)
        self.shadow_slot.replace(runner)
        log.info("shadow model %s (%s) judges every part off the critical path", runner.name,
                 (runner.digest or "")[:12])
        return runner

    def register_models(self, recipes: dict[int, str], active: int) -> None:
        """Put every package the station starts with in the register (see `register_models`)."""
        if self.store is not None:
            shadow = self.shadow.detector.package if self.shadow is not None else None
            register_models(self.store, recipes, active, shadow.root if shadow is not None else None,
                            self.config.trusted_keys or None)

    def lifecycle_event(self, what: str, detail: dict[str, Any]) -> None:
        """The Inspector's model switches and automatic rollbacks, in the deployments table and the audit log."""
        if self.store is None:
            return
        if what == "auto-rollback":
            self.store.audit("edge-ad", "auto-rollback", detail)
        elif what == "switched" and detail.get("digest"):
            self.store.log_deployment(detail["digest"], "production", "switch", None,
                                      f"recipe {detail['from']} -> {detail['to']}")

    def recorder(self) -> Recorder | None:
        """Every enabled output in the registry's order (traceability first, then files, the network, the
        screens); None when none is enabled."""
        out = [r for plugin in RECORDERS if (r := plugin.load()(self)) is not None]
        return Fanout(out) if out else None

    def start_hmi(self, view: StationView) -> str | None:
        """Serve the HMI over `view` when `ui` is set; returns what to tell the user (None: no HMI)."""
        ui = self.config.ui
        if self.live is None or ui is None:
            return None
        from edge_ad.hmi.app import HmiServer, Station, create_app, listen_names, parse_ui
        from edge_ad.hmi.auth import Sessions

        c = self.config
        host, port = parse_ui(ui)
        station = Station(view, self.live, self.store, name=c.station,
                          settings=c.ui_settings or local_dir(c) / f"hmi_settings_{c.station}.json",
                          dataset=c.ui_dataset, drift=self.drift, shadow=self.shadow_slot,
                          loader=lambda path: load_detector(path, c), shadow_factory=self.make_shadow)
        sessions = Sessions.from_file(c.ui_users) if c.ui_users else None
        hosts = listen_names(host, c.ui_hosts)
        self.hmi = HmiServer(create_app(station, sessions, hosts), host, port, on_stop=station.close)
        self.hmi.start()
        return f"HMI on http://{host}:{port}/" + ("" if sessions else " (no --ui-users: read-only)")

    def close(self) -> None:
        if self.hmi is not None:
            self.hmi.stop()
        self.shadow_slot.close()  # first: the shadow writes the store
        for service in (self.drift, self.store, self.publisher):
            if service is not None:
                service.close()
        self.hmi = self.store = self.publisher = self.drift = None


def _trace(services: StationServices) -> Recorder | None:
    return TraceRecorder(services.store) if services.store is not None else None


def _jsonl(services: StationServices) -> Recorder | None:
    c = services.config
    return JsonlRecorder(c.results_log) if c.results_log else None


def _ng_folder(services: StationServices) -> Recorder | None:
    c = services.config
    return NGFolderRecorder(c.save_ng, keep=c.ng_keep) if c.save_ng else None


def _mqtt(services: StationServices) -> Recorder | None:
    return services.publisher


def _live(services: StationServices) -> Recorder | None:
    return services.live


def _drift(services: StationServices) -> Recorder | None:
    return services.drift


def _shadow(services: StationServices) -> Recorder | None:
    return services.shadow_slot


#: the station's outputs, in the order every event reaches them (traceability is committed before anything else)
RECORDERS: Registry[Recorder | None] = Registry("recorder")
for _name, _what, _needs in (
        ("traceability", "one durable row per inspection (--db: SQLite or PostgreSQL)", ()),
        ("jsonl", "one JSON line per result, rotated (--results-log)", ()),
        ("ng_folder", "NG images, overlays and JSON, newest N kept (--save-ng)", ()),
        ("mqtt", "results and state over MQTT, spooled on disk (--mqtt)", ("paho",)),
        ("live", "the HMI's live view and counters (--ui)", ("starlette", "uvicorn")),
        ("drift", "the drift monitor (packages with a drift reference; --drift-window)", ()),
        ("shadow", "a candidate package judging the same parts off the critical path (--shadow)", ())):
    RECORDERS.register(Plugin(_name, f"edge_ad.services:_{'trace' if _name == 'traceability' else _name}", _what,
                              needs=_needs))
