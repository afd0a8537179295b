"""Pillow's antialiased bilinear resize (`Image.resize(size, BILINEAR)`) in numpy, bit-exact, without Pillow.

Official Dinomaly and MambaAD (ADer) resize PIL images with torchvision's `Resize`, i.e. Pillow's two-pass
resampler: separable triangle filter widened by the downscale factor (antialiasing), coefficients normalised per
output pixel and rounded to 22-bit fixed point, a horizontal pass into a uint8 image, then a vertical pass.
This reproduces that arithmetic (libImaging/Resample.c: precompute_coeffs, normalize_coeffs_8bpc,
ImagingResampleHorizontal/Vertical_8bpc) so the torch-free runtime feeds a model the pixels it was trained on.
"""

from __future__ import annotations

import math

import numpy as np

_PRECISION_BITS = 32 - 8 - 2


def _coefficients(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(first input index [out], fixed-point weights [out, k]) of Pillow's bilinear filter for one axis."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale  # the bilinear (triangle) filter has support 1
    ksize = math.ceil(support) * 2 + 1
    centers = (np.arange(out_size, dtype=np.float64) + 0.5) * scale
    xmin = np.maximum((centers - support + 0.5).astype(np.int64), 0)  # C's (int) truncation; values are > -1
    xmax = np.minimum((centers + support + 0.5).astype(np.int64), in_size) - xmin
    taps = np.arange(ksize)
    x = (taps[None, :] + xmin[:, None] - centers[:, None] + 0.5) * (1.0 / filterscale)
    w = np.where(np.abs(x) < 1.0, 1.0 - np.abs(x), 0.0)
    w[taps[None, :] >= xmax[:, None]] = 0.0
    total = w.sum(axis=1, keepdims=True)
    w = np.divide(w, total, out=w, where=total != 0.0)
    # normalize_coeffs_8bpc: round half away from zero into fixed point (the weights here are never negative)
    fixed = np.trunc(0.5 + w * (1 << _PRECISION_BITS)).astype(np.int32)
    return xmin, fixed


def _pass(img: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    """One separable pass along `axis` (0 = rows, 1 = columns) of an HxW or HxWxC uint8 image."""
    in_size = img.shape[axis]
    xmin, fixed = _coefficients(in_size, out_size)
    src = np.moveaxis(img, axis, 0).astype(np.int32)  # sums stay below 255 * 2**22 + 2**21 < 2**31, as in C
    acc = np.full((out_size,) + src.shape[1:], 1 << (_PRECISION_BITS - 1), np.int32)
    extra = (slice(None),) + (None,) * (src.ndim - 1)
    for k in range(fixed.shape[1]):
        idx = np.minimum(xmin + k, in_size - 1)  # taps past xmax have weight 0; clamp only keeps the index valid
        acc += src[idx] * fixed[:, k][extra]
    out = np.clip(acc >> _PRECISION_BITS, 0, 255).astype(np.uint8)
    return np.moveaxis(out, 0, axis)


def pil_bilinear(img: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """uint8 HxW or HxWxC image -> (h, w), as `PIL.Image.resize((w, h), Image.BILINEAR)` on that image.

    An axis whose size does not change is not resampled. Pass order as Pillow >= 11.1: vertical first when the
    height shrinks by more than twice as many pixels as the width, else horizontal first (Pillow <= 11.0 always
    ran horizontal first; the two differ by at most one grey level, and never for a square-to-square resize).
    """
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise ValueError(f"pil_bilinear: expected a uint8 HxW or HxWxC image, got dtype {img.dtype} shape {img.shape}")
    h, w = size_hw
    in_h, in_w = img.shape[:2]
    if (in_h - h) > 0 and (in_h - h) > (in_w - w) * 2:
        out = img if in_h == h else _pass(img, h, axis=0)
        return out if in_w == w else _pass(out, w, axis=1)
    out = img if in_w == w else _pass(img, w, axis=1)
    return out if in_h == h else _pass(out, h, axis=0)
