"""DualAD (He et al., Electronics 14(3):594, 2025): a coupled dual-branch reconstruction network (CDBN) on frozen
WideResNet50-2 features, for multi-class unsupervised anomaly detection.

Follows the official code (github.com/cyhaan/DualAD at 04ce68d), see docs spec `dualad.md`:

* features: WRN50-2 layers 1-3 (256/512/1024 channels, strides 4/8/16), fused by the MFAA neck into 1792 x 14 x 14.
  MFAA is nearest-upsampling to stride 4 then 4x4 average pooling, which is exactly
  ``cat(avgpool4(layer1), avgpool2(layer2), layer3)``: that closed form is used (no Resize in the graph) and layer4
  is never built.
* CDBN = wide-shallow branch (WSN) around a narrow-deep branch (NDN, 256-d post-LN transformer, 8 heads, FFN 1024,
  one learned 2-D position embedding added to queries and keys only). Every attention is UniAD's
  neighbour-masked attention: a token never attends to the 7x7 window around itself.
  The WSN latent (1024-d) is cut into 4 chunks of 256: their sum feeds the NDN encoder, chunk i is the query of
  NDN decoder layer i, and the 4 decoder outputs are concatenated back to 1024-d for the WSN output.
  - ``dualad-he`` (heterogeneous, the released config and the paper's headline numbers): the WSN is an MLP
    1792->4096->1024 / 1024->4096->1792 and each chunk is replaced by a MemAE-style memory read (196 items).
  - ``dualad-ho`` (homogeneous): the WSN is a 1024-d transformer (2 encoder + 2 decoder layers with learned
    queries, FFN 4096) with no memory. NOT in the official repo: its depth (2+2) and the absence of memory are
    inferred from the paper's parameter table (they reproduce every Ho entry to +-0.05 M), see spec 3.4.
* training: feature noise x + 3.2 * std_tokens(x) * N(0,1) on the input tokens only; loss = sum over the three
  backbone groups of the per-group MSE against the clean features.
* scoring: per-group RMS error maps multiplied, bilinear (align_corners=True) 14 -> 224 pixel map, image score =
  max of the 16x16 (stride 1) box-mean of that map. No smoothing, no normalisation.

Export fixes (spec 9): the memory threshold is ``torch.where`` (F.threshold does not export), the neighbour mask
is a constant buffer with the finite fill value -1e4 (identical to -inf after softmax in fp32, safe in fp16),
attention is written with MatMul (no Einsum), learned queries are expanded (no batch baked in), and the upsample
is a constant matrix product. The memory read (``cdbn/memory_modules.*``) and the scoring head (``head``) compute
in float32 and must stay fp32 in reduced-precision engines.

Official checkpoints (keys ``backbone.*`` / ``reconstruction.*``) load with ``DualAD.load_official_checkpoint`` for
side-by-side comparisons; the backbone alone loads from torchvision/timm WRN50-2 weights (offline cache name
``wide_resnet50_2.tv_in1k``, the torchvision V1 weights the official code uses).

Variants: ``dualad-he`` / ``dualad-ho`` are the paper's (224x224 input, no crop). ``dualad-he-tiny`` /
``dualad-ho-tiny`` are NOT from the paper: small random-init ResNet + narrow CDBN for CPU tests and demos only.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from timm.models.resnet import BasicBlock, ResNet
from torch import nn

from edge_ad.errors import ConfigError
from edge_ad.models import weights as wcache
from edge_ad.models.base import AnomalyModel
from edge_ad.models.layers import bilinear_matrix
from edge_ad.models.registry import register_variants
from edge_ad.runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess

log = logging.getLogger(__name__)

#: stride of the fused token map (MFAA `outstrides: [16]`)
TOKEN_STRIDE = 16
#: additive attention-mask value inside the masked neighbourhood; exp(-1e4 + O(100)) is exactly 0 in fp32
MASK_FILL = -1.0e4
#: side of the masked attention neighbourhood (official `neighbor_size: [7, 7]`)
NEIGHBOUR = 7


# ---------------------------------------------------------------------------------------------------------
# frozen feature extractor


class ResNetTrunk(nn.Module):
    """Stem and layers 1-3 of a timm ResNet (layer4 and the classifier are dropped: DualAD never uses them).

    Parameter names are those of timm/torchvision (`conv1`, `bn1`, `layer1.0.conv1`, ...), so a torchvision
    `wide_resnet50_2-95faca4d.pth` or timm `wide_resnet50_2.tv_in1k` checkpoint loads after removing its
    `layer4.*`/`fc.*` entries.
    """

    conv1: nn.Module
    bn1: nn.Module
    act1: nn.Module
    maxpool: nn.Module
    layer1: nn.Module
    layer2: nn.Module
    layer3: nn.Module

    def __init__(self, net: ResNet) -> None:
        super().__init__()
        for name in ("conv1", "bn1", "act1", "maxpool", "layer1", "layer2", "layer3"):
            self.add_module(name, cast(nn.Module, getattr(net, name)))
        info: dict[str, dict[str, Any]] = {f["module"]: f for f in cast(list[dict[str, Any]], net.feature_info)}
        self.channels: tuple[int, ...] = tuple(int(info[f"layer{i}"]["num_chs"]) for i in (1, 2, 3))
        self.strides: tuple[int, ...] = tuple(int(info[f"layer{i}"]["reduction"]) for i in (1, 2, 3))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        l1 = self.layer1(x)
        l2 = self.layer2(l1)
        return [l1, l2, self.layer3(l2)]


def fuse_features(feats: Sequence[torch.Tensor], strides: Sequence[int]) -> torch.Tensor:
    """MFAA neck in closed form: average-pool every map to stride 16, concatenate channels -> [B, sum C, H/16, W/16].

    Nearest upsampling to the finest stride followed by block averaging equals plain average pooling of the finer
    maps (each pooled value is the mean of repeated copies), so no Resize is needed."""
    out = [f if s == TOKEN_STRIDE else F.avg_pool2d(f, TOKEN_STRIDE // s) for f, s in zip(feats, strides)]
    return torch.cat(out, dim=1)


# ---------------------------------------------------------------------------------------------------------
# CDBN building blocks (official `models/reconstructions/dualad.py`, same module names)


def neighbour_mask(grid: int, size: int = NEIGHBOUR, fill: float = MASK_FILL) -> torch.Tensor:
    """[grid^2, grid^2] additive *neighbour-masked attention* mask (UniAD's): `fill` where the key token lies in the
    size x size window around the query (the query itself included), 0 elsewhere, so no token can copy itself or
    its neighbours. This is what the official `generate_mask` computes (window -> -inf, rest -> 0; the spec's
    wording has it the other way round); there it is rebuilt on the GPU every forward, here it is a constant."""
    r = torch.arange(grid)
    near = (r[:, None] - r[None, :]).abs() <= size // 2  # [grid, grid] along one axis
    inside = near[:, None, :, None] & near[None, :, None, :]  # [h1, w1, h2, w2]
    mask = torch.zeros(grid * grid, grid * grid)
    return mask.masked_fill(inside.reshape(grid * grid, grid * grid), fill)


class PositionEmbeddingLearned(nn.Module):
    """Learned 2-D absolute position embedding: pos[h, w] = cat(col[w], row[h]) -> [1, H*W, D]; init U[0, 1)."""

    def __init__(self, grid: int, dim: int) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"position embedding width {dim} must be even")
        self.grid = grid
        self.row_embed = nn.Parameter(torch.empty(grid, dim // 2))
        self.col_embed = nn.Parameter(torch.empty(grid, dim // 2))
        nn.init.uniform_(self.row_embed)
        nn.init.uniform_(self.col_embed)

    def forward(self) -> torch.Tensor:
        g = self.grid
        pos = torch.cat(
            [self.col_embed.unsqueeze(0).expand(g, g, -1), self.row_embed.unsqueeze(1).expand(g, g, -1)], -1
        )
        return pos.reshape(1, g * g, -1)


class MultiHeadAttention(nn.Module):
    """Separate q/k/v/out projections, scale (d/h)^-0.5 on q, additive mask, softmax, dropout on the output.
    MatMul instead of the official einsum (same maths, exports without Einsum)."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.1) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        q = self._heads(self.q_proj(query)) * self.scale
        k, v = self._heads(self.k_proj(key)), self._heads(self.v_proj(value))
        attn = q @ k.transpose(-2, -1)
        if mask is not None:
            attn = attn + mask
        out = attn.softmax(dim=-1) @ v
        b, _, n, _ = out.shape
        return self.dropout(self.out_proj(out.transpose(1, 2).reshape(b, n, -1)))


class FeedForward(nn.Module):
    """Linear -> ReLU -> Dropout -> Linear -> Dropout."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.dropout(self.act(self.fc1(x)))))


class TransformerEncoderLayer(nn.Module):
    """Post-LN: x = LN(x + MHA(x+pos, x+pos, x)); x = LN(x + FFN(x))."""

    def __init__(self, dim: int, num_heads: int, ffn: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(dim, num_heads, dropout)
        self.ffn = FeedForward(dim, ffn, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        qk = x + pos
        x = self.norm1(x + self.attn(qk, qk, x, mask))
        return self.norm2(x + self.ffn(x))


class TransformerDecoderLayer(nn.Module):
    """Post-LN, called as (query t, previous decoder output d, encoder output e):
    y = LN(t + MHA(t+pos, e+pos, e)); y = LN(y + MHA(y+pos, d+pos, d)); y = LN(y + FFN(y))."""

    def __init__(self, dim: int, num_heads: int, ffn: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.attn1 = MultiHeadAttention(dim, num_heads, dropout)
        self.attn2 = MultiHeadAttention(dim, num_heads, dropout)
        self.ffn = FeedForward(dim, ffn, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, query: torch.Tensor, prev: torch.Tensor, enc: torch.Tensor, pos: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
        y = self.norm1(query + self.attn1(query + pos, enc + pos, enc, mask))
        y = self.norm2(y + self.attn2(y + pos, prev + pos, prev, mask))
        return self.norm3(y + self.ffn(y))


class TransformerEncoder(nn.Module):
    """A stack of encoder layers sharing one position embedding and one mask."""

    def __init__(self, num_layers: int, dim: int, num_heads: int, ffn: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.layers = nn.ModuleList([TransformerEncoderLayer(dim, num_heads, ffn, dropout) for _ in range(num_layers)])

    def forward(self, x: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, pos, mask)
        return x


class QueryLearned(nn.Module):
    """A learned [N, D] query (init N(0,1)), expanded over the batch (the official `torch.stack([w]*B)` would bake
    the batch size into a traced graph)."""

    def __init__(self, num_tokens: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_tokens, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight.unsqueeze(0).expand(x.shape[0], -1, -1)


class TransformerDecoder(nn.Module):
    """Decoder stack: layer i gets query `queries[i]` (or its learned query), the previous layer's output (the
    encoder output for the first) and the encoder output; returns every layer's output."""

    def __init__(self, num_layers: int, dim: int, num_heads: int, ffn: int, dropout: float = 0.1,
                 learned_queries: int = 0) -> None:
        super().__init__()
        self.learned_queries = (
            nn.ModuleList([QueryLearned(learned_queries, dim) for _ in range(num_layers)]) if learned_queries else None
        )
        self.layers = nn.ModuleList([TransformerDecoderLayer(dim, num_heads, ffn, dropout) for _ in range(num_layers)])

    def forward(self, enc: torch.Tensor, queries: Sequence[torch.Tensor] | None, pos: torch.Tensor,
                mask: torch.Tensor | None) -> list[torch.Tensor]:
        if self.learned_queries is not None:
            queries = [lq(enc) for lq in self.learned_queries]
        if queries is None or len(queries) != len(self.layers):
            raise ValueError(f"decoder of {len(self.layers)} layers needs as many queries")
        x, outs = enc, []
        for q, layer in zip(queries, self.layers):
            x = layer(q, x, enc, pos, mask)
            outs.append(x)
        return outs


class MemoryModule(nn.Module):
    """MemAE-style memory read (official `MemoryModule`), computed in float32:
    a = softmax(cos(x, W) * scale); a = a if a > 1/M else 0; a = a / ||a||_1; out = a @ W (replaces x).

    The hard shrink is `torch.where` (F.threshold with a non-zero threshold does not export to ONNX). The
    threshold is discontinuous, so fp16/int8 noise in the logits could flip which items survive: keep this fp32.
    """

    def __init__(self, num_embeds: int, dim: int, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale
        self.shrink_thres = 1.0 / num_embeds
        w = torch.randn(num_embeds, dim)
        self.weight = nn.Parameter(w / w.norm(dim=-1, keepdim=True))  # unit-norm rows (init_norm 1)

    @staticmethod
    def _l2n(x: torch.Tensor) -> torch.Tensor:
        return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(1e-12)  # F.normalize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.float()
        a = (self._l2n(x.float()) * self.scale) @ self._l2n(w).t()
        a = a.softmax(dim=-1)
        a = torch.where(a > self.shrink_thres, a, 0.0)
        a = a / a.sum(dim=-1, keepdim=True).clamp_min(1e-12)  # F.normalize(p=1): entries are >= 0
        return a @ w


# ---------------------------------------------------------------------------------------------------------
# the coupled dual-branch network


@dataclass(frozen=True)
class CDBNConfig:
    """Sizes of the CDBN. `wide` is "mlp" (He) or "transformer" (Ho); the chunk width equals `hidden_dim` (the
    official `proj_head_dim == hidden_dim`, so `head_proj1/2` are Identity) and the chunk count equals
    `dec_layers`; `memory` is the number of items per chunk memory (0 = none); `wide_layers` is the MLP depth
    (He: hidden layers of each MLP) or the wide transformer's encoder = decoder depth (Ho)."""

    wide: str
    hidden_dim: int = 256
    enc_layers: int = 4
    dec_layers: int = 4
    num_heads: int = 8
    ffn: int = 1024
    mlp_ratio: float = 4.0
    wide_layers: int = 1
    memory: int = 196
    dropout: float = 0.1

    @property
    def wide_dim(self) -> int:
        return self.hidden_dim * self.dec_layers


class CDBN(nn.Module):
    """Coupled dual-branch network on tokens [B, N, C] -> reconstructed tokens [B, N, C] (see module docstring).

    Submodule names follow the official `DualAD` reconstruction (`in_proj`, `out_proj`, `proj_encoder`,
    `proj_decoder`, `memory_modules`, `encoder`, `decoder`); the one position embedding shared by every layer is
    `pos_embed`, and Ho's Linear that widens it for the wide transformer is `pos_proj`.
    Init: xavier-uniform weights and zero biases for every Linear (memories, position embeddings and learned
    queries keep their own init), as the official `initializer: xavier_uniform`.
    """

    def __init__(self, in_dim: int, grid: int, cfg: CDBNConfig, neighbour: int = NEIGHBOUR) -> None:
        super().__init__()
        self.cfg = cfg
        d, wd = cfg.hidden_dim, cfg.wide_dim
        n_tok = grid * grid
        self.pos_embed = PositionEmbeddingLearned(grid, d)
        self.pos_proj: nn.Linear | None = None
        self.proj_encoder: TransformerEncoder | None = None
        self.proj_decoder: TransformerDecoder | None = None
        self.in_proj: nn.Module
        self.out_proj: nn.Module
        if cfg.wide == "mlp":
            hid = int(wd * cfg.mlp_ratio)
            self.in_proj = _mlp([in_dim] + [hid] * cfg.wide_layers + [wd])
            self.out_proj = _mlp([wd] + [hid] * cfg.wide_layers + [in_dim])
        elif cfg.wide == "transformer":
            ffn = int(wd * cfg.mlp_ratio)
            self.in_proj = nn.Linear(in_dim, wd)
            self.out_proj = nn.Linear(wd, in_dim)
            self.pos_proj = nn.Linear(d, wd)
            self.proj_encoder = TransformerEncoder(cfg.wide_layers, wd, cfg.num_heads, ffn, cfg.dropout)
            self.proj_decoder = TransformerDecoder(cfg.wide_layers, wd, cfg.num_heads, ffn, cfg.dropout,
                                                   learned_queries=n_tok)
        else:
            raise ValueError(f"CDBN wide branch must be 'mlp' or 'transformer', got {cfg.wide!r}")
        self.memory_modules = (
            nn.ModuleList([MemoryModule(cfg.memory, d) for _ in range(cfg.dec_layers)]) if cfg.memory else None
        )
        self.encoder = TransformerEncoder(cfg.enc_layers, d, cfg.num_heads, cfg.ffn, cfg.dropout)
        self.decoder = TransformerDecoder(cfg.dec_layers, d, cfg.num_heads, cfg.ffn, cfg.dropout)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        self.register_buffer("attn_mask", neighbour_mask(grid, neighbour), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos, mask = self.pos_embed(), self.attn_mask
        wide_pos = self.pos_proj(pos) if self.pos_proj is not None else None
        x = self.in_proj(x)
        if self.proj_encoder is not None:
            x = self.proj_encoder(x, wide_pos, mask)
        chunks = list(torch.split(x, self.cfg.hidden_dim, dim=-1))
        if self.memory_modules is not None:
            chunks = [mem(c).to(c.dtype) for mem, c in zip(self.memory_modules, chunks)]
        enc = self.encoder(sum(chunks[1:], chunks[0]), pos, mask)  # left-to-right, as the official sum()
        x = torch.cat(self.decoder(enc, chunks, pos, mask), dim=-1)
        if self.proj_decoder is not None:
            x = self.proj_decoder(x, None, wide_pos, mask)[-1]
        return self.out_proj(x)


def _mlp(dims: Sequence[int]) -> nn.Sequential:
    """Linear layers with ReLU between them (official `proj_type: mlp`)."""
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


# ---------------------------------------------------------------------------------------------------------
# scoring head


class ScoreHead(nn.Module):
    """Official `cal_anomaly_score` in float32: per-group RMS error maps, multiplied; bilinear (align_corners=True)
    to the input size as the constant product R a R^T; image score = max of the `pool` x `pool` stride-1 box mean.

    Products of three sub-unit values and the ranking they define are what the metrics read: keep this fp32."""

    resize_matrix: torch.Tensor

    def __init__(self, groups: Sequence[int], grid: int, size: int, pool: int = 16) -> None:
        super().__init__()
        self.groups = [int(g) for g in groups]
        self.pool = pool
        self.register_buffer(
            "resize_matrix", torch.from_numpy(bilinear_matrix(grid, size, True)).float(), persistent=False
        )

    def forward(self, feat: torch.Tensor, rec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        err = (rec.float() - feat.float()) ** 2
        a = torch.ones((), dtype=torch.float32, device=err.device)
        for e in torch.split(err, self.groups, dim=1):
            a = a * e.mean(dim=1, keepdim=True).sqrt()
        r = self.resize_matrix
        amap = r @ a @ r.t()
        score = F.avg_pool2d(amap, self.pool, stride=1).flatten(1).amax(dim=1)
        return amap, score


# ---------------------------------------------------------------------------------------------------------
# the model


class DualAD(AnomalyModel):
    """DualAD around a frozen timm ResNet trunk (layers 1-3) and a CDBN.

    `size` is the square model input side (multiple of 16; the paper uses 224, i.e. 14x14 tokens). The backbone
    is frozen and kept in eval mode (BatchNorm statistics never change), as the official `frozen_layers`.
    """

    convolutional = True

    def __init__(self, backbone: ResNet, cdbn: CDBNConfig, *, size: int = 224, neighbour: int = NEIGHBOUR,
                 jitter_scale: float = 3.2, pool: int = 16) -> None:
        super().__init__()
        self.backbone = ResNetTrunk(backbone).requires_grad_(False)
        if self.backbone.strides != (4, 8, 16):
            raise ValueError(f"DualAD needs backbone strides (4, 8, 16) for layers 1-3, got {self.backbone.strides}")
        if size % TOKEN_STRIDE:
            raise ValueError(f"input side {size} is not a multiple of {TOKEN_STRIDE}")
        self.grid = size // TOKEN_STRIDE
        self.groups = self.backbone.channels
        self.jitter_scale = jitter_scale
        self.cdbn = CDBN(sum(self.groups), self.grid, cdbn, neighbour)
        self.head = ScoreHead(self.groups, self.grid, size, pool)
        self.neighbour = neighbour
        self.preprocess = Preprocess(resize=(size, size), crop=(size, size), mean=IMAGENET_MEAN, std=IMAGENET_STD,
                                     interpolation="linear")  # official code: cv2.resize (bilinear)
        self.encoder_weights = "random-init"
        self.backbone.eval()

    def train(self, mode: bool = True) -> DualAD:
        super().train(mode)
        self.backbone.eval()
        return self

    # -- features -------------------------------------------------------------------------------------------
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Fused frozen features [B, C, grid, grid] (C = 1792 for WRN50-2)."""
        with torch.no_grad():
            return fuse_features(self.backbone(x), self.backbone.strides)

    def reconstruct(self, feat: torch.Tensor, jitter: bool = False) -> torch.Tensor:
        """CDBN reconstruction of [B, C, h, w] features (noised input tokens if `jitter`), same shape."""
        b, c, h, w = feat.shape
        tokens = feat.flatten(2).transpose(1, 2)
        if jitter:
            tokens = add_feature_noise(tokens, self.jitter_scale)
        return self.cdbn(tokens).transpose(1, 2).reshape(b, c, h, w)

    # -- the two faces --------------------------------------------------------------------------------------
    def training_loss(self, x: torch.Tensor, step: int) -> torch.Tensor:
        feat = self.features(x)
        return grouped_mse(self.reconstruct(feat, jitter=True), feat, self.groups)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B,3,S,S] normalised -> (pixel map [B,1,S,S], score [B]); eval mode (no noise, no dropout)."""
        feat = self.features(x)
        return self.head(feat, self.reconstruct(feat))

    def default_train_config(self) -> dict[str, Any]:
        """The official MVTec configuration: AdamW lr 1e-4, wd 1e-4, batch 16, 1200 epochs, StepLR x0.1 at epoch 1000,
        grad-norm clip 0.1, seed 133. Epochs -> iterations: the 3629 MVTec AD train images in batches of 16
        (no drop_last) are 227 iterations per epoch, so 1200 epochs = 272,400 iterations and the decay comes after
        1000/1200 of them."""
        return {
            "optimizer": "adamw",
            "lr": 1e-4,
            "betas": [0.9, 0.999],
            "eps": 1e-8,
            "weight_decay": 1e-4,
            "amsgrad": False,
            "scheduler": "step",
            "step_at": 1000 / 1200,
            "gamma": 0.1,
            "warmup_iters": 0,
            "iters": 1200 * 227,
            "batch": 16,
            "grad_clip": 0.1,
            "seed": 133,
        }

    def package_constants(self) -> dict[str, Any]:
        """Constants of the deployed graph (all baked into the ONNX; recorded for traceability)."""
        return {
            "feature_groups": list(self.groups),
            "token_grid": self.grid,
            "neighbour_mask": {"size": self.neighbour, "fill": MASK_FILL},
            "memory": ({"items": self.cdbn.cfg.memory, "shrink_threshold": 1.0 / self.cdbn.cfg.memory}
                       if self.cdbn.cfg.memory else None),
            "score": {"map": "product of per-group RMS errors, bilinear align_corners=True",
                      "image": f"max of {self.head.pool}x{self.head.pool} stride-1 box mean"},
        }

    # -- backbone weights -----------------------------------------------------------------------------------
    def load_encoder_weights(self, path: str | Path) -> None:
        """Load a torchvision/timm ResNet checkpoint into the trunk. `layer4.*` and `fc.*` are dropped (unused);
        any other missing or unexpected key is an error (a silent partial load leaves a random backbone)."""
        from edge_ad.fileio import sha256_file
        from edge_ad.models.weights import load_state_dict_file

        sd = load_state_dict_file(path)
        sd = sd.get("model", sd.get("state_dict", sd))
        sd = {k: v for k, v in sd.items() if not k.startswith(("layer4.", "fc."))}
        expected = set(self.backbone.state_dict())
        missing, unexpected = sorted(expected - set(sd)), sorted(set(sd) - expected)
        if missing or unexpected:
            raise ConfigError(
                f"{path}: not backbone weights for {self.name or type(self).__name__}: "
                f"{len(missing)} missing key(s) {missing[:5]}, {len(unexpected)} unexpected key(s) {unexpected[:5]}"
            )
        try:
            self.backbone.load_state_dict(sd, strict=True)
        except RuntimeError as e:  # shape mismatch, e.g. a ResNet-50 checkpoint for the wide model
            raise ConfigError(f"{path}: backbone weights do not fit: {e}") from e
        self.encoder_weights = f"file:{sha256_file(path)[0]}"

    # -- official checkpoints -------------------------------------------------------------------------------
    def load_official_checkpoint(self, path: str | Path) -> None:
        """Load a checkpoint of the official code (ModelHelper keys `backbone.*` / `reconstruction.*`, optionally
        under `state_dict` and a DDP `module.` prefix) into backbone and CDBN, for side-by-side comparisons with the
        released models. Every key must match (layer4/fc of the backbone excepted).

        The released `.pth.tar` files also pickle the easydict config, which `weights_only` loading refuses:
        on a trusted machine extract the tensors once with
        `torch.save(torch.load(p, weights_only=False)["state_dict"], "dualad_state.pth")`."""
        from edge_ad.fileio import sha256_file
        from edge_ad.models.weights import load_state_dict_file

        sd = load_state_dict_file(path)
        mapped = official_to_edge_ad(sd.get("state_dict", sd))
        expected = set(self.state_dict())
        missing, unexpected = sorted(expected - set(mapped)), sorted(set(mapped) - expected)
        if missing or unexpected:
            raise ConfigError(
                f"{path}: not an official checkpoint of {self.name or type(self).__name__}: "
                f"{len(missing)} missing key(s) {missing[:5]}, {len(unexpected)} unexpected key(s) {unexpected[:5]}"
            )
        try:
            self.load_state_dict(mapped, strict=True)
        except RuntimeError as e:  # shape mismatch: another variant's checkpoint
            raise ConfigError(
                f"{path}: official checkpoint does not fit {self.name or type(self).__name__}: {e}"
            ) from e
        self.encoder_weights = f"file:{sha256_file(path)[0]}"


_OFFICIAL_POS = re.compile(
    r"^(?:proj_encoder|proj_decoder|encoder|decoder)\.layers\.\d+\.abs_pos_embed\.(?:0\.)?(row_embed|col_embed)$"
)
_OFFICIAL_POS_PROJ = re.compile(r"^(?:proj_encoder|proj_decoder)\.layers\.\d+\.abs_pos_embed\.1\.(weight|bias)$")


def official_to_edge_ad(sd: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Rename an official DualAD state dict to this module tree: `backbone.*` kept (layer4/fc dropped),
    `reconstruction.*` -> `cdbn.*`; the position embedding (and Ho's widening Linear), stored once per layer in the
    official tree because one module is shared, becomes the single `cdbn.pos_embed` / `cdbn.pos_proj`
    (the copies must agree)."""
    out: dict[str, torch.Tensor] = {}
    for key, v in sd.items():
        k = key.removeprefix("module.")
        if k.startswith("backbone."):
            if not k.startswith(("backbone.layer4.", "backbone.fc.")):
                out[k] = v
            continue
        if not k.startswith("reconstruction."):
            out[k] = v  # reported as unexpected by the caller
            continue
        r = k.removeprefix("reconstruction.")
        m, mp = _OFFICIAL_POS.match(r), _OFFICIAL_POS_PROJ.match(r)
        if m:
            r = f"pos_embed.{m.group(1)}"
        elif mp:
            r = f"pos_proj.{mp.group(1)}"
        new = f"cdbn.{r}"
        if new in out and not torch.equal(out[new], v):
            raise ConfigError(f"official checkpoint: copies of the shared {new!r} differ ({key})")
        out[new] = v
    return out


def add_feature_noise(tokens: torch.Tensor, scale: float) -> torch.Tensor:
    """DualAD `to_anomaly` (jitter_wise "spatial"): x + scale * std * N(0, 1), std = sqrt of the unbiased variance
    over the tokens, per image and channel. Applied to every sample; the reconstruction target stays clean."""
    std = tokens.var(dim=1, keepdim=True).sqrt()
    # randn(shape), not randn_like: the tokens are a transposed view and randn_like would fill in memory order
    noise = torch.randn(tokens.shape, device=tokens.device, dtype=tokens.dtype)
    return tokens + noise * std * scale


def grouped_mse(rec: torch.Tensor, feat: torch.Tensor, groups: Sequence[int]) -> torch.Tensor:
    """Official `FeatureMSELoss` (return_type "sum"): sum over backbone groups of the per-group mean squared error."""
    groups = [int(g) for g in groups]
    return sum(
        (F.mse_loss(r, f) for r, f in zip(rec.split(groups, dim=1), feat.split(groups, dim=1))),
        torch.zeros((), device=rec.device),
    )


# ---------------------------------------------------------------------------------------------------------
# variants


@dataclass(frozen=True)
class _Variant:
    timm_name: str  # "" = the in-repo tiny ResNet
    cdbn: CDBNConfig
    size: int = 224


_TINY_HE = CDBNConfig("mlp", hidden_dim=32, enc_layers=2, dec_layers=2, num_heads=4, ffn=128)
_VARIANTS: dict[str, _Variant] = {
    "dualad-he": _Variant("wide_resnet50_2", CDBNConfig("mlp")),
    "dualad-ho": _Variant("wide_resnet50_2", CDBNConfig("transformer", wide_layers=2, memory=0)),
    "dualad-he-tiny": _Variant("", _TINY_HE),
    "dualad-ho-tiny": _Variant("", replace(_TINY_HE, wide="transformer", memory=0)),
}


def _tiny_backbone() -> ResNet:
    """ResNet with one BasicBlock per stage, widths 16/32/64/128 (stem 64): strides 4/8/16 like WRN50-2 at a
    fraction of the cost; no pretrained weights exist."""
    return ResNet(cast(Any, BasicBlock), (1, 1, 1, 1), num_classes=0, channels=(16, 32, 64, 128))


def _build(
    name: str,
    *,
    pretrained: bool = False,
    weights: str | None = None,
    size: int | None = None,
    crop: int | None = None,
    resize: int | None = None,
    dropout: float | None = None,
) -> DualAD:
    """`size` (or `crop`/`resize`, which must agree: DualAD resizes without cropping) is the input side."""
    v = _VARIANTS[name]
    sides = {int(s) for s in (size, crop, resize) if s}
    if len(sides) > 1:
        raise ConfigError(
            f"{name}: DualAD resizes to a square input without cropping; got size/crop/resize {sorted(sides)}"
        )
    side = sides.pop() if sides else v.size
    if side <= 0 or side % TOKEN_STRIDE or side // TOKEN_STRIDE < NEIGHBOUR + 1:
        # below 8x8 tokens the centre token's 7x7 masked window covers the whole grid: nothing left to attend to
        raise ConfigError(
            f"{name}: input side must be a multiple of {TOKEN_STRIDE} and >= {TOKEN_STRIDE * (NEIGHBOUR + 1)}, "
            f"got {side}"
        )
    cfg = v.cdbn
    if dropout is not None:
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"{name}: dropout must be in [0, 1), got {dropout}")
        cfg = replace(cfg, dropout=float(dropout))

    ckpt = wcache.encoder_checkpoint(
        name, pretrained=pretrained, weights=weights, file_hint=" (torchvision wide_resnet50_2-95faca4d.pth works)"
    )
    if v.timm_name:
        import timm

        net = cast(ResNet, timm.create_model(v.timm_name, pretrained=False, num_classes=0))
    else:
        net = _tiny_backbone()
    model = DualAD(net, cfg, size=side)

    if ckpt is not None:
        model.load_encoder_weights(ckpt)
    return model


register_variants("dualad", _build, _VARIANTS)
