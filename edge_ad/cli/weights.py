"""`edge-ad weights fetch|import|list`: the offline cache of pretrained encoder weights."""

from __future__ import annotations

import argparse

from edge_ad.cli.common import add_json, human_out, write_json_output

HELP = "manage the offline cache of pretrained encoder weights (fetch online, import a file, list)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    f = sub.add_parser("fetch", help="download weights (timm / Hugging Face) into the cache")
    f.add_argument("name", help="model name (dinomaly-b) or timm weights tag (vit_base_patch14_reg4_dinov2.lvd142m)")
    i = sub.add_parser("import", help="copy a local checkpoint (.pth / .safetensors) into the cache")
    i.add_argument("name", help="model name (dinomaly-b) or timm weights tag")
    i.add_argument("path", help="checkpoint file: timm format or the official DINOv2 hub .pth")
    ls = sub.add_parser("list", help="show the cached weights")
    add_json(ls, "the index")


def run(args: argparse.Namespace) -> int:
    from edge_ad.models import weights

    if args.action == "fetch":
        path = weights.fetch_weights(args.name)
        print(f"cached {weights.canonical_name(args.name)} -> {path}")
    elif args.action == "import":
        path = weights.import_weights(args.name, args.path)
        print(f"imported {weights.canonical_name(args.name)} -> {path}")
    else:
        index = weights.list_weights()
        out = human_out(args)
        if not index:
            print(f"no weights cached in {weights.weights_dir()}", file=out)
        for name, e in sorted(index.items()):
            print(f"{name:<42} {e['bytes'] / 1e6:>9.1f} MB  sha256 {e['sha256'][:12]}  {e['added']}  {e['source']}",
                  file=out)
        write_json_output(args.json, dict(sorted(index.items())))
    return 0
