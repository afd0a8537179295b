"""Registry of named model variants (timm style): `create_model`, `list_models`, `model_info`.

What a variant is (family, paper, sizes, parameter counts) is plain data in `edge_ad.models.catalog`; importing a
family module attaches its builder with `register_variants`."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

from edge_ad.errors import ConfigError
from edge_ad.models.base import AnomalyModel
from edge_ad.models.catalog import CARDS, PAPERS, ModelCard
from edge_ad.models.weights import warn_random_init


@dataclass(frozen=True)
class ModelInfo:
    """A registered variant: its card (see edge_ad.models.catalog) and the builder its family module attached."""

    card: ModelCard
    builder: Callable[..., AnomalyModel]

    name = property(lambda self: self.card.name)
    family = property(lambda self: self.card.family)
    paper = property(lambda self: self.card.paper)
    input_size = property(lambda self: self.card.input_size)
    description = property(lambda self: self.card.description)
    test_only = property(lambda self: self.card.test_only)
    weights_name = property(lambda self: self.card.weights_name)


_REGISTRY: dict[str, ModelInfo] = {}


def register_variants(family: str, builder: Callable[..., AnomalyModel], names: Iterable[str]) -> None:
    """Attach `builder(name, **kwargs)` to the catalogue cards of `names` (the one registration of every family):
    a variant without a card, a card of another family, a name registered twice or a card of this family left
    without a builder is an error."""
    names = list(names)
    for name in names:
        c = CARDS.get(name)
        if c is None or c.family != family:
            raise ValueError(f"model {name!r}: no {family} card in edge_ad/models/catalog.py")
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelInfo(c, partial(builder, name))
    missing = sorted(n for n, c in CARDS.items() if c.family == family and n not in names)
    if missing:
        raise ValueError(f"{family}: catalogue cards without a builder: {missing}")


FAMILIES = tuple(PAPERS)


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


def create_model(name: str, *, pretrained: bool = False, weights: str | None = None,
                 state_dict_follows: bool = False, **kwargs: Any) -> AnomalyModel:
    """Build a registered model. `pretrained` loads the encoder from the offline weights cache or timm;
    `weights` is a local encoder checkpoint. With neither, the encoder is randomly initialised and a warning says
    so, unless `state_dict_follows` (the caller loads a full state dict, encoder included, right after)."""
    info = model_info(name)
    _check_kwargs(info, kwargs)
    model = info.builder(pretrained=pretrained, weights=weights, **kwargs)
    model.name = name
    if model.encoder_weights == "random-init" and not state_dict_follows and not model.on_meta_device:
        warn_random_init(name, info.weights_name)
    return model


def count_parameters(name: str, **kwargs: Any) -> tuple[int, int]:
    """(total, trainable) parameter counts of a variant, built on the meta device (instant, no memory)."""
    import torch

    with torch.device("meta"):
        model = create_model(name, **kwargs)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.trainable_parameters())
    return total, trainable
