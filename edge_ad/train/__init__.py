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
    from edge_ad.train.config import resolve_config
    from edge_ad.train.trainer import train

    recipe = recipe_of(model)
    overrides = {"model": model, "data": str(data) if data else None, "out": str(out) if out else None, **options}
    return train(resolve_config(recipe, config, overrides), resume=resume, progress=progress)


def recipe_of(model: str) -> dict[str, Any]:
    """The paper recipe of `model` (its `default_train_config()`, read from a meta-device build) with the default
    run directory runs/<model>."""
    import torch

    from edge_ad.models.registry import create_model

    with torch.device("meta"):  # only the recipe is read; a meta build allocates and warns about nothing
        recipe = create_model(model, pretrained=False).default_train_config()
    recipe["out"] = f"runs/{model}"  # a YAML `out:` or the `out` argument overrides it
    return recipe
