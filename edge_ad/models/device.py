"""Which torch device the lab side runs on (training, evaluation, export parity)."""

from __future__ import annotations

import os

import torch

from edge_ad.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """'auto' -> this process's CUDA device if present (LOCAL_RANK under torchrun), else CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"train config: device {name!r} is not a valid torch device") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train config: device {name!r} requested but CUDA is not available")
    return dev
