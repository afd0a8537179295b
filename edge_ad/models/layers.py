"""Building blocks shared by the reconstruction-style model families (Dinomaly first).

Everything here is plain PyTorch that exports to ONNX opset 17 without Einsum, data-dependent shapes or
TensorRT-hostile ops, so a family that uses these blocks inherits a clean export.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class LinearAttention(nn.Module):
    """Linear attention with the positive feature map elu(x)+1 (Dinomaly's `LinearAttention2`).

    Per head: out = (q' (k'^T v)) / (q' . sum_s k'_s + eps), with q' = elu(q)+1, k' = elu(k)+1; no softmax and
    no 1/sqrt(d). Written with MatMul (no Einsum: TensorRT's einsum is limited). k' is divided by the token count
    N before the sums: numerator and denominator scale alike, so the ratio is unchanged, but the sums stay near
    O(head_dim) instead of O(N * head_dim), which keeps FP16 finite. `eps` (default 1e-6, the reference README's
    NaN fix) guards the denominator; eps=0 is the reference formula exactly.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.eps = eps
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [B, heads, N, hd]
        q = F.elu(q) + 1.0
        k = (F.elu(k) + 1.0) * (1.0 / n)
        kv = k.transpose(-2, -1) @ v  # [B, heads, hd, hd]
        ksum = k.sum(dim=-2, keepdim=True)  # [B, heads, 1, hd]
        den = q @ ksum.transpose(-2, -1)  # [B, heads, N, 1]
        out = (q @ kv) / (den + self.eps)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """Linear -> GELU (exact erf) -> Linear, the ViT feed-forward block."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DecoderBlock(nn.Module):
    """Pre-norm transformer block with linear attention: no LayerScale, no drop-path, no pos-embed.

    Dinomaly's decoder block: LayerNorm eps 1e-8, qkv bias, MLP ratio 4.
    """

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float = 4.0, norm_eps: float = 1e-8, attn_eps: float = 1e-6
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = LinearAttention(dim, num_heads, qkv_bias=True, eps=attn_eps)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class NoisyBottleneck(nn.Module):
    """Dinomaly's `bMlp`: Dropout -> fc1 -> GELU -> Dropout -> fc2 -> Dropout, one Dropout module used 3 times.

    No residual and no norm; the dropout is the "noise" that stops the decoder from learning identity.
    """

    def __init__(self, dim: int, hidden: int, drop: float = 0.2) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(x)
        x = self.drop(self.act(self.fc1(x)))
        return self.drop(self.fc2(x))


def init_trunc_normal_(module: nn.Module, std: float = 0.01, bound: float = 0.03) -> None:
    """Reference init of the trainable parts: Linear weights trunc_normal(std, +-bound absolute), biases 0,
    LayerNorm weight 1 / bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=std, a=-bound, b=bound)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def interpolate_pos_embed_dinov2(patch_pos: torch.Tensor, grid: int, offset: float = 0.1) -> torch.Tensor:
    """DINOv2's official pos-embed resampling of a square patch grid [1, M*M, D] -> [1, grid*grid, D].

    Bicubic with `scale_factor=(grid+offset)/M` (not `size=`), antialias off, align_corners False, in float32,
    as `interpolate_pos_encoding` does; identity when the grid already matches.
    """
    m = math.isqrt(patch_pos.shape[1])
    if m * m != patch_pos.shape[1]:
        raise ValueError(f"pos-embed of {patch_pos.shape[1]} tokens is not a square grid")
    if grid == m:
        return patch_pos.float()
    dim = patch_pos.shape[-1]
    scale = (grid + offset) / m
    out = F.interpolate(
        patch_pos.float().reshape(1, m, m, dim).permute(0, 3, 1, 2),
        scale_factor=(scale, scale),
        mode="bicubic",
        antialias=False,
        align_corners=False,
    )
    if out.shape[-2:] != (grid, grid):
        raise ValueError(f"pos-embed resampling gave {tuple(out.shape[-2:])}, expected {(grid, grid)}")
    return out.permute(0, 2, 3, 1).reshape(1, grid * grid, dim)


def bilinear_matrix(n_in: int, n_out: int, align_corners: bool) -> np.ndarray:
    """[n_out, n_in] matrix of 1-D bilinear resizing with PyTorch's `F.interpolate(size=...)` semantics."""
    r = np.zeros((n_out, n_in), dtype=np.float64)
    for j in range(n_out):
        if align_corners:
            src = j * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        else:
            src = max((j + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(math.floor(src), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        lam = src - i0
        r[j, i0] += 1.0 - lam
        r[j, i1] += lam
    return r


def gaussian_matrix(n: int, kernel_size: int = 5, sigma: float = 4.0) -> np.ndarray:
    """[n, n] matrix of a 1-D normalised Gaussian with zero padding (taps falling outside are dropped)."""
    half = kernel_size // 2
    t = np.arange(kernel_size, dtype=np.float64) - (kernel_size - 1) / 2.0
    g = np.exp(-(t**2) / (2.0 * sigma**2))
    g /= g.sum()
    out = np.zeros((n, n), dtype=np.float64)
    for i in range(n):
        for k in range(kernel_size):
            src = i + k - half
            if 0 <= src < n:
                out[i, src] = g[k]
    return out


def map_head_matrix(grid: int, input_size: int, eval_size: int, kernel_size: int = 5, sigma: float = 4.0) -> np.ndarray:
    """A = G . R2 . R1 in R^{eval_size x grid}, so that A a A^T equals: bilinear (align_corners=True) to the
    input size, bilinear (align_corners=False) to `eval_size`, then a zero-padded kernel_size x kernel_size
    Gaussian blur. All three steps are linear and separable, so the whole head is two MatMuls."""
    r1 = bilinear_matrix(grid, input_size, align_corners=True)
    r2 = bilinear_matrix(input_size, eval_size, align_corners=False)
    return gaussian_matrix(eval_size, kernel_size, sigma) @ r2 @ r1


def fp32_region(device_type: str) -> contextlib.AbstractContextManager[Any]:
    """Autocast off on `device_type`: for numerics that must stay FP32 inside a mixed-precision region (devices
    without autocast, such as "meta" for shape checks, have nothing to switch off)."""
    if device_type in ("cpu", "cuda", "xpu", "mps", "hpu") and torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()
