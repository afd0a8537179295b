"""`edge-ad plc-user USERS.yaml NAME`: add or replace an OPC UA user (scrypt hash, never the password)."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_ad.cli.common import add_password_stdin, read_new_password

HELP = "add or replace a user of the secured OPC UA server (opcua://...?security=encrypt&users=FILE)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("users", type=Path, metavar="USERS.yaml", help="users file (created if absent, mode 0600)")
    p.add_argument("name", help="user name the PLC/SCADA logs in with")
    add_password_stdin(p)


def run(args: argparse.Namespace) -> int:
    from edge_ad.plc.opcua_security import set_user

    password = read_new_password(args)
    set_user(args.users, args.name, password)
    print(f"{args.users}: user {args.name!r} set (scrypt hash). Serve with: "
          f"--plc 'opcua://0.0.0.0:4840?security=encrypt&users={args.users}'")
    return 0
