"""`edge-ad models`: the registered model variants with parameter counts (counted on the meta device)."""

from __future__ import annotations

import argparse
import json
from typing import Any

HELP = "list the available models (parameters, input size, paper)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")


def run(args: argparse.Namespace) -> int:
    from edge_ad.models.registry import count_parameters, list_models, model_info

    rows: list[dict[str, Any]] = []
    notes: dict[str, str] = {}
    for name in list_models():
        info = model_info(name)
        notes[name] = info.description
        total, trainable = count_parameters(name)
        rows.append({
            "name": name,
            "family": info.family,
            "params_total": total,
            "params_trainable": trainable,
            "input_size": list(info.input_size),
            "paper": info.paper,
            "test_only": info.test_only,
        })
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<16} {'total':>9} {'trainable':>10} {'input':>9}  description")
    for r in rows:
        size = "x".join(str(s) for s in r["input_size"])
        total, trainable = r["params_total"] / 1e6, r["params_trainable"] / 1e6
        print(f"{r['name']:<16} {total:>8.2f}M {trainable:>9.2f}M {size:>9}  {notes[r['name']]}")
    return 0
