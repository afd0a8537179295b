"""Options several subcommands share, defined once."""

from __future__ import annotations

import argparse


def add_trusted_key(p: argparse.ArgumentParser) -> None:
    """--trusted-key PUB.pem (repeatable): refuse packages not signed by one of these keys (also
    $EDGE_AD_TRUSTED_KEYS)."""
    p.add_argument("--trusted-key", dest="trusted_keys", action="append", default=None, metavar="PUB.pem",
                   help="only load packages signed by this Ed25519 public key (repeatable; also "
                        "$EDGE_AD_TRUSTED_KEYS, a path list)")
