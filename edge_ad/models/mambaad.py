"""MambaAD (He et al., NeurIPS 2024): frozen ResNet34 teacher, MFF_OCE neck, Mamba decoder of LSS modules.

Exact to the official code (github.com/lewandofskee/MambaAD `model/mambaad.py`, ADer framework for training and
evaluation); the state-dict layout is the official one (`net_t`, `mff_oce`, `net_s.layers_up.i.blocks.j.
smm_blocks.k.self_attention.*`, `scans.index_flat(_inv)` as frozen parameters), so official checkpoints load.

- Teacher: timm `resnet34` (features_only, layers 1-3: 64x64x64, 128x32x32, 256x16x16 at 256x256), eval mode and
  frozen even while the rest trains.
- Neck `MFF_OCE` (RD4AD's multi-scale fusion + one-class embedding; "Half-FPN" in the paper) -> 512x8x8.
- Student `MambaUPNet`, dims [512,256,128,64], depths [3,4,6,3]: a stage of depth D holds D/3 LSS modules of 3
  HSS blocks, else D/2 modules of 2 (so stage 2 has 2x2; paper: "N=2 for the second, 3 otherwise"); 16 HSS
  blocks, each `x + DropPath(SS2D(LayerNorm(x)))`; each LSS module fuses its HSS chain with two
  1x1 -> depth-wise kxk -> 1x1 branches (k = 5, 7; InstanceNorm2d without affine + SiLU) through a 1x1 conv and
  a residual. Stages 2-4, reversed, are compared with the teacher's 3 scales; the 8x8 stage is not.
- SS2D: in_proj -> 2-D depth-wise 3x3 conv + SiLU -> 8-direction selective scan (Hilbert order by default, as the
  released configs) summed back to pixel order -> LayerNorm -> * SiLU(z) -> out_proj.
- Loss: 5 * MSE per scale on raw features, summed. Map: 1 - cos per scale, bilinear (align_corners=True) to the
  input size, summed / 9, Gaussian sigma 4 (33 taps, scipy's half-sample symmetric 'reflect' border); score = max.

Export face: the 8 scan directions are two constant (8, L) gather tables built for the fixed size (no scatter,
rot90 or flip); the per-direction projections are batched MatMuls (no Einsum); the selective scan is
`selective_scan.selective_scan` (odd/even parallel scan, no Loop/Scan); resize + blur are one constant matrix
per scale (map = sum_i M_i a_i M_i^T / 9, M_i = Gauss . Bilinear_i), so the graph has no Resize or Pad.

Paper vs code: the paper says 500 epochs, every released config trains 1000 (followed here); the paper's Eq. 9
Hilbert recursion is not what the code uses (the code's `numpy-hilbert-curve` order is used, see scan_orders).

Variants: `mambaad` is the paper's model (256x256 input, 25.66M parameters incl. the frozen encoder).
`mambaad-tiny` is NOT from the paper: a randomly initialised 16-wide ResNet-style teacher, decoder depths
[2,2,2,2] at 64x64, for CPU tests and demos only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from timm.layers import DropPath
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

from edge_ad.errors import ConfigError
from edge_ad.models import weights as wcache
from edge_ad.models.base import AnomalyModel
from edge_ad.models.layers import bilinear_matrix, fp32_region
from edge_ad.models.registry import register_variants
from edge_ad.models.scan_orders import (
    NUM_DIRECTIONS,
    SCAN_METHODS,
    directions_from_order,
    inverse_permutations,
    scan_order,
)
from edge_ad.models.selective_scan import selective_scan
from edge_ad.runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess

log = logging.getLogger(__name__)

LOSS_WEIGHT = 5.0  # ADer L2Loss lam
GAUSS_SIGMA = 4.0
GAUSS_TRUNCATE = 4.0  # scipy default: radius int(4 * sigma + 0.5) = 16, 33 taps


# ---------------------------------------------------------------------------------------------------------
# neck


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class MFF_OCE(nn.Module):
    """Multi-scale feature fusion + one-class embedding (RD4AD's bottleneck as MambaAD instantiates it).

    With teacher widths (w, 2w, 4w) (w = 64 for ResNet34):
    p0 = ReLU(BN(conv3x3 s2 (f1))); p1 = ReLU(BN(conv1x1(f2))) + p0;
    v = ReLU(BN(conv3x3 s2 (p1))) + ReLU(BN(conv1x1(f3))); v = ReLU(BN(conv1x1(v)));
    out = 3 timm Bottlenecks (planes 2w -> 8w out, the first with stride 2 and a conv1x1+BN downsample).
    Convs: kaiming_normal(fan_out, relu); BN weight 1, bias 0. Its BatchNorms train (running stats update).
    """

    def __init__(self, width: int = 64, blocks: int = 3) -> None:
        super().__init__()
        w = width
        inplanes, planes = 4 * w, 2 * w
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * Bottleneck.expansion, kernel_size=1, stride=2, bias=False),
            nn.BatchNorm2d(planes * Bottleneck.expansion),
        )
        layers: list[nn.Module] = [Bottleneck(inplanes, planes, stride=2, downsample=downsample, base_width=64)]
        layers += [Bottleneck(planes * Bottleneck.expansion, planes, base_width=64) for _ in range(1, blocks)]
        self.bn_layer = nn.Sequential(*layers)
        self.conv1 = _conv3x3(w, 2 * w, 2)
        self.bn1 = nn.BatchNorm2d(2 * w)
        self.conv2 = _conv3x3(2 * w, 4 * w, 2)
        self.bn2 = nn.BatchNorm2d(4 * w)
        self.conv21 = nn.Conv2d(2 * w, 2 * w, 1)
        self.bn21 = nn.BatchNorm2d(2 * w)
        self.conv31 = nn.Conv2d(4 * w, 4 * w, 1)
        self.bn31 = nn.BatchNorm2d(4 * w)
        self.convf = nn.Conv2d(4 * w, 4 * w, 1)
        self.bnf = nn.BatchNorm2d(4 * w)
        self.relu = nn.ReLU(inplace=True)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: Sequence[torch.Tensor]) -> torch.Tensor:
        fpn0 = self.relu(self.bn1(self.conv1(x[0])))
        fpn1 = self.relu(self.bn21(self.conv21(x[1]))) + fpn0
        v = self.relu(self.bn2(self.conv2(fpn1))) + self.relu(self.bn31(self.conv31(x[2])))
        v = self.relu(self.bnf(self.convf(v)))
        return self.bn_layer(v)


# ---------------------------------------------------------------------------------------------------------
# decoder


class PatchExpand2D(nn.Module):
    """(B,H,W,2*dim) -> Linear(2dim -> 4dim, no bias) -> 2x2 pixel shuffle `b h w (p1 p2 c) -> b (2h) (2w) c`
    -> LayerNorm(dim). `size` is the input side (fixed), so the reshape has constant dims in ONNX."""

    def __init__(self, dim: int, size: int, norm_layer: type[nn.Module] = nn.LayerNorm) -> None:
        super().__init__()
        self.dim = dim * 2
        self.size = size
        self.expand = nn.Linear(self.dim, 2 * self.dim, bias=False)
        self.norm = norm_layer(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, c = self.size, self.dim // 2
        x = self.expand(x).reshape(-1, s, s, 2, 2, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, 2 * s, 2 * s, c)
        return self.norm(x)


class HSCANS(nn.Module):
    """The scan order of one SS2D: `index_flat` (P) and `index_flat_inv` (argsort P), (1,1,L) int64, frozen
    parameters as in the official checkpoint (the official encode scatters with `index_flat_inv`, which is the
    same as gathering with `index_flat`); `perm`/`merge_index` are the 8-direction gather tables derived from
    `index_flat` (non-persistent buffers, rebuilt when a checkpoint's `index_flat` is loaded)."""

    perm: torch.Tensor
    merge_index: torch.Tensor

    def __init__(self, size: int, scan_type: str = "hilbert") -> None:
        super().__init__()
        self.size = size
        self.scan_type = scan_type
        p = torch.from_numpy(scan_order(scan_type, size)).view(1, 1, -1)
        self.index_flat = nn.Parameter(p, requires_grad=False)
        self.index_flat_inv = nn.Parameter(torch.argsort(p, dim=-1), requires_grad=False)
        self.register_buffer("perm", torch.empty(0, dtype=torch.long), persistent=False)
        self.register_buffer("merge_index", torch.empty(0, dtype=torch.long), persistent=False)
        self.build_tables()
        self.register_load_state_dict_post_hook(HSCANS._rebuild_after_load)

    @staticmethod
    def _rebuild_after_load(module: HSCANS, _incompatible: Any) -> None:
        module.build_tables()

    def build_tables(self) -> None:
        """Gather tables of the 8 directions from `index_flat`: `perm` (8*L,) the flat encode index, and
        `merge_index` (L*8,) into the direction-major (K*L) outputs, laid out so that decode + sum over the
        directions is one Gather + ReduceSum."""
        n = self.size * self.size
        p_t = self.index_flat.detach()
        if p_t.device.type == "meta":  # parameter counting: no values to read
            p = scan_order(self.scan_type, self.size)
        else:
            p = p_t.reshape(-1).cpu().numpy()
            if not np.array_equal(np.sort(p), np.arange(n)):
                raise ConfigError(
                    f"scan index_flat of a {self.size}x{self.size} SS2D is not a permutation of 0..{n - 1}"
                )
        perms = directions_from_order(p, self.size)
        # output pixel q of direction k is y_k[P_inv_k[q]], at k*L + P_inv_k[q] in the direction-major outputs
        merge = inverse_permutations(perms) + (np.arange(NUM_DIRECTIONS) * n)[:, None]
        dev = p_t.device
        self.register_buffer("perm", torch.from_numpy(perms.reshape(-1)).to(dev), persistent=False)
        self.register_buffer("merge_index", torch.from_numpy(np.ascontiguousarray(merge.T).reshape(-1)).to(dev),
                             persistent=False)

    def encode(self, x: torch.Tensor, d: int) -> torch.Tensor:
        """(B, d, L) row-major -> (B, K, d, L) direction sequences (one Gather)."""
        n = self.size * self.size
        return x.index_select(-1, self.perm).reshape(-1, d, NUM_DIRECTIONS, n).transpose(1, 2)

    def merge(self, y: torch.Tensor, d: int) -> torch.Tensor:
        """(B, K, d, L) direction outputs -> (B, d, L): each back to pixel order, summed over the 8 (no mean)."""
        n = self.size * self.size
        flat = y.transpose(1, 2).reshape(-1, d, NUM_DIRECTIONS * n)
        return flat.index_select(-1, self.merge_index).reshape(-1, d, n, NUM_DIRECTIONS).sum(-1)


class SelectiveScan(nn.Module):
    """`selective_scan` as a parameter-free module, so its exported nodes share the scope `.../scan/` that the fp16
    policy keeps in FP32 (mambaad.md 9.4: the recurrence accumulates over thousands of steps) while the
    projections around it run in FP16; for the same reason autocast is off inside it. The state dict is
    unchanged."""

    def forward(self, u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                D: torch.Tensor, delta_bias: torch.Tensor) -> torch.Tensor:
        with fp32_region(u.device.type):  # under --amp bf16 the recurrence still runs in FP32
            return selective_scan(u, delta, A, B, C, D, delta_bias)


class SS2D(nn.Module):
    """2-D selective-scan block: d_state 16, 3x3 depth-wise conv, expand 2, dt_rank ceil(C/16), 8 directions.

    Parameter names and shapes are the official ones: x_proj_weight (K, R+2N, d), dt_projs_weight (K, d, R),
    dt_projs_bias (K, d), A_logs (K*d, N), Ds (K*d). dt_proj has no bias in the projection; its bias enters the
    scan before the softplus.
    """

    def __init__(self, d_model: int, size: int, scan_type: str = "hilbert", d_state: int = 16, d_conv: int = 3,
                 expand: int = 2, dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4) -> None:
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.d_inner = d = int(expand * d_model)
        self.dt_rank = r = math.ceil(d_model / 16)
        self.size = size
        k = NUM_DIRECTIONS
        self.in_proj = nn.Linear(d_model, 2 * d, bias=False)
        self.conv2d = nn.Conv2d(d, d, kernel_size=d_conv, padding=(d_conv - 1) // 2, groups=d, bias=True)
        self.act = nn.SiLU()
        # x_proj: nn.Linear's default (kaiming-uniform) init, never re-initialised (bare parameter)
        bound = 1.0 / math.sqrt(d)
        self.x_proj_weight = nn.Parameter(torch.empty(k, r + 2 * d_state, d).uniform_(-bound, bound))
        self.dt_projs_weight = nn.Parameter(torch.empty(k, d, r).uniform_(-(r**-0.5), r**-0.5))
        dt = torch.exp(torch.rand(k, d) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_projs_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.A_logs = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(k * d, 1))
        self.Ds = nn.Parameter(torch.ones(k * d))
        self.out_norm = nn.LayerNorm(d)
        self.out_proj = nn.Linear(d, d_model, bias=False)
        self.scans = HSCANS(size, scan_type)
        self.scan = SelectiveScan()

    def forward_core(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d, H, W) -> (B, d, L): scan the 8 direction sequences and sum them back in pixel order."""
        k, d, n, r = NUM_DIRECTIONS, self.d_inner, self.d_state, self.dt_rank
        length = self.size * self.size
        xs = self.scans.encode(x.reshape(-1, d, length), d)  # (B, K, d, L)
        x_dbl = torch.matmul(self.x_proj_weight, xs)  # (K, R+2N, d) @ (B, K, d, L) -> (B, K, R+2N, L)
        dts = torch.matmul(self.dt_projs_weight, x_dbl[:, :, :r])  # (K, d, R) @ (B, K, R, L) -> (B, K, d, L)
        bs = x_dbl[:, :, r : r + n]
        cs = x_dbl[:, :, r + n :]
        args = (xs.reshape(-1, k * d, length), dts.reshape(-1, k * d, length), -torch.exp(self.A_logs),
                bs, cs, self.Ds, self.dt_projs_bias.reshape(-1))
        if self.training and torch.is_grad_enabled():
            # recompute the scan in backward: its (B, K, d, N, L/2) intermediates (~1.2 GB per image per stage-4
            # block) would otherwise be kept for all 16 blocks at once, an estimated ~9 GB per image at 256x256
            # (~140 GB at the paper's batch 16); checkpointed, only the (B, K*d, L) inputs are kept
            y = torch.utils.checkpoint.checkpoint(self.scan, *args, use_reentrant=False)
        else:
            y = self.scan(*args)
        return self.scans.merge(y.reshape(-1, k, d, length), d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, d = self.size, self.d_inner
        xz = self.in_proj(x)
        xi, z = xz[..., :d], xz[..., d:]
        xi = self.act(self.conv2d(xi.permute(0, 3, 1, 2)))
        y = self.forward_core(xi).transpose(1, 2).reshape(-1, s, s, d)
        y = self.out_norm(y) * F.silu(z)
        return self.out_proj(y)


class HSSBlock(nn.Module):
    """x + DropPath(SS2D(LayerNorm(x))) on channels-last maps; no MLP (official `HSSBlock`/`VSSBlock`)."""

    def __init__(self, hidden_dim: int, drop_path: float, size: int, scan_type: str) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden_dim)  # eps 1e-5: MambaUPNet passes plain nn.LayerNorm down
        self.self_attention = SS2D(hidden_dim, size, scan_type)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.self_attention(self.ln_1(x)))


def _cis(dim: int, k: int) -> nn.Sequential:
    """Conv(k, depth-wise and bias-free when k > 1) -> InstanceNorm2d (no affine, per-sample stats) -> SiLU."""
    if k == 1:
        conv = nn.Conv2d(dim, dim, kernel_size=1)
    else:
        conv = nn.Conv2d(dim, dim, kernel_size=k, padding=k // 2, groups=dim, bias=False)
    return nn.Sequential(conv, nn.InstanceNorm2d(dim), nn.SiLU())


class LSSModule(nn.Module):
    """Locality-enhanced state space module: cascaded HSS blocks || two 1x1 -> DW kxk -> 1x1 branches (k=5, 7),
    concatenated [ssm, k5, k7], fused by a 1x1 conv, plus the module input (residual)."""

    def __init__(self, hidden_dim: int, depth: int, drop_path: float, size: int, scan_type: str) -> None:
        super().__init__()
        self.smm_blocks = nn.ModuleList([HSSBlock(hidden_dim, drop_path, size, scan_type) for _ in range(depth)])
        self.conv1b7 = _cis(hidden_dim, 1)
        self.conv1a7 = _cis(hidden_dim, 1)
        self.conv1b5 = _cis(hidden_dim, 1)
        self.conv1a5 = _cis(hidden_dim, 1)
        self.conv55 = _cis(hidden_dim, 5)
        self.conv77 = _cis(hidden_dim, 7)
        self.finalconv11 = nn.Conv2d(3 * hidden_dim, hidden_dim, kernel_size=1)
        for m in self.modules():  # official _init_weights, also reaching SS2D.conv2d
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ssm = x
        for blk in self.smm_blocks:
            ssm = blk(ssm)
        xc = x.permute(0, 3, 1, 2)
        out_77 = self.conv1a7(self.conv77(self.conv1b7(xc)))
        out_55 = self.conv1a5(self.conv55(self.conv1b5(xc)))
        out = self.finalconv11(torch.cat([ssm.permute(0, 3, 1, 2), out_55, out_77], dim=1))
        return out.permute(0, 2, 3, 1) + x


def lss_grouping(depth: int) -> tuple[int, int]:
    """(LSS modules, HSS blocks per module) of a stage: depth/3 x 3 if depth % 3 == 0, else depth/2 x 2."""
    if depth > 0 and depth % 3 == 0:
        return depth // 3, 3
    if depth > 0 and depth % 2 == 0:
        return depth // 2, 2
    raise ValueError(f"decoder stage depth {depth} is neither a multiple of 3 nor of 2 (official grouping rule)")


class LSSLayerUp(nn.Module):
    """One decoder stage: optional PatchExpand2D, then its LSS modules; module j uses drop-path dpr[j]."""

    def __init__(self, dim: int, depth: int, drop_path: Sequence[float], size: int, scan_type: str,
                 upsample: bool) -> None:
        super().__init__()
        n_mod, per = lss_grouping(depth)
        self.blocks = nn.ModuleList([LSSModule(dim, per, drop_path[j], size, scan_type) for j in range(n_mod)])
        self.upsample = PatchExpand2D(dim, size // 2) if upsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample is not None:
            x = self.upsample(x)
        for blk in self.blocks:
            x = blk(x)
        return x


class MambaUPNet(nn.Module):
    """The student decoder; returns stages 2..4 as NCHW, reversed (finest first), to pair with [f1, f2, f3].

    Init (official `_init_weights`): Linear trunc_normal(std .02), bias 0; LayerNorm 1/0; convs as LSSModule.
    """

    def __init__(self, dims: Sequence[int], depths: Sequence[int], base_size: int, scan_type: str = "hilbert",
                 drop_path_rate: float = 0.2) -> None:
        super().__init__()
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()[::-1]  # float32, as official
        self.layers_up = nn.ModuleList()
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            start = sum(depths[:i])
            self.layers_up.append(LSSLayerUp(dim, depth, dpr[start : start + depth], base_size * 2**i, scan_type,
                                             upsample=i != 0))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = x.permute(0, 2, 3, 1)
        outs: list[torch.Tensor] = []
        for i, layer in enumerate(self.layers_up):
            x = layer(x)
            if i != 0:
                outs.insert(0, x.permute(0, 3, 1, 2))
        return outs


# ---------------------------------------------------------------------------------------------------------
# anomaly head


def gaussian_reflect_matrix(n: int, sigma: float = GAUSS_SIGMA, truncate: float = GAUSS_TRUNCATE) -> np.ndarray:
    """[n, n] matrix of `scipy.ndimage.gaussian_filter1d(sigma, truncate, mode='reflect')`: normalised
    2r+1 taps, r = int(truncate*sigma + 0.5), border extended half-sample symmetric (d c b a | a b c d)."""
    radius = int(truncate * sigma + 0.5)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * t**2 / sigma**2)
    g /= g.sum()
    out = np.zeros((n, n), dtype=np.float64)
    period = 2 * n
    for i in range(n):
        for k, w in zip(range(-radius, radius + 1), g):
            j = (i + k) % period
            if j >= n:
                j = period - 1 - j
            out[i, j] += w
    return out


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - cos over channels, [B,C,h,w] x2 -> [B,h,w], as F.cosine_similarity (eps 1e-8 on the norm product)
    but written out: Sum(ab) / sqrt(max(Sum(a^2) Sum(b^2), 1e-16))."""
    num = (a * b).sum(1)
    den = torch.sqrt(torch.clamp((a * a).sum(1) * (b * b).sum(1), min=1e-16))
    return 1.0 - num / den


# ---------------------------------------------------------------------------------------------------------
# the model


class MambaAD(AnomalyModel):
    """MambaAD around a timm ResNet feature extractor (`net_t`, layers 1-3, frozen).

    `width` is the teacher's layer-1 width (64 for ResNet34); the neck and decoder scale with it (decoder dims
    [8w, 4w, 2w, w]). `size` is the fixed square input side: scan tables are built for it (stage sides
    size/32 * 2^i, powers of two). `scan_type` is one of sweep/scan/zorder/zigzag/hilbert (ablation; default
    hilbert as released).
    """

    convolutional = True

    head_left: torch.Tensor

    def __init__(self, net_t: nn.Module, *, width: int, depths: Sequence[int], size: int, resize: int,
                 scan_type: str = "hilbert", drop_path_rate: float = 0.2) -> None:
        super().__init__()
        self.net_t = net_t.requires_grad_(False).eval()
        self.mff_oce = MFF_OCE(width, 3)
        dims = [8 * width, 4 * width, 2 * width, width]
        self.net_s = MambaUPNet(dims, depths, size // 32, scan_type, drop_path_rate)
        self.size = size
        self.scan_type = scan_type
        self.preprocess = Preprocess(resize=(resize, resize), crop=(size, size), mean=IMAGENET_MEAN, std=IMAGENET_STD)
        self.encoder_weights = "random-init"
        gauss = gaussian_reflect_matrix(size)
        # teacher scales are size/4, size/8, size/16: M_i = G . Bilinear_i (align_corners=True), [size, h_i]
        for i, stride in enumerate((4, 8, 16)):
            m = gauss @ bilinear_matrix(size // stride, size, align_corners=True)
            self.register_buffer(f"head_{i}", torch.from_numpy(m).float(), persistent=False)

    # -- training mode: the teacher never leaves eval mode -------------------------------------------------
    def train(self, mode: bool = True) -> MambaAD:
        super().train(mode)
        self.net_t.eval()
        return self

    def features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(teacher [f1, f2, f3], student [s1, s2, s3]), each NCHW at strides 4/8/16."""
        with torch.no_grad():
            ft = [f.detach() for f in self.net_t(x)]
        fs = self.net_s(self.mff_oce(ft))
        return ft, fs

    def training_loss(self, x: torch.Tensor, step: int) -> torch.Tensor:
        """ADer L2Loss(lam=5): sum over the 3 scales of 5 * mean squared error on raw features."""
        ft, fs = self.features(x)
        return sum((LOSS_WEIGHT * F.mse_loss(s, t) for t, s in zip(ft, fs)), torch.zeros((), device=x.device))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B,3,S,S] normalised -> (anomaly_map [B,1,S,S], score [B] = map max)."""
        ft, fs = self.features(x)
        amap = torch.zeros((), device=x.device, dtype=torch.float32)
        for i, (t, s) in enumerate(zip(ft, fs)):
            m = getattr(self, f"head_{i}")
            a = cosine_distance(t, s)
            amap = amap + torch.matmul(torch.matmul(m, a), m.t())
        amap = (amap / 9.0).unsqueeze(1)
        return amap, amap.flatten(1).amax(dim=1)

    def default_train_config(self) -> dict[str, Any]:
        """The released MVTec configuration (configs/mambaad/mambaad_mvtec.py + ADer cfg_common): AdamW lr 0.005
        (0.005 * batch/16), betas (0.9, 0.999), eps 1e-8, wd 1e-4, no AMSGrad; StepLR x0.1 at 80% of training,
        no warm-up; gradient-norm clip 5; batch 16, seed 42. 1000 epochs of MVTec AD's 3629 good training
        images at batch 16 with drop_last = 226 iterations per epoch -> 226,000 iterations (the paper text says
        500 epochs; every released config uses 1000). Weight decay applies to >=2-D weights only
        (`param_groups`)."""
        return {
            "optimizer": "adamw",
            "scheduler": "step",
            "step_at": 0.8,
            "gamma": 0.1,
            "lr": 0.005,
            "betas": [0.9, 0.999],
            "eps": 1e-8,
            "weight_decay": 1e-4,
            "amsgrad": False,
            "warmup_iters": 0,
            "iters": 226_000,
            "batch": 16,
            "grad_clip": 5.0,
            "seed": 42,
        }

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """ADer's optimiser groups: decay on trainable tensors with ndim >= 2 that are not biases (this includes
        the 2-D `A_logs`), none on biases, norms and `Ds`."""
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    # -- encoder weights ----------------------------------------------------------------------------------
    def load_encoder_weights(self, path: str | Path) -> None:
        """Load a ResNet checkpoint (timm or torchvision layout, e.g. timm's `resnet34-43635321.pth`) into the
        teacher. Every teacher key must be present; `layer4.*` and `fc.*` (unused stages) are ignored, as the
        official `strict=False` load does; any other unexpected key is an error."""
        from edge_ad.fileio import sha256_file
        from edge_ad.models.weights import load_state_dict_file

        sd = load_state_dict_file(path)
        sd = sd.get("model", sd.get("state_dict", sd))
        expected = set(self.net_t.state_dict())
        sd = {k: v for k, v in sd.items() if not k.startswith(("layer4.", "fc."))}
        missing = sorted(expected - set(sd))
        unexpected = sorted(set(sd) - expected)
        if missing or unexpected:
            raise ConfigError(
                f"{path}: not ResNet encoder weights for {self.name or type(self).__name__}: "
                f"{len(missing)} missing key(s) {missing[:5]}, {len(unexpected)} unexpected key(s) {unexpected[:5]}"
            )
        try:
            self.net_t.load_state_dict(sd, strict=True)
        except RuntimeError as e:  # shape mismatch, e.g. a ResNet50 checkpoint
            raise ConfigError(f"{path}: encoder weights do not fit: {e}") from e
        self.encoder_weights = f"file:{sha256_file(path)[0]}"


# ---------------------------------------------------------------------------------------------------------
# variants


@dataclass(frozen=True)
class _Variant:
    timm_name: str  # "" = the in-repo tiny ResNet
    width: int
    depths: tuple[int, ...]
    size: int


_VARIANTS: dict[str, _Variant] = {
    "mambaad": _Variant("resnet34", 64, (3, 4, 6, 3), 256),
    "mambaad-tiny": _Variant("", 16, (2, 2, 2, 2), 64),
}


def _teacher(v: _Variant) -> nn.Module:
    """timm ResNet features at strides 4/8/16 (layers 1-3; layer4 and fc are not built)."""
    from timm.models._features import FeatureListNet

    if v.timm_name:
        import timm

        return timm.create_model(v.timm_name, pretrained=False, features_only=True, out_indices=[1, 2, 3])
    w = v.width
    net = ResNet(BasicBlock, (1, 1, 1, 1),  # type: ignore[arg-type]  # timm annotates the class as an instance
                 num_classes=0, stem_width=w, channels=(w, 2 * w, 4 * w, 8 * w))
    return FeatureListNet(net, out_indices=(1, 2, 3))


def _build(
    name: str,
    *,
    pretrained: bool = False,
    weights: str | None = None,
    scan_type: str = "hilbert",
    resize: int | None = None,
    crop: int | None = None,
    drop_path_rate: float = 0.2,
) -> MambaAD:
    v = _VARIANTS[name]
    if crop is not None and int(crop) != v.size:
        raise ConfigError(
            f"{name}: crop (model input side) must be {v.size}: the scan orders are built for that fixed size "
            f"(official MambaAD hard-codes it); got {crop}"
        )
    resize = int(resize or v.size)
    if resize < v.size:
        raise ConfigError(f"{name}: resize {resize} is smaller than the input side {v.size}")
    if scan_type not in SCAN_METHODS:
        raise ConfigError(f"{name}: scan_type must be one of {', '.join(SCAN_METHODS)}; got {scan_type!r}")
    if not 0.0 <= drop_path_rate < 1.0:
        raise ConfigError(f"{name}: drop_path_rate must be in [0, 1), got {drop_path_rate}")

    ckpt = wcache.encoder_checkpoint(
        name, pretrained=pretrained, weights=weights, file_hint=" (timm's resnet34-43635321.pth)"
    )
    model = MambaAD(_teacher(v), width=v.width, depths=v.depths, size=v.size, resize=resize, scan_type=scan_type,
                    drop_path_rate=drop_path_rate)
    if ckpt is not None:
        model.load_encoder_weights(ckpt)
    return model


register_variants("mambaad", _build, _VARIANTS)
