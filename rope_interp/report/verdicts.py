"""The rules that turn a section's numbers into the verdict of a `Claim`.

Each rule is a small pure function of numbers the section has already computed, so that a
verdict is never written by hand and every section states the same rule the same way (the
`test` field of its claim repeats the rule in words). Verdicts are from `document.VERDICTS`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rope_interp.analysis.statistics import wilson_interval


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


def spectral_verdict(robustness: str) -> str:
    """`robustness_verdict`'s words as claim verdicts ("fails" → "does not hold")."""
    return {"fails": "does not hold"}.get(robustness, robustness)


def percent(x: float, digits: int = 1) -> str:
    """0.256 → '25.6 %'."""
    return f"{100 * x:.{digits}f} %" if math.isfinite(x) else "NaN"
