"""The contract every registered model keeps (docs/architecture.md "Model registry"), checked once for all of them:
it builds with the catalogue's parameter counts and input size, says loudly that its encoder is random-init, its
export face maps a normalised batch to (map [B,1,h,w] float32, score [B]) and its training face to a scalar loss
over the trainable parameters only. Full-size variants run on the meta device (shapes, no compute); the tiny ones
also export to ONNX with the same output shapes."""

from __future__ import annotations

import logging

import pytest

from edge_ad.models import count_parameters, create_model, list_models, model_info
from edge_ad.models.catalog import CARDS, PAPERS

MODELS = list_models()


def test_every_card_has_a_builder_and_every_builder_a_card() -> None:
    assert set(MODELS) == set(CARDS) and set(PAPERS) == {c.family for c in CARDS.values()}


@pytest.mark.parametrize("name", MODELS)
def test_model_contract(name: str) -> None:
    import torch

    card = CARDS[name]
    with torch.device("meta"):
        model = create_model(name)
    assert model.name == name and tuple(model.preprocess.crop) == card.input_size
    assert model_info(name).card is card and model_info(name).paper == PAPERS[card.family]
    assert count_parameters(name) == (card.params_total, card.params_trainable)
    assert model.encoder_weights == "random-init"

    trainable = {id(p) for p in model.trainable_parameters()}
    assert trainable and trainable <= {id(p) for p in model.parameters()}
    h, w = card.input_size
    with torch.device("meta"):
        x = torch.zeros(2, 3, h, w)
        amap, score = model.eval()(x)
        loss = model.train().training_loss(x, 0)
    assert amap.dtype == score.dtype == torch.float32 and amap.shape[:2] == (2, 1) and amap.dim() == 4
    assert tuple(score.shape) == (2,) and loss.dim() == 0
    assert isinstance(model.default_train_config(), dict) and "iters" in model.default_train_config()


@pytest.mark.parametrize("name", [pytest.param(m, marks=() if m.endswith("-tiny") else pytest.mark.slow)
                                  for m in MODELS])
def test_a_random_init_build_says_so(name: str, caplog: pytest.LogCaptureFixture) -> None:
    """Built for real (on the meta device the warning is skipped: nothing is trained there)."""
    with caplog.at_level(logging.WARNING):
        model = create_model(name)
    assert model.encoder_weights == "random-init"
    assert f"{name}: RANDOM-INIT encoder" in caplog.text and "not a bug" in caplog.text


@pytest.mark.parametrize("name", [m for m in MODELS if m.endswith("-tiny")])
def test_tiny_models_export_their_face(name: str) -> None:
    import torch

    from edge_ad.export.onnx_export import export_onnx

    torch.manual_seed(0)
    model = create_model(name).eval()
    h, w = model.preprocess.crop
    with torch.no_grad():
        amap, _ = model(torch.zeros(1, 3, h, w))
    assert isinstance(model.package_constants(), dict)
    proto = export_onnx(model)
    dims = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in proto.graph.output}
    (inp,) = proto.graph.input
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == ["batch", h, w, 3]
    assert dims == {"anomaly_map": ["batch", 1, *amap.shape[2:]], "score": ["batch"]}
