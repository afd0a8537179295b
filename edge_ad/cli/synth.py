"""`edge-ad synth OUT`: write a deterministic synthetic multi-category dataset in the MVTec AD layout; with `--line`,
line-camera frames (a part on a conveyor with pose jitter, a changing label, small defects, reference and ROI)."""

from __future__ import annotations

import argparse

from edge_ad.cli.common import comma_list, image_size

HELP = "generate a synthetic multi-category anomaly dataset (MVTec layout, with masks)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="output folder (created; must be empty unless --force)")
    parser.add_argument(
        "--categories",
        type=comma_list,
        default=None,
        help="comma-separated categories (default: fabric,wood,mesh,screw_plate,pcb,cap; also: carpet; with --line: "
             "plate_a,plate_b)",
    )
    parser.add_argument("--line", action="store_true",
                        help="line-camera frames (default 1600x1200) instead of close-ups: each category gets "
                             "reference.png and roi.png for `train --align/--roi`")
    parser.add_argument("--per-category", type=int, default=40, help="train images per category (default 40)")
    parser.add_argument("--size", default=None, metavar="N",
                        help="image side in pixels (square; default 256); with --line WxH (default 1600x1200)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives identical files")
    parser.add_argument("--force", action="store_true", help="replace an existing synth dataset in OUT")


def run(args: argparse.Namespace) -> int:
    from edge_ad.data.synth import generate

    cats = args.categories
    if args.line:
        from edge_ad.data.synth_line import generate_line

        size = image_size(args.size or "1600x1200")
        meta = generate_line(args.out, categories=cats, per_category=args.per_category, size=size, seed=args.seed,
                             force=args.force)
        for name, c in meta["categories"].items():
            print(f"{name}: {c['train']} train, {c['test_good']} good test, {sum(c['test_defects'].values())} "
                  f"defective test frames ({', '.join(c['test_defects'])})")
        print(f"wrote {args.out} ({size[1]}x{size[0]} frames, seed {meta['seed']}); train with --align "
              f"{args.out} --roi {args.out}")
        return 0
    h, w = image_size(args.size or "256")
    if h != w:
        from edge_ad.errors import ConfigError

        raise ConfigError(f"--size: synthetic images are square, got {w}x{h}")
    meta = generate(
        args.out, categories=cats, per_category=args.per_category, size=h, seed=args.seed, force=args.force
    )
    rows = [("category", "train", "test good", "test anomalous", "defect types")]
    for name, c in meta["categories"].items():
        rows.append(
            (
                name,
                str(c["train"]),
                str(c["test_good"]),
                str(sum(c["test_defects"].values())),
                ", ".join(c["test_defects"]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r[:4], widths)) + "  " + r[4])
    print(f"wrote {args.out} (size {meta['size']}, seed {meta['seed']})")
    return 0
