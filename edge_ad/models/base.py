"""The contract every edge-ad model family implements.

Two faces:
- `training_loss(x, step)`: the model's own loss on a batch of normalised good images;
- `forward(x) -> (anomaly_map [B,1,h,w], score [B])`: the export face that goes into ONNX unchanged.
Constants the deployed model needs are registered buffers (baked into ONNX) or listed in `package_constants()`.
"""

from __future__ import annotations

import abc
from typing import Any

import torch
from torch import nn

from edge_ad.runtime.geometry import Geometry
from edge_ad.runtime.preprocess import Preprocess


class AnomalyModel(nn.Module, metaclass=abc.ABCMeta):
    """Base class: subclasses set `preprocess`, implement `forward` and `training_loss` (abstract: a family
    missing either cannot be instantiated)."""

    #: registry name, set by `create_model`
    name: str = ""
    #: the training/inference preprocessing the model was designed for (resize + crop + normalisation)
    preprocess: Preprocess
    #: where the frozen encoder's weights came from: "random-init", "file:<sha256>", "checkpoint", ... (shown on
    #: every output, so random-init results are never mistaken for real ones)
    encoder_weights: str = "unknown"
    #: the inspection geometry of a run trained with --align/--roi/--tile (frames -> aligned tiles); None: whole
    #: images. Set by the trainer and by `evaluate.rundir.load_run`.
    geometry: Geometry | None = None
    #: bf16 autocast is safe for training (`--amp auto` uses it on GPUs), with the reason in `amp_note`
    amp_safe: bool = False
    amp_note: str = "the official code trains in FP32; bf16 not verified for this family"
    #: mostly convolutions, so channels-last memory format helps on GPUs
    convolutional: bool = False

    @abc.abstractmethod
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised float images [B,3,H,W] -> (anomaly_map float32 [B,1,h,w], score float32 [B])."""

    @abc.abstractmethod
    def training_loss(self, x: torch.Tensor, step: int) -> torch.Tensor:
        """Scalar loss of a batch of normalised good images at optimiser step `step`."""

    @property
    def on_meta_device(self) -> bool:
        """Built on the meta device (shapes only: parameter counting), so it never produces maps."""
        return any(p.is_meta for p in self.parameters()) or any(b.is_meta for b in self.buffers())

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimiser updates (frozen encoders excluded)."""
        return [p for p in self.parameters() if p.requires_grad]

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """Optimiser parameter groups; by default one group, decay on every trainable parameter (as Dinomaly's
        StableAdamW). Families whose reference code exempts biases/norms override this."""
        return [{"params": self.trainable_parameters(), "weight_decay": weight_decay}]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The trained weights only (frozen encoders excluded), e.g. for comparing or sharing decoders."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items() if k in names}

    def default_train_config(self) -> dict[str, Any]:
        """The paper's training configuration (optimiser, lr, schedule, clip, iterations, batch)."""
        return {}

    def fit_constants(self, loader: Any, device: torch.device) -> None:
        """Called once before training with a loader over the training images (dicts with "image"), in eval mode:
        models estimate statistics such as per-channel feature mean/std here. Store them as persistent buffers
        (run directories save the full state dict). No-op by default."""

    def calibrate(self, loader: Any, device: torch.device) -> None:
        """Called once after training with a loader over the HELD-OUT good images, before thresholds are derived:
        models estimate output normalisation (e.g. quantiles of local/global maps) here, never on test data.
        Store results as persistent buffers. No-op by default."""

    def package_constants(self) -> dict[str, Any]:
        """Normalisation constants that must be recorded in the model package manifest."""
        return {}
