"""Mixed precision and memory format for training: what `--amp` and `--channels-last` resolve to, per model and
device, and the autocast/gradient-scaler plumbing of one optimiser step.

The official code of all four models trains in FP32 (dinomaly.md, mambaad.md, dualad.md, ulsad.md). A model opts
in to `auto` bf16 with `amp_safe = True` and a reason (`amp_note`); the rest stay FP32 unless `--amp bf16|fp16` is
given. bf16 keeps FP32's exponent range, so it needs no loss scaling; fp16 (CUDA only) runs with a GradScaler.
Evaluation, threshold derivation and export always run in FP32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from edge_ad.errors import ConfigError

AMP_MODES = ("auto", "off", "bf16", "fp16")
CHANNELS_LAST_MODES = ("auto", "on", "off")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class TrainPrecision:
    """The resolved training precision: autocast dtype (None = FP32), channels-last, and why."""

    amp: str  # "off" | "bf16" | "fp16"
    channels_last: bool
    reason: str

    @property
    def dtype(self) -> torch.dtype | None:
        return _DTYPES.get(self.amp)

    def to_dict(self) -> dict[str, Any]:
        return {"amp": self.amp, "channels_last": self.channels_last, "reason": self.reason}


def resolve_precision(amp: str, channels_last: str, model: Any, device: torch.device) -> TrainPrecision:
    """`auto`: bf16 autocast on a CUDA GPU with bf16 support when the model declares it safe, else FP32;
    channels-last on CUDA for convolutional models. Explicit modes are honoured (fp16 needs CUDA)."""
    if amp not in AMP_MODES:
        raise ConfigError(f"amp: expected one of {list(AMP_MODES)}, got {amp!r}")
    if channels_last not in CHANNELS_LAST_MODES:
        raise ConfigError(f"channels_last: expected one of {list(CHANNELS_LAST_MODES)}, got {channels_last!r}")
    cuda = device.type == "cuda"
    safe, note = bool(getattr(model, "amp_safe", False)), str(getattr(model, "amp_note", ""))
    if amp == "fp16" and not cuda:
        raise ConfigError(f"amp: fp16 needs a CUDA device, this run trains on {device} (use bf16 or off)")
    if amp == "auto":
        bf16_gpu = cuda and torch.cuda.is_bf16_supported()
        resolved = "bf16" if bf16_gpu and safe else "off"
        if resolved == "bf16":
            why = f"auto: bf16 autocast ({note})"
        else:
            why = "auto: FP32 (no CUDA device with bf16)" if not bf16_gpu else f"auto: FP32 ({note})"
    else:
        resolved, why = amp, f"--amp {amp}" + ("" if safe or amp == "off" else f" (not the model's default: {note})")
    conv = bool(getattr(model, "convolutional", False))
    cl = channels_last == "on" or (channels_last == "auto" and cuda and conv)
    return TrainPrecision(resolved, cl, why)


class PrecisionStep:
    """Autocast around the forward/loss and, for fp16, loss scaling around backward and the optimiser step."""

    def __init__(self, precision: TrainPrecision, device: torch.device) -> None:
        self.precision, self.device = precision, device
        self.scaler = torch.amp.GradScaler("cuda") if precision.amp == "fp16" else None

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        dtype = self.precision.dtype
        with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            yield

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.precision.channels_last and x.dim() == 4 else x

    def backward_and_step(self, loss: torch.Tensor, opt: torch.optim.Optimizer, params: list[torch.nn.Parameter],
                          grad_clip: float | None) -> None:
        if self.scaler is None:
            loss.backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            opt.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(opt)  # clip the true gradients
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        self.scaler.step(opt)  # skipped when the scaled gradients overflowed
        self.scaler.update()
