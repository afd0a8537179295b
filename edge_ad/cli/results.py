"""`edge-ad results query|export DB`: what a station decided, when, for which part, with which model.

    edge-ad results query station.db --since yesterday --until today --decision NG,FAILED,LATE
    edge-ad results query station.db --part 4711
    edge-ad results export station.db --since 7d --csv ng_week.csv --decision NG
    edge-ad results query station.db --view-name side --decision NG     # multi-view stations: one view's rows

Times: ISO 8601 local time (`2026-12-01`, `2026-12-01T08:30`), `today`, `yesterday`, or an age (`90m`, `24h`,
`7d`); --since is inclusive, --until exclusive. `query` prints a table and a per-model summary (`--json [PATH]`: the
rows as JSON, to stdout or PATH); `export` writes CSV, JSON Lines or Parquet atomically. Reading never blocks a
running station (SQLite WAL).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from datetime import datetime
from typing import Any, TextIO

from edge_ad.errors import ConfigError
from edge_ad.traceability.timespec import parse_time

HELP = "query or export a station's traceability database (edge-ad serve --db)"


def _cell(v: Any) -> Any:
    """A CSV cell a spreadsheet will not run: text starting with = + - @ (or a tab/CR) gets a leading quote."""
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + v
    return v


def add_arguments(p: argparse.ArgumentParser) -> None:
    from edge_ad.cli.common import add_json

    sub = p.add_subparsers(dest="action", required=True, metavar="{query,export}")
    for name, helptext in (("query", "print matching inspections and a per-model summary"),
                           ("export", "write matching inspections as CSV or JSON Lines")):
        q = sub.add_parser(name, help=helptext, description=helptext)
        q.add_argument("db", help="the station's SQLite database (edge-ad serve --db)")
        q.add_argument("--since", help="from this time (inclusive)")
        q.add_argument("--until", help="before this time (exclusive)")
        q.add_argument("--part", type=int, help="only this part id")
        q.add_argument("--decision", help="comma-separated: OK, NG, FAILED, LATE (default: all)")
        q.add_argument("--station", help="only this station name")
        q.add_argument("--view-name", metavar="NAME",
                       help="multi-view stations: the rows of this view (its own decision, score, regions, image) "
                            "instead of the part rows")
        q.add_argument("--limit", type=int, help="at most this many rows (newest first for query)")
        if name == "query":
            add_json(q, "the matching rows")
        else:
            fmt = q.add_mutually_exclusive_group(required=True)
            fmt.add_argument("--csv", metavar="FILE", help="write CSV here")
            fmt.add_argument("--jsonl", metavar="FILE", help="write JSON Lines here")
            fmt.add_argument("--parquet", metavar="FILE", help='write Parquet here (pip install "edge-ad[parquet]")')


def _rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    from edge_ad.traceability import DECISIONS, open_readonly

    decisions = [d.strip().upper() for d in args.decision.split(",") if d.strip()] if args.decision else []
    bad = [d for d in decisions if d not in DECISIONS]
    if bad:
        raise ConfigError(f"--decision {args.decision!r}: expected any of {', '.join(DECISIONS)}, got {bad}")
    since = parse_time(args.since, "--since") if args.since else None
    until = parse_time(args.until, "--until") if args.until else None
    if args.part is not None and not 0 <= args.part <= 2**63 - 1:
        raise ConfigError(f"--part: expected a part id 0..{2**63 - 1}, got {args.part}")
    if args.limit is not None and not 1 <= args.limit <= 10**9:
        raise ConfigError(f"--limit: expected 1..1000000000 rows, got {args.limit}")
    store = open_readonly(args.db)
    try:
        if args.view_name is not None:
            return store.query_views(args.view_name, since=since, until=until, part=args.part, decisions=decisions,
                                     station=args.station, limit=args.limit, newest_first=args.action == "query")
        return store.query(since=since, until=until, part=args.part, decisions=decisions, station=args.station,
                           limit=args.limit, newest_first=args.action == "query")
    finally:
        store.close()


def _when(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def _print_view_table(rows: list[dict[str, Any]], out: TextIO) -> None:
    print(f"{'time':19s}  {'station':10s} {'part':>8s} {'view':10s} {'decision':8s} {'score':>6s} {'part':8s} "
          f"{'model':16s}  reason", file=out)
    for r in rows:
        score = f"{r['normalized_score']:.3f}" if r["normalized_score"] is not None else "-"
        why = r["error"] or (f"{len(r['regions'])} region(s)" if r["decision"] == "NG" else "")
        print(f"{_when(r['time'])}  {r['station'][:10]:10s} {r['part_id']:>8d} {r['view_name'][:10]:10s} "
              f"{r['decision']:8s} {score:>6s} {r['part_decision']:8s} {(r['model'] or '-')[:16]:16s}  {why}",
              file=out)
    counts = {d: sum(r["decision"] == d for r in rows) for d in ("OK", "NG", "FAILED", "LATE")}
    print(f"\n{len(rows)} view row(s): " + ", ".join(f"{k} {v}" for k, v in counts.items()), file=out)


def _print_table(rows: list[dict[str, Any]], out: TextIO) -> None:
    print(f"{'time':19s}  {'station':10s} {'part':>8s} {'decision':8s} {'score':>6s} {'model':16s} {'prec':5s} "
          f"{'digest':12s} {'ms':>6s}  reason", file=out)
    for r in rows:
        score = f"{r['normalized_score']:.3f}" if r["normalized_score"] is not None else "-"
        ms = f"{r['inspection_ms']:.0f}" if r["inspection_ms"] is not None else "-"
        why = r["error"] or (f"{len(r['regions'])} region(s)" if r["decision"] == "NG" else "")
        print(f"{_when(r['time'])}  {r['station'][:10]:10s} {r['part_id']:>8d} {r['decision']:8s} {score:>6s} "
              f"{(r['model'] or '-')[:16]:16s} {(r['precision'] or '-'):5s} {(r['package_digest'] or '-')[:12]:12s} "
              f"{ms:>6s}  {why}", file=out)
    summary: dict[tuple[str, str], dict[str, int]] = {}
    for r in rows:
        key = (r["model"] or "-", (r["package_digest"] or "-")[:12])
        summary.setdefault(key, {d: 0 for d in ("OK", "NG", "FAILED", "LATE")})[r["decision"]] += 1
    print(f"\n{len(rows)} inspection(s)", file=out)
    for (model, digest), counts in sorted(summary.items()):
        print(f"  {model} ({digest}): " + ", ".join(f"{k} {v}" for k, v in counts.items()), file=out)


def run(args: argparse.Namespace) -> int:
    from edge_ad.cli.common import human_out, write_json_output
    from edge_ad.fileio import atomic_write_text

    rows = _rows(args)
    if args.action == "query":
        write_json_output(args.json, rows)
        (_print_view_table if args.view_name is not None else _print_table)(rows, human_out(args))
        return 0
    if args.csv:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["id"], lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: _cell(json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in r.items()})
        atomic_write_text(args.csv, buf.getvalue())
        target = args.csv
    elif args.jsonl:
        atomic_write_text(args.jsonl, "".join(json.dumps(r) + "\n" for r in rows))
        target = args.jsonl
    else:
        _write_parquet(args.parquet, rows)
        target = args.parquet
    print(f"{len(rows)} inspection(s) -> {target}", file=sys.stderr)
    return 0


def _write_parquet(path: str, rows: list[dict[str, Any]]) -> None:
    """Rows as a Parquet table (regions/timings as JSON text columns), written to a temp file and renamed."""
    from edge_ad.optional import require

    pa = require("pyarrow", "--parquet (or use --csv / --jsonl)")
    pq = require("pyarrow.parquet", "--parquet (or use --csv / --jsonl)")
    import os
    import tempfile
    from pathlib import Path

    from edge_ad.traceability.store import COLUMNS

    cols = {c: [json.dumps(r[c]) if isinstance(r[c], (list, dict)) else r[c] for r in rows] for c in COLUMNS}
    table = pa.table(cols)
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent if str(target.parent)
                               else ".")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
