"""Resume state (optimizer, scheduler, step, RNG) as one safetensors file: tensors as tensors, everything else as
JSON in the file's metadata. Nothing is unpickled, so a crafted run directory cannot run code on `--resume`.

The JSON skeleton stands in for the nested state dicts: a tensor is {"t": key} (a numpy array {"n": key}), a dict
{"d": [[k, v], ...]} (optimizer state is keyed by int), a tuple {"u": [...]}; plain numbers, strings, bools, None and
lists are themselves.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_ad.errors import ConfigError
from edge_ad.fileio import atomic_write_bytes

FORMAT = "edge-ad/resume-state-v1"
_MAX_DEPTH = 32


def _encode(obj: Any, tensors: dict[str, torch.Tensor], path: str, depth: int = 0) -> Any:
    if depth > _MAX_DEPTH:
        raise ConfigError(f"resume state: {path}: nested deeper than {_MAX_DEPTH}")
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"t": key}
    if isinstance(obj, dict):
        return {"d": [[_encode(k, tensors, path, depth + 1), _encode(v, tensors, f"{path}.{k}", depth + 1)]
                      for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"u": [_encode(v, tensors, f"{path}[{i}]", depth + 1) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{path}[{i}]", depth + 1) for i, v in enumerate(obj)]
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise ConfigError(f"resume state: {path}: cannot store an object array")
        key = f"t{len(tensors)}"
        tensors[key] = torch.from_numpy(np.ascontiguousarray(obj).copy())
        return {"n": key}
    if isinstance(obj, np.generic):
        return _encode(obj.item(), tensors, path, depth + 1)
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"f": repr(obj)}  # inf/nan survive strict JSON
    raise ConfigError(f"resume state: {path}: cannot store a {type(obj).__name__} (only tensors, numbers, strings, "
                      "lists, tuples and dicts)")


def _decode(obj: Any, tensors: dict[str, torch.Tensor], where: str, depth: int = 0) -> Any:
    if depth > _MAX_DEPTH:
        raise ConfigError(f"{where}: resume state nested deeper than {_MAX_DEPTH}")
    if isinstance(obj, list):
        return [_decode(v, tensors, where, depth + 1) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if set(obj) in ({"t"}, {"n"}):
        key = obj.get("t", obj.get("n"))
        if key not in tensors:
            raise ConfigError(f"{where}: resume state names tensor {key!r}, which the file does not hold")
        return tensors[key] if "t" in obj else tensors[key].numpy()
    if set(obj) == {"d"} and isinstance(obj["d"], list):
        out = {}
        for pair in obj["d"]:
            if not (isinstance(pair, list) and len(pair) == 2):
                raise ConfigError(f"{where}: resume state: malformed dict entry {str(pair)[:60]}")
            key = _decode(pair[0], tensors, where, depth + 1)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise ConfigError(f"{where}: resume state: unhashable dict key {str(pair[0])[:60]}")
            out[key] = _decode(pair[1], tensors, where, depth + 1)
        return out
    if set(obj) == {"u"} and isinstance(obj["u"], list):
        return tuple(_decode(v, tensors, where, depth + 1) for v in obj["u"])
    if set(obj) == {"f"} and obj["f"] in ("inf", "-inf", "nan"):
        return float(obj["f"])
    raise ConfigError(f"{where}: resume state: unknown entry {str(obj)[:60]}")


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write `state` (nested dicts of tensors and plain values) atomically to a safetensors file."""
    from safetensors.torch import save as st_save

    tensors: dict[str, torch.Tensor] = {}
    skeleton = _encode(state, tensors, "state")
    atomic_write_bytes(path, st_save(tensors, metadata={"format": FORMAT, "state": json.dumps(skeleton)}))


def load_state(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a `save_state` file; ConfigError (naming the file) for anything that is not one."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except FileNotFoundError:
        raise ConfigError(f"{path}: resume state not found") from None
    except Exception as e:  # safetensors raises its own error types for a corrupt header
        raise ConfigError(f"{path}: not a readable safetensors resume state ({e})") from None
    if meta.get("format") != FORMAT:
        raise ConfigError(f"{path}: expected format {FORMAT!r}, got {meta.get('format')!r}")
    try:
        skeleton = json.loads(meta.get("state", ""))
    except (ValueError, RecursionError) as e:
        raise ConfigError(f"{path}: resume state metadata is not valid JSON ({e})") from None
    state = _decode(skeleton, tensors, str(path))
    if not isinstance(state, dict):
        raise ConfigError(f"{path}: resume state must be a mapping, got {type(state).__name__}")
    return state
