"""Training configuration: the model's paper recipe, overridden by YAML and CLI values, validated once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_ad.errors import ConfigError
from edge_ad.fileio import read_yaml_file

# key -> (type, description). Anything else in a YAML config is an error (typos must not pass silently).
TRAIN_KEYS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "model": (str, "registered model name"),
    "data": (str, "dataset root (MVTec layout)"),
    "categories": ((list, type(None)), "categories to train on (None = all: multi-class)"),
    "out": (str, "run directory"),
    "iters": (int, "optimiser steps"),
    "batch": (int, "batch size (per process)"),
    "optimizer": (str, "stable_adamw | adamw | adam"),
    "scheduler": (str, "warm_cosine | step | constant"),
    "step_at": (float, "step scheduler: fraction of iterations after which lr is multiplied by gamma"),
    "gamma": (float, "step scheduler: lr factor"),
    "lr": (float, "base learning rate"),
    "final_lr": (float, "final learning rate of the cosine"),
    "warmup_iters": (int, "linear warm-up iterations"),
    "betas": (list, "Adam betas"),
    "eps": (float, "Adam epsilon"),
    "weight_decay": (float, "decoupled weight decay"),
    "amsgrad": (bool, "AMSGrad"),
    "grad_clip": ((float, type(None)), "max gradient norm (None = off)"),
    "seed": (int, "random seed"),
    "device": (str, "auto | cpu | cuda | cuda:N"),
    "workers": (int, "data loader workers"),
    "resize": ((int, type(None)), "square resize before the crop (None = model default)"),
    "crop": ((int, type(None)), "centre crop size (None = model default)"),
    "val_fraction": (float, "fraction of train/good held out for thresholds"),
    "target_frr": (float, "target false-reject rate of the image threshold"),
    "pretrained": (bool, "load pretrained encoder weights (offline cache, then timm)"),
    "weights": ((str, type(None)), "local encoder checkpoint"),
    "log_every": (int, "iterations between log lines"),
    "save_every": (int, "iterations between checkpoints"),
    "model_kwargs": (dict, "extra keyword arguments of the model builder"),
}

BASE_DEFAULTS: dict[str, Any] = {
    "categories": None,
    "optimizer": "stable_adamw",
    "scheduler": "warm_cosine",
    "lr": 2e-3,
    "final_lr": 2e-4,
    "warmup_iters": 100,
    "step_at": 0.8,
    "gamma": 0.1,
    "betas": [0.9, 0.999],
    "eps": 1e-10,
    "weight_decay": 1e-4,
    "amsgrad": True,
    "grad_clip": 0.1,
    "seed": 1,
    "device": "auto",
    "workers": 2,
    "resize": None,
    "crop": None,
    "val_fraction": 0.1,
    "target_frr": 0.01,
    "pretrained": True,
    "weights": None,
    "log_every": 10,
    "save_every": 1000,
    "model_kwargs": {},
    "iters": 10000,
    "batch": 16,
}


def _coerce(key: str, value: Any) -> Any:
    typ, desc = TRAIN_KEYS[key]
    types = typ if isinstance(typ, tuple) else (typ,)
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) and bool not in types:
        raise ConfigError(f"train config: {key} ({desc}): expected {'/'.join(t.__name__ for t in types)}, got bool")
    if not isinstance(value, types):
        raise ConfigError(
            f"train config: {key} ({desc}): expected {'/'.join(t.__name__ for t in types)}, got {type(value).__name__} {value!r}"
        )
    return value


def resolve_config(model_defaults: dict[str, Any], yaml_path: str | Path | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """BASE_DEFAULTS < model recipe < YAML file < CLI overrides (None = not given); validated."""
    cfg: dict[str, Any] = dict(BASE_DEFAULTS)
    cfg.update({k: v for k, v in model_defaults.items() if k in TRAIN_KEYS})
    if yaml_path is not None:
        p = Path(yaml_path)
        loaded = read_yaml_file(p, "training config") or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: expected a mapping at the top level, got {type(loaded).__name__}")
        unknown = sorted(set(loaded) - set(TRAIN_KEYS))
        if unknown:
            raise ConfigError(f"{p}: unknown key(s) {unknown}; valid keys: {sorted(TRAIN_KEYS)}")
        cfg.update(loaded)
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    missing = [k for k in ("model", "data", "out") if not cfg.get(k)]
    if missing:
        raise ConfigError(f"train config: missing required value(s) {missing}")
    for k in list(cfg):
        if k not in TRAIN_KEYS:
            raise ConfigError(f"train config: unknown key {k!r}")
        if cfg[k] is not None or not isinstance(TRAIN_KEYS[k][0], tuple):
            cfg[k] = _coerce(k, cfg[k])
    for k in ("iters", "batch"):
        if cfg[k] < 1:
            raise ConfigError(f"train config: {k} must be >= 1, got {cfg[k]}")
    if not 0.0 <= cfg["val_fraction"] < 1.0:
        raise ConfigError(f"train config: val_fraction must be in [0, 1), got {cfg['val_fraction']}")
    if not 0.0 < cfg["target_frr"] < 1.0:
        raise ConfigError(f"train config: target_frr must be in (0, 1), got {cfg['target_frr']}")
    if len(cfg["betas"]) != 2:
        raise ConfigError(f"train config: betas must have 2 values, got {cfg['betas']}")
    return cfg
