"""Pillow's antialiased bilinear resize (`Image.resize(size, BILINEAR)`) in numpy, bit-exact, without Pillow.

Official Dinomaly and MambaAD (ADer) resize PIL images with torchvision's `Resize`, i.e. Pillow's two-pass
resampler: separable triangle filter widened by the downscale factor (antialiasing), coefficients normalised per
output pixel and rounded to 22-bit fixed point, a horizontal pass into a uint8 image, then a vertical pass.
This reproduces that arithmetic (libImaging/Resample.c: precompute_coeffs, normalize_coeffs_8bpc,
ImagingResampleHorizontal/Vertical_8bpc) so the torch-free runtime feeds a model the pixels it was trained on.
Where Pillow >= 11.1 is installed it is called instead (identical output, about 10x faster); without it the
numpy path runs (Pillow is not a runtime dependency).
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
    shape = list(img.shape)
    shape[axis] = out_size
    acc = np.full(shape, 1 << (_PRECISION_BITS - 1), np.int32)  # sums stay below 255 * 2**22 + 2**21 < 2**31
    bcast = [1] * img.ndim
    bcast[axis] = out_size
    for k in range(fixed.shape[1]):
        idx = np.minimum(xmin + k, in_size - 1)  # taps past xmax have weight 0; clamp only keeps the index valid
        tap = np.take(img, idx, axis=axis).astype(np.int32)
        tap *= fixed[:, k].reshape(bcast)
        acc += tap
    return np.clip(acc >> _PRECISION_BITS, 0, 255).astype(np.uint8)


def _pillow() -> object | None:
    """Pillow's Image module if Pillow >= 11.1 is installed (same pass order as `pil_bilinear`), else None."""
    global _PIL
    if _PIL is None:
        try:
            import PIL
            from PIL import Image

            version = tuple(int(v) for v in PIL.__version__.split(".")[:2])
            _PIL = Image if version >= (11, 1) else False
        except (ImportError, ValueError):
            _PIL = False
    return _PIL or None


_PIL: object | None = None


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
    pil = _pillow() if img.ndim == 2 or img.shape[2] == 3 else None  # 4 channels: Pillow would treat alpha
    if pil is not None:  # the same arithmetic in C, ~10x faster; optional (not a runtime dependency)
        return np.asarray(pil.fromarray(np.ascontiguousarray(img)).resize((w, h), pil.BILINEAR))  # type: ignore[attr-defined]
    if (in_h - h) > 0 and (in_h - h) > (in_w - w) * 2:
        out = img if in_h == h else _pass(img, h, axis=0)
        return out if in_w == w else _pass(out, w, axis=1)
    out = img if in_w == w else _pass(img, w, axis=1)
    return out if in_h == h else _pass(out, h, axis=0)
