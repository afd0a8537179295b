"""Export recipes: `export/<model>.yaml` holds the input size, opset, outputs and parity tolerances of a model."""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

from edge_ad.errors import ConfigError
from edge_ad.fileio import read_yaml_file

DEFAULTS: dict[str, Any] = {
    "opset": 17,
    "dynamic_batch": True,
    "input": {"name": "image", "dtype": "uint8", "layout": "NHWC"},
    "outputs": ["anomaly_map", "score"],
    "postprocess": {"min_region_area_px": 16, "mask_blur_sigma": 0.0},
    "parity": {"n_images": 8, "max_abs_map_diff": 1e-4, "min_score_spearman": 0.999},
    # fp16 conversion: node-name regexes kept in fp32 beyond the defaults, and the pattern of the decoder
    # (nodes after it that do not feed it form the head, kept in fp32)
    "fp16": {"keep_fp32": [], "decoder_pattern": None},
}
KEYS = set(DEFAULTS) | {"model", "resize", "crop", "model_kwargs", "description"}


def bundled_dir(package: str) -> Path | None:
    """The folder of a data package shipped with edge-ad (`edge_ad.recipes` = the repository's export/,
    `edge_ad.calibration_manifests` = calibration/), through importlib.resources; None if it is missing."""
    try:
        root = importlib.resources.files(package)
    except ModuleNotFoundError:
        return None
    path = Path(str(root))  # installed wheels and editable installs keep these files on disk
    return path if path.is_dir() else None


def recipe_dirs() -> list[Path]:
    """Where recipes are looked up: ./export (the user's project), then the recipes shipped with edge-ad."""
    bundled = bundled_dir("edge_ad.recipes")
    return [Path.cwd() / "export", *([bundled] if bundled else [])]


def load_recipe(model: str, path: str | Path | None = None) -> dict[str, Any]:
    """The recipe of `model` merged over DEFAULTS; a model without a recipe file uses the defaults."""
    candidates = [Path(path)] if path else [d / f"{model}.yaml" for d in recipe_dirs()]
    recipe: dict[str, Any] = {}
    source = "defaults"
    for p in candidates:
        if p.is_file():
            recipe = read_yaml_file(p, "export recipe") or {}
            if not isinstance(recipe, dict):
                raise ConfigError(f"{p}: expected a mapping, got {type(recipe).__name__}")
            unknown = sorted(set(recipe) - KEYS)
            if unknown:
                raise ConfigError(f"{p}: unknown key(s) {unknown}; valid: {sorted(KEYS)}")
            if recipe.get("model", model) != model:
                raise ConfigError(f"{p}: recipe is for model {recipe['model']!r}, not {model!r}")
            source = str(p)
            break
    else:
        if path:
            raise ConfigError(f"{path}: export recipe not found")
        raise ConfigError(f"{model}: no export recipe {model}.yaml in {' or '.join(str(d) for d in recipe_dirs())}; "
                          "every registered model ships one (a broken install?), or pass --recipe FILE")
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULTS.items()}
    for k, v in recipe.items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k].update(v)
        else:
            merged[k] = v
    merged["model"] = model
    merged["source"] = source
    if int(merged["opset"]) < 17:
        raise ConfigError(f"{source}: opset must be >= 17 (LayerNormalization for TensorRT), got {merged['opset']}")
    return merged
