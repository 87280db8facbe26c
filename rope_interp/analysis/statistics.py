"""Statistics shared by the analyses and the report: one tie-aware Spearman, Pearson,
permutation p-values, Wilson intervals, Fisher's exact test and frequency-matched base rates.
numpy only (scipy is optional in this project)."""

from __future__ import annotations

import math

import numpy as np

from rope_interp.errors import RopeInterpError


def rankdata(x) -> np.ndarray:
    """Ranks 1..n of a 1-D array, ties given the mean of the ranks they span (like
    `scipy.stats.rankdata(method="average")`)."""
    a = np.asarray(x, dtype=np.float64).ravel()
    order = np.argsort(a, kind="mergesort")
    sorted_a = a[order]
    # Start index of each run of equal values.
    new_run = np.concatenate([[True], sorted_a[1:] != sorted_a[:-1]])
    run_id = np.cumsum(new_run) - 1
    starts = np.flatnonzero(new_run)
    ends = np.concatenate([starts[1:], [len(a)]])
    mean_rank = (starts + ends + 1) / 2.0  # mean of ranks start+1..end
    ranks = np.empty(len(a))
    ranks[order] = mean_rank[run_id]
    return ranks


def _pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(x, dtype=np.float64).ravel()
    b = np.asarray(y, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise RopeInterpError(f"x and y must have the same length, got {len(a)} and {len(b)}.")
    keep = np.isfinite(a) & np.isfinite(b)
    return a[keep], b[keep]


def pearson(x, y) -> float:
    """Pearson r over the finite pairs; NaN with fewer than 3 pairs or a constant input."""
    a, b = _pair(x, y)
    if len(a) < 3:
        return float("nan")
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def spearman(x, y) -> float:
    """Spearman ρ = Pearson r of the tie-averaged ranks, over the finite pairs."""
    a, b = _pair(x, y)
    if len(a) < 3:
        return float("nan")
    return pearson(rankdata(a), rankdata(b))


def permutation_pvalue(
    x, y, method: str = "spearman", n_permutations: int = 10_000, seed: int = 0
) -> float:
    """Two-sided permutation p-value of a correlation: the fraction of random permutations of
    y whose |r| is ≥ the observed |r|, as (1 + count) / (1 + n_permutations)."""
    if method not in ("spearman", "pearson"):
        raise RopeInterpError(f"method must be 'spearman' or 'pearson', got {method!r}.")
    if n_permutations < 1:
        raise RopeInterpError(f"n_permutations must be ≥ 1, got {n_permutations}.")
    a, b = _pair(x, y)
    if len(a) < 3:
        return float("nan")
    if method == "spearman":
        a, b = rankdata(a), rankdata(b)
    a = a - a.mean()
    b = b - b.mean()
    scale = np.sqrt((a * a).sum() * (b * b).sum())
    if scale == 0:
        return float("nan")
    observed = abs((a * b).sum() / scale)
    rng = np.random.default_rng(seed)
    count = 0
    chunk = 1000
    done = 0
    while done < n_permutations:
        n = min(chunk, n_permutations - done)
        perms = rng.permuted(np.broadcast_to(b, (n, len(b))), axis=1)
        r = np.abs(perms @ a) / scale
        count += int((r >= observed - 1e-12).sum())
        done += n
    return (1 + count) / (1 + n_permutations)


def correlation_test(x, y, n_permutations: int = 10_000, seed: int = 0) -> dict[str, float]:
    """Spearman and Pearson r with their two-sided permutation p-values and n."""
    a, _ = _pair(x, y)
    return {
        "spearman": spearman(x, y),
        "spearman_p": permutation_pvalue(x, y, "spearman", n_permutations, seed),
        "pearson": pearson(x, y),
        "pearson_p": permutation_pvalue(x, y, "pearson", n_permutations, seed),
        "n": int(len(a)),
    }


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval (95 % for the default z) of the proportion `successes / n`;
    (NaN, NaN) when n is 0."""
    if n < 0 or not 0 <= successes <= n:
        raise RopeInterpError(f"need 0 ≤ successes ≤ n, got {successes} of {n}.")
    if n == 0:
        return float("nan"), float("nan")
    share = successes / n
    denom = 1 + z * z / n
    centre = (share + z * z / (2 * n)) / denom
    half = z * np.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def fisher_exact(k1: int, n1: int, k2: int, n2: int, alternative: str = "greater") -> float:
    """Fisher's exact test of two shares, k1/n1 against k2/n2 (the 2 × 2 table
    [[k1, n1 − k1], [k2, n2 − k2]]): the p-value of the hypergeometric count of group 1's
    successes given the margins. alternative: "greater" (group 1's share is larger),
    "less", or "two-sided" (the sum of the probabilities no larger than the observed one's,
    as `scipy.stats.fisher_exact`). NaN when a group is empty."""
    if alternative not in ("greater", "less", "two-sided"):
        raise RopeInterpError(
            f"alternative must be 'greater', 'less' or 'two-sided', got {alternative!r}."
        )
    for k, n in ((k1, n1), (k2, n2)):
        if n < 0 or not 0 <= k <= n:
            raise RopeInterpError(f"need 0 ≤ successes ≤ n, got {k} of {n}.")
    if n1 == 0 or n2 == 0:
        return float("nan")
    total, hits = n1 + n2, k1 + k2
    values = range(max(0, hits - n2), min(hits, n1) + 1)
    log_p = np.array(
        [_log_comb(n1, x) + _log_comb(n2, hits - x) - _log_comb(total, hits) for x in values]
    )
    support = np.array(values)
    prob = np.exp(log_p - log_p.max())
    prob /= prob.sum()
    if alternative == "greater":
        p = prob[support >= k1].sum()
    elif alternative == "less":
        p = prob[support <= k1].sum()
    else:
        p = prob[prob <= prob[support == k1][0] * (1 + 1e-7)].sum()
    return float(min(1.0, p))


def matched_base_rate(condition, stratum, selected) -> float:
    """The share of `selected` entries expected to meet `condition` if selection ignored it
    within each stratum: Σ_s n_sel(s) · rate(s) / n_sel, with rate(s) the share meeting the
    condition among the *unselected* entries of stratum s (all of its entries if none is
    unselected). Strata are what would make the condition true by construction (e.g. the
    pair index: its frequency). All three are 1-D arrays of one length; NaN when nothing is
    selected."""
    cond = np.asarray(condition, dtype=bool).ravel()
    strata = np.asarray(stratum).ravel()
    sel = np.asarray(selected, dtype=bool).ravel()
    if not cond.shape == strata.shape == sel.shape:
        raise RopeInterpError(
            f"condition, stratum and selected must have one length, got {len(cond)}, "
            f"{len(strata)} and {len(sel)}."
        )
    if not sel.any():
        return float("nan")
    expected = 0.0
    for value in np.unique(strata[sel]):
        here = strata == value
        rest = here & ~sel
        pool = rest if rest.any() else here
        expected += (here & sel).sum() * cond[pool].mean()
    return float(expected / sel.sum())


__all__ = [
    "correlation_test",
    "fisher_exact",
    "matched_base_rate",
    "pearson",
    "permutation_pvalue",
    "rankdata",
    "spearman",
    "wilson_interval",
]
