"""`edge-ad` entry point. Subcommand modules expose HELP, add_arguments(parser) and run(args) -> int.

Subcommand modules import heavy dependencies (torch, timm) inside `run`, so `edge-ad --help` and the
line-side commands work on a machine without the training stack.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from edge_ad import __version__
from edge_ad.errors import EdgeADError

# name -> module; order is the order of `edge-ad --help`
COMMANDS: dict[str, str] = {
    "synth": "edge_ad.cli.synth",
    "train": "edge_ad.cli.train",
    "eval": "edge_ad.cli.evaluate",
    "export": "edge_ad.cli.export",
    "predict": "edge_ad.cli.predict",
    "bench": "edge_ad.cli.bench",
    "run": "edge_ad.cli.run",
    "serve": "edge_ad.cli.serve",
    "demo": "edge_ad.cli.demo",
    "models": "edge_ad.cli.models",
    "weights": "edge_ad.cli.weights",
    "build": "edge_ad.cli.build",
    "verify": "edge_ad.cli.verify",
    "selftest": "edge_ad.cli.selftest",
    "keygen": "edge_ad.cli.keygen",
    "sign": "edge_ad.cli.sign",
    "plc-user": "edge_ad.cli.plc_user",
    "doctor": "edge_ad.cli.doctor",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-ad", description="Multi-class anomaly detection for the production line.")
    parser.add_argument("--version", action="version", version=f"edge-ad {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, modname in COMMANDS.items():
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name == modname:  # subcommand not part of this build
                continue
            raise
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except EdgeADError as e:
        print(f"edge-ad {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"edge-ad {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
