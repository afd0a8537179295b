"""Evaluation: the seven reference metrics (`metrics`) in each official variant, the evaluation protocols
(`protocols`), decision thresholds (`thresholds`) and reports (`report`).

Names are re-exported lazily, so `import edge_ad.evaluate.thresholds` on the line side loads numpy only
(no OpenCV/scikit-image, and never the torch-based `inference`/`runner`). From Python: `edge_ad.api.evaluate(run)` or
`run.evaluate()` on an `edge_ad.fit` result.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "metrics": ("METRIC_KEYS", "CategoryPredictions", "MetricVariants", "aupro", "auroc", "average_precision",
                "evaluate_categories", "f1_max", "image_metrics", "pixel_metrics"),
    "protocols": ("Protocol", "get_protocol"),
    "report": ("format_table", "save_overlay_grid", "write_report"),
    "thresholds": ("derive_thresholds", "f1_optimal_threshold", "normalization_bounds",
                   "threshold_at_frr"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = [
    "METRIC_KEYS",
    "CategoryPredictions",
    "MetricVariants",
    "Protocol",
    "aupro",
    "auroc",
    "average_precision",
    "derive_thresholds",
    "evaluate_categories",
    "f1_max",
    "f1_optimal_threshold",
    "format_table",
    "get_protocol",
    "image_metrics",
    "normalization_bounds",
    "pixel_metrics",
    "save_overlay_grid",
    "threshold_at_frr",
    "write_report",
]


def __getattr__(name: str) -> Any:
    """Import the submodule that defines `name` on first access (PEP 562)."""
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
