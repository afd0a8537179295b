"""Offline cache of pretrained encoder weights, so factory PCs without internet can still train.

Layout: `$EDGE_AD_HOME/weights/` (default `~/.cache/edge-ad/weights/`) holds the checkpoint files and an
`index.json` mapping a weights name to `{file, sha256, bytes, source, added}`. Names are timm pretrained
tags (`vit_base_patch14_reg4_dinov2.lvd142m`); a registered model name (`dinomaly-b`) is accepted too and
means that model's encoder weights. `resolve` re-hashes the file, so a corrupt or swapped file is refused.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from edge_ad.errors import ConfigError
from edge_ad.fileio import atomic_write_json, read_json_file, sha256_file

INDEX = "index.json"
_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def weights_dir() -> Path:
    """The cache directory (not created here)."""
    home = os.environ.get("EDGE_AD_HOME")
    base = Path(home).expanduser() if home else Path.home() / ".cache" / "edge-ad"
    return base / "weights"


def canonical_name(name: str) -> str:
    """Map a registered model name to the name of its encoder weights; other names pass through."""
    from edge_ad.models.catalog import CARDS

    if name in CARDS:
        return CARDS[name].weights_name
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ConfigError(f"weights name {name!r}: expected a timm tag such as 'vit_base_patch14_reg4_dinov2.lvd142m'")
    return name


def _read_index() -> dict[str, dict[str, Any]]:
    p = weights_dir() / INDEX
    if not p.is_file():
        return {}
    try:
        data = read_json_file(p, "weights index")
    except ConfigError as e:
        raise ConfigError(f"{e}; delete it and re-import the weights") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a JSON object mapping names to entries, got {type(data).__name__}")
    return data


def _write_index(index: dict[str, dict[str, Any]]) -> None:
    atomic_write_json(weights_dir() / INDEX, index, sort_keys=True)


def load_state_dict_file(path: str | Path) -> dict[str, Any]:
    """Read a `.safetensors` or torch checkpoint (tensors only, `weights_only=True`) as a dict."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: weights file not found")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(p))
        else:
            sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch/safetensors raise many error types for a corrupt or foreign file
        raise ConfigError(f"{p}: not a readable .safetensors/.pth checkpoint: {e}") from e
    if not isinstance(sd, dict):
        raise ConfigError(f"{p}: expected a state dict (mapping of names to tensors), got {type(sd).__name__}")
    return sd


def import_weights(name: str, path: str | Path, source: str | None = None) -> Path:
    """Copy a local checkpoint into the cache under `name` (checked readable, sha256 recorded)."""
    key = canonical_name(name)
    src = Path(path).expanduser()
    load_state_dict_file(src)
    suffix = src.suffix if src.suffix in _SUFFIXES else ".pth"
    d = weights_dir()
    d.mkdir(parents=True, exist_ok=True)
    dst = d / f"{key}{suffix}"
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".import.", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        digest, _ = sha256_file(Path(tmp))
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    index = _read_index()
    old = index.get(key)
    if old and old.get("file") != dst.name:
        (d / old["file"]).unlink(missing_ok=True)
    index[key] = {
        "file": dst.name,
        "sha256": digest,
        "bytes": dst.stat().st_size,
        "source": source or f"file:{src.resolve()}",
        "added": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    _write_index(index)
    return dst


def list_weights() -> dict[str, dict[str, Any]]:
    """The cache index: {name: {file, sha256, bytes, source, added}}."""
    return _read_index()


def resolve(name: str) -> Path | None:
    """Path of the cached weights for `name`, None when not cached; a file whose sha256 no longer matches
    the index is a ConfigError (never silently used)."""
    key = canonical_name(name)
    entry = _read_index().get(key)
    if entry is None:
        return None
    p = weights_dir() / entry["file"]
    if not p.is_file():
        raise ConfigError(f"{p}: listed in the weights index for {key!r} but missing; re-import it")
    got, _ = sha256_file(p)
    if got != entry["sha256"]:
        raise ConfigError(f"{p}: sha256 mismatch for {key!r}: expected {entry['sha256']}, got {got}; re-import it")
    return p


def hub_offline() -> bool:
    """Hugging Face's own offline switch (`HF_HUB_OFFLINE=1`): only its local cache is searched, nothing is
    downloaded. Proxies (`HTTPS_PROXY`) and mirrors (`HF_ENDPOINT`) are honoured by huggingface_hub itself."""
    value = os.environ.get("HF_HUB_OFFLINE", "")
    if value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE)


def fetch_weights(name: str, local_files_only: bool | None = None) -> Path:
    """The timm/Hugging Face checkpoint of `name` (downloaded, or from the Hugging Face cache when offline) copied
    into edge-ad's cache; returns its path. `local_files_only` None = `hub_offline()`."""
    key = canonical_name(name)
    import timm.models

    cfg = timm.models.get_pretrained_cfg(key)  # None for names timm does not know
    if cfg is None or not cfg.hf_hub_id:
        raise ConfigError(
            f"weights {key!r}: no download source known to timm; import a local file with "
            f"`edge-ad weights import {key} PATH`"
        )
    repo = cfg.hf_hub_id
    hint = (
        f"download it on a connected machine ({cfg.url or 'https://huggingface.co/' + repo}) "
        f"and run `edge-ad weights import {key} FILE`"
    )
    offline = hub_offline() if local_files_only is None else local_files_only
    try:
        from huggingface_hub import hf_hub_download

        local = hf_hub_download(repo_id=repo, filename=cfg.hf_hub_filename or "model.safetensors",
                                local_files_only=offline)
    except Exception as e:  # network errors surface as many types (OSError, HTTPError, LocalEntryNotFound)
        where = ("not in the Hugging Face cache and HF_HUB_OFFLINE is set" if offline else
                 f"download from huggingface.co/{repo} failed")
        raise ConfigError(f"weights {key!r}: {where} ({e}); {hint}") from e
    return import_weights(key, local, source=f"hf:{repo}")


def pretrained_path(model: str, weights_name: str, *, available: bool, part: str = "encoder",
                    file_hint: str = "") -> Path:
    """Weights file for `model`'s pretrained `part`: the offline cache first, then a timm/Hugging Face download
    (stored in the cache) when the network is up; otherwise a ConfigError saying how to provide the file.
    `available` is False for test-only variants that have no published weights."""
    path = resolve(weights_name)
    if path is not None:
        return path
    hint = (f"run `edge-ad weights import {weights_name} FILE`{file_hint} (or `edge-ad weights fetch {model}` when "
            "online) or pass --weights PATH")
    if not available:
        raise ConfigError(f"{model}: no pretrained {part} weights exist for this test-only variant; {hint}")
    try:
        return fetch_weights(weights_name)
    except ConfigError as e:
        raise ConfigError(f"{model}: {part} weights {weights_name!r} are not in the offline cache {weights_dir()}: "
                          f"{e}") from None


def encoder_checkpoint(model: str, *, pretrained: bool, weights: str | Path | None, file_hint: str = "") -> Path | None:
    """The encoder checkpoint a build of `model` loads: `weights` if given, else with `pretrained` the cached (or
    downloaded) file of its catalogue weights name, else None (random init). Resolved before the model is built, so
    a missing cache entry fails fast."""
    from edge_ad.models.catalog import card

    if weights:
        return Path(weights)
    if not pretrained:
        return None
    c = card(model)
    return pretrained_path(model, c.weights_name, available=not c.test_only, part="encoder", file_hint=file_hint)


def warn_random_init(model: str, weights_name: str, part: str = "encoder") -> None:
    """The loud warning every random-init build gives: its heatmaps are weak by construction."""
    logging.getLogger(f"edge_ad.models.{model.split('-')[0]}").warning(
        "%s: RANDOM-INIT %s: heatmaps will be weak; this is expected, not a bug. Use pretrained=True (after "
        "`edge-ad weights import %s FILE`) or weights=PATH for real results.", model, part, weights_name)
