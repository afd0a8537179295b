"""`edge-ad models`: the registered model variants with parameter counts, from the catalogue (no torch needed)."""

from __future__ import annotations

import argparse

from edge_ad.cli.common import add_json, human_out, write_json_output

HELP = "list the available models (parameters, input size, paper)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_json(p, "the model list")


def run(args: argparse.Namespace) -> int:
    from edge_ad.models.catalog import CARDS

    cards = [CARDS[n] for n in sorted(CARDS)]
    out = human_out(args)
    print(f"{'name':<16} {'total':>9} {'trainable':>10} {'input':>9}  description", file=out)
    for c in cards:
        size = "x".join(str(s) for s in c.input_size)
        print(f"{c.name:<16} {c.params_total / 1e6:>8.2f}M {c.params_trainable / 1e6:>9.2f}M {size:>9}  "
              f"{c.description}", file=out)
    write_json_output(args.json, [{"name": c.name, "family": c.family, "params_total": c.params_total,
                                   "params_trainable": c.params_trainable, "input_size": list(c.input_size),
                                   "paper": c.paper, "test_only": c.test_only, "weights": c.weights_name}
                                  for c in cards])
    return 0
