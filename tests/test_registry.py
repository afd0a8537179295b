"""The model catalogue and registry: every card has a builder and vice versa, the pinned parameter counts and input
sizes are those of the built models, registration errors, and `edge-ad models` answers from the catalogue."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edge_ad.models import count_parameters, create_model, list_models, model_info
from edge_ad.models.catalog import CARDS, PAPERS
from edge_ad.models.registry import register_variants


def test_every_card_has_a_builder_and_every_builder_a_card() -> None:
    assert set(list_models()) == set(CARDS) and set(PAPERS) == {c.family for c in CARDS.values()}


@pytest.mark.parametrize("name", sorted(CARDS))
def test_pinned_counts_and_sizes_match_the_built_model(name: str) -> None:
    import torch

    card = CARDS[name]
    assert count_parameters(name) == (card.params_total, card.params_trainable)
    with torch.device("meta"):
        model = create_model(name)
    assert model.name == name and tuple(model.preprocess.crop) == card.input_size
    assert model_info(name).card is card and model_info(name).paper == PAPERS[card.family]


def test_registration_errors() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        register_variants("dinomaly", lambda *a, **k: None, ["dinomaly-s"])  # type: ignore[arg-type, return-value]
    with pytest.raises(ValueError, match="no dinomaly card"):
        register_variants("dinomaly", lambda *a, **k: None, ["dinomaly-xxl"])  # type: ignore[arg-type, return-value]
    with pytest.raises(ValueError, match="no dinomaly card"):
        register_variants("dinomaly", lambda *a, **k: None, ["mambaad"])  # type: ignore[arg-type, return-value]


def test_models_command_needs_no_torch() -> None:
    code = (
        "import sys, json; from edge_ad.cli.main import main; main(['models', '--json']); "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'timm'))), file=sys.stderr)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    rows = json.loads(out.stdout)
    assert {r["name"] for r in rows} == set(CARDS) and json.loads(out.stderr.strip().splitlines()[-1]) == []
    s = next(r for r in rows if r["name"] == "dinomaly-s")
    assert s["params_total"] == CARDS["dinomaly-s"].params_total and s["input_size"] == [392, 392]
