"""The rules that turn a section's numbers into the verdict of a `Claim`.

Each rule is a small pure function of numbers the section has already computed, so that a
verdict is never written by hand and every section states the same rule the same way (the
`test` field of its claim repeats the rule in words). Verdicts are from `document.VERDICTS`.

Every claim names its null — the comparison that controls the obvious confound — with
`null_text`: for claims about pairs, a base rate matched on what would make the claim true by
construction (usually the pair's frequency, `statistics.matched_base_rate`); for claims about
heads, the complementary set of heads (`two_share_verdict`, Fisher's exact test); for claims
that a perturbation hurts, a control perturbation of the same size on other pairs. A claim whose
result depends on a pipeline choice (a threshold, a window, a band size) is judged under each
definition by `definition_verdict`, one rule for all of them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd

from rope_interp.analysis.statistics import fisher_exact, wilson_interval


def wilson_text(successes: int, n: int) -> str:
    """'k/n: [low, high] % (Wilson 95 %)', or 'n = 0: no interval'."""
    if n == 0:
        return "n = 0: no interval"
    low, high = wilson_interval(successes, n)
    return f"{successes}/{n}: [{100 * low:.1f}, {100 * high:.1f}] % (Wilson 95 %)"


def share_verdict(successes: int, n: int, base: float) -> str:
    """A share that the claim says exceeds `base`: "holds" when the Wilson 95 % interval's
    lower end is above `base`, "does not hold" when its upper end is below it, otherwise
    "inconclusive"; "not tested here" when n is 0."""
    if n == 0 or not math.isfinite(base):
        return "not tested here"
    low, high = wilson_interval(successes, n)
    if low > base:
        return "holds"
    if high < base:
        return "does not hold"
    return "inconclusive"


def two_share_verdict(k1: int, n1: int, k2: int, n2: int, alpha: float = 0.05) -> str:
    """A share k1/n1 that the claim says exceeds a comparison group's k2/n2 (e.g. sink heads
    against the other heads): "holds" when Fisher's exact one-sided p (greater) < alpha,
    "does not hold" when the one-sided p the other way (less) < alpha, otherwise "no
    evidence"; "not tested here" when a group is empty."""
    if n1 == 0 or n2 == 0:
        return "not tested here"
    if fisher_exact(k1, n1, k2, n2, "greater") < alpha:
        return "holds"
    if fisher_exact(k1, n1, k2, n2, "less") < alpha:
        return "does not hold"
    return "no evidence"


def interval_verdict(ci_low: float, ci_high: float) -> str:
    """A difference that the claim says is positive: "holds" when its interval lies above 0,
    "does not hold" when it lies below 0, otherwise "inconclusive"."""
    if not (math.isfinite(ci_low) and math.isfinite(ci_high)):
        return "not tested here"
    if ci_low > 0:
        return "holds"
    if ci_high < 0:
        return "does not hold"
    return "inconclusive"


def contrast_and_controls_verdict(ci_low: float, ci_high: float, beyond_controls: bool) -> str:
    """An effect that the claim says exceeds a random control: the paired contrast against the
    controls' mean decides its sign ("does not hold" below 0, "inconclusive" when the interval
    contains 0); above 0 it "holds" if the effect also lies beyond every single control and is
    "partly" shown otherwise (larger than the average control, not than the controls' spread)."""
    sign = interval_verdict(ci_low, ci_high)
    if sign != "holds":
        return sign
    return "holds" if beyond_controls else "partly"


def correlation_verdict(rho: float, p_value: float, alpha: float = 0.05) -> str:
    """A correlation that the claim says is positive: "holds" when ρ > 0 with permutation
    p < alpha, "does not hold" when ρ < 0 with p < alpha, otherwise "no evidence"."""
    if not (math.isfinite(rho) and math.isfinite(p_value)):
        return "not tested here"
    if p_value < alpha:
        return "holds" if rho > 0 else "does not hold"
    return "no evidence"


def enrichment_verdict(observed: float, null_mean: float, p_value: float, alpha=0.05) -> str:
    """More hits than a null: "no evidence" when p ≥ alpha, otherwise "holds" if the observed
    rate exceeds the null's mean and "does not hold" if it falls below it."""
    if not math.isfinite(p_value):
        return "not tested here"
    if p_value >= alpha:
        return "no evidence"
    return "holds" if observed > null_mean else "does not hold"


def count_verdict(passed: int, n: int) -> str:
    """Of n checks the claim needs: all pass → "holds", some → "partly", none → "does not
    hold" (no checks: "not tested here")."""
    if n == 0:
        return "not tested here"
    if passed == n:
        return "holds"
    return "partly" if passed else "does not hold"


def in_ranges(values: Sequence[float], ranges: Sequence[tuple[float, float]]) -> int:
    """How many `values` lie inside their (low, high) range, ends included."""
    return sum(low <= v <= high for v, (low, high) in zip(values, ranges, strict=True))


def definition_verdict(
    verdicts: pd.DataFrame,
    factors: Sequence[str],
    families: Mapping[str, Mapping[object, str]] | None = None,
) -> tuple[str, str]:
    """The one rule for a claim whose result depends on a pipeline choice: `verdicts` has one
    row per definition (a column per choice in `factors`, and `verdict`), the primary
    definition (the source's, or the project's default) first. The same verdict under every
    definition is the claim's verdict; otherwise it is "depends on the definition".

    `families` groups near-identical choices (factor → {value: family name}, e.g. both Hann
    windows → "Hann"); values not listed are their own family. Returns (verdict, text): the
    text names the family (one factor, else the pair of factors) whose values decide the
    verdict, with the verdict under each, or says that no single family or pair does."""
    if verdicts.empty:
        return "not tested here", "no definition tested"
    families = families or {}
    grouped = verdicts.copy()
    for factor in factors:
        mapping = families.get(factor, {})
        grouped[factor] = [f"{factor} {mapping.get(v, v)}" for v in verdicts[factor]]
    distinct = list(dict.fromkeys(grouped["verdict"]))
    primary = grouped["verdict"].iloc[0]
    if len(distinct) == 1:
        return primary, f"{primary} under all {len(grouped)} definitions"
    candidates = [[f] for f in factors] + [
        [a, b] for i, a in enumerate(factors) for b in factors[i + 1 :]
    ]
    for keys in candidates:
        by = grouped.groupby(keys, sort=False)["verdict"]
        if (by.nunique() == 1).all():
            parts = [
                f"{' × '.join(key if isinstance(key, tuple) else (key,))}: {verdict}"
                for key, verdict in by.first().items()
            ]
            named = " × ".join(keys)
            return "depends on the definition", (
                f"{primary} under the primary definition; the verdict changes with the "
                f"{named} family ({'; '.join(parts)})"
            )
    counts = grouped["verdict"].value_counts()
    return "depends on the definition", (
        f"{primary} under the primary definition; over {len(grouped)} definitions "
        + ", ".join(f"{verdict} in {n}" for verdict, n in counts.items())
        + " (no single family decides it)"
    )


def null_text(null: str, why: str) -> str:
    """The sentence every claim's test ends with: 'Null: <null>, because <why>.'"""
    return f"Null: {null}, because {why}."


def pvalue_text(p: float, n_draws: int) -> str:
    """A Monte Carlo / permutation p-value from n_draws draws (computed as (1 + count) /
    (1 + n_draws)): at its floor it reads '≤ 1/(n_draws + 1)' — the test cannot say more."""
    if not math.isfinite(p):
        return "p = NaN"
    floor = 1 / (n_draws + 1)
    if p <= floor * (1 + 1e-9):
        return f"p ≤ 1/{n_draws + 1} ({floor:.1g}, the floor of {n_draws} draws)"
    return f"p = {p:.2g}"


def percent(x: float, digits: int = 1) -> str:
    """0.256 → '25.6 %'."""
    return f"{100 * x:.{digits}f} %" if math.isfinite(x) else "NaN"
