"""Correlation statistics shared by the analyses: one tie-aware Spearman, Pearson, and
permutation p-values. numpy only (scipy is optional in this project)."""

from __future__ import annotations

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


__all__ = [
    "correlation_test",
    "pearson",
    "permutation_pvalue",
    "rankdata",
    "spearman",
    "wilson_interval",
]
