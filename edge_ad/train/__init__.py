"""Training: the generic trainer loop, the paper optimisers and schedules, the options (`options.TrainOptions`).

Python API (the same as `edge-ad train`):

    from edge_ad.train import fit
    run_dir = fit("dinomaly-s", data="/data/mvtec", out="runs/ds", iters=10000)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def fit(model: str, data: str | Path | None = None, out: str | Path | None = None, *, config: str | Path | None = None,
        resume: bool = False, progress: bool = True, **options: Any) -> Path:
    """Train `model` on the good images under `data` with the paper's training configuration, overridden by
    `config` (YAML) and `options` (any key of `edge_ad.train.options.TRAIN_KEYS`); returns the run directory."""
    from edge_ad.train.options import paper_config, resolve_config
    from edge_ad.train.trainer import train

    paper = paper_config(model)
    overrides = {"model": model, "data": str(data) if data else None, "out": str(out) if out else None, **options}
    return train(resolve_config(paper, config, overrides), resume=resume, progress=progress)
