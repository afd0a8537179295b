"""`edge-ad train`: train one multi-class model on the good images of a dataset (MVTec layout)."""

from __future__ import annotations

import argparse

HELP = "train a model on good images of one or more categories (multi-class by default)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="registered model name (see `edge-ad models`), e.g. dinomaly-s")
    p.add_argument("--data", help="dataset root in the MVTec AD layout")
    p.add_argument("--categories", help="comma-separated categories (default: all, one model for all)")
    p.add_argument("--config", help="YAML file with training options (CLI flags override it)")
    p.add_argument("--out", help="run directory (default runs/<model>)")
    p.add_argument("--iters", type=int, help="optimiser steps (default: the paper's)")
    p.add_argument("--batch", type=int, help="batch size per process")
    p.add_argument("--lr", type=float, help="base learning rate")
    p.add_argument("--resize", type=int, help="square resize before the crop (default: the model's)")
    p.add_argument("--crop", type=int, help="centre crop size (default: the model's)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--workers", type=int, help="data loader workers")
    p.add_argument("--val-fraction", type=float, dest="val_fraction", help="share of train/good held out for thresholds")
    p.add_argument("--target-frr", type=float, dest="target_frr", help="false-reject rate of the threshold (default 0.01)")
    p.add_argument("--weights", help="local encoder checkpoint (official DINOv2 .pth or timm file)")
    p.add_argument("--no-pretrained", action="store_true", help="random-init encoder (weak heatmaps; for tests and speed)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from edge_ad.errors import ConfigError
    from edge_ad.models.registry import model_info
    from edge_ad.train import fit

    overrides = {k: getattr(args, k) for k in ("model", "data", "out", "iters", "batch", "lr", "resize", "crop", "seed",
                                                "device", "workers", "val_fraction", "target_frr", "weights")}
    if args.categories:
        overrides["categories"] = [c.strip() for c in args.categories.split(",") if c.strip()]
    if args.no_pretrained:
        overrides["pretrained"] = False
    name = args.model
    if name is None and args.config:
        from edge_ad.fileio import read_yaml_file

        loaded = read_yaml_file(args.config, "training config") or {}
        name = loaded.get("model") if isinstance(loaded, dict) else None
    if not name:
        raise ConfigError("train: --model is required (or a `model:` key in --config)")
    try:
        model_info(name)
    except KeyError as e:
        raise ConfigError(str(e.args[0])) from e
    out = fit(name, overrides.pop("data"), overrides.pop("out"), config=args.config, resume=args.resume,
              progress=not args.no_progress, **{k: v for k, v in overrides.items() if k != "model" and v is not None})
    print(f"run written to {out}  (next: edge-ad eval --run {out})")
    return 0
