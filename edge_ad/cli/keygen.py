"""`edge-ad keygen --out KEY.pem`: a new Ed25519 key pair for signing model packages."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "create an Ed25519 key pair for signing model packages (private key mode 0600 + public key)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, metavar="KEY.pem",
                   help="private key file; the public key goes next to it as KEY.pub.pem")
    p.add_argument("--force", action="store_true", help="replace existing key files")


def run(args: argparse.Namespace) -> int:
    from edge_ad.runtime.signing import keygen, load_public_key

    priv, pub = keygen(args.out, force=args.force)
    key = load_public_key(pub)
    print(f"private key: {priv}  (keep it off the stations; sign with: edge-ad sign PACKAGE --key {priv})")
    print(f"public key:  {pub}  (key id {key.key_id}; stations trust it with --trusted-key {pub} or "
          f"EDGE_AD_TRUSTED_KEYS={pub})")
    return 0
