"""ULSAD (Patra & Ben Taieb, TMLR 09/2024): a local feature-reconstruction branch for structural anomalies and
a global image autoencoder, trained with an attention-consistency loss, for logical anomalies.

Exact to the official code (github.com/sukanyapatra1997/ULSAD-2024 at c75e169, `anomalib/models/ulsad/`):

- features: frozen WideResNet50-2 layer2 (512 x 32^2) and layer3 (1024 x 16^2, bilinear to 32^2), concatenated
  and averaged over groups of 4 adjacent channels to 384 (= `adaptive_avg_pool1d(1536 -> 384)`), then
  standardised per channel with train-set mean/std (`fit_constants`: float64 sums, population std, no eps);
- local branch: the feature reconstruction network `FeatAE(384, 1536, double_channel=True)`; its 768 output
  channels are [reconstruction of U | prediction of the AE output];
- global branch: `ConvAutoEncoder` image -> 64x1x1 -> 384 x 32^2 with BatchNorm(affine=False, eps=1e-4);
- losses (unit weights): D(U, FRN[:384]) + D(SelfAttn(U), CrossAttn(q=AE, k=v=U)) + D(AE, FRN[384:]), where
  D(a, b) = mean_c (a - b)^2 + 0.5 * (1 - cos_c(a, b)) per position; no stop-gradient on the last term;
- maps: D at 32^2 -> bilinear to the input size -> quantile normalisation 0.1 * (m - q_0.9) / (q_0.995 - q_0.9)
  per branch -> Gaussian blur (sigma 4, 33x33, reflect) -> 0.5 * local + 0.5 * global; score = max.

Where the paper and the official code disagree, this follows the code (which produced the published numbers):
- FRN conv3 has no ReLU and the last ConvTranspose has 768 (not 384) outputs followed by BN + ReLU (Table 5);
  ReLU, not LeakyReLU (the init gain is leaky_relu's, as in the code);
- AE upsampling sizes are 3, 8, 15, 31, 63, then 32 with a linear last conv (Table 6 lists 31, 8, 16, 32, 64, 32
  and a final ReLU);
- the squared term is a mean over channels, not the sum ||.||^2 of eq. 1 (a factor 384 on the balance);
- the attention loss's cosine weight is `lambdadir_g` (the code wires `lambdadir_a` to it).

Deliberate deviations from the released code, for a clean protocol and deployment:
- the quantiles are computed on HELD-OUT GOOD training images (`calibrate`), never on the test set (the code
  uses validation = test set and picks the best-test-AUROC checkpoint); the last checkpoint is used;
- the ImageNet normalisation is edge-ad's `Preprocess` (std without the code's +1e-11) and edge-ad resizes with
  area averaging when shrinking (the code: cv2 INTER_LINEAR);
- the export face computes upsample + blur as one constant matrix product H d H^T (H = blur . upsample, both
  linear with rows summing to 1), then the quantile normalisation; for a normalised kernel with reflect padding
  this equals the code's order (upsample, normalise, blur) up to float rounding, and it keeps the graph free of
  Resize/reflect-Pad for TensorRT. The "quantiles unset" state (identity normalisation) matches the code's.

Variants: `ulsad` is the paper's model (256x256 input). `ulsad-tiny` is NOT from the paper: a random-init
ResNet-10-T backbone (layer2+3 = 384 channels averaged in groups of 8 to 48), for CPU tests and demos only.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edge_ad.errors import ConfigError
from edge_ad.models import weights as wcache
from edge_ad.models.base import AnomalyModel
from edge_ad.models.layers import bilinear_matrix
from edge_ad.models.registry import register_variants
from edge_ad.runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess

log = logging.getLogger(__name__)

#: backbone layers read (timm `features_only` out_indices of layer2, layer3)
OUT_INDICES = (2, 3)
#: quantile levels of the map normalisation and the value q_b maps to (EfficientAD convention)
Q_LOW, Q_HIGH, Q_TARGET = 0.9, 0.995, 0.1
BLUR_SIGMA = 4.0
#: torch.quantile's element limit; larger pools are subsampled, as in the official code
MAX_QUANTILE_ELEMS = 2**24
#: names of the map-normalisation buffers; the ONNX exporter keeps persistent buffers as initializers named
#: "model.<buffer>" (the package wrapper holds the model as `model`), which `edge_ad.export.constants` rewrites
SHIFT_BUFFER, SCALE_BUFFER = "map_shift", "map_scale"


def cosine(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine similarity over dim 1, written as PyTorch's `F.cosine_similarity` computes it (each vector divided
    by max(||v||, eps)); explicit so the exported head is plain ReduceSum/Sqrt/Max/Div and an all-zero ReLU
    output gives 0, not NaN."""
    na = torch.linalg.vector_norm(a, dim=1, keepdim=True).clamp_min(eps)
    nb = torch.linalg.vector_norm(b, dim=1, keepdim=True).clamp_min(eps)
    return ((a / na) * (b / nb)).sum(dim=1)


def distance(a: torch.Tensor, b: torch.Tensor, lam: float) -> torch.Tensor:
    """D_lam(a, b) [B,H,W] = mean_c (a - b)^2 + lam * (1 - cos_c(a, b)): every ULSAD loss and map."""
    return (a - b).pow(2).mean(dim=1) + lam * (1.0 - cosine(a, b))


def attention(query: torch.Tensor, key_value: torch.Tensor) -> torch.Tensor:
    """softmax_keys(q k^T / sqrt(C)) v over the H*W tokens of [B,C,H,W] maps, k = v; returns [B,C,H,W].

    SelfAttn(U) = attention(U, U); CrossAttn(U, AE) = attention(AE, U) (the AE output is the query)."""
    b, c, h, w = key_value.shape
    q = query.reshape(b, c, h * w).transpose(1, 2)
    kv = key_value.reshape(b, c, h * w).transpose(1, 2)
    probs = torch.softmax(q @ kv.transpose(1, 2) / math.sqrt(c), dim=-1)
    return (probs @ kv).transpose(1, 2).reshape(b, c, h, w)


def reflect_gaussian_matrix(n: int, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """[n, n] matrix of Anomalib's GaussianBlur2d along one axis: kernel 2*int(4 sigma + 0.5) + 1 taps (kornia's
    normalised Gaussian) on a reflect-padded ("same") signal. Rows sum to 1."""
    k = 2 * int(4.0 * sigma + 0.5) + 1
    half = k // 2
    if n <= half:
        raise ValueError(f"reflect padding of {half} needs a side > {half}, got {n}")
    t = np.arange(k, dtype=np.float64) - half
    g = np.exp(-(t**2) / (2.0 * sigma**2))
    g /= g.sum()
    out = np.zeros((n, n), dtype=np.float64)
    for i in range(n):
        for j in range(k):
            src = i + j - half
            src = -src if src < 0 else (2 * (n - 1) - src if src > n - 1 else src)  # reflect, edge not repeated
            out[i, src] += g[j]
    return out


def map_head(grid: int, size: int, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """H [size, grid] with H d H^T = blur(bilinear_upsample(d, size)) (align_corners=False, reflect blur)."""
    return reflect_gaussian_matrix(size, sigma) @ bilinear_matrix(grid, size, align_corners=False)


def _xavier_leaky(conv: nn.Conv2d | nn.ConvTranspose2d) -> None:
    nn.init.xavier_uniform_(conv.weight, gain=nn.init.calculate_gain("leaky_relu"))


class FeatureReconstructionNetwork(nn.Module):
    """Official `FeatAE(in_dim, out_dim=4*in_dim, double_channel=True)`: 3x3 conv encoder to out_dim x H/4,
    ConvTranspose decoder back to 2*in_dim x H (first half: reconstruction, second half: AE prediction).

    No ReLU after conv3; BN + ReLU after the last ConvTranspose (output >= 0). Weights xavier_uniform with the
    leaky_relu gain; biases and BN keep PyTorch defaults."""

    def __init__(self, in_dim: int = 384, out_dim: int = 1536) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_dim, out_dim // 2, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(out_dim // 2)
        self.conv2 = nn.Conv2d(out_dim // 2, out_dim, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(out_dim)
        self.conv3 = nn.Conv2d(out_dim, out_dim, 3, stride=1, padding=1)
        self.bn3 = nn.BatchNorm2d(out_dim)
        self.deconv1 = nn.ConvTranspose2d(out_dim, out_dim // 2, kernel_size=4, stride=2, padding=1)
        self.bn4 = nn.BatchNorm2d(out_dim // 2)
        self.deconv2 = nn.ConvTranspose2d(out_dim // 2, out_dim // 4, kernel_size=4, stride=2, padding=1)
        self.bn5 = nn.BatchNorm2d(out_dim // 4)
        self.deconv3 = nn.ConvTranspose2d(out_dim // 4, (out_dim // 4) * 2, kernel_size=5, stride=1, padding=2)
        self.bn6 = nn.BatchNorm2d((out_dim // 4) * 2)
        for conv in (self.conv1, self.conv2, self.conv3, self.deconv1, self.deconv2, self.deconv3):
            _xavier_leaky(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        x = F.relu(self.bn4(self.deconv1(x)))
        x = F.relu(self.bn5(self.deconv2(x)))
        return F.relu(self.bn6(self.deconv3(x)))


class GlobalAutoencoder(nn.Module):
    """Official `ConvAutoEncoder(out_channels, padding=True, img_size)`: normalised image -> 64 x 1 x 1 code ->
    out_channels x img/8 x img/8, BatchNorm(affine=False, eps=1e-4) + ReLU after every conv but the last.

    Decoder bilinear upsampling sizes (img 256): 3, 8, 15, 31, 63, then img/8 = 32. PyTorch default init."""

    def __init__(self, out_channels: int = 384, img_size: int = 256) -> None:
        super().__init__()
        self.img_size = img_size
        enc = [(3, 32), (32, 32), (32, 64), (64, 64), (64, 64)]
        for i, (cin, cout) in enumerate(enc, start=1):
            setattr(self, f"enconv{i}", nn.Conv2d(cin, cout, kernel_size=4, stride=2, padding=1))
            setattr(self, f"bn2d{i}", nn.BatchNorm2d(cout, eps=1e-4, affine=False))
        self.enconv6 = nn.Conv2d(64, 64, kernel_size=8, stride=1, padding=0)
        self.bn2d6 = nn.BatchNorm2d(64, eps=1e-4, affine=False)
        for i in range(1, 6):  # deconv1..5 (4x4, padding 2), with bn2d7..11
            setattr(self, f"deconv{i}", nn.Conv2d(64, 64, kernel_size=4, stride=1, padding=2))
            setattr(self, f"bn2d{i + 6}", nn.BatchNorm2d(64, eps=1e-4, affine=False))
        self.deconv7 = nn.Conv2d(64, 64, kernel_size=3, stride=1, padding=1)
        self.bn2d12 = nn.BatchNorm2d(64, eps=1e-4, affine=False)
        self.deconv8 = nn.Conv2d(64, out_channels, kernel_size=3, stride=1, padding=1)
        s = img_size
        self.up_sizes = (s // 64 - 1, s // 32, s // 16 - 1, s // 8 - 1, s // 4 - 1, s // 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, 7):
            x = F.relu(getattr(self, f"bn2d{i}")(getattr(self, f"enconv{i}")(x)))
        for i, size in zip((1, 2, 3, 4, 5), self.up_sizes[:5]):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            x = F.relu(getattr(self, f"bn2d{i + 6}")(getattr(self, f"deconv{i}")(x)))
        last = self.up_sizes[5]
        x = F.interpolate(x, size=(last, last), mode="bilinear", align_corners=False)
        x = F.relu(self.bn2d12(self.deconv7(x)))
        return self.deconv8(x)


class ULSAD(AnomalyModel):
    """ULSAD around a timm `features_only` CNN returning the layer2/layer3 maps (stride 8 and 16).

    `size` is the square model input side (a multiple of 64, >= 256: the AE's 8x8 conv needs an 8x8 map at
    stride 32); `target_dim` the channel count after group averaging (the AE output width; the FRN bottleneck
    is 4x it); `lambda_l`/`lambda_g`/`lambda_a` the cosine weights of the local, local-global and attention
    distances (the official code ties lambda_a to lambda_g).
    """

    convolutional = True

    feat_mean: torch.Tensor
    feat_std: torch.Tensor
    quantiles: torch.Tensor
    map_shift: torch.Tensor
    map_scale: torch.Tensor
    head: torch.Tensor

    def __init__(
        self,
        backbone: nn.Module,
        *,
        size: int = 256,
        resize: int | None = None,
        target_dim: int = 384,
        lambda_l: float = 0.5,
        lambda_g: float = 0.5,
        lambda_a: float | None = None,
    ) -> None:
        super().__init__()
        info = cast(Any, backbone).feature_info  # timm FeatureListNet
        channels, reduction = info.channels(), info.reduction()
        if len(channels) != 2 or tuple(reduction) != (8, 16):
            raise ValueError(f"backbone must return 2 maps at stride 8 and 16, got strides {reduction}")
        if sum(channels) % target_dim:
            raise ValueError(f"{sum(channels)} backbone channels do not average into {target_dim} equal groups")
        self.backbone = backbone.requires_grad_(False).eval()
        self.group = sum(channels) // target_dim
        self.target_dim = target_dim
        self.size = size
        self.grid = size // 8
        self.lambda_l, self.lambda_g = float(lambda_l), float(lambda_g)
        self.lambda_a = float(lambda_g if lambda_a is None else lambda_a)
        self.preprocess = Preprocess(resize=(resize or size,) * 2, crop=(size, size), mean=IMAGENET_MEAN,
                                     std=IMAGENET_STD)
        self.encoder_weights = "random-init"

        self.frn = FeatureReconstructionNetwork(target_dim, 4 * target_dim)
        self.ae = GlobalAutoencoder(target_dim, size)

        # constants of the deployed model (persistent: saved in runs, initializers in ONNX); identity until fitted
        self.register_buffer("feat_mean", torch.zeros(1, target_dim, 1, 1))
        self.register_buffer("feat_std", torch.ones(1, target_dim, 1, 1))
        self.register_buffer("quantiles", torch.zeros(2, 2))  # [[qa, qb] local, [qa, qb] global]; 0 = unset
        self.register_buffer(SHIFT_BUFFER, torch.zeros(1, 2, 1, 1))
        self.register_buffer(SCALE_BUFFER, torch.ones(1, 2, 1, 1))
        self.register_buffer("head", torch.from_numpy(map_head(self.grid, size)).float(), persistent=False)
        self.register_load_state_dict_post_hook(ULSAD._rederive_after_load)

    # -- mode ----------------------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> ULSAD:
        """The backbone stays in eval mode (frozen BatchNorm statistics), as Anomalib's feature extractor forces."""
        super().train(mode)
        self.backbone.eval()
        return self

    # -- features ------------------------------------------------------------------------------------------
    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        """cat(layer2, up(layer3)) averaged over groups of adjacent channels: [B, target_dim, H/8, W/8]."""
        with torch.no_grad():
            f2, f3 = self.backbone(x)
            f3 = F.interpolate(f3, size=f2.shape[-2:], mode="bilinear", align_corners=False)
            u = torch.cat([f2, f3], dim=1)
            b, _, h, w = u.shape
            return u.reshape(b, self.target_dim, self.group, h, w).mean(dim=2)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised teacher features U (no gradient)."""
        with torch.no_grad():
            return (self.pooled_features(x) - self.feat_mean) / self.feat_std

    # -- constants ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def fit_constants(self, loader: Any, device: torch.device) -> None:
        """Per-channel mean and population std of the pooled features over all training images and positions
        (official `pretrain_channel_mean_std`: float64 sums, sqrt(E[y^2] - E[y]^2), no eps)."""
        n = 0
        s1 = torch.zeros(self.target_dim, dtype=torch.float64, device=device)
        s2 = torch.zeros_like(s1)
        for batch in loader:
            y = self.pooled_features(batch["image"].to(device))
            n += y[:, 0].numel()
            s1 += y.sum(dim=(0, 2, 3), dtype=torch.float64)
            s2 += (y.double() ** 2).sum(dim=(0, 2, 3))
        if n == 0:
            raise ConfigError("ULSAD fit_constants: the training loader yielded no images")
        mean = s1 / n
        std = torch.sqrt(s2 / n - mean**2)
        bad = int((~torch.isfinite(std) | (std <= 0)).sum())
        if bad:
            raise ConfigError(f"ULSAD fit_constants: {bad} of {self.target_dim} feature channels have zero variance "
                              "over the training images (constant images?); cannot standardise")
        self.feat_mean.copy_(mean.float().view_as(self.feat_mean))
        self.feat_std.copy_(std.float().view_as(self.feat_std))

    def raw_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Un-normalised [B, 2, size, size] maps (channel 0 local, 1 global) after upsampling and blurring:
        the stage the quantiles are taken at."""
        u = self.features(x)
        rec = self.frn(u)
        ae = self.ae(x)
        c = self.target_dim
        d = torch.stack([distance(u, rec[:, :c], self.lambda_l), distance(ae, rec[:, c:], self.lambda_g)], dim=1)
        return torch.matmul(torch.matmul(self.head, d.float()), self.head.t())

    @torch.no_grad()
    def calibrate(self, loader: Any, device: torch.device) -> None:
        """q_0.9 and q_0.995 of the local and global maps over all pixels of the held-out GOOD images (labels
        other than 0 are skipped, as in the code); pools above 2^24 values are subsampled (seeded)."""
        maps = []
        for batch in loader:
            x = batch["image"].to(device)
            if "label" in batch:
                x = x[torch.as_tensor(batch["label"]).to(device) == 0]
            if len(x):
                maps.append(self.raw_maps(x).float().cpu())
        if not maps:
            raise ConfigError("ULSAD calibrate: no good images in the held-out loader; set val_fraction > 0")
        m = torch.cat(maps).transpose(0, 1).reshape(2, -1)
        q = torch.stack([quantile_pair(m[i]) for i in range(2)])
        self.set_quantiles(q)

    def set_quantiles(self, q: torch.Tensor) -> None:
        """Store [[qa, qb] local, [qa, qb] global] and bake the normalisation m' = (m - qa) * 0.1 / (qb - qa)."""
        q = torch.as_tensor(q, dtype=torch.float32).reshape(2, 2)
        if not torch.isfinite(q).all() or (q[:, 1] <= q[:, 0]).any():
            raise ConfigError(f"ULSAD quantiles must be finite with q_{Q_HIGH} > q_{Q_LOW} per branch, got "
                              f"{q.tolist()} (constant anomaly maps on the held-out images?)")
        self.quantiles.copy_(q)
        self._bake_normalisation()

    def _bake_normalisation(self) -> None:
        q = self.quantiles
        with torch.no_grad():
            if (q != 0).any():
                self.map_shift.copy_(q[:, 0].view(1, 2, 1, 1))
                self.map_scale.copy_((Q_TARGET / (q[:, 1] - q[:, 0])).view(1, 2, 1, 1))
            else:  # unset: no normalisation, the official `is_set` behaviour
                self.map_shift.zero_()
                self.map_scale.fill_(1.0)

    @staticmethod
    def _rederive_after_load(module: ULSAD, _incompatible: Any) -> None:
        """load_state_dict post-hook: the baked normalisation always follows the loaded quantiles."""
        module._bake_normalisation()

    @property
    def constants_fitted(self) -> bool:
        return bool((self.feat_mean != 0).any())

    @property
    def quantiles_set(self) -> bool:
        return bool((self.quantiles != 0).any())

    def package_constants(self) -> dict[str, Any]:
        """Channel mean/std and the four quantiles (also baked in the graph), plus where the precision path
        finds the normalisation initializers to re-derive the quantiles (`edge_ad.export.constants`)."""
        if not (self.constants_fitted and self.quantiles_set):
            log.warning("%s: packaging with %s; the map is not the trained ULSAD map", self.name or "ulsad",
                        " and ".join(w for w, ok in (("UNFITTED channel mean/std", self.constants_fitted),
                                                      ("UNSET quantiles", self.quantiles_set)) if not ok))
        q = self.quantiles.tolist()
        return {
            "channel_mean": [float(v) for v in self.feat_mean.flatten()],
            "channel_std": [float(v) for v in self.feat_std.flatten()],
            "quantiles": {"qa_local": q[0][0], "qb_local": q[0][1], "qa_global": q[1][0], "qb_global": q[1][1]},
            "status": {"channel_stats": "fitted" if self.constants_fitted else "unset",
                       "quantiles": "calibrated" if self.quantiles_set else "unset"},
            "rederive": {
                "kind": "quantile_map_normalization",
                "shift_initializer": f"model.{SHIFT_BUFFER}",
                "scale_initializer": f"model.{SCALE_BUFFER}",
                "branches": ["local", "global"],
                "levels": [Q_LOW, Q_HIGH],
                "target": Q_TARGET,
            },
        }

    # -- the two faces --------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B,3,S,S] normalised -> (anomaly_map [B,1,S,S] = mean of the normalised local/global maps,
        score [B] = its maximum)."""
        maps = (self.raw_maps(x) - self.map_shift) * self.map_scale
        amap = maps.mean(dim=1, keepdim=True)
        return amap, amap.flatten(1).amax(dim=1)

    def training_loss(self, x: torch.Tensor, step: int) -> torch.Tensor:
        """L_pl + L_pg + L_lg (official `UlsadModel.forward` training branch)."""
        u = self.features(x)
        ae = self.ae(x)
        rec = self.frn(u)
        c = self.target_dim
        loss_pl = distance(u, rec[:, :c], self.lambda_l).mean()
        loss_pg = distance(attention(u, u), attention(ae, u), self.lambda_a).mean()
        loss_lg = distance(ae, rec[:, c:], self.lambda_g).mean()
        return loss_pl + loss_pg + loss_lg

    def default_train_config(self) -> dict[str, Any]:
        """The official configuration: Adam lr 2e-4, L2 weight decay 2e-5, batch 8, no clipping, seed 40, MultiStepLR
        at epoch 200 of 200 (never fires, so constant). 200 epochs of a mean MVTec AD category (242 train
        images, 31 batches of 8) are ~6000 iterations; with one model for several categories, scale `iters` by
        the number of categories to keep the epochs."""
        return {
            "optimizer": "adam",
            "scheduler": "constant",
            "lr": 2e-4,
            "weight_decay": 2e-5,
            "betas": [0.9, 0.999],
            "eps": 1e-8,
            "amsgrad": False,
            "warmup_iters": 0,
            "iters": 6000,
            "batch": 8,
            "grad_clip": None,
            "seed": 40,
        }

    # -- backbone weights -----------------------------------------------------------------------------------
    def load_encoder_weights(self, path: str | Path) -> None:
        """Load a timm/torchvision classification checkpoint of the backbone. Keys the truncated backbone does not
        hold (layer4.*, fc.*) are ignored; any other missing or unexpected key is an error."""
        from edge_ad.fileio import sha256_file
        from edge_ad.models.weights import load_state_dict_file

        sd = load_state_dict_file(path)
        sd = sd.get("model", sd.get("state_dict", sd))
        expected = set(self.backbone.state_dict())
        sd = {k: v for k, v in sd.items() if not k.startswith(("layer4.", "fc."))}
        missing = sorted(expected - set(sd))
        unexpected = sorted(set(sd) - expected)
        if missing or unexpected:
            raise ConfigError(
                f"{path}: not backbone weights for {self.name or type(self).__name__}: "
                f"{len(missing)} missing key(s) {missing[:5]}, {len(unexpected)} unexpected key(s) {unexpected[:5]}"
            )
        try:
            self.backbone.load_state_dict(sd, strict=True)
        except RuntimeError as e:  # shape mismatch, e.g. a ResNet-50 checkpoint for WRN50-2
            raise ConfigError(f"{path}: backbone weights do not fit: {e}") from e
        self.encoder_weights = f"file:{sha256_file(path)[0]}"


def quantile_pair(values: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """[q_0.9, q_0.995] of a flat tensor (torch.quantile, linear interpolation); more than 2^24 values are
    subsampled at random (seeded here; the official code uses the global RNG)."""
    v = values.flatten().float()
    if v.numel() > MAX_QUANTILE_ELEMS:
        g = torch.Generator().manual_seed(seed)
        v = v[torch.randperm(v.numel(), generator=g)[:MAX_QUANTILE_ELEMS]]
    return torch.quantile(v, torch.tensor([Q_LOW, Q_HIGH]))


# ---------------------------------------------------------------------------------------------------------
# variants


@dataclass(frozen=True)
class _Variant:
    timm_name: str
    target_dim: int


_VARIANTS: dict[str, _Variant] = {
    # pinned: timm <= 0.6.12 (the official range) maps `wide_resnet50_2` to these RACM weights
    "ulsad": _Variant("wide_resnet50_2", 384),
    # 384 backbone channels averaged in groups of 8 (not 4) to keep the FRN ~1M parameters for CPU tests
    "ulsad-tiny": _Variant("resnet10t", 48),
}


def _build(
    name: str,
    *,
    pretrained: bool = False,
    weights: str | None = None,
    crop: int | None = None,
    resize: int | None = None,
    lambda_l: float = 0.5,
    lambda_g: float = 0.5,
    lambda_a: float | None = None,
) -> ULSAD:
    import timm

    v = _VARIANTS[name]
    size = int(crop or resize or 256)
    resize = int(resize or size)
    if size < 256 or size % 64:
        raise ConfigError(f"{name}: crop (model input side) must be a multiple of 64 and >= 256 (the global "
                          f"autoencoder's 8x8 conv needs an 8x8 map at stride 32), got {size}")
    if resize < size:
        raise ConfigError(f"{name}: resize {resize} is smaller than crop {size}")
    for key, lam in (("lambda_l", lambda_l), ("lambda_g", lambda_g), ("lambda_a", lambda_a)):
        if lam is not None and not (math.isfinite(float(lam)) and float(lam) >= 0.0):
            raise ConfigError(f"{name}: {key} (cosine weight of the distance) must be a finite value >= 0, got {lam}")

    # resolve pretrained weights before building, so a missing cache entry fails fast
    ckpt = wcache.encoder_checkpoint(name, pretrained=pretrained, weights=weights)
    backbone = timm.create_model(v.timm_name, pretrained=False, features_only=True, out_indices=OUT_INDICES)
    model = ULSAD(backbone, size=size, resize=resize, target_dim=v.target_dim, lambda_l=lambda_l,
                  lambda_g=lambda_g, lambda_a=lambda_a)
    if ckpt is not None:
        model.load_encoder_weights(ckpt)
    return model


register_variants("ulsad", _build, _VARIANTS)
