"""Lab-side models: the registry (`create_model`, `list_models`, `model_info`) and one module per family.

Names are resolved lazily (PEP 562), so `edge_ad.models.catalog` (plain data) imports without torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_ad._lazy import lazy_exports

if TYPE_CHECKING:
    from edge_ad.models.base import AnomalyModel
    from edge_ad.models.registry import (
        ModelInfo,
        count_parameters,
        create_model,
        list_models,
        model_info,
    )

_EXPORTS = {"AnomalyModel": "edge_ad.models.base", "ModelInfo": "edge_ad.models.registry",
            "count_parameters": "edge_ad.models.registry", "create_model": "edge_ad.models.registry",
            "list_models": "edge_ad.models.registry", "model_info": "edge_ad.models.registry"}

__all__ = ["AnomalyModel", "ModelInfo", "count_parameters", "create_model", "list_models", "model_info"]


__getattr__ = lazy_exports(__name__, _EXPORTS)
