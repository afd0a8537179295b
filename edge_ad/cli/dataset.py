"""`edge-ad dataset from-station DB --out DIR [--since T] [--until T]`: a dataset revision from a station's parts.

Kept OK parts and the operators' false rejects become `train/good` (every 5th OK part `test/good`), confirmed NG
parts `test/station_ng` with masks (the drawn region, else the model's regions); `dataset.json` holds the revision
hash. Then: `edge-ad train --init-from RUN_OR_PACKAGE --data DIR` and `edge-ad compare NEW OLD --data DIR`.
Times as in `edge-ad results` (ISO 8601, today, yesterday, 7d, 24h).
"""

from __future__ import annotations

import argparse

HELP = "build a dataset revision (MVTec layout) from a station's traceability database and operator feedback"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from edge_ad.cli.common import add_json

    sub = p.add_subparsers(dest="action", required=True, metavar="{from-station}")
    q = sub.add_parser("from-station", help=HELP, description=HELP)
    q.add_argument("db", help="the station's database: SQLite file or postgresql:// URL (serve --db)")
    q.add_argument("--out", required=True, help="the new dataset folder (must not exist unless --force)")
    q.add_argument("--since", help="parts inspected from this time (inclusive)")
    q.add_argument("--until", help="parts inspected before this time (exclusive)")
    q.add_argument("--category", default="station", help="the category folder (default: station)")
    q.add_argument("--images", metavar="DIR", help="the station's image folder (default: the database's)")
    q.add_argument("--force", action="store_true", help="replace an existing --out")
    add_json(q, "dataset.json")


def run(args: argparse.Namespace) -> int:
    from edge_ad.cli.common import human_out, write_json_output
    from edge_ad.traceability.dataset import from_station
    from edge_ad.traceability.timespec import parse_time

    doc = from_station(args.db, args.out, since=parse_time(args.since, "--since") if args.since else None,
                       until=parse_time(args.until, "--until") if args.until else None, category=args.category,
                       images_dir=args.images, force=args.force)
    c = doc["counts"]
    print(f"{args.out}: train/good {c['train_good']} (of which {c['false_rejects']} false rejects), test/good "
          f"{c['test_good']}, test/station_ng {c['confirmed_ng']}; revision {doc['revision'][:16]}"
          + (f"; {c['missing_images']} part(s) without their image skipped" if c["missing_images"] else ""),
          file=human_out(args))
    write_json_output(args.json, doc)
    return 0
