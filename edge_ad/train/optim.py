"""Optimisers and LR schedules of the reference implementations (Dinomaly's StableAdamW and WarmCosine)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from edge_ad.errors import ConfigError


class StableAdamW(Optimizer):
    """AdamW with AMSGrad and update clipping (Wortsman et al.), exactly as Dinomaly's `optimizers/StableAdamW.py`.

    Per tensor: decoupled decay `p *= 1 - lr*wd`; Adam moments; AMSGrad `vmax = max(vmax, v)`;
    `denom = sqrt(vmax)/sqrt(bc2) + eps`; `s = max(1, RMS(g/denom)/clip_threshold)`; `p -= lr/bc1/s * m/denom`.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = True,
        clip_threshold: float = 1.0,
    ) -> None:
        if lr < 0 or eps < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ConfigError(f"StableAdamW: invalid lr={lr}, eps={eps} or betas={betas}")
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, clip_threshold=clip_threshold
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                    if group["amsgrad"]:
                        state["max_exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                step = state["step"]
                p.mul_(1 - lr * wd)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                bc1 = 1 - beta1**step
                bc2 = 1 - beta2**step
                if group["amsgrad"]:
                    vmax = state["max_exp_avg_sq"]
                    torch.maximum(vmax, exp_avg_sq, out=vmax)
                    denom = (vmax.sqrt() / math.sqrt(bc2)).add_(eps)
                else:
                    denom = (exp_avg_sq.sqrt() / math.sqrt(bc2)).add_(eps)
                rms = torch.div(grad, denom).pow(2).mean().sqrt().item()
                scale = max(1.0, rms / group["clip_threshold"])
                p.addcdiv_(exp_avg, denom, value=-lr / bc1 / scale)
        return loss


class WarmCosineScheduler(LRScheduler):
    """Linear warm-up from 0 to base lr over `warmup_iters`, then cosine to `final_lr` over the rest; stepped per
    iteration. As in the reference, the first optimiser step runs at lr 0."""

    def __init__(
        self, optimizer: Optimizer, base_lr: float, final_lr: float, total_iters: int, warmup_iters: int = 0
    ) -> None:
        self.final_lr = final_lr
        warmup = np.linspace(0, base_lr, warmup_iters) if warmup_iters > 0 else np.array([])
        iters = np.arange(max(total_iters - warmup_iters, 0))
        cosine = final_lr + 0.5 * (base_lr - final_lr) * (1 + np.cos(np.pi * iters / max(len(iters), 1)))
        self.schedule = np.concatenate((warmup, cosine))
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        if self.last_epoch >= len(self.schedule):
            return [self.final_lr for _ in self.base_lrs]
        return [float(self.schedule[self.last_epoch]) for _ in self.base_lrs]


def build_optimizer(
    name: str, params: list[torch.nn.Parameter] | list[dict[str, Any]], cfg: dict[str, Any]
) -> Optimizer:
    """Optimiser by name from a resolved training config; `params` may be parameter groups with their own decay."""
    betas = tuple(cfg.get("betas", (0.9, 0.999)))
    if name == "stable_adamw":
        return StableAdamW(params, lr=cfg["lr"], betas=betas, eps=cfg.get("eps", 1e-8),
                           weight_decay=cfg.get("weight_decay", 1e-4), amsgrad=cfg.get("amsgrad", True))
    if name == "adamw":
        return torch.optim.AdamW(params, lr=cfg["lr"], betas=betas, eps=cfg.get("eps", 1e-8),
                                 weight_decay=cfg.get("weight_decay", 1e-2), amsgrad=cfg.get("amsgrad", False))
    if name == "adam":
        return torch.optim.Adam(params, lr=cfg["lr"], betas=betas, eps=cfg.get("eps", 1e-8),
                                weight_decay=cfg.get("weight_decay", 0.0))
    raise ConfigError(f"train config: optimizer must be one of stable_adamw, adamw, adam; got {name!r}")


def build_scheduler(name: str, opt: Optimizer, cfg: dict[str, Any]) -> LRScheduler | None:
    """LR schedule by name, stepped per iteration: 'warm_cosine', 'step' (x gamma once `step_at` of the iterations
    are done: epoch-based StepLR schedules expressed as a fraction of training) or 'constant' (None)."""
    if name == "warm_cosine":
        return WarmCosineScheduler(
            opt, cfg["lr"], cfg.get("final_lr", cfg["lr"] * 0.1), cfg["iters"], cfg.get("warmup_iters", 0)
        )
    if name == "step":
        frac = float(cfg.get("step_at", 0.8))
        if not 0.0 < frac <= 1.0:
            raise ConfigError(f"train config: step_at must be in (0, 1], got {frac}")
        return torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, round(frac * cfg["iters"])),
                                               gamma=float(cfg.get("gamma", 0.1)))
    if name == "constant":
        return None
    raise ConfigError(f"train config: scheduler must be 'warm_cosine', 'step' or 'constant'; got {name!r}")
