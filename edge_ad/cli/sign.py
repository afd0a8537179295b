"""`edge-ad sign PACKAGE --key KEY.pem`: sign a verified package's digest (writes PACKAGE/signature.json)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "sign a model package with an Ed25519 private key (stations with --trusted-key refuse unsigned packages)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("package", type=Path, help="model package directory")
    p.add_argument("--key", type=Path, required=True, help="private key from `edge-ad keygen`")


def run(args: argparse.Namespace) -> int:
    from edge_ad.runtime.package import load_package, sign_package

    out = sign_package(args.package, args.key)
    pkg = load_package(args.package, verify=False, check_signature=False)
    key_id = json.loads(out.read_text())["key_id"]
    print(f"signed {pkg.root} (digest {pkg.digest[:16]}..., key id {key_id}): {out}")
    return 0
