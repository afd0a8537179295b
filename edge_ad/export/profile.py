"""Export profiles: `export_profiles/<model>.yaml` (shipped in the wheel as `edge_ad.export_profiles`) holds the
input size, opset, outputs and parity tolerances of a model; `edge-ad export --profile FILE` uses another file."""

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
    """The folder of a data package shipped with edge-ad (`edge_ad.export_profiles` = the repository's export_profiles/,
    `edge_ad.calibration_manifests` = calibration/), through importlib.resources; None if it is missing."""
    try:
        root = importlib.resources.files(package)
    except ModuleNotFoundError:
        return None
    path = Path(str(root))  # installed wheels and editable installs keep these files on disk
    return path if path.is_dir() else None


def profile_dirs() -> list[Path]:
    """Where profiles are looked up: the ones shipped with edge-ad (never the current directory: another file is
    given explicitly with `--profile FILE`)."""
    bundled = bundled_dir("edge_ad.export_profiles")
    return [bundled] if bundled else []


def load_profile(model: str, path: str | Path | None = None) -> dict[str, Any]:
    """The profile of `model` merged over DEFAULTS; a model without a profile file uses the defaults."""
    candidates = [Path(path)] if path else [d / f"{model}.yaml" for d in profile_dirs()]
    profile: dict[str, Any] = {}
    source = "defaults"
    for p in candidates:
        if p.is_file():
            profile = read_yaml_file(p, "export profile") or {}
            if not isinstance(profile, dict):
                raise ConfigError(f"{p}: expected a mapping, got {type(profile).__name__}")
            unknown = sorted(set(profile) - KEYS)
            if unknown:
                raise ConfigError(f"{p}: unknown key(s) {unknown}; valid: {sorted(KEYS)}")
            if profile.get("model", model) != model:
                raise ConfigError(f"{p}: profile is for model {profile['model']!r}, not {model!r}")
            source = str(p)
            break
    else:
        if path:
            raise ConfigError(f"{path}: export profile not found")
        where = " or ".join(str(d) for d in profile_dirs()) or "edge_ad.export_profiles (missing: a broken install?)"
        raise ConfigError(f"{model}: no export profile {model}.yaml in {where}; every registered model ships one, "
                          "or pass --profile FILE")
    merged: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULTS.items()}
    for k, v in profile.items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k].update(v)
        else:
            merged[k] = v
    merged["model"] = model
    merged["source"] = source
    if int(merged["opset"]) < 17:
        raise ConfigError(f"{source}: opset must be >= 17 (LayerNormalization for TensorRT), got {merged['opset']}")
    return merged
