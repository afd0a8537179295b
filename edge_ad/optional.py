"""Optional dependencies, in one place: which extra installs each module, and `require()` that imports one lazily
with an error saying how to install it. Every part of edge-ad that uses an optional package goes through here, so
the install hints cannot drift apart."""

from __future__ import annotations

import importlib
from types import ModuleType

from edge_ad.errors import EdgeADError

_JETSON_OR_CUDA = ("on a Jetson (JetPack 6): sudo apt install python3-libnvinfer, then pip install 'edge-ad[jetson]' "
                   "in a `python3 -m venv --system-site-packages` venv; on an x86-64 server with an NVIDIA driver: "
                   "pip install 'edge-ad[cuda]'")

#: top-level module -> how to get it
INSTALL: dict[str, str] = {
    "onnxruntime": "pip install 'edge-ad[cpu]' on a CPU, 'edge-ad[cuda]' on an x86 machine with an NVIDIA GPU, "
                   "'edge-ad[jetson]' on JetPack 6 (one of them: onnxruntime and onnxruntime-gpu must not meet; "
                   "`edge-ad doctor` says which fits)",
    "openvino": "pip install 'edge-ad[openvino]' (x86-64 line PCs; torch-free)",
    "tensorrt": _JETSON_OR_CUDA,
    "cuda": _JETSON_OR_CUDA + " (cuda-python >= 12.6.1, < 13)",
    "pycuda": "pip install pycuda (or cuda-python: " + _JETSON_OR_CUDA + ")",
    "cryptography": "pip install 'edge-ad[security]'",
    "paho": "pip install 'edge-ad[mqtt]'",
    "psycopg": "pip install 'edge-ad[postgres]'",
    "pyarrow": "pip install 'edge-ad[parquet]'",
    "asyncua": "pip install 'edge-ad[plc]'",
    "pymodbus": "pip install 'edge-ad[plc]'",
    "snap7": "pip install 'edge-ad[plc]'",
    "starlette": "pip install 'edge-ad[hmi]'",
    "uvicorn": "pip install 'edge-ad[hmi]'",
    "prometheus_client": "pip install 'edge-ad[hmi]'",
    "harvesters": "pip install 'edge-ad[gige]' (harvesters and a GenTL producer .cti from the camera vendor)",
    "gi": "sudo apt install gir1.2-aravis-0.8 libgirepository1.0-dev libcairo2-dev pkg-config, then "
          "pip install 'edge-ad[gige]' (PyGObject)",
    "torch": "pip install 'edge-ad[train]' (the lab side)",
}


def install_hint(module: str) -> str:
    """How to install the package that provides `module` (its top-level name decides)."""
    top = module.split(".")[0]
    return INSTALL.get(top, f"pip install {top}")


def installed(module: str) -> bool:
    """True when `module` imports (False for a missing module or one of its missing dependencies)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def require(module: str, what: str, error: type[EdgeADError] | None = None) -> ModuleType:
    """Import `module`, or raise `error` (ConfigError by default) saying that `what` needs it and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        from edge_ad.errors import ConfigError

        raise (error or ConfigError)(f"{what} needs the `{module.split('.')[0]}` package: "
                                     f"{install_hint(module)}") from e
