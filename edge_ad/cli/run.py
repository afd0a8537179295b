"""`edge-ad run PACKAGE --source URI`: stream a camera/video/folder through a model package on the line, without
a PLC. Several cameras (`--view NAME=SOURCE` repeated, or `views:` in the station file): one pipeline per camera in
this process, all feeding the same recorders; each record names its view.

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
    cameras = cfg.sources()
    missing = [name for name, v in (("package", cfg.package), ("source", cameras)) if not v]
    if missing:
        raise ConfigError(f"run: missing {', '.join(missing)} (give them as arguments or in --config; several "
                          f"cameras: --view NAME=SOURCE or views: in the file)")
    assert cfg.package is not None
    from edge_ad.pipeline import Pipeline
    from edge_ad.pipeline.stats import status_line
    from edge_ad.pipeline.stream import PipelineView
    from edge_ad.runtime.detector import Detector
    from edge_ad.services import StationServices, load_detector
    from edge_ad.station.recorders import SharedRecorder

    services = StationServices(cfg)
    detectors: list[Detector] = []
    pipes: list[Pipeline] = []
    try:
        services.start_shadow()
        services.start_drift([cfg.package, *(c["package"] for c in cameras if c["package"])])
        recorder = services.recorder()
        shared = SharedRecorder(recorder, len(cameras)) if recorder is not None and len(cameras) > 1 else recorder
        for cam in cameras:  # one pipeline (and detector) per camera, all feeding the same recorders
            det = load_detector(cam["package"] or cfg.package, cfg)
            detectors.append(det)
            pipes.append(Pipeline(det, cam["source"], policy=cfg.policy, queue_size=cfg.frame_queue,
                                  recorders=[shared] if shared is not None else [], max_frames=cfg.max_frames,
                                  output=False, name=cam["name"] if cfg.views else None, **cam["source_options"]))
        hmi = services.start_hmi(PipelineView(pipes[0], cfg.package))
    except BaseException:
        services.close()
        for det in detectors:
            det.close()
        raise
    if hmi:
        print(f"edge-ad run: {hmi}", file=sys.stderr, flush=True)
    for pipe in pipes:
        det = pipe.detector
        print(f"edge-ad run: {det.package.name} on {det.backend.name}, source "
              f"{(pipe.name + '=') if pipe.name else ''}{pipe.source.source_id}, policy {pipe.policy}",
              file=sys.stderr, flush=True)
    main = threading.current_thread() is threading.main_thread()
    restores = [pipe.install_signal_handlers() for pipe in pipes[:1]] if main else []
    status = StatusPrinter(args.json, "run")
    done = threading.Event()

    def snapshot() -> dict[str, Any]:
        snaps = [pipe.stats.snapshot() for pipe in pipes]
        if len(pipes) == 1:
            return snaps[0]
        total = {k: sum(s[k] for s in snaps) for k in ("frames_in", "results_out", "dropped", "failed", "ng", "ok",
                                                       "record_errors", "gaps", "frames_lost")}
        total.update({"elapsed_s": max(s["elapsed_s"] for s in snaps), "fps": round(sum(s["fps"] for s in snaps), 2),
                      "fps_overall": round(sum(s["fps_overall"] for s in snaps), 2),
                      "latency_p50_ms": max((s["latency_p50_ms"] for s in snaps if s["latency_p50_ms"] is not None),
                                            default=None),
                      "latency_p99_ms": max((s["latency_p99_ms"] for s in snaps if s["latency_p99_ms"] is not None),
                                            default=None),
                      "seconds_down": round(sum(s["seconds_down"] for s in snaps), 3),
                      "views": {p.name: s for p, s in zip(pipes, snaps)}})
        return total

    def reporter() -> None:
        while cfg.status_every_s > 0 and not done.wait(cfg.status_every_s):
            snap = snapshot()
            if services.publisher is not None:
                services.publisher.publish_state(snap)
            status.show(status_line(snap), snap)

    def stop_all() -> None:
        for pipe in pipes:
            pipe.stop()

    if len(pipes) > 1 and main:  # Ctrl-C / SIGTERM stop every camera, then the first pipeline's handler runs
        import signal

        first = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum: int, frame: Any) -> None:
            stop_all()
            inner = first[signal.Signals(signum)]
            if callable(inner):
                inner(signum, frame)

        for sig in first:
            signal.signal(sig, handler)
    status_thread = threading.Thread(target=reporter, name="edge-ad-status", daemon=True)
    timer = threading.Timer(cfg.duration_s, stop_all) if cfg.duration_s is not None else None
    errors: list[EdgeADError] = []

    def run_one(pipe: Pipeline) -> None:
        try:
            pipe.run()
        except EdgeADError as e:  # the source failed for good (camera gone past give_up): report and exit 1
            print(f"edge-ad run: error{' (' + pipe.name + ')' if pipe.name else ''}: {e}", file=sys.stderr)
            errors.append(e)

    try:
        for pipe in pipes:
            pipe.start()
        status_thread.start()
        if timer is not None:
            timer.start()
        runners = [threading.Thread(target=run_one, args=(pipe,), name=f"edge-ad-run-{i}", daemon=True)
                   for i, pipe in enumerate(pipes[1:], 1)]
        for t in runners:
            t.start()
        run_one(pipes[0])
        for t in runners:
            while t.is_alive():
                t.join(0.2)
    finally:
        done.set()
        if timer is not None:
            timer.cancel()
        for restore in restores:
            restore()
        services.close()
        for det in detectors:
            det.close()
    snap = snapshot()
    status.show(status_line(snap), snap, final=True)
    status.close()
    return 1 if errors else 0
