"""The model registry: registration errors, and `edge-ad models` answers from the catalogue without torch (the
model contract itself, counts and faces, is in test_model_contract.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edge_ad.models.catalog import CARDS
from edge_ad.models.registry import register_variants


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
