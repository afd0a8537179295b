"""`edge-ad serve PACKAGE --source SRC --plc URL`: a complete inspection station from one command.

PLC URLs: opcua://HOST:PORT (serve OPC UA), opcua-client://HOST:PORT?nodes=TEMPLATE (write into the PLC's server),
modbus://HOST:PORT (serve Modbus TCP), modbus-client://HOST:PORT (write into the PLC's registers),
s7://HOST[:PORT]/RACK/SLOT/DB (Siemens S7 data block). The signal map is in samples/README.md.

With `--db FILE.db` every result is committed to a traceability database before it is posted to the PLC
(`edge-ad results query FILE.db`). Prints a status line every `--status-every` seconds; SIGINT/SIGTERM stop it
cleanly (the running inspection is finished, Ready/Busy are cleared, VisionState goes to Halted, sockets are
closed). Exit status 0 after a clean stop, 2 for a bad package/option/URL.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from edge_ad.cli.common import add_trusted_key
from edge_ad.cli.station_services import StationServices, add_station_services
from edge_ad.runtime.backends import BACKENDS

HELP = "run an inspection station: model package + camera source + PLC handshake (OPC UA, Modbus TCP, S7)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("package", nargs="?", help="model package directory = recipe 1 (or `package:` in --config)")
    p.add_argument("--config", metavar="STATION.yaml",
                   help="the whole station in one file (samples/station.yaml); flags given as well override it")
    p.add_argument("--source", help="frame source: DIR, glob, video file, gige://SERIAL, usb://0, ...")
    p.add_argument("--plc", metavar="URL",
                   help="opcua://HOST:PORT | opcua-client://HOST:PORT | modbus://HOST:PORT | modbus-client://HOST:PORT "
                        "| s7://HOST[:PORT]/RACK/SLOT/DB")
    p.add_argument("--trigger", choices=["plc", "camera", "free"], default="plc",
                   help="plc: PLC Trigger edge grabs one frame (default); camera: every frame of a hardware-triggered "
                        "camera is a part; free: inspect frames continuously")
    p.add_argument("--recipe", action="append", default=[], metavar="N=PACKAGE",
                   help="extra recipe the PLC can select with RecipeRequest = N (repeatable; N = 2..65535)")
    p.add_argument("--budget-ms", type=float, default=200.0,
                   help="inspection time budget; later = fail-safe NG with Late = 1 (default 200)")
    p.add_argument("--backend", default="auto", choices=list(BACKENDS),
                   help="inference engine (auto: TensorRT on an NVIDIA GPU, else OpenVINO if installed, else ONNX "
                        "Runtime)")
    p.add_argument("--no-ack", action="store_true",
                   help="do not wait for ResultAck before posting the next result (post them --hold-ms apart)")
    p.add_argument("--hold-ms", type=float, default=50.0, help="with --no-ack: minimum time between results")
    p.add_argument("--queue", type=int, default=64, help="result queue length while the PLC is away (default 64)")
    p.add_argument("--heartbeat-ms", type=float, default=500.0, help="Heartbeat increment period (default 500)")
    p.add_argument("--plc-watchdog-s", type=float, default=2.0,
                   help="fault when PlcHeartbeat stops changing this long; 0 = off (default 2)")
    p.add_argument("--status-every", type=float, default=1.0, help="status line period in seconds (0 = none)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--stop-at-end", action="store_true",
                   help="camera/free trigger: stop once a finite source (folder, video) is done and delivered")
    add_station_services(p)
    add_trusted_key(p)


def _recipes(args: argparse.Namespace) -> dict[int, str | Path]:
    from edge_ad.errors import ConfigError

    table: dict[int, str | Path] = {1: args.package}
    for item in args.recipe:
        key, sep, path = item.partition("=")
        try:
            idx = int(key)
        except ValueError:
            idx = -1
        if not sep or not path or not 2 <= idx <= 0xFFFF or idx in table:
            raise ConfigError(f"--recipe {item!r}: expected N=PACKAGE with a new index N in 2..65535 "
                              "(recipe 1 is PACKAGE)")
        table[idx] = path
    return table


def _state(inspector: object) -> dict[str, object]:
    """The station state published on MQTT: the counters, the p50 latency and the PLC link state."""
    s = inspector.stats  # type: ignore[attr-defined]
    link = inspector.link  # type: ignore[attr-defined]
    p50 = s.p50_ms()
    return {"inspections": s.inspections, "ok": s.ok, "ng": s.ng, "late": s.late, "errors": s.errors,
            "record_errors": s.record_errors, "p50_ms": None if p50 != p50 else round(p50, 2),
            "recipe": inspector.active_recipe,  # type: ignore[attr-defined]
            "plc_connected": bool(getattr(link, "connected", False))}


#: station.yaml sections -> flag destinations (the other keys are flag names, with _ or -)
_SECTIONS = {"retention": {"days": "retention_days", "rows": "retention_rows", "image_budget_mb": "image_budget_mb"},
             "mqtt": {"url": "mqtt", "topic": "mqtt_topic", "spool": "mqtt_spool"},
             "database": {"url": "db", "images": "db_images"},
             "ui": {"listen": "ui", "users": "ui_users", "dataset": "ui_dataset", "settings": "ui_settings",
                    "fps": "ui_fps"}}


def apply_config(args: argparse.Namespace, path: str) -> None:
    """Fill `args` from a station YAML: a value counts unless the same option was given on the command line
    (i.e. differs from its default). Unknown keys and wrong types are ConfigErrors naming the key."""
    from edge_ad.errors import ConfigError
    from edge_ad.fileio import read_yaml_file

    doc = read_yaml_file(path, "station config")
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping of station settings")
    defaults = argparse.ArgumentParser()
    add_arguments(defaults)
    default = vars(defaults.parse_args([]))
    flat: dict[str, object] = {}
    for key, value in doc.items():
        k = str(key).replace("-", "_")
        if k in _SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: {key}: expected a mapping with {sorted(_SECTIONS[k])}")
            for sub, v in value.items():
                if sub not in _SECTIONS[k]:
                    raise ConfigError(f"{path}: {key}.{sub}: unknown key (known: {sorted(_SECTIONS[k])})")
                flat[_SECTIONS[k][sub]] = v
        elif k == "recipes":
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: recipes: expected a mapping N: PACKAGE (N = 2..65535)")
            flat["recipe"] = [f"{n}={pkg}" for n, pkg in value.items()]
        elif k in default and k != "config":
            flat[k] = value
        else:
            raise ConfigError(f"{path}: {key}: unknown key (see samples/station.yaml)")
    for k, v in flat.items():
        want = type(default[k]) if default[k] is not None else None
        if want is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if v is not None and want is not None and not isinstance(v, want):
            raise ConfigError(f"{path}: {k}: expected {want.__name__}, got {v!r}")
        if getattr(args, k) == default[k]:
            setattr(args, k, v)


def run(args: argparse.Namespace) -> int:
    from edge_ad.errors import ConfigError
    from edge_ad.plc.inspector import Inspector
    from edge_ad.sources import open_source

    if args.config:
        apply_config(args, args.config)
    missing = [name for name, v in (("package", args.package), ("--source", args.source), ("--plc", args.plc))
               if not v]
    if missing:
        raise ConfigError(f"serve: missing {', '.join(missing)} (give them as arguments or in --config)")

    if args.budget_ms <= 0 or args.queue < 1 or args.heartbeat_ms <= 0 or args.hold_ms < 0 or args.plc_watchdog_s < 0:
        raise ConfigError("serve: expected --budget-ms > 0, --queue >= 1, --heartbeat-ms > 0, --hold-ms >= 0, "
                          "--plc-watchdog-s >= 0")
    link_options = {"queue_size": args.queue, "ack": not args.no_ack, "hold_s": args.hold_ms / 1e3,
                    "heartbeat_s": args.heartbeat_ms / 1e3, "plc_watchdog_s": args.plc_watchdog_s}
    source = open_source(args.source)
    from edge_ad.runtime.detector import Detector

    def load(path: str | Path) -> Detector:
        return Detector.load(path, backend=args.backend, trusted_keys=args.trusted_keys)

    services = StationServices(args)
    try:
        inspector = Inspector(_recipes(args), source, args.plc, trigger=args.trigger, budget_s=args.budget_ms / 1e3,
                              load_detector=load, link_options=link_options, stop_when_source_ends=args.stop_at_end,
                              recorder=services.recorder())
    except BaseException:
        services.close()
        raise
    services.start_hmi(inspector, "serve")
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        print(f"\nedge-ad serve: {signal.Signals(signum).name}, stopping", file=sys.stderr)
        stop.set()

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    print(f"edge-ad serve: {args.package} | source {args.source} | PLC {inspector.link.adapter.description} | "
          f"trigger {args.trigger} | budget {args.budget_ms:g} ms", file=sys.stderr, flush=True)
    tty = sys.stderr.isatty()
    try:
        inspector.start()
        end = None if args.duration is None else time.monotonic() + args.duration
        next_status = time.monotonic()
        while inspector.running and not stop.is_set() and (end is None or time.monotonic() < end):
            if args.status_every > 0 and time.monotonic() >= next_status:
                next_status += args.status_every
                if services.publisher is not None:
                    services.publisher.publish_state(_state(inspector))
                print(("\r" if tty else "") + inspector.status_line(), end="" if tty else "\n", file=sys.stderr,
                      flush=True)
            stop.wait(0.05)
    finally:
        inspector.stop()
        services.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    print(("\n" if tty else "") + "edge-ad serve: stopped. " + inspector.status_line(), file=sys.stderr)
    if inspector.crashed is not None:
        print(f"edge-ad serve: the control loop failed: {inspector.crashed!r} (see the log)", file=sys.stderr)
        return 1
    return 0
