"""TensorRT on the device: import guard, engine build (`build`), engine cache (`cache`), CUDA buffers (`cuda_mem`).

TensorRT is optional and never imported at module import time: everything here can be imported (and `edge-ad
doctor`/`--help` work) on a machine without it. `load_tensorrt()` is the single place that imports it and turns
"not installed" into a clear `TensorRTMissingError` with the install command for JetPack 6 and desktops.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from edge_ad.errors import EngineBuildError, TensorRTMissingError
from edge_ad.optional import install_hint

TENSORRT_INSTALL_HINT = install_hint("tensorrt") + ". Run `edge-ad doctor` to see what this machine has."


def load_tensorrt() -> ModuleType:
    """Import and return the `tensorrt` module, or raise TensorRTMissingError with install instructions.

    A directory holding only the `tensorrt-stubs` type stubs imports as an empty namespace package, so the module is
    accepted only if it has a real `Builder` class.
    """
    try:
        trt = importlib.import_module("tensorrt")
    except (ImportError, OSError) as e:  # OSError: the module is there but libnvinfer cannot be loaded
        raise TensorRTMissingError(f"tensorrt is not installed ({e}): {TENSORRT_INSTALL_HINT}") from e
    if not hasattr(trt, "Builder") or not hasattr(trt, "__version__"):
        raise TensorRTMissingError(
            "tensorrt is not installed (only its type stubs or an empty `tensorrt` directory were found): "
            + TENSORRT_INSTALL_HINT
        )
    return trt


def tensorrt_available() -> bool:
    """True when a working `tensorrt` module can be imported."""
    try:
        load_tensorrt()
    except TensorRTMissingError:
        return False
    return True


def tensorrt_major(trt: ModuleType) -> int:
    """Major version of an imported tensorrt module (10 on JetPack 6, 11 on newer desktops and JetPack 7)."""
    return int(str(trt.__version__).split(".")[0])


__all__ = [
    "TENSORRT_INSTALL_HINT",
    "EngineBuildError",
    "TensorRTMissingError",
    "load_tensorrt",
    "tensorrt_available",
    "tensorrt_major",
]
