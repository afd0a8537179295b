"""MambaAD's hybrid scan orders (sweep, scan, z-order, zigzag, Hilbert) and the 8 scan directions as index
permutations of a fixed S x S grid.

A scan order is `P` (length S*S): `P[i]` is the row-major pixel index visited at sequence position i, exactly the
official `HSCANS.index_flat` (MambaAD `model/mambaad.py`). The official SS2D encodes with
`zeros.scatter_(2, index_flat_inv, x)` and views the image 4 ways (identity, transpose, rot90, transpose(rot90)),
then appends the 4 reversed sequences; `direction_permutations` folds all of that into one gather index per
direction, so the export graph holds two constant int64 tables instead of ScatterElements/rot90/flip.

Everything here is numpy and runs once at construction time for the model's fixed size: the permutations are
stored as buffers, never recomputed per image.
"""

from __future__ import annotations

import numpy as np

SCAN_METHODS = ("sweep", "scan", "zorder", "zigzag", "hilbert")
NUM_DIRECTIONS = 8


def _log2_exact(size: int) -> int:
    nb = int(size).bit_length() - 1
    if size < 2 or (1 << nb) != size:
        raise ValueError(f"grid size {size} is not a power of two >= 2 (Hilbert and Z-order need one)")
    return nb


def sweep_order(size: int) -> np.ndarray:
    """Raster order: row by row, left to right."""
    return np.arange(size * size, dtype=np.int64)


def boustrophedon_order(size: int) -> np.ndarray:
    """The official 'scan': raster with every odd row reversed (snake)."""
    idx = np.arange(size * size, dtype=np.int64).reshape(size, size)
    idx[1::2] = idx[1::2, ::-1]
    return idx.reshape(-1)


def zorder_order(size: int) -> np.ndarray:
    """Morton order as `pyzorder.ZOrderIndexer((0,S-1),(0,S-1)).rc(z)` -> (r, c), flattened as c*S + r: the
    de-interleaved even bits of z give the column-major row index, the odd bits the column (official code)."""
    nb = _log2_exact(size)
    z = np.arange(size * size, dtype=np.int64)
    r = np.zeros_like(z)
    c = np.zeros_like(z)
    for b in range(nb):
        r |= ((z >> (2 * b)) & 1) << b
        c |= ((z >> (2 * b + 1)) & 1) << b
    return c * size + r


def zigzag_order(size: int) -> np.ndarray:
    """JPEG-style zigzag over anti-diagonals i: even i visits (i-j, j), odd i visits (j, i-j), j ascending."""
    out = []
    for i in range(2 * size - 1):
        for j in range(max(0, i - size + 1), min(i, size - 1) + 1):
            r, c = (i - j, j) if i % 2 == 0 else (j, i - j)
            out.append(r * size + c)
    return np.asarray(out, dtype=np.int64)


def hilbert_order(size: int) -> np.ndarray:
    """Hilbert curve exactly as `hilbert.decode(arange(S*S), 2, log2 S)` (numpy-hilbert-curve, Skilling's
    transpose algorithm) flattened as p0 + p1*S, the official `flat_locs_hilbert`.

    Starts at the top-left pixel and ends at the top-right one; its first step goes down when log2 S is odd
    (S = 8, 32) and right when it is even (S = 16, 64). A textbook d2xy gives a rotated curve instead, and
    official weights would silently stop matching.
    """
    nb = _log2_exact(size)
    h = np.arange(size * size, dtype=np.int64)
    g = h ^ (h >> 1)  # Gray code
    # bits of g MSB-first over 2*nb bits; X[d][b] = bits[2*b + d], b = 0 is the most significant bit
    bits = (g[:, None] >> np.arange(2 * nb - 1, -1, -1)[None, :]) & 1
    x = [bits[:, d::2].copy() for d in (0, 1)]  # each (S*S, nb), column b = bit b (MSB first)
    for b in range(nb - 1, -1, -1):
        for d in (1, 0):
            lo = slice(b + 1, None)
            flip = x[d][:, b] == 1
            # set: invert the low bits of dim 0; clear: swap the low bits of dim 0 and dim d
            t = (x[0][:, lo] ^ x[d][:, lo]) * (~flip)[:, None]
            x[0][:, lo] ^= flip[:, None].astype(np.int64)
            x[d][:, lo] ^= t
            x[0][:, lo] ^= t
    weights = 1 << np.arange(nb - 1, -1, -1)
    p0 = (x[0] * weights).sum(1)
    p1 = (x[1] * weights).sum(1)
    return (p0 + p1 * size).astype(np.int64)


_ORDERS = {
    "sweep": sweep_order,
    "scan": boustrophedon_order,
    "zorder": zorder_order,
    "zigzag": zigzag_order,
    "hilbert": hilbert_order,
}


def scan_order(method: str, size: int) -> np.ndarray:
    """`P` of one of SCAN_METHODS on an S x S grid (int64, a permutation of 0..S*S-1)."""
    if method not in _ORDERS:
        raise ValueError(f"unknown scan method {method!r}; expected one of {', '.join(SCAN_METHODS)}")
    return _ORDERS[method](size)


def direction_permutations(method: str, size: int) -> np.ndarray:
    """(8, S*S) int64: direction k's sequence is `x_flat[..., P_k]` (row-major x_flat of the B,d,H,W map)."""
    return directions_from_order(scan_order(method, size), size)


def directions_from_order(p: np.ndarray, size: int) -> np.ndarray:
    """The 8 direction permutations of a base order P (e.g. `index_flat` loaded from a checkpoint).

    Code order k = 0..7 (the order the per-direction weights are stored in): P on the image, on its transpose,
    on its 90-degree counter-clockwise rotation, on transpose(rot90) = its left-right flip, then those 4
    sequences reversed. (The paper lists forward/reverse pairs instead; weights follow the code.)
    """
    r, c = np.divmod(np.asarray(p, dtype=np.int64), size)
    base = np.stack([
        r * size + c,                  # identity
        c * size + r,                  # transpose: x'[r,c] = x[c,r]
        c * size + (size - 1 - r),     # rot90 CCW: x'[r,c] = x[c, S-1-r]
        r * size + (size - 1 - c),     # transpose(rot90) = left-right flip: x'[r,c] = x[r, S-1-c]
    ])
    return np.concatenate([base, base[:, ::-1]]).astype(np.int64)


def inverse_permutations(perms: np.ndarray) -> np.ndarray:
    """Row-wise argsort: `y_k[..., P_inv_k]` puts a direction's outputs back in row-major pixel order."""
    return np.argsort(perms, axis=-1).astype(np.int64)
