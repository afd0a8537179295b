"""`edge-ad serve PACKAGE --source SRC --plc URL`: a complete inspection station from one command.

PLC URLs: opcua://HOST:PORT (serve OPC UA), opcua-client://HOST:PORT?nodes=TEMPLATE (write into the PLC's server),
modbus://HOST:PORT (serve Modbus TCP), modbus-client://HOST:PORT (write into the PLC's registers),
s7://HOST[:PORT]/RACK/SLOT/DB (Siemens S7 data block). The signal map is in samples/README.md.

The options are those of `edge_ad.station.config.StationConfig` (also station.yaml with --config; flags win).
Every result goes to the enabled outputs (traceability database, JSONL log, NG folder, MQTT, HMI) before it is
posted to the PLC. Prints a status line every --status-every-s seconds (JSON lines with --json); SIGINT/SIGTERM
stop it cleanly (the running inspection is finished, Ready/Busy are cleared, VisionState goes to Halted, sockets
are closed). Exit status 0 after a clean stop, 2 for a bad package/option/URL.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_ad.cli.common import StatusPrinter, add_json, stop_on_signals
from edge_ad.station.config import SERVE, add_station_arguments, config_from_args, print_config

if TYPE_CHECKING:
    from edge_ad.plc.inspector import Inspector

HELP = "run an inspection station: model package + camera source + PLC handshake (OPC UA, Modbus TCP, S7)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_station_arguments(p, SERVE)
    add_json(p, "one status object per status line (JSON Lines)")


def station_state(inspector: Inspector) -> dict[str, Any]:
    """The station state for MQTT and `--json`: the counters, the p50 latency, the recipe, the PLC link and the
    drift monitor's level and reasons."""
    s = inspector.stats
    p50 = s.p50_ms()
    drift = inspector.drift.status() if inspector.drift is not None else None
    return {"inspections": s.inspections, "ok": s.ok, "ng": s.ng, "late": s.late, "errors": s.errors,
            "record_errors": s.record_errors, "p50_ms": None if p50 != p50 else round(p50, 2),
            "recipe": inspector.active_recipe, "plc_connected": inspector.link.connected,
            "faults": [f.name for f in inspector.faults()],
            "drift": {"level": drift["level"], "reasons": drift["reasons"]} if drift else {"level": "OFF"}}


def run(args: argparse.Namespace) -> int:
    from edge_ad.errors import ConfigError

    cfg = config_from_args(args, SERVE)
    if args.print_config:
        sys.stdout.write(print_config(cfg))
        return 0
    missing = [name for name, v in (("package", cfg.package), ("source", cfg.sources()), ("plc", cfg.plc)) if not v]
    if missing:
        raise ConfigError(f"serve: missing {', '.join(missing)} (give them as arguments or in --config; several "
                          f"cameras: --view NAME=SOURCE or views: in the file)")
    if cfg.threshold is not None and cfg.recipes:
        raise ConfigError("serve: threshold: a threshold belongs to one package; with several recipes use "
                          "sensitivity (or export each package with its own thresholds)")
    assert cfg.plc is not None
    plc_url: str = cfg.plc
    from edge_ad.plc.inspector import Inspector, View
    from edge_ad.runtime.detector import Detector
    from edge_ad.services import StationServices, load_detector, views_engine_batch
    from edge_ad.sources import open_source

    cfg = views_engine_batch(cfg)  # views sharing the package: one TensorRT call for all of them

    link_options = {"queue_size": cfg.result_queue, "ack": cfg.ack, "hold_s": cfg.hold_ms / 1e3,
                    "heartbeat_s": cfg.heartbeat_ms / 1e3, "plc_watchdog_s": cfg.plc_watchdog_ms / 1e3}

    def load(spec: str | Path) -> Detector:
        return load_detector(spec, cfg)

    cameras = cfg.sources()
    if cfg.views:  # several cameras, one part
        source: Any = [View(c["name"], open_source(c["source"], **c["source_options"]), c["package"])
                       for c in cameras]
    else:
        source = open_source(cameras[0]["source"], **cameras[0]["source_options"])
    services = StationServices(cfg)
    try:
        services.start_shadow()
        services.start_drift([*cfg.recipe_table().values(), *(c["package"] for c in cameras if c["package"])])
        inspector = Inspector(dict(cfg.recipe_table()), source, plc_url, trigger=cfg.trigger,
                              budget_ms=cfg.budget_ms, load_detector=load, link_options=link_options,
                              stop_when_source_ends=cfg.stop_at_end, recorder=services.recorder(),
                              view_window_ms=cfg.view_window_ms, drift=services.drift,
                              rollback_band=cfg.rollback_band(), on_lifecycle=services.lifecycle_event)
        services.register_models(dict(cfg.recipe_table()), inspector.active_recipe)
        hmi = services.start_hmi(inspector)
    except BaseException:
        services.close()
        raise
    if hmi:
        print(f"edge-ad serve: {hmi}", file=sys.stderr, flush=True)
    where = ", ".join(c["name"] + "=" + c["source"] for c in cameras)
    print(f"edge-ad serve: {cfg.package} | source {where} | PLC {inspector.link.adapter.description} | "
          f"trigger {cfg.trigger} | budget {cfg.budget_ms:g} ms", file=sys.stderr, flush=True)
    status = StatusPrinter(args.json, "serve")
    with stop_on_signals("serve") as stop:
        try:
            inspector.start()
            end = None if cfg.duration_s is None else time.monotonic() + cfg.duration_s
            next_status = time.monotonic()
            while inspector.running and not stop.is_set() and (end is None or time.monotonic() < end):
                if cfg.status_every_s > 0 and time.monotonic() >= next_status:
                    next_status += cfg.status_every_s
                    state = station_state(inspector)
                    if services.publisher is not None:
                        services.publisher.publish_state(state)
                    status.show(inspector.status_line(), state)
                stop.wait(0.05)
        finally:
            inspector.stop()
            services.close()
    status.show(inspector.status_line(), station_state(inspector), final=True)
    status.close()
    if inspector.crashed is not None:
        print(f"edge-ad serve: the control loop failed: {inspector.crashed!r} (see the log)", file=sys.stderr)
        return 1
    return 0
