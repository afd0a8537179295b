"""`edge-ad capture --source SRC --out DATASET [--every N | --trigger plc --plc URL]`: the first job at a new line,
collecting good training images from the station's own camera (same URI and options as `edge-ad serve --source`)
into DATASET/CATEGORY/train/good, from the camera's stream or one frame per PLC Trigger.

Blurred, over-/under-exposed and near-duplicate frames are skipped with their reason; a status line every second;
DATASET/CATEGORY/capture.json records the camera settings, pixel formats, times and skip counts. Ctrl-C stops and
keeps what was captured. Exit status 0, or 1 if nothing was kept.
"""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

HELP = "collect good training images from the station camera (skips blurred, badly exposed, duplicate frames)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", required=True, help="frame source, as for edge-ad serve (gige://SERIAL, usb://0, DIR)")
    p.add_argument("--out", required=True, metavar="DATASET", help="dataset root (MVTec layout)")
    p.add_argument("--category", default="good_parts", help="category folder (default good_parts)")
    p.add_argument("--every", type=int, default=1, metavar="N", help="consider every N-th frame (default 1)")
    p.add_argument("--trigger", choices=["stream", "plc"], default="stream",
                   help="stream: frames as the source delivers them (default); plc: one frame per PLC Trigger over "
                        "the station handshake (--plc URL; every part gets a fail-safe NG 'not inspected')")
    p.add_argument("--plc", metavar="URL", help="with --trigger plc: the PLC URL, as for edge-ad serve")
    p.add_argument("--limit", type=int, default=300, metavar="N",
                   help="stop after keeping N images (default 300)")
    p.add_argument("--duration-s", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--min-sharpness", type=float, default=20.0,
                   help="Laplacian variance below which a frame counts as blurred (default 20)")
    p.add_argument("--min-change", type=float, default=1.5,
                   help="mean grey-level change to the last kept frame below which it is a duplicate (default 1.5)")


def run(args: argparse.Namespace) -> int:
    from edge_ad.capture import CaptureReport, capture, capture_on_trigger
    from edge_ad.errors import ConfigError
    from edge_ad.sources import open_source

    if args.trigger == "plc" and not args.plc:
        raise ConfigError("capture --trigger plc: give the PLC with --plc URL")
    if args.trigger == "stream" and args.plc:
        raise ConfigError("capture: --plc needs --trigger plc")

    source = open_source(args.source)
    tty = sys.stderr.isatty()

    def status(report: CaptureReport) -> None:
        print(("\r" if tty else "") + f"capture: {report.line()}", end="" if tty else "\n", file=sys.stderr,
              flush=True)

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        if hasattr(source, "request_stop"):
            source.request_stop()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        common = {"category": args.category, "max_images": args.limit, "duration_s": args.duration_s,
                  "min_sharpness": args.min_sharpness, "min_change": args.min_change, "status": status,
                  "source_label": str(args.source)}
        if args.trigger == "plc":
            report = capture_on_trigger(source, args.plc, args.out, **common)
        else:
            report = capture(source, args.out, every=args.every, **common)
    except KeyboardInterrupt:
        print("\ncapture: stopped", file=sys.stderr)
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(("\n" if tty else "") + f"capture: {report.line()} -> {report.out}/train/good (manifest capture.json)",
          file=sys.stderr)
    return 0 if report.kept else 1
