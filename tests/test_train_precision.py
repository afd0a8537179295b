"""Training precision: what --amp / --channels-last resolve to per model and device, a bf16 autocast run end to
end (CPU autocast here; CUDA on a GPU machine), and the selective scan staying FP32 inside autocast."""

from __future__ import annotations

import json

import pytest
import torch

from edge_ad.data.synth import generate
from edge_ad.errors import ConfigError
from edge_ad.models import create_model
from edge_ad.train.amp import PrecisionStep, resolve_precision


@pytest.fixture(scope="module")
def models():
    return {n: create_model(n, pretrained=False) for n in ("dinomaly-tiny", "mambaad-tiny")}


def test_auto_is_fp32_on_cpu_and_explicit_modes_are_honoured(models):
    cpu = torch.device("cpu")
    d = resolve_precision("auto", "auto", models["dinomaly-tiny"], cpu)
    assert (d.amp, d.dtype, d.channels_last) == ("off", None, False) and "no CUDA device" in d.reason
    b = resolve_precision("bf16", "on", models["mambaad-tiny"], cpu)
    assert (b.amp, b.dtype, b.channels_last) == ("bf16", torch.bfloat16, True)
    assert "not the model's default" in b.reason and "FP32" in b.reason  # MambaAD is not declared AMP-safe
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", "auto", models["dinomaly-tiny"], cpu)
    with pytest.raises(ConfigError, match=r"amp: expected one of .* got 'fp8'"):
        resolve_precision("fp8", "auto", models["dinomaly-tiny"], cpu)
    with pytest.raises(ConfigError, match="channels_last: expected one of"):
        resolve_precision("off", "yes", models["dinomaly-tiny"], cpu)


def test_auto_on_a_bf16_gpu_follows_the_model(models, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    gpu = torch.device("cuda", 0)
    d = resolve_precision("auto", "auto", models["dinomaly-tiny"], gpu)
    assert d.amp == "bf16" and not d.channels_last and "dinomaly.md 11.3" in d.reason  # ViT: no channels-last
    m = resolve_precision("auto", "auto", models["mambaad-tiny"], gpu)
    assert m.amp == "off" and m.channels_last and "FP32" in m.reason  # conv model: channels-last, FP32 recipe
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto", "off", models["dinomaly-tiny"], gpu).amp == "off"


def test_selective_scan_stays_fp32_under_autocast(models):
    ss2d = next(m for m in models["mambaad-tiny"].modules() if type(m).__name__ == "SS2D").eval()
    x = torch.randn(1, ss2d.size, ss2d.size, ss2d.d_model)
    seen = []
    hook = ss2d.scan.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    with torch.no_grad():
        ref = ss2d(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = ss2d(x)
    hook.remove()
    assert seen == [torch.float32, torch.float32]  # the projections around it ran in bf16, the scan did not
    assert mixed.dtype == torch.bfloat16 and torch.allclose(mixed.float(), ref, rtol=0.05, atol=0.05)


def test_precision_step_clips_and_steps():
    lin = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(lin.parameters(), lr=1.0)
    step = PrecisionStep(resolve_precision("bf16", "off", lin, torch.device("cpu")), torch.device("cpu"))
    before = lin.weight.detach().clone()
    with step.autocast():
        loss = (lin(torch.full((2, 4), 100.0)) ** 2).mean()
    assert step.scaler is None
    step.backward_and_step(loss.float(), opt, list(lin.parameters()), grad_clip=0.1)
    assert float((lin.weight.detach() - before).norm()) <= 0.1 + 1e-6  # clipped to 0.1, lr 1


def test_bf16_training_run_records_its_precision(tmp_path):
    import edge_ad

    data = tmp_path / "data"
    generate(data, categories=["pcb"], per_category=6, size=96, seed=3)
    run = edge_ad.fit("dinomaly-tiny", data, tmp_path / "run", iters=2, batch=2, pretrained=False, workers=0,
                      progress=False, amp="bf16", channels_last="on").path
    info = json.loads((run / "run.json").read_text())
    assert info["precision"]["amp"] == "bf16" and info["precision"]["channels_last"] is True
    log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert log and all(torch.isfinite(torch.tensor(r["loss"])) for r in log)
