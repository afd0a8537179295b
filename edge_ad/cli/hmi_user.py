"""`edge-ad hmi-user USERS.yaml NAME --role engineer`: add or replace an HMI user (scrypt hash, never the password)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge_ad.cli.common import add_password_stdin, read_new_password

HELP = "add or replace a user of the station's web HMI (edge-ad serve --ui ... --ui-users FILE)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("users", type=Path, metavar="USERS.yaml", help="users file (created if absent, mode 0600)")
    p.add_argument("name", help="user name")
    p.add_argument("--role", choices=["operator", "engineer"], default="operator",
                   help="operator: read-only (default); engineer: may change sensitivity and mark false rejects")
    add_password_stdin(p)


def run(args: argparse.Namespace) -> int:
    from edge_ad.hmi.auth import set_user

    password = read_new_password(args)
    set_user(args.users, args.name, password, args.role)
    print(f"{args.users}: user {args.name!r} ({args.role}) set (scrypt hash)", file=sys.stderr)
    return 0
