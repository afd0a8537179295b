"""Run directories: what `edge-ad train` writes and what eval/export read back."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch

from edge_ad.errors import ConfigError
from edge_ad.fileio import (
    atomic_write_bytes,
    atomic_write_json,
    read_json_file,
    read_yaml_file,
)
from edge_ad.models.base import AnomalyModel
from edge_ad.runtime.geometry import Geometry

log = logging.getLogger(__name__)

CONFIG = "config.yaml"
WEIGHTS = "model.safetensors"
CHECKPOINT = "resume_state.safetensors"  #: optimizer/scheduler/step/RNG for --resume (no pickle)
LEGACY_CHECKPOINT = "checkpoint_last.pt"  #: older runs' pickle: never loaded
THRESHOLDS = "thresholds.json"
VAL_SPLIT = "val_split.json"
TRAIN_LOG = "train_log.jsonl"
RUN_INFO = "run.json"
PER_CATEGORY = "per_category.json"  #: official one-model-per-category protocol: {"runs": {category: subdir}}
GEOMETRY = "geometry.json"  #: --align/--roi/--tile: references, ROIs (geometry/*.png), alignment, tiling


def write_json(path: Path, obj: Any) -> None:
    atomic_write_json(path, obj, sort_keys=False)


def save_weights(model: AnomalyModel, path: Path, metadata: dict[str, str]) -> None:
    """Full state dict (encoder included) as safetensors, so a run never depends on a weights cache later."""
    from safetensors.torch import save as st_save

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, st_save(state, metadata=metadata))


def load_weights(model: AnomalyModel, path: Path) -> None:
    from safetensors.torch import load_file

    if not path.is_file():
        raise ConfigError(f"{path}: weights file not found")
    try:
        state = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise ConfigError(f"{path}: not a readable safetensors file: {e}") from e
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(
            f"{path}: weights do not match model {model.name!r}: missing {list(missing)[:5]}, "
            f"unexpected {list(unexpected)[:5]}"
        )


def read_config(run_dir: Path) -> dict[str, Any]:
    p = run_dir / CONFIG
    if not p.is_file():
        raise ConfigError(f"{run_dir}: not a run directory (no {CONFIG}); train one with `edge-ad train`")
    cfg = read_yaml_file(p, "run config")
    if not isinstance(cfg, dict) or "model" not in cfg:
        raise ConfigError(f"{p}: expected a mapping with a 'model' key")
    return cfg


def holdout(run_dir: Path) -> list[str]:
    """The held-out good image paths of a run (val_split.json); ConfigError for a malformed file."""
    doc = read_json_file(run_dir / VAL_SPLIT, "held-out split")
    paths = doc.get("holdout") if isinstance(doc, dict) else None
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise ConfigError(f"{run_dir / VAL_SPLIT}: expected {{'holdout': [image paths]}}")
    return paths


def model_kwargs(cfg: dict[str, Any]) -> dict[str, Any]:
    """Builder kwargs of a resolved config (input-size overrides and extra model kwargs)."""
    kw = dict(cfg.get("model_kwargs") or {})
    if cfg.get("resize"):
        kw["resize"] = int(cfg["resize"])
    if cfg.get("crop"):
        kw["crop"] = int(cfg["crop"])
    return kw


def apply_protocol_preprocess(model: AnomalyModel, cfg: dict[str, Any]) -> None:
    """Give the model the image resize of the run's protocol (the official one may differ from the model's)."""
    from edge_ad.evaluate.protocols import get_protocol, use_resize

    use_resize(model, get_protocol(str(cfg.get("protocol") or "edge-ad"), cfg["model"]))


def save_geometry(run_dir: Path, geometry: Geometry) -> None:
    """The run's inspection geometry: geometry.json and its images under geometry/."""
    for rel, data in geometry.files().items():
        atomic_write_bytes(run_dir / rel, data)
    write_json(run_dir / GEOMETRY, geometry.to_dict())


def use_geometry(model: AnomalyModel, geometry: Geometry | None) -> None:
    """Attach the geometry to the model: the views are resized to the model input whole (no centre crop)."""
    model.geometry = geometry
    if geometry is not None:
        model.preprocess = dataclasses.replace(model.preprocess, resize=model.preprocess.crop)


def load_run(
    run_dir: str | Path, device: str | torch.device = "cpu"
) -> tuple[AnomalyModel, dict[str, Any], dict[str, Any] | None]:
    """(model in eval mode with trained weights, resolved config, thresholds or None) of a run directory."""
    from edge_ad.models.registry import create_model

    run = Path(run_dir)
    cfg = read_config(run)
    weights = run / WEIGHTS
    if (run / PER_CATEGORY).is_file() and not weights.is_file():
        raise ConfigError(f"{run}: holds one run per category (official protocol), not one model: use one of its "
                          f"sub-runs {sorted(read_json_file(run / PER_CATEGORY, 'per-category runs')['runs'])}")
    if not weights.is_file():
        raise ConfigError(f"{run}: no {WEIGHTS}; the run did not finish a checkpoint (use `edge-ad train --resume`)")
    # The saved state dict holds the encoder too, so build without loading any pretrained weights.
    model = create_model(cfg["model"], pretrained=False, state_dict_follows=True, **model_kwargs(cfg))
    apply_protocol_preprocess(model, cfg)
    load_weights(model, weights)
    if (run / GEOMETRY).is_file():
        use_geometry(model, Geometry.from_dict(read_json_file(run / GEOMETRY, "geometry"), run))
    info = read_json_file(run / RUN_INFO, "run info") if (run / RUN_INFO).is_file() else {}
    model.encoder_weights = str(info.get("encoder_weights", "unknown"))
    thr_path = run / THRESHOLDS
    thresholds = read_json_file(thr_path, "thresholds") if thr_path.is_file() else None
    return model.to(device).eval(), cfg, thresholds
