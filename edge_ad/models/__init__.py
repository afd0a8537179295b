"""Lab-side models: the registry (`create_model`, `list_models`, `model_info`) and one module per family."""

from edge_ad.models.base import AnomalyModel
from edge_ad.models.registry import (
    ModelInfo,
    count_parameters,
    create_model,
    list_models,
    model_info,
)

__all__ = ["AnomalyModel", "ModelInfo", "count_parameters", "create_model", "list_models", "model_info"]
