"""edge-ad: multi-class unsupervised anomaly detection from the lab to the production line.

The package is split in two halves that never mix:
- line side (`edge_ad.runtime`, `edge_ad.sources`, `edge_ad.pipeline`, `edge_ad.plc`): numpy, OpenCV, PyYAML,
  ONNX Runtime/TensorRT only;
- lab side (`edge_ad.models`, `edge_ad.data`, `edge_ad.train`, `edge_ad.evaluate`, `edge_ad.export`): PyTorch,
  timm, ONNX.

`edge_ad.stream(package, source)` and `edge_ad.Detector` (line side) and `edge_ad.fit` (lab side, see edge_ad.api;
the returned `Run` has `.evaluate()` and `.export()`) are re-exported lazily, so `import edge_ad` stays light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {"stream": "edge_ad.pipeline", "Detector": "edge_ad.runtime", "Result": "edge_ad.runtime",
         "fit": "edge_ad.api", "Run": "edge_ad.api"}


def __getattr__(name: str) -> Any:
    """PEP 562 lazy re-exports of the entry points."""
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edge_ad' has no attribute {name!r}")
