"""Training options: one frozen dataclass (`TrainOptions`) from which everything else is derived: the `edge-ad
train` flags, the YAML validation, `--print-config` and the resolved config the trainer reads.

Precedence: the dataclass defaults < the paper's training configuration (`default_train_config()`) < a YAML file <
CLI flags or keyword arguments (None = not given). Unknown keys, wrong types and out-of-range values are ConfigErrors
that name the key, what it means, what was expected and what was found.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edge_ad.errors import ConfigError
from edge_ad.fileio import read_yaml_file


def _opt(default: Any, help: str, *, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
         hi_open: bool = False, choices: tuple[str, ...] | None = None, length: int | None = None,
         flag: bool = True) -> Any:
    """A TrainOptions field: default, help text, range/choices and whether `edge-ad train` has a flag for it."""
    meta = {"help": help, "lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open, "choices": choices,
            "length": length, "flag": flag}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class TrainOptions:
    """Every training option with its default, meaning and valid range."""

    model: str | None = _opt(None, "registered model name (see `edge-ad models`), e.g. dinomaly-s")
    data: str | None = _opt(None, "dataset root in the MVTec AD layout")
    categories: list[str] | None = _opt(None, "categories to train on, comma-separated on the command line "
                                              "(default: all of them, one model for all)")
    out: str | None = _opt(None, "run directory (default runs/<model>)")
    iters: int = _opt(10000, "optimiser steps (default: the paper's)", lo=1)
    batch: int = _opt(16, "batch size per process (the global batch is batch x processes)", lo=1)
    optimizer: str = _opt("stable_adamw", "optimiser", choices=("stable_adamw", "adamw", "adam"))
    scheduler: str = _opt("warm_cosine", "learning-rate schedule", choices=("warm_cosine", "step", "constant"))
    step_at: float = _opt(0.8, "step schedule: fraction of the iterations after which lr is multiplied by gamma",
                          lo=0.0, hi=1.0, lo_open=True)
    gamma: float = _opt(0.1, "step schedule: lr factor", lo=0.0, lo_open=True)
    lr: float = _opt(2e-3, "base learning rate", lo=0.0, lo_open=True)
    final_lr: float = _opt(2e-4, "final learning rate of the cosine schedule", lo=0.0)
    warmup_iters: int = _opt(100, "linear warm-up iterations", lo=0)
    betas: list[float] = _opt([0.9, 0.999], "Adam betas, comma-separated on the command line", length=2)
    eps: float = _opt(1e-10, "Adam epsilon", lo=0.0, lo_open=True)
    weight_decay: float = _opt(1e-4, "decoupled weight decay", lo=0.0)
    amsgrad: bool = _opt(True, "AMSGrad variant of Adam")
    grad_clip: float | None = _opt(0.1, "max gradient norm (None = off)", lo=0.0, lo_open=True)
    seed: int = _opt(1, "random seed")
    device: str = _opt("auto", "auto | cpu | cuda | cuda:N (under torchrun: each process its LOCAL_RANK GPU)")
    amp: str = _opt("auto", "mixed precision: auto (bf16 autocast on a CUDA GPU with bf16 if the model is AMP-safe, "
                            "else FP32; the official code trains in FP32) | off | bf16 | fp16 (CUDA, loss-scaled)",
                    choices=("auto", "off", "bf16", "fp16"))
    channels_last: str = _opt("auto", "channels-last memory format: auto (on CUDA for convolutional models) | on | "
                                      "off", choices=("auto", "on", "off"))
    workers: int = _opt(2, "data loader worker processes", lo=0)
    resize: int | None = _opt(None, "square resize before the crop (default: the model's)", lo=1)
    crop: int | None = _opt(None, "centre crop, the model input side (default: the model's)", lo=1)
    val_fraction: float = _opt(0.1, "share of train/good held out for thresholds", lo=0.0, hi=1.0, hi_open=True)
    protocol: str = _opt("edge-ad", "edge-ad (hold-out thresholds, one deployable model) | official (the model "
                                    "family's official resize, training-data use and length: paper-comparable)",
                         choices=("edge-ad", "official"))
    target_frr: float = _opt(0.01, "false-reject rate of the image threshold", lo=0.0, hi=1.0, lo_open=True,
                             hi_open=True)
    pretrained: bool = _opt(True, "load pretrained encoder weights (offline cache, then timm); --no-pretrained: "
                                  "random-init encoder (weak heatmaps; for tests and speed)")
    weights: str | None = _opt(None, "local encoder checkpoint (official .pth or timm file)")
    init_from: str | None = _opt(None, "fine-tune: start from the weights of this run directory, or of the run a "
                                 "package was exported from (its manifest's training.run), instead of from scratch")
    log_every: int = _opt(10, "iterations between log lines", lo=1)
    save_every: int = _opt(1000, "iterations between checkpoints", lo=1)
    model_kwargs: dict[str, Any] = _opt({}, "extra keyword arguments of the model builder (KEY=VALUE on the "
                                            "command line, repeatable)")
    align: str = _opt("none", "register every frame to a reference before anything else: REF.png (every category), "
                              "a folder with <category>.png or <category>/reference.png, auto (per category the good "
                              "training image closest to the others) or none")
    roi: str | None = _opt(None, "region of interest in the reference frame: MASK.png (255 inspect, 0 ignore, grey = "
                                 "a weight), a folder with <category>.png or <category>/roi.png, or polygons in "
                                 "YAML {category or all: [{points: [[x, y], ...], weight: 0..255}]} (default: all; "
                                 "with --align auto draw it on the reference the run saves in geometry/)")
    tile: int | None = _opt(None, "tile size in frame pixels: the ROI is cut into tiles at full resolution, each "
                                  "resized to the model input (default: the whole ROI is one view)", lo=16)
    tile_stride: int | None = _opt(None, "tile stride in frame pixels (default: 3/4 of the tile: overlapping tiles "
                                         "are blended)", lo=1)


FIELDS: dict[str, dataclasses.Field[Any]] = {f.name: f for f in dataclasses.fields(TrainOptions)}
_HINTS = typing.get_type_hints(TrainOptions)
#: key -> (accepted types, meaning), for code that lists the valid keys
TRAIN_KEYS: dict[str, tuple[tuple[type, ...], str]] = {}
REQUIRED = ("model", "data", "out")


def _accepted(name: str) -> tuple[type, ...]:
    hint = _HINTS[name]
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return tuple(typing.get_origin(a) or a for a in args)


def _item_type(name: str) -> Any:
    """X of a `list[X]` (or `list[X] | None`) option."""
    hint = _HINTS[name]
    for a in typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,):
        if typing.get_origin(a) is list:
            return typing.get_args(a)[0]
    return None


TRAIN_KEYS.update({n: (_accepted(n), str(f.metadata["help"])) for n, f in FIELDS.items()})


def check_value(key: str, value: Any, where: str = "train config") -> Any:
    """The value of option `key`, coerced (int -> float) and checked; ConfigError naming key, expected, got."""
    if key not in FIELDS:
        raise ConfigError(f"{where}: unknown key {key!r}; valid keys: {sorted(FIELDS)}")
    meta, accepted = FIELDS[key].metadata, _accepted(key)
    what = f"{where}: {key} ({meta['help']})"
    expected = "/".join("None" if t is type(None) else t.__name__ for t in accepted)
    if float in accepted and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if (isinstance(value, bool) and bool not in accepted) or not isinstance(value, accepted):
        raise ConfigError(f"{what}: expected {expected}, got {type(value).__name__} {value!r}")
    if value is None:
        return value
    if meta["choices"] and value not in meta["choices"]:
        raise ConfigError(f"{what}: expected one of {', '.join(meta['choices'])}, got {value!r}")
    if isinstance(value, list):
        if meta["length"] is not None and len(value) != meta["length"]:
            raise ConfigError(f"{what}: expected {meta['length']} values, got {value!r}")
        item = _item_type(key)
        if item is float:
            value = [float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
        if item is not None and not all(isinstance(v, item) and not isinstance(v, bool) for v in value):
            raise ConfigError(f"{what}: expected a list of {item.__name__}, got {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        lo, hi = meta["lo"], meta["hi"]
        if lo is not None and (value < lo or (meta["lo_open"] and value == lo)):
            raise ConfigError(f"{what}: expected {'>' if meta['lo_open'] else '>='} {lo}, got {value!r}")
        if hi is not None and (value > hi or (meta["hi_open"] and value == hi)):
            raise ConfigError(f"{what}: expected {'<' if meta['hi_open'] else '<='} {hi}, got {value!r}")
    return value


def resolve_config(
    model_defaults: dict[str, Any], yaml_path: str | Path | None, overrides: dict[str, Any]
) -> dict[str, Any]:
    """Defaults < the model's paper configuration < YAML file < overrides (None = not given), validated; a plain
    dict of every option."""
    cfg: dict[str, Any] = dataclasses.asdict(TrainOptions())
    cfg.update({k: v for k, v in model_defaults.items() if k in FIELDS})
    if yaml_path is not None:
        p = Path(yaml_path)
        loaded = read_yaml_file(p, "training config") or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: expected a mapping at the top level, got {type(loaded).__name__}")
        unknown = sorted(str(k) for k in set(loaded) - set(FIELDS))
        if unknown:
            raise ConfigError(f"{p}: unknown key(s) {unknown}; valid keys: {sorted(FIELDS)}")
        cfg.update(loaded)
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    missing = [k for k in REQUIRED if not cfg.get(k)]
    if missing:
        raise ConfigError(f"train config: missing required value(s) {missing}")
    return dataclasses.asdict(TrainOptions(**{k: check_value(k, v) for k, v in cfg.items()}))


def format_config(cfg: dict[str, Any]) -> str:
    """A resolved config as the YAML `--config` reads back (`--print-config`)."""
    return yaml.safe_dump({k: cfg[k] for k in FIELDS}, sort_keys=False)


# ---- the command line ---------------------------------------------------------------------------------------
def _kv(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, yaml.safe_load(value)
    except yaml.YAMLError as e:
        raise argparse.ArgumentTypeError(f"{key}: value {value!r} is not valid YAML ({e})") from None


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def comma_list(text: str) -> list[str]:
    """A comma-separated value (`--categories a,b`) as a list of names; every command's list flags use it."""
    return [c.strip() for c in text.split(",") if c.strip()]


def add_cli_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainOptions field (`--val-fraction` for val_fraction), help and defaults from the dataclass."""
    defaults = TrainOptions()
    for name, f in FIELDS.items():
        if not f.metadata["flag"]:
            continue
        flag = "--" + name.replace("_", "-")
        accepted = _accepted(name)
        default = getattr(defaults, name)
        text = str(f.metadata["help"]) + (f" (default {default})" if default not in (None, {}, []) else "")
        if name == "model_kwargs":
            parser.add_argument("--model-kwarg", dest=name, action="append", type=_kv, metavar="KEY=VALUE", help=text)
        elif bool in accepted:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif list in accepted:
            parser.add_argument(flag, dest=name, type=comma_list if name == "categories" else _floats, help=text)
        else:
            kind = next(t for t in accepted if t is not type(None))
            parser.add_argument(flag, dest=name, type=kind, choices=f.metadata["choices"], help=text)


def overrides_from_cli(args: argparse.Namespace) -> dict[str, Any]:
    """The options given on the command line (None = not given)."""
    out = {name: getattr(args, name, None) for name in FIELDS}
    kwargs = out.get("model_kwargs")
    if kwargs is not None:
        out["model_kwargs"] = dict(kwargs)
    return out


def paper_config(model: str) -> dict[str, Any]:
    """The paper's training configuration of `model` (its `default_train_config()`, read from a meta-device build)
    with the default run directory runs/<model>."""
    import torch

    from edge_ad.models.registry import create_model

    with torch.device("meta"):  # only the configuration is read; a meta build allocates and warns about nothing
        paper = create_model(model, pretrained=False).default_train_config()
    paper["out"] = f"runs/{model}"  # a YAML `out:` or the `out` argument overrides it
    return paper
