"""`edge-ad train`: train one multi-class model on the good images of a dataset (MVTec layout).

The flags are derived from `edge_ad.train.options.TrainOptions` (one definition for flags, YAML and defaults);
`--print-config` shows the resolved options (paper paper < --config YAML < flags) without training.
Multi-GPU / multi-node: `torchrun --nproc_per_node=N [--nnodes=M --rdzv-endpoint=HOST:PORT] -m edge_ad.cli.main
train ...` (DistributedDataParallel; `--batch` is per process)."""

from __future__ import annotations

import argparse

HELP = "train a model on good images of one or more categories (multi-class by default)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from edge_ad.train.options import add_cli_flags

    p.add_argument("--config", help="YAML file with training options (flags override it)")
    add_cli_flags(p)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--print-config", action="store_true", help="print the resolved options as YAML and exit")


def run(args: argparse.Namespace) -> int:
    from edge_ad.errors import ConfigError
    from edge_ad.fileio import read_yaml_file
    from edge_ad.models.catalog import card
    from edge_ad.train import fit
    from edge_ad.train.options import format_config, overrides_from_cli, paper_config, resolve_config

    overrides = overrides_from_cli(args)
    name = overrides["model"]
    if name is None and args.config:
        loaded = read_yaml_file(args.config, "training config") or {}
        name = loaded.get("model") if isinstance(loaded, dict) else None
    if not name:
        raise ConfigError("train: --model is required (or a `model:` key in --config)")
    try:
        card(name)
    except KeyError as e:
        raise ConfigError(str(e.args[0])) from None
    if args.print_config:
        print(format_config(resolve_config(paper_config(name), args.config, {**overrides, "model": name})), end="")
        return 0
    options = {k: v for k, v in overrides.items() if k not in ("model", "data", "out") and v is not None}
    out = fit(name, overrides["data"], overrides["out"], config=args.config, resume=args.resume,
              progress=not args.no_progress, **options)
    print(f"run written to {out}  (next: edge-ad eval --run {out})")
    return 0
