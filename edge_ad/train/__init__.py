"""Training: the generic trainer loop, the paper optimisers and schedules, run directories.

Python API (the same as `edge-ad train`):

    from edge_ad.train import fit
    run_dir = fit("dinomaly-s", data="/data/mvtec", out="runs/ds", iters=10000)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def fit(model: str, data: str | Path | None = None, out: str | Path | None = None, *, config: str | Path | None = None,
        resume: bool = False, progress: bool = True, **options: Any) -> Path:
    """Train `model` on the good images under `data` with the model's paper recipe, overridden by `config` (YAML)
    and `options` (any key of `edge_ad.train.config.TRAIN_KEYS`); returns the run directory."""
    import logging

    import torch

    from edge_ad.models.registry import create_model
    from edge_ad.train.config import resolve_config
    from edge_ad.train.trainer import train

    logging.disable(logging.WARNING)  # building on meta only reads the recipe; the real build warns if needed
    try:
        with torch.device("meta"):
            recipe = create_model(model, pretrained=False).default_train_config()
    finally:
        logging.disable(logging.NOTSET)
    recipe["out"] = f"runs/{model}"  # default run directory; a YAML `out:` or the `out` argument overrides it
    overrides = {"model": model, "data": str(data) if data else None, "out": str(out) if out else None, **options}
    return train(resolve_config(recipe, config, overrides), resume=resume, progress=progress)
