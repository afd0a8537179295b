"""Options several subcommands share, defined once."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

from edge_ad.fileio import atomic_write_json
from edge_ad.train.options import comma_list

if TYPE_CHECKING:
    from edge_ad.runtime.trt.engine_options import EngineOptions

__all__ = ["StatusPrinter", "add_engine_options", "add_gpu", "add_json", "add_password_stdin", "add_trusted_key",
           "comma_list", "engine_options", "human_out", "image_size", "read_new_password", "stop_on_signals",
           "write_json_output"]


def image_size(text: str) -> tuple[int, int]:
    """An image size flag, `WxH` (1920x1200) or `N` (a square), as (height, width); ConfigError naming the flag
    (parsed in the command's `run`, so a bad value exits 2 like every other bad input)."""
    from edge_ad.errors import ConfigError

    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise ConfigError(f"--size: expected WxH such as 1920x1200 or N for a square, got {text!r}")
    return parts[1], parts[0]


def add_gpu(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gpu", type=int, default=0, metavar="N", help="CUDA device index (default 0)")


def add_engine_options(p: argparse.ArgumentParser) -> None:
    """--workspace MB, --dla N, --tf32: TensorRT engine options (the same meaning in build/verify/bench/run/serve;
    none given = what `edge-ad build` recorded for this device)."""
    p.add_argument("--workspace", type=int, default=None, metavar="MB", help="TensorRT builder workspace limit in MiB")
    p.add_argument("--dla", type=int, default=None, metavar="N",
                   help="TensorRT engine for DLA core N (GPU fallback on)")
    p.add_argument("--tf32", action="store_const", const=True, default=None,
                   help="fp32 TensorRT engines: let FP32 layers run in TF32 (10-bit mantissa; off by default)")


def engine_options(args: argparse.Namespace, *, precision: str | None = None, batch: int | None = None,
                   fp16_fallback: bool = False) -> EngineOptions:
    """The EngineOptions of add_engine_options' flags plus the command's own precision/batch."""
    from edge_ad.runtime.trt.engine_options import EngineOptions

    return EngineOptions(precision=precision, batch=batch, workspace_mb=args.workspace, dla_core=args.dla,
                         fp16_fallback=fp16_fallback, tf32=bool(args.tf32))


def add_trusted_key(p: argparse.ArgumentParser) -> None:
    """--trusted-key PUB.pem (repeatable): refuse packages not signed by one of these keys (also
    $EDGE_AD_TRUSTED_KEYS)."""
    p.add_argument("--trusted-key", dest="trusted_keys", action="append", default=None, metavar="PUB.pem",
                   help="only load packages signed by this Ed25519 public key (repeatable; also "
                        "$EDGE_AD_TRUSTED_KEYS, a path list)")


def add_json(p: argparse.ArgumentParser, what: str) -> None:
    """--json [PATH], the one spelling of machine-readable output: to PATH, or with no PATH (or '-') to stdout."""
    p.add_argument("--json", dest="json", nargs="?", const="-", default=None, metavar="PATH",
                   help=f"write {what} as JSON to PATH (no PATH or '-': to stdout, and the human-readable "
                        "output goes to stderr)")


def human_out(args: argparse.Namespace) -> TextIO:
    """Where tables and messages go: stdout, unless the JSON goes there (then stderr, so stdout stays parseable)."""
    return sys.stderr if getattr(args, "json", None) == "-" else sys.stdout


def write_json_output(target: str | None, obj: Any) -> None:
    """The --json output: nothing (None), stdout ('-'), or a file written atomically."""
    if target is None:
        return
    if target == "-":
        sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    else:
        atomic_write_json(target, obj, default=str)


def add_password_stdin(p: argparse.ArgumentParser) -> None:
    p.add_argument("--password-stdin", action="store_true",
                   help="read the password from the first line of stdin instead of prompting")


def read_new_password(args: argparse.Namespace) -> str:
    """The password for a new user: the first stdin line with --password-stdin, else prompted twice."""
    import getpass

    from edge_ad.errors import ConfigError

    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    password = getpass.getpass(f"password for {args.name}: ")
    if getpass.getpass("again: ") != password:
        raise ConfigError("the two passwords differ")
    return password


class StatusPrinter:
    """The status lines of a long-running command: human-readable on stderr, or with `--json [PATH]` one JSON object
    per line (JSON Lines) on stdout or appended to PATH."""

    def __init__(self, json_target: str | None, command: str) -> None:
        self.command = command
        self._tty = json_target is None and sys.stderr.isatty()
        self._out: TextIO | None = None
        if json_target == "-":
            self._out = sys.stdout
        elif json_target is not None:
            self._out = open(json_target, "a", encoding="utf-8")  # noqa: SIM115 (kept open for the run)

    def show(self, line: str, obj: dict[str, Any], final: bool = False) -> None:
        if self._out is not None:
            self._out.write(json.dumps({"final": final, **obj}, default=str) + "\n")
            self._out.flush()
        elif final:
            print(("\n" if self._tty else "") + f"edge-ad {self.command}: stopped. {line}", file=sys.stderr, flush=True)
        else:
            print(("\r" if self._tty else "") + line, end="" if self._tty else "\n", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._out is not None and self._out is not sys.stdout:
            self._out.close()


@contextlib.contextmanager
def stop_on_signals(command: str) -> Iterator[threading.Event]:
    """An Event set by SIGINT/SIGTERM while the block runs (the old handlers come back after it)."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        print(f"\nedge-ad {command}: {signal.Signals(signum).name}, stopping", file=sys.stderr)
        stop.set()

    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
