"""Line-side runtime: load a model package and run it on images without PyTorch.

    from edge_ad.runtime import Detector
    det = Detector.load("packages/dinomaly-tiny", backend="auto")
    result = det.predict("part.png")

Names are imported lazily so that `import edge_ad.runtime` stays cheap (no ONNX Runtime import until needed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_ad._lazy import lazy_exports

if TYPE_CHECKING:
    from edge_ad.runtime.detector import Detector
    from edge_ad.runtime.overlay import render_overlay
    from edge_ad.runtime.package import (
        ModelPackage,
        load_package,
        package_summary,
        write_package,
    )
    from edge_ad.runtime.preprocess import Preprocess
    from edge_ad.runtime.result import Region, Result

_EXPORTS = {
    "Detector": "edge_ad.runtime.detector",
    "Result": "edge_ad.runtime.result",
    "Region": "edge_ad.runtime.result",
    "ModelPackage": "edge_ad.runtime.package",
    "load_package": "edge_ad.runtime.package",
    "write_package": "edge_ad.runtime.package",
    "package_summary": "edge_ad.runtime.package",
    "render_overlay": "edge_ad.runtime.overlay",
    "Preprocess": "edge_ad.runtime.preprocess",
}

__all__ = [
    "Detector",
    "ModelPackage",
    "Preprocess",
    "Region",
    "Result",
    "load_package",
    "package_summary",
    "render_overlay",
    "write_package",
]


__getattr__ = lazy_exports(__name__, _EXPORTS)
