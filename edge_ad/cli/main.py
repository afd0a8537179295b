"""`edge-ad` entry point. Subcommand modules expose HELP, add_arguments(parser) and run(args) -> int.

Subcommand modules import heavy dependencies (torch, timm) inside `run`, so `edge-ad --help` and the
line-side commands work on a machine without the training stack.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import os
import sys

from edge_ad import __version__
from edge_ad.errors import EdgeADError, GateError

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
    "results": "edge_ad.cli.results",
    "capture": "edge_ad.cli.capture",
    "demo": "edge_ad.cli.demo",
    "models": "edge_ad.cli.models",
    "weights": "edge_ad.cli.weights",
    "build": "edge_ad.cli.build",
    "verify": "edge_ad.cli.verify",
    "selftest": "edge_ad.cli.selftest",
    "keygen": "edge_ad.cli.keygen",
    "sign": "edge_ad.cli.sign",
    "plc-user": "edge_ad.cli.plc_user",
    "hmi-user": "edge_ad.cli.hmi_user",
    "doctor": "edge_ad.cli.doctor",
    "station": "edge_ad.cli.station",
    "dataset": "edge_ad.cli.dataset",
    "compare": "edge_ad.cli.compare",
}


#: commands that need the training stack (`pip install "edge-ad[train]"`); the others run on the line-side install
LAB_COMMANDS = frozenset({"synth", "train", "eval", "export", "demo", "weights", "compare"})
#: top-level modules of the `train` extra: a missing one means the lab side is not installed
LAB_MODULES = frozenset({"torch", "torchvision", "timm", "onnx", "onnxscript", "safetensors", "sklearn", "skimage",
                         "scipy", "tqdm"})


EXIT_CODES = """exit status (every command):
  0  done (every input inspected / every step passed)
  1  done, but some inputs failed (each one reported and recorded; predict, bench, verify)
  2  usage, configuration, input or package error (the message names the file/field; no traceback)
  3  refused by an accuracy gate (export --precision fp16|int8: no package written)
  130 interrupted (Ctrl-C)
conventions: data goes to stdout, status and progress to stderr; --json [PATH] writes machine-readable output
to PATH (no PATH or '-': stdout); -v/-q work before or after the command.
"""


def _log_flags(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=default, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", default=default, help="errors only")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-ad", epilog=EXIT_CODES,
                                     description="Multi-class anomaly detection for the production line.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"edge-ad {__version__}")
    _log_flags(parser, None)
    after = argparse.ArgumentParser(add_help=False)  # the same flags after the subcommand, without overriding
    _log_flags(after, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, modname in COMMANDS.items():
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name == modname:  # subcommand not part of this build
                continue
            raise
        text = f"{mod.HELP} [lab side: needs edge-ad[train]]" if name in LAB_COMMANDS else mod.HELP
        p = sub.add_parser(name, help=text, description=text, parents=[after], epilog=EXIT_CODES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run, _parser=p)
    return parser


def _unknown(args: argparse.Namespace, parser: argparse.ArgumentParser, extra: list[str]) -> None:
    """A typo after a subcommand: that subcommand's usage and the closest flags, not the top-level usage."""
    target: argparse.ArgumentParser = getattr(args, "_parser", parser)
    flags = [o for a in target._actions for o in a.option_strings]
    hints = []
    for word in extra:
        if word.startswith("-"):
            close = difflib.get_close_matches(word.split("=")[0], flags, n=2, cutoff=0.6)
            if close:
                hints.append(f"{word}: did you mean {' or '.join(close)}?")
    target.error(f"unrecognized arguments: {' '.join(extra)}" + ("".join(f"\n  {h}" for h in hints)))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        _unknown(args, parser, extra)
    level = logging.ERROR if args.quiet else logging.WARNING - 10 * min(args.verbose or 0, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except GateError as e:
        print(f"edge-ad {args.command}: refused: {e}", file=sys.stderr)
        return 3
    except EdgeADError as e:
        print(f"edge-ad {args.command}: error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in LAB_MODULES:
            raise
        from edge_ad.optional import install_hint

        print(f"edge-ad {args.command}: needs the lab side (training stack; module {e.name!r} is not installed): "
              f"{install_hint('torch')}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"edge-ad {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `edge-ad models | head`: the reader left; nothing more to say
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
