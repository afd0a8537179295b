"""`edge-ad run PACKAGE --source URI`: stream a camera/video/folder through a model package on the line, without
a PLC.

The options are those of `edge_ad.station.config.StationConfig` (also station.yaml with --config; flags win; the
PLC options of a station file are not used here). Every result goes to the enabled outputs (traceability
database, JSONL log, NG folder, MQTT, HMI), as with `edge-ad serve`. Prints a status line every --status-every-s
seconds (JSON lines with --json) and a final one. Ctrl-C or SIGTERM stops gracefully: capture ends, queued frames
are inspected, the camera is closed; a second Ctrl-C aborts. Exit status 0 after a clean stop, 1 when the source
failed for good, 2 for bad input.
"""

from __future__ import annotations

import argparse
import sys
import threading
from typing import Any

from edge_ad.cli.common import StatusPrinter, add_json
from edge_ad.station.config import RUN, add_station_arguments, config_from_args, print_config

HELP = "stream a camera (GigE Vision, GenTL, USB, RTSP), video or folder through a model package"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_station_arguments(p, RUN)
    add_json(p, "one status object per status line (JSON Lines)")


def run(args: argparse.Namespace) -> int:
    from edge_ad.errors import ConfigError, EdgeADError

    cfg = config_from_args(args, RUN)
    if args.print_config:
        sys.stdout.write(print_config(cfg))
        return 0
    missing = [name for name, v in (("package", cfg.package), ("source", cfg.source)) if not v]
    if missing:
        raise ConfigError(f"run: missing {', '.join(missing)} (give them as arguments or in --config)")
    assert cfg.package is not None and cfg.source is not None
    from edge_ad.pipeline import Pipeline
    from edge_ad.pipeline.stats import status_line
    from edge_ad.pipeline.stream import PipelineView
    from edge_ad.services import StationServices, load_detector

    det = load_detector(cfg.package, cfg)
    services = StationServices(cfg)
    source_options: dict[str, Any] = dict(cfg.source_options)
    try:
        recorder = services.recorder()
        pipe = Pipeline(det, cfg.source, policy=cfg.policy, queue_size=cfg.frame_queue,
                        recorders=[recorder] if recorder is not None else [], max_frames=cfg.max_frames,
                        output=False, **source_options)
        hmi = services.start_hmi(PipelineView(pipe, cfg.package))
    except BaseException:
        services.close()
        det.close()
        raise
    if hmi:
        print(f"edge-ad run: {hmi}", file=sys.stderr, flush=True)
    print(f"edge-ad run: {det.package.name} on {det.backend.name}, source {pipe.source.source_id}, "
          f"policy {pipe.policy}", file=sys.stderr, flush=True)
    restore = pipe.install_signal_handlers() if threading.current_thread() is threading.main_thread() else None
    status = StatusPrinter(args.json, "run")
    done = threading.Event()

    def reporter() -> None:
        while cfg.status_every_s > 0 and not done.wait(cfg.status_every_s):
            snap = pipe.stats.snapshot()
            if services.publisher is not None:
                services.publisher.publish_state(snap)
            status.show(status_line(snap), snap)

    status_thread = threading.Thread(target=reporter, name="edge-ad-status", daemon=True)
    timer = threading.Timer(cfg.duration_s, pipe.stop) if cfg.duration_s is not None else None
    failed = False
    try:
        pipe.start()
        status_thread.start()
        if timer is not None:
            timer.start()
        try:
            pipe.run()
        except EdgeADError as e:  # the source failed for good (camera gone past give_up): report and exit 1
            print(f"edge-ad run: error: {e}", file=sys.stderr)
            failed = True
    finally:
        done.set()
        if timer is not None:
            timer.cancel()
        if restore is not None:
            restore()
        services.close()
        det.close()
    snap = pipe.stats.snapshot()
    status.show(status_line(snap), snap, final=True)
    status.close()
    return 1 if failed else 0
