"""`edge-ad run PACKAGE --source URI`: stream a camera/video/folder through a model package on the line.

Prints a status line every --status-every seconds (fps, latency p50/p99, drops, NG count; JSON with --json-status)
and a final one. Ctrl-C or SIGTERM stops gracefully: capture ends, queued frames are inspected, the camera is
closed; a second Ctrl-C aborts. Exit status 0 after a clean stop, 1 when the source failed for good, 2 for bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from typing import Any

from edge_ad.cli.common import add_trusted_key
from edge_ad.cli.station_services import StationServices, add_station_services
from edge_ad.runtime.backends import BACKENDS

HELP = "stream a camera (GigE Vision, GenTL, USB, RTSP), video or folder through a model package"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("package", help="model package directory (or its manifest.json)")
    p.add_argument("--source", required=True,
                   help="gige://SERIAL | gige://IP | gige://SERIAL@IP | gentl://PRODUCER.cti?serial=S | usb://0 | "
                        "rtsp://... | video file | directory | glob (camera settings as ?key=value)")
    p.add_argument("-o", "--source-option", action="append", default=[], metavar="KEY=VALUE",
                   help="source option, e.g. pixel_format=BayerRG8, fps=30, roi=0,0,640,480, trigger=Line0, "
                        "rate=10, loop=true (repeatable)")
    p.add_argument("--backend", default="auto", choices=list(BACKENDS),
                   help="inference engine (auto: TensorRT on an NVIDIA GPU, else OpenVINO if installed, else ONNX "
                        "Runtime)")
    p.add_argument("--policy", default=None, choices=["latest", "all"],
                   help="when the model is slower than the source: drop the oldest waiting frame (latest; default "
                        "for cameras) or wait (all; default for folders and video files)")
    p.add_argument("--queue-size", type=int, default=2, help="frames waiting for inference (default 2)")
    p.add_argument("--threshold", type=float, default=None, help="image-score threshold (default: the manifest's)")
    p.add_argument("--sensitivity", type=float, default=1.0, help="effective threshold = threshold / sensitivity")
    p.add_argument("--save-ng", default=None, metavar="DIR", help="save NG images, overlays and result JSON here")
    p.add_argument(
        "--ng-keep", type=int, default=500, help="keep at most this many NG items in --save-ng (default 500)"
    )
    p.add_argument("--results-log", default=None, metavar="FILE.jsonl",
                   help="append every result as one JSON line (rotated at 50 MB, 5 backups)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames from the source")
    p.add_argument("--status-every", type=float, default=5.0, help="seconds between status lines (default 5)")
    p.add_argument("--json-status", action="store_true", help="print status lines as JSON objects")
    add_station_services(p)
    add_trusted_key(p)


def _source_options(items: list[str]) -> dict[str, Any]:
    from edge_ad.errors import ConfigError

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--source-option: expected KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _print_status(snap: dict[str, Any], as_json: bool, final: bool = False) -> None:
    from edge_ad.pipeline.stats import status_line

    if as_json:
        print(json.dumps({"final": final, **snap}), flush=True)
    else:
        print(("final: " if final else "") + status_line(snap), flush=True)


def run(args: argparse.Namespace) -> int:
    from edge_ad.errors import ConfigError
    from edge_ad.pipeline import JsonlSink, NGImageSink, Pipeline, Sink
    from edge_ad.runtime.detector import Detector

    if args.status_every <= 0:
        raise ConfigError(f"--status-every: expected seconds > 0, got {args.status_every}")
    det = Detector.load(args.package, backend=args.backend, threshold=args.threshold, sensitivity=args.sensitivity,
                        trusted_keys=args.trusted_keys)
    services = StationServices(args)
    recorder = services.recorder()
    sinks: list[Sink] = []
    record_sink = None
    if recorder is not None:
        from edge_ad.pipeline.recording import RecordSink

        record_sink = RecordSink(recorder, det)
        sinks.append(record_sink)
    if args.results_log:
        sinks.append(JsonlSink(args.results_log))
    if args.save_ng:
        sinks.append(NGImageSink(args.save_ng, keep=args.ng_keep))
    try:
        pipe = Pipeline(det, args.source, policy=args.policy, queue_size=args.queue_size, sinks=sinks,
                        max_frames=args.max_frames, output=False, **_source_options(args.source_option))
        if services.live is not None:
            from edge_ad.pipeline.recording import StreamStation

            services.start_hmi(StreamStation(det, pipe, record_sink), "run")
    except BaseException:
        services.close()
        raise
    print(f"edge-ad run: {det.package.name} on {det.backend.name}, source {pipe.source.source_id}, "
          f"policy {pipe.policy}", file=sys.stderr, flush=True)
    restore = pipe.install_signal_handlers() if threading.current_thread() is threading.main_thread() else None
    stop_status = threading.Event()

    def reporter() -> None:
        while not stop_status.wait(args.status_every):
            _print_status(pipe.stats.snapshot(), args.json_status)

    status_thread = threading.Thread(target=reporter, name="edge-ad-status", daemon=True)
    failed = False
    try:
        pipe.start()
        status_thread.start()
        try:
            pipe.run()
        except Exception as e:  # the source failed for good (camera gone past give_up): report and exit 1
            from edge_ad.errors import EdgeADError

            if not isinstance(e, EdgeADError):
                raise
            print(f"edge-ad run: error: {e}", file=sys.stderr)
            failed = True
    finally:
        stop_status.set()
        if restore is not None:
            restore()
        services.close()
    _print_status(pipe.stats.snapshot(), args.json_status, final=True)
    return 1 if failed else 0
