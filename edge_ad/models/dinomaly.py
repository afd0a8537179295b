"""Dinomaly (Guo et al., CVPR 2025): frozen DINOv2-R encoder, noisy MLP bottleneck, linear-attention decoder.

Exact to the official code (github.com/guojiajeremy/Dinomaly at c5c76d0):
8 raw encoder block outputs (no final norm) are averaged into a Dropout-noised MLP bottleneck; 8 pre-norm
linear-attention blocks reconstruct them. Encoder taps {0-3}/{4-7} are averaged into 2 groups and paired with
the *reversed* decoder outputs. Prefix tokens (CLS + 4 registers) flow through bottleneck and decoder and are
dropped only before the cosine. Training uses the global cosine loss with batch-wide hard mining.

Export face: the pos-embed is resampled once with DINOv2's own interpolation and baked into a buffer; the
anomaly head (resize to input size, resize to 256, 5x5 sigma=4 zero-padded blur) is the constant matrix
product A a A^T; the score is the mean of the top 1% (655) pixels of that 256x256 map.

Variants: `dinomaly-s/b/l` are the paper's models (input 448 -> crop 392, 28x28 tokens).
`dinomaly-tiny` is NOT from the paper: a small randomly initialised ViT for CPU tests and demos only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from edge_ad.errors import ConfigError
from edge_ad.models import weights as wcache
from edge_ad.models.base import AnomalyModel
from edge_ad.models.layers import (
    DecoderBlock,
    NoisyBottleneck,
    init_trunc_normal_,
    interpolate_pos_embed_dinov2,
    map_head_matrix,
)
from edge_ad.models.registry import register_variants
from edge_ad.runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from edge_ad.trt_ops import TOPK_MAX_K

log = logging.getLogger(__name__)

PATCH = 14
NUM_REG = 4
#: encoder taps / decoder outputs averaged into the two groups that are compared (official fuse lists)
FUSE_GROUPS: tuple[tuple[int, ...], ...] = ((0, 1, 2, 3), (4, 5, 6, 7))


def hard_mining_p(step: int) -> float:
    """Fraction of easiest points whose gradient is scaled down: ramps 0 -> 0.9 over 1000 iterations."""
    return min(0.9 * step / 1000, 0.9)


def hard_mining_cosine_loss(
    en: Sequence[torch.Tensor], de: Sequence[torch.Tensor], p: float, factor: float = 0.1
) -> torch.Tensor:
    """Official `global_cosine_hm_percent`: per group, one cosine per image over the flattened C*H*W vectors,
    mean over batch then groups; the gradient of points whose distance is below the batch-wide k-th largest
    (k = numel * (1 - p)) is multiplied by `factor`. Hook-free: b_eff = w*b + (1-w)*b.detach()."""
    loss = torch.zeros((), device=de[0].device, dtype=torch.float32)
    for a, b in zip(en, de):
        a = a.detach()
        with torch.no_grad():
            dist = 1 - F.cosine_similarity(a, b, dim=1)  # [B,H,W]
            k = max(1, int(dist.numel() * (1 - p)))
            thr = torch.topk(dist.flatten(), k).values[-1]
            w = torch.where(dist < thr, factor, 1.0).to(b.dtype).unsqueeze(1)
        b = w * b + (1 - w) * b.detach()
        loss = loss + (1 - F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)).mean()
    return loss / len(en)


class Dinomaly(AnomalyModel):
    """Dinomaly around a timm DINOv2-style `VisionTransformer` (patch 14, 4 registers, `no_embed_class`).

    The whole encoder is kept (so checkpoints load unchanged) but frozen, and only blocks up to the last
    target layer run. `crop` is the square model input side (multiple of 14); `eval_size` the side of the
    output map; `dropout` the bottleneck noise; `attn_eps` the linear-attention denominator guard.
    """

    amp_safe = True
    amp_note = "official code FP32; autocast keeps LayerNorm and the cosine loss in FP32 (dinomaly.md 11.3)"

    encoder: VisionTransformer
    pos_embed_baked: torch.Tensor
    head_matrix: torch.Tensor

    def __init__(
        self,
        encoder: VisionTransformer,
        target_layers: Sequence[int],
        *,
        crop: int,
        resize: int,
        eval_size: int = 256,
        dropout: float = 0.2,
        attn_eps: float = 1e-6,
        max_ratio: float = 0.01,
    ) -> None:
        super().__init__()
        if len(target_layers) != 8:
            raise ValueError(f"Dinomaly fuses 8 encoder taps, got target_layers={list(target_layers)}")
        layout_ok = encoder.num_reg_tokens == NUM_REG and encoder.no_embed_class
        if not layout_ok or encoder.cls_token is None or encoder.pos_embed is None:
            raise ValueError("encoder must be a timm VisionTransformer with a class token, 4 registers, no_embed_class")
        if crop % PATCH:
            raise ValueError(f"input side {crop} is not a multiple of the patch size {PATCH}")
        self.encoder = encoder.requires_grad_(False)
        self.target_layers = tuple(int(i) for i in target_layers)
        self.grid = crop // PATCH
        self.eval_size = eval_size
        self.topk = int(eval_size * eval_size * max_ratio)
        self.preprocess = Preprocess(resize=(resize, resize), crop=(crop, crop), mean=IMAGENET_MEAN, std=IMAGENET_STD)
        self.encoder_weights = "random-init"

        dim = encoder.embed_dim
        if dim % 64:
            raise ValueError(f"Dinomaly's decoder uses 64-d heads: embed_dim {dim} is not a multiple of 64")
        # ModuleList of one, as in the reference, so trained Dinomaly checkpoints keep their key names
        self.bottleneck = nn.ModuleList([NoisyBottleneck(dim, 4 * dim, drop=dropout)])
        # 64-d heads, as in the reference (D/64 heads)
        self.decoder = nn.ModuleList([DecoderBlock(dim, dim // 64, attn_eps=attn_eps) for _ in range(8)])
        init_trunc_normal_(self.bottleneck)
        init_trunc_normal_(self.decoder)

        self.register_buffer("pos_embed_baked", torch.empty(0), persistent=False)
        self.bake_pos_embed()
        head = torch.from_numpy(map_head_matrix(self.grid, crop, eval_size)).float()
        self.register_buffer("head_matrix", head.to(self.pos_embed_baked.device), persistent=False)
        self.register_load_state_dict_post_hook(Dinomaly._rebake_after_load)

    # -- encoder ------------------------------------------------------------------------------------------
    @staticmethod
    def _rebake_after_load(module: Dinomaly, _incompatible: Any) -> None:
        """load_state_dict post-hook: a new encoder pos-embed invalidates the baked one."""
        module.bake_pos_embed()

    def bake_pos_embed(self) -> None:
        """Resample the encoder's patch pos-embed to this model's token grid (DINOv2's interpolation)."""
        pos = self.encoder.pos_embed
        assert pos is not None  # checked in __init__
        with torch.no_grad():
            baked = interpolate_pos_embed_dinov2(pos, self.grid).to(pos.dtype).clone()
        # re-register (not assign): keeps it out of state_dict, which holds the source pos-embed only
        self.register_buffer("pos_embed_baked", baked, persistent=False)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Raw outputs of the target blocks, tokens [CLS, reg x4, patches]; later blocks are not run."""
        enc = self.encoder
        assert enc.cls_token is not None and enc.reg_token is not None  # checked in __init__
        with torch.no_grad():
            t = enc.patch_embed.norm(enc.patch_embed.proj(x).flatten(2).transpose(1, 2))
            t = t + self.pos_embed_baked
            b = t.shape[0]
            t = torch.cat([enc.cls_token.expand(b, -1, -1), enc.reg_token.expand(b, -1, -1), t], dim=1)
            t = enc.norm_pre(t)
            taps = []
            for i in range(self.target_layers[-1] + 1):
                t = enc.blocks[i](t)
                if i in self.target_layers:
                    taps.append(t)
        return taps

    # -- decoder / features ---------------------------------------------------------------------------------
    def decode(self, taps: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Bottleneck on the mean of the taps, then the 8 decoder blocks; returned reversed (last block first)."""
        z = self.bottleneck[0](torch.stack(list(taps), dim=1).mean(dim=1))
        outs = []
        for blk in self.decoder:
            z = blk(z)
            outs.append(z)
        return outs[::-1]

    def _to_map(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, 5+n*n, D] -> patch tokens as [B, D, n, n]."""
        t = tokens[:, 1 + NUM_REG :, :]
        return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], self.grid, self.grid)

    def features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(encoder groups, decoder groups), each a list of 2 tensors [B, D, n, n]."""
        taps = self.encode(x)
        de = self.decode(taps)
        en_g = [self._to_map(torch.stack([taps[i] for i in g], 1).mean(1)) for g in FUSE_GROUPS]
        de_g = [self._to_map(torch.stack([de[i] for i in g], 1).mean(1)) for g in FUSE_GROUPS]
        return en_g, de_g

    # -- the two faces ------------------------------------------------------------------------------------
    def training_loss(self, x: torch.Tensor, step: int) -> torch.Tensor:
        en, de = self.features(x)
        return hard_mining_cosine_loss(en, de, hard_mining_p(step))

    def token_map(self, en: Sequence[torch.Tensor], de: Sequence[torch.Tensor]) -> torch.Tensor:
        """Mean over groups of 1 - cos(e, d) per token, in float32: [B, n, n]."""
        total = torch.zeros((), device=en[0].device, dtype=torch.float32)
        for e, d in zip(en, de):
            e = e.float()
            d = d.float()
            e = e / torch.linalg.vector_norm(e, dim=1, keepdim=True).clamp_min(1e-8)
            d = d / torch.linalg.vector_norm(d, dim=1, keepdim=True).clamp_min(1e-8)
            total = total + (1 - (e * d).sum(dim=1))
        return total / len(en)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B,3,crop,crop] normalised -> (anomaly_map [B,1,eval,eval], score [B] = top-1% mean)."""
        en, de = self.features(x)
        a = self.token_map(en, de)
        amap = torch.matmul(torch.matmul(self.head_matrix, a), self.head_matrix.t()).unsqueeze(1)
        score = torch.topk(amap.flatten(1), self.topk, dim=1).values.mean(dim=1)
        return amap, score

    def default_train_config(self) -> dict[str, Any]:
        """The reference MVTec multi-class training configuration."""
        return {
            "optimizer": "stable_adamw",
            "scheduler": "warm_cosine",
            "lr": 2e-3,
            "final_lr": 2e-4,
            "betas": [0.9, 0.999],
            "weight_decay": 1e-4,
            "eps": 1e-10,
            "amsgrad": True,
            "warmup_iters": 100,
            "iters": 10000,
            "batch": 16,
            "grad_clip": 0.1,
            "seed": 1,
        }

    # -- encoder weights ----------------------------------------------------------------------------------
    def load_encoder_weights(self, path: str | Path) -> None:
        """Load a timm-format or official DINOv2 hub checkpoint into the encoder; any missing or unexpected
        key is an error (a silent partial load leaves a random encoder)."""
        from edge_ad.fileio import sha256_file
        from edge_ad.models.weights import load_state_dict_file

        sd = load_state_dict_file(path)
        sd = sd.get("model", sd.get("state_dict", sd))
        if "mask_token" in sd or "register_tokens" in sd:  # official DINOv2 layout -> timm layout
            from timm.models.vision_transformer import checkpoint_filter_fn

            sd = checkpoint_filter_fn(dict(sd), self.encoder)
        expected = set(self.encoder.state_dict())
        missing = sorted(expected - set(sd))
        unexpected = sorted(set(sd) - expected)
        if missing or unexpected:
            raise ConfigError(
                f"{path}: not encoder weights for {self.name or type(self).__name__}: "
                f"{len(missing)} missing key(s) {missing[:5]}, {len(unexpected)} unexpected key(s) {unexpected[:5]}"
            )
        try:
            self.encoder.load_state_dict(sd, strict=True)
        except RuntimeError as e:  # shape mismatch, e.g. a ViT-S checkpoint for a ViT-B model
            raise ConfigError(f"{path}: encoder weights do not fit: {e}") from e
        self.bake_pos_embed()
        self.encoder_weights = f"file:{sha256_file(path)[0]}"


# ---------------------------------------------------------------------------------------------------------
# variants


@dataclass(frozen=True)
class _Variant:
    timm_name: str  # "" = the in-repo tiny ViT
    target_layers: tuple[int, ...]
    resize: int
    crop: int


_VARIANTS: dict[str, _Variant] = {
    "dinomaly-s": _Variant(
        "vit_small_patch14_reg4_dinov2", tuple(range(2, 10)), 448, 392
    ),
    "dinomaly-b": _Variant(
        "vit_base_patch14_reg4_dinov2", tuple(range(2, 10)), 448, 392
    ),
    "dinomaly-l": _Variant(
        "vit_large_patch14_reg4_dinov2", tuple(range(4, 19, 2)), 448, 392
    ),
    "dinomaly-tiny": _Variant("", tuple(range(2, 10)), 256, 224),
}


def _tiny_encoder() -> VisionTransformer:
    """128-d ViT/14 with 4 registers, 10 blocks, native 224 (16x16 grid); no pretrained weights exist.

    128-d (2 heads) rather than 192-d to keep CPU tests and demos short: measured at batch 8 on 2 CPU cores,
    192-d trains at ~1.6 it/s, this one at ~2.7 it/s."""
    return VisionTransformer(
        img_size=224, patch_size=PATCH, embed_dim=128, depth=10, num_heads=2, mlp_ratio=4.0,
        reg_tokens=NUM_REG, no_embed_class=True, num_classes=0, init_values=None,
    )


def _build(
    name: str,
    *,
    pretrained: bool = False,
    weights: str | None = None,
    crop: int | None = None,
    resize: int | None = None,
    eval_size: int = 256,
    dropout: float = 0.2,
    attn_eps: float = 1e-6,
) -> Dinomaly:
    v = _VARIANTS[name]
    crop = int(crop or v.crop)
    resize = int(resize or (v.resize if crop == v.crop else crop * 8 // 7))
    if crop <= 0 or crop % PATCH:
        raise ConfigError(f"{name}: crop (model input side) must be a positive multiple of {PATCH}, got {crop}")
    if resize < crop:
        raise ConfigError(f"{name}: resize {resize} is smaller than crop {crop}")
    if not 0 < int(eval_size * eval_size * 0.01) <= TOPK_MAX_K:
        raise ConfigError(
            f"{name}: eval_size {eval_size} gives a top-1% k outside 1..{TOPK_MAX_K} (TensorRT TopK limit)"
        )
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"{name}: dropout must be in [0, 1), got {dropout}")

    # resolve pretrained weights before building, so a missing cache entry fails fast
    ckpt = wcache.encoder_checkpoint(name, pretrained=pretrained, weights=weights)
    if v.timm_name:
        import timm

        encoder = cast(VisionTransformer, timm.create_model(v.timm_name, pretrained=False, img_size=518, num_classes=0))
    else:
        encoder = _tiny_encoder()
    model = Dinomaly(
        encoder, v.target_layers, crop=crop, resize=resize, eval_size=eval_size, dropout=dropout, attn_eps=attn_eps
    )

    if ckpt is not None:
        model.load_encoder_weights(ckpt)
    return model


register_variants("dinomaly", _build, _VARIANTS)
