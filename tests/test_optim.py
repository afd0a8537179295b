"""StableAdamW and WarmCosine match the reference formulas (Dinomaly's optimizers/StableAdamW.py, utils.py)."""

import itertools
import math

import numpy as np
import pytest
import torch

from edge_ad.errors import ConfigError
from edge_ad.train.optim import StableAdamW, WarmCosineScheduler, build_optimizer


def _reference_step(p, g, m, v, vmax, step, lr, wd, eps, b1=0.9, b2=0.999):
    p = p * (1 - lr * wd)
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    vmax = np.maximum(vmax, v)
    bc1, bc2 = 1 - b1**step, 1 - b2**step
    denom = np.sqrt(vmax) / math.sqrt(bc2) + eps
    s = max(1.0, float(np.sqrt(np.mean((g / denom) ** 2))))
    return p - lr / bc1 / s * m / denom, m, v, vmax


def test_stable_adamw_matches_reference_over_steps():
    rng = np.random.default_rng(0)
    p0 = rng.normal(size=(5, 3))
    param = torch.nn.Parameter(torch.tensor(p0, dtype=torch.float64))
    opt = StableAdamW([param], lr=2e-3, weight_decay=1e-4, eps=1e-10, amsgrad=True)
    p, m, v, vmax = p0.copy(), np.zeros_like(p0), np.zeros_like(p0), np.zeros_like(p0)
    for step in range(1, 6):
        g = rng.normal(size=p0.shape) * (10 if step == 3 else 1)
        param.grad = torch.tensor(g)
        opt.step()
        p, m, v, vmax = _reference_step(p, g, m, v, vmax, step, 2e-3, 1e-4, 1e-10)
        np.testing.assert_allclose(param.detach().numpy(), p, rtol=1e-10, atol=1e-12)


def test_update_clipping_limits_rms_of_update():
    # On the first step m/denom = g/|g| elementwise: the RMS ratio is 1, so the step is exactly lr*sign(g).
    param = torch.nn.Parameter(torch.zeros(100, dtype=torch.float64))
    opt = StableAdamW([param], lr=0.1, weight_decay=0.0, eps=0.0)
    param.grad = torch.linspace(-5, 5, 100, dtype=torch.float64) + 0.01
    opt.step()
    np.testing.assert_allclose(param.detach().abs().numpy(), 0.1, rtol=1e-9)


def test_warm_cosine_schedule_starts_at_zero_and_ends_at_final():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    sched = WarmCosineScheduler(opt, base_lr=2e-3, final_lr=2e-4, total_iters=1000, warmup_iters=100)
    lrs = []
    for _ in range(1100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 0.0  # the reference's first step runs at lr 0
    assert lrs[99] == pytest.approx(2e-3)
    assert lrs[100] == pytest.approx(2e-3)  # cosine starts at the base lr
    assert lrs[550] == pytest.approx(2e-4 + 0.5 * 1.8e-3 * (1 + math.cos(math.pi * 450 / 900)))
    assert lrs[1050] == pytest.approx(2e-4)
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(lrs[100:1000]))


def test_unknown_optimizer_is_a_config_error():
    with pytest.raises(ConfigError, match="optimizer"):
        build_optimizer("sgdx", [torch.nn.Parameter(torch.zeros(1))], {"lr": 1e-3})


def test_step_scheduler_decays_once_at_fraction():
    from edge_ad.train.optim import build_scheduler

    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=5e-3)
    sched = build_scheduler("step", opt, {"lr": 5e-3, "iters": 100, "step_at": 0.8, "gamma": 0.1})
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[79] == pytest.approx(5e-3) and lrs[80] == pytest.approx(5e-4) and lrs[99] == pytest.approx(5e-4)
    with pytest.raises(ConfigError, match="step_at"):
        build_scheduler("step", opt, {"lr": 1.0, "iters": 10, "step_at": 1.5})
