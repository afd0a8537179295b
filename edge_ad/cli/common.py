"""Options several subcommands share, defined once."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from edge_ad.fileio import atomic_write_json


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
