"""Registry of named model variants (timm style): `create_model`, `list_models`, `model_info`."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge_ad.errors import ConfigError
from edge_ad.models.base import AnomalyModel


@dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str
    paper: str
    input_size: tuple[int, int]
    builder: Callable[..., AnomalyModel]
    description: str = ""
    test_only: bool = False  # tiny CPU variants that are not from any paper
    weights_name: str = ""  # key of the encoder weights in the offline cache (`edge_ad.models.weights`)


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(info: ModelInfo) -> None:
    if info.name in _REGISTRY:
        raise ValueError(f"model {info.name!r} registered twice")
    _REGISTRY[info.name] = info


FAMILIES = ("dinomaly", "mambaad", "ulsad", "dualad")


def _ensure_loaded() -> None:
    """Import every model family module present; importing a family registers its variants."""
    import importlib

    for fam in FAMILIES:
        try:
            importlib.import_module(f"edge_ad.models.{fam}")
        except ModuleNotFoundError as e:
            if e.name != f"edge_ad.models.{fam}":
                raise


def list_models() -> list[str]:
    _ensure_loaded()
    return sorted(_REGISTRY)


def model_info(name: str) -> ModelInfo:
    _ensure_loaded()
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def _check_kwargs(info: ModelInfo, kwargs: dict[str, Any]) -> None:
    """Unknown builder options (typically from a YAML config) are a ConfigError, not a TypeError."""
    params = inspect.signature(info.builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    known = sorted(
        n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY and n not in ("pretrained", "weights")
    )
    bad = sorted(set(kwargs) - set(known))
    if bad:
        raise ConfigError(f"model {info.name!r}: unknown option(s) {bad}; accepted: {known}")


def create_model(name: str, *, pretrained: bool = False, weights: str | None = None, **kwargs: Any) -> AnomalyModel:
    """Build a registered model. `pretrained` loads the encoder from the offline weights cache or timm;
    `weights` is a local encoder checkpoint. With neither, the encoder is randomly initialised."""
    info = model_info(name)
    _check_kwargs(info, kwargs)
    model = info.builder(pretrained=pretrained, weights=weights, **kwargs)
    model.name = name
    return model


def count_parameters(name: str, **kwargs: Any) -> tuple[int, int]:
    """(total, trainable) parameter counts of a variant, built on the meta device (instant, no memory)."""
    import torch

    with torch.device("meta"):
        model = create_model(name, **kwargs)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.trainable_parameters())
    return total, trainable
