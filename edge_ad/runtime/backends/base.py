"""The contract between the Detector and an inference engine (ONNX Runtime, TensorRT, ...).

A backend module `edge_ad.runtime.backends.<name>` exposes:
- `open_backend(package: ModelPackage, *, device: int | None = None, **options) -> Backend`
- `available(package: ModelPackage) -> bool` (cheap: library importable and a usable device present),
  used by `backend="auto"`.
"""

from __future__ import annotations

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
