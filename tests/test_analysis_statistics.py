"""One tie-aware Spearman and permutation p-values, against hand computations (scipy is not a
dependency) and exact enumeration."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rope_interp.analysis.statistics import (
    correlation_test,
    pearson,
    permutation_pvalue,
    rankdata,
    spearman,
)
from rope_interp.errors import RopeInterpError


def test_ranks_average_ties():
    assert rankdata([10, 20, 20, 5, 20]).tolist() == [2.0, 4.0, 4.0, 1.0, 4.0]


def test_spearman_with_ties_matches_hand_computation():
    # ranks x = [1, 2.5, 2.5, 4], y = [1, 3, 2, 4]: Σdxdy = 4.5, Σdx² = 4.5, Σdy² = 5.
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / np.sqrt(4.5 * 5))


def test_spearman_is_invariant_to_monotone_maps_and_skips_nans():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=50), rng.normal(size=50)
    assert spearman(np.exp(x), y**3) == pytest.approx(spearman(x, y))
    assert spearman(np.append(x, np.nan), np.append(y, 1.0)) == pytest.approx(spearman(x, y))
    assert pearson(x, 2 * x + 1) == pytest.approx(1.0)


def test_permutation_pvalue_matches_exact_enumeration():
    x = np.array([0.3, 1.2, 0.7, 2.5, 1.9, 0.1, 1.4])
    y = np.array([1.0, 0.4, 1.5, 2.2, 0.9, 0.2, 2.0])
    observed = abs(pearson(x, y))
    exact = np.mean(
        [
            abs(pearson(x, y[list(perm)])) >= observed - 1e-12
            for perm in itertools.permutations(range(7))
        ]
    )
    p = permutation_pvalue(x, y, "pearson", n_permutations=20_000, seed=1)
    assert p == pytest.approx(exact, abs=0.01)


def test_correlation_test_reports_both_and_rejects_bad_input():
    rng = np.random.default_rng(2)
    x = rng.normal(size=40)
    out = correlation_test(x, -x + 0.1 * rng.normal(size=40), n_permutations=999)
    assert out["spearman"] < -0.9 and out["spearman_p"] == pytest.approx(1 / 1000)
    assert out["n"] == 40
    with pytest.raises(RopeInterpError, match="same length"):
        spearman([1, 2, 3], [1, 2])
    with pytest.raises(RopeInterpError, match="method"):
        permutation_pvalue(x, x, "kendall")
