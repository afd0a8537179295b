"""The services a station runs next to inspection, shared by `edge-ad serve` and `edge-ad run`: the traceability
database, MQTT results and the web HMI; their flags, and one object that builds, starts and closes them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_station_services(p: argparse.ArgumentParser) -> None:
    t = p.add_argument_group("traceability (one durable row per inspection; query with `edge-ad results`)")
    t.add_argument("--db", metavar="FILE.db|URL",
                   help="traceability database: a SQLite file (created if missing) or postgresql://user:pass@host/db")
    t.add_argument("--db-images", metavar="DIR",
                   help="where NG/OK images are kept (default: FILE_images beside a SQLite file, "
                        "trace_images_STATION for PostgreSQL)")
    t.add_argument("--station", default="station", help="station name stored with every row (default 'station')")
    t.add_argument("--keep-ok-every", type=int, default=0, metavar="N",
                   help="also keep every N-th OK image (NG/failed images are always kept; default 0 = none)")
    t.add_argument("--retention-days", type=float, default=90.0, help="delete rows older than this (default 90)")
    t.add_argument("--retention-rows", type=int, default=None, help="keep at most this many rows (default no limit)")
    t.add_argument("--image-budget-mb", type=float, default=2048.0,
                   help="disk budget of the stored images, oldest deleted first (default 2048)")
    m = p.add_argument_group("results on the plant network (MQTT, QoS 1, spooled on disk while the broker is away)")
    m.add_argument("--mqtt", metavar="URL", help="mqtt://[user:password@]host[:port] or mqtts://...?ca=FILE")
    m.add_argument("--mqtt-topic", default=None, metavar="TOPIC",
                   help="topic root, Unified-Namespace style site/area/line/station (default edge-ad/STATION)")
    m.add_argument("--mqtt-spool", default=None, metavar="DIR",
                   help="offline queue directory (default: mqtt_spool_STATION beside --db, else in the working dir)")
    u = p.add_argument_group("operator web HMI (live view, counters, NG gallery, part lookup, engineer actions)")
    u.add_argument("--ui", metavar="HOST:PORT",
                   help="serve the HMI here, e.g. 0.0.0.0:8080 (:8080 = this machine only)")
    u.add_argument("--ui-users", metavar="FILE", help="HMI users (edge-ad hmi-user FILE NAME); without it no login")
    u.add_argument("--ui-dataset", metavar="DIR", help="where 'mark as false reject' copies images (train/good)")
    u.add_argument("--ui-settings", metavar="FILE.json",
                   help="persisted HMI changes such as the sensitivity (default: hmi_settings_STATION.json beside "
                        "--db, else in the working dir)")
    u.add_argument("--ui-fps", type=float, default=5.0, help="most live-view frames encoded per second (default 5)")


def local_dir(args: argparse.Namespace) -> Path:
    """Where station files go by default: beside a SQLite --db, else the working directory."""
    from edge_ad.traceability.store import is_postgres_url

    return Path(args.db).parent if args.db and not is_postgres_url(args.db) else Path(".")


class StationServices:
    """Store, MQTT publisher and HMI of one station, from its flags; `recorder()` is what the Inspector (or the
    pipeline's RecordSink) calls per result, `start_hmi(...)` serves the HMI, `close()` stops all of it."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.store: Any = None
        self.publisher: Any = None
        self.live: Any = None
        self.hmi: Any = None
        try:
            if args.db:
                from edge_ad.traceability import Retention, TraceStore

                self.store = TraceStore(args.db, args.station, keep_ok_every=args.keep_ok_every,
                                        images_dir=args.db_images,
                                        retention=Retention(args.retention_days, args.retention_rows,
                                                            args.image_budget_mb))
            if args.mqtt:
                from edge_ad.pipeline.mqtt import MqttPublisher

                spool = args.mqtt_spool or local_dir(args) / f"mqtt_spool_{args.station}"
                self.publisher = MqttPublisher(args.mqtt, args.mqtt_topic or f"edge-ad/{args.station}", spool,
                                               station=args.station)
            if args.ui:
                from edge_ad.hmi.app import parse_ui
                from edge_ad.hmi.live import LiveView

                parse_ui(args.ui)  # a bad --ui fails before anything starts
                self.live = LiveView(max_fps=args.ui_fps)
        except BaseException:
            self.close()
            raise

    def recorder(self) -> Any:
        """The fan-out of every enabled service, traceability first; None when none is enabled."""
        from edge_ad.pipeline.recording import Fanout

        recorders: list[Any] = []
        if self.store is not None:
            from edge_ad.traceability import StationRecorder

            recorders.append(StationRecorder(self.store, str(self.args.source)))
        recorders += [r for r in (self.publisher, self.live) if r is not None]
        return Fanout(*recorders) if recorders else None

    def start_hmi(self, inspector: Any, command: str) -> None:
        if self.live is None:
            return
        from edge_ad.hmi.app import HmiServer, Station, create_app, parse_ui
        from edge_ad.hmi.auth import Sessions, load_users

        args = self.args
        host, port = parse_ui(args.ui)
        station = Station(inspector, self.live, self.store, name=args.station,
                          settings=args.ui_settings or local_dir(args) / f"hmi_settings_{args.station}.json",
                          dataset=args.ui_dataset)
        sessions = Sessions(load_users(args.ui_users)) if args.ui_users else None
        self.hmi = HmiServer(create_app(station, sessions), host, port, on_stop=station.close)
        self.hmi.start()
        print(f"edge-ad {command}: HMI on http://{host}:{port}/" + ("" if sessions else " (no --ui-users: read-only)"),
              file=sys.stderr, flush=True)

    def close(self) -> None:
        for service in (self.hmi, self.store, self.publisher):
            if service is not None:
                (service.stop if service is self.hmi else service.close)()
        self.hmi = self.store = self.publisher = None
