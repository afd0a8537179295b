"""Rank correlation, the one implementation used wherever two backends' scores are compared (export parity, the
fp16/int8 gate, engine verification). numpy only, so the device side can use it."""

from __future__ import annotations

import numpy as np


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(1, len(x) + 1)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    if (counts > 1).any():
        ranks = (np.bincount(inverse, weights=ranks) / counts)[inverse]
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman rank correlation (ties get average ranks); None when undefined: fewer than 2 values, or a
    constant series."""
    x, y = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if len(x) != len(y):
        raise ValueError(f"spearman: series of different lengths ({len(x)} and {len(y)})")
    if len(x) < 2:
        return None
    rx, ry = _ranks(x), _ranks(y)
    if np.std(rx) == 0 or np.std(ry) == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def rank_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman for parity checks: 1.0 when both series are constant (or shorter than 2: nothing to disagree
    on), 0.0 when only one is constant (its order carries no information)."""
    rho = spearman(a, b)
    if rho is not None:
        return rho
    x, y = np.asarray(a).ravel(), np.asarray(b).ravel()
    return 1.0 if len(x) < 2 or (np.ptp(x) == 0 and np.ptp(y) == 0) else 0.0
