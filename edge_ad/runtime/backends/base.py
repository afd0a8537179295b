"""The contract between the Detector and an inference engine (ONNX Runtime, TensorRT, ...).

A backend module `edge_ad.runtime.backends.<name>` exposes:
- `open_backend(package: ModelPackage, *, device: int | None = None, **options) -> Backend`
- `available(package: ModelPackage) -> bool` (cheap: library importable and a usable device present),
  used by `backend="auto"`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Backend(Protocol):
    """Runs the packaged graph on uint8 NHWC batches.

    `input_hw` is (height, width) of the graph input; `max_batch` is the largest batch the engine takes in one call
    (None = any; larger batches given to `run` are split by the backend itself). `providers` lists what actually
    executes the graph (e.g. ["CUDAExecutionProvider", "CPUExecutionProvider"] or ["tensorrt"]).
    """

    name: str
    input_name: str
    input_hw: tuple[int, int]
    max_batch: int | None
    providers: list[str]

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 [B,H,W,3] -> (anomaly maps float32 [B,1,h,w], scores float32 [B])."""
        ...

    def close(self) -> None:
        """Release the engine, sessions and buffers (idempotent); `run` after `close` raises ConfigError."""
        ...


def closed_error(name: str) -> Exception:
    """What `run` raises on a closed backend."""
    from edge_ad.errors import ConfigError

    return ConfigError(f"backend {name}: closed (open a new Detector)")


def physical_cores() -> int:
    """Physical CPU cores usable by this process (hyper-threads not counted; CPU affinity respected)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    cores: set[tuple[str, str]] = set()
    try:
        phys = core = ""
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, val = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    phys = val.strip()
                elif key == "core id":
                    core = val.strip()
                    cores.add((phys, core))
    except OSError:
        pass
    return max(1, min(usable, len(cores) or usable))


def run_in_chunks(batch: np.ndarray, step: int, infer: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
                  map_hw: tuple[int, int], where: object) -> tuple[np.ndarray, np.ndarray]:
    """Run `infer(chunk, k)` on chunks of `step` images (the last one padded with copies of its last image for a
    fixed-batch graph; `infer` returns the outputs of the first k) and check the output shapes (PackageError)."""
    from edge_ad.runtime.package import PackageError

    n = batch.shape[0]
    maps, scores = [], []
    for s in range(0, n, step):
        chunk = batch[s : s + step]
        k = chunk.shape[0]
        if k < step:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], step - k, axis=0)])
        m, sc = infer(np.ascontiguousarray(chunk), k)
        maps.append(np.asarray(m, np.float32)[:k])
        scores.append(np.asarray(sc, np.float32).reshape(-1)[:k])
    out_map, out_score = np.concatenate(maps), np.concatenate(scores)
    if out_map.shape != (n, 1, *map_hw) or out_score.shape != (n,):
        raise PackageError(f"{where}: outputs: expected anomaly_map {[n, 1, *map_hw]} and score [{n}], got "
                           f"{list(out_map.shape)} and {list(out_score.shape)}")
    return out_map, out_score
