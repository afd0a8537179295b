"""The one rank correlation (edge_ad.runtime.ranking), checked against scipy, and its parity variant."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from edge_ad.runtime.ranking import rank_agreement, spearman


def test_spearman_matches_scipy_with_ties() -> None:
    g = np.random.default_rng(0)
    for n in (2, 3, 7, 50):
        a, b = g.integers(0, 5, n).astype(float), g.normal(size=n)
        want = spearmanr(a, b).statistic
        got = spearman(a, b)
        assert (got is None) == (not np.isfinite(want)) and (got is None or got == pytest.approx(want, abs=1e-12))
    a = np.array([0.1, 0.2, 0.3, 0.4])
    assert spearman(a, a * 2 + 1) == pytest.approx(1.0) and spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(a, np.array([1.0, 1.0, 2.0, 3.0])) == pytest.approx(0.9486833, abs=1e-6)
    assert spearman(a, np.ones(4)) is None and spearman(a[:1], a[:1]) is None
    with pytest.raises(ValueError, match="different lengths"):
        spearman(a, a[:3])


def test_rank_agreement_for_parity() -> None:
    a = np.array([0.1, 0.2, 0.3])
    assert rank_agreement(a, a) == pytest.approx(1.0)
    assert rank_agreement(np.ones(3), np.ones(3)) == 1.0  # both constant: nothing to disagree on
    assert rank_agreement(a, np.ones(3)) == 0.0 and rank_agreement(a[:1], a[:1]) == 1.0
