"""The rotary outliers section: flagged (layer, head, pair) entries against Jonasson's bounds."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from rope_interp.analysis.outliers import bound_summary, offset_features
from rope_interp.analysis.statistics import matched_base_rate
from rope_interp.plots.analysis import plot_offset_features, plot_pair_maxima
from rope_interp.plots.generic import plot_heatmap
from rope_interp.report.context import ReportContext
from rope_interp.report.document import Claim, Section
from rope_interp.report.registry import section
from rope_interp.report.sections._tables import descending
from rope_interp.report.verdicts import (
    definition_verdict,
    null_text,
    percent,
    share_verdict,
    wilson_text,
)

#: Outlier thresholds (robust z) the claims are judged under; the project's default first.
OUTLIER_THRESHOLDS = (3.5, 2.5, 3.0, 4.0, 5.0)

_COLUMNS = [
    "layer",
    "head",
    "pair",
    "cycles",
    "q_max",
    "k_max",
    "q_z",
    "k_z",
    "q_conc",
    "k_conc",
    "alpha",
    "sweep_end",
    "partial_cycle",
    "frequency_bound",
    "angle_bound",
]


@section("outliers")
def outliers_section(ctx: ReportContext) -> Section:
    stats = ctx.pair_stats()
    thresholds = OUTLIER_THRESHOLDS
    table = offset_features(stats, context=ctx.context, threshold=thresholds[0])
    summary = bound_summary(table)
    reference = bound_summary(offset_features(stats, context=ctx.context, rule="reference"))
    reference.insert(0, "rule", "reference (max > 4 × global median)")
    both_rules = pd.concat(
        [summary.assign(rule="project"), reference[reference.scope == "flagged"]],
        ignore_index=True,
    )
    per_pair = table.groupby("pair", as_index=False).agg(
        q_max=("q_max", "max"),
        k_max=("k_max", "max"),
        flagged=("flagged", "sum"),
        cycles=("cycles", "first"),
    )
    flagged = table[table.flagged]
    figures = [
        plot_pair_maxima(per_pair, ctx.spec.first_partial_pair(ctx.context), ctx.spec.n_pairs),
        plot_heatmap(
            table,
            "pair",
            "layer",
            "q_z",
            "Outlier score of q (robust z of log max |z|), max over heads",
            aggfunc="max",
        ),
        plot_offset_features(table),
    ]
    shown = flagged if len(flagged) else descending(table, "q_z").head(50)
    return Section(
        "Rotary outliers and offset features",
        how_to_read=(
            f"a pair is flagged when both its q and k maxima are outliers among the head's pairs "
            f"(robust z > {table.attrs.get('threshold', 3.5)}); Jonasson's claim holds if flagged "
            "pairs sit in the partial-cycle band and satisfy the bounds more often than "
            "all pairs do (compare the rows of the first table). The last row uses Jonasson's "
            "reference rule instead: one global threshold, max |z| > 4 × the median over all "
            "layers, heads and pairs."
        ),
        prose=(
            f"{int(table.flagged.sum())} of {len(table)} (layer, head, pair) entries are flagged "
            f"at context L = {ctx.context}."
        ),
        key_result=_outliers_key(table, summary),
        claims=outlier_claims(
            {t: offset_features(stats, context=ctx.context, threshold=t) for t in thresholds},
            ctx.context,
        ),
        figures=figures,
        tables=[
            ("Bounds: flagged pairs vs all pairs", both_rules),
            (
                "Flagged pairs" if len(flagged) else "Top 50 by q outlier score (none flagged)",
                shown[[c for c in _COLUMNS if c in shown]],
            ),
        ],
    )


def _outliers_key(table: pd.DataFrame, summary: pd.DataFrame) -> str:
    n = int(table.flagged.sum())
    if not n:
        return f"no (layer, head, pair) flagged of {len(table)}"
    rows = summary.set_index("scope")
    return (
        f"{n} of {len(table)} (layer, head, pair) flagged; partial-cycle "
        f"{rows.loc['flagged', 'partial_cycle']:.0%} (all pairs "
        f"{rows.loc['all', 'partial_cycle']:.0%}), angle bound "
        f"{rows.loc['flagged', 'angle_bound']:.0%} (all {rows.loc['all', 'angle_bound']:.0%})"
    )


_BOUNDS = (
    ("partial_cycle", "q/k outliers sit in partial-cycle pairs (θ_i·L < 2π)"),
    ("frequency_bound", "outlier pairs satisfy the frequency bound θ_i(L−1) < π"),
    ("angle_bound", "outlier pairs keep the sign of their angle over the context"),
)

#: Which null each condition is judged against, and why that one.
_NULLS = {
    "partial_cycle": (
        "the share of all (layer, head, pair) entries that meet the condition",
        "the claim is where along the frequency axis outliers sit, so the null is a flag "
        "blind to frequency",
    ),
    "frequency_bound": (
        "the share of all (layer, head, pair) entries that meet the condition",
        "the claim is where along the frequency axis outliers sit, so the null is a flag "
        "blind to frequency",
    ),
    "angle_bound": (
        "the frequency-matched base rate: the share meeting it among unflagged entries of the "
        "same pair frequencies, weighted as the flagged pairs are",
        "a low-frequency pair sweeps a small angle over the context and keeps its sign for "
        "most offset angles, so flagged low-frequency pairs would meet it without any special "
        "angle; only a rate above same-frequency pairs says the angle is special",
    ),
}


def bound_test(table: pd.DataFrame, column: str) -> dict:
    """One condition on one flagged table: k of n flagged entries meet it, the base rate the
    claim is judged against (`_NULLS`: all entries, or frequency-matched), the unmatched rate,
    and the verdict (`share_verdict` against that base)."""
    flagged = table[table.flagged]
    k, n = int(flagged[column].sum()), len(flagged)
    unmatched = float(table[column].mean())
    if column == "angle_bound":
        base = matched_base_rate(table[column], table["theta"], table["flagged"])
    else:
        base = unmatched
    return {
        "k": k,
        "n": n,
        "base": base,
        "unmatched": unmatched,
        "verdict": share_verdict(k, n, base),
    }


def outlier_claims(tables: Mapping[float, pd.DataFrame], context: int) -> list[Claim]:
    """Jonasson's three conditions on the flagged pairs, each against the null of `_NULLS`,
    judged under every outlier threshold in `tables` (threshold → `offset_features` table, the
    primary threshold first) by `definition_verdict`."""
    thresholds = list(tables)
    claims = []
    for column, text in _BOUNDS:
        tests = [bound_test(tables[t], column) for t in thresholds]
        first = tests[0]
        k, n = first["k"], first["n"]
        verdict, across = definition_verdict(
            pd.DataFrame(
                {"outlier threshold": thresholds, "verdict": [t["verdict"] for t in tests]}
            ),
            ["outlier threshold"],
        )
        sweep = "; ".join(
            f"z > {t:g}: {r['k']}/{r['n']} vs {percent(r['base'])} ({r['verdict']})"
            for t, r in zip(thresholds, tests, strict=True)
        )
        null, why = _NULLS[column]
        base_text = (
            f"frequency-matched base rate {percent(first['base'])} (unmatched, all "
            f"{len(tables[thresholds[0]])} entries: {percent(first['unmatched'])})"
            if column == "angle_bound"
            else f"base rate over all {len(tables[thresholds[0]])} entries {percent(first['base'])}"
        )
        claims.append(
            Claim(
                claim=f"A. Jonasson (paraphrased; bounds as derived in docs/theory.md): {text} "
                f"(L = {context})",
                number=(
                    f"{k} of {n} flagged pairs ({percent(k / n) if n else 'none flagged'}) at "
                    f"robust z > {thresholds[0]:g}; {base_text}"
                ),
                test=(
                    "share of flagged (layer, head, pair) entries (project rule) that meet the "
                    "condition; holds if the Wilson 95 % interval's lower end exceeds the null's "
                    "rate, does not hold if its upper end is below it, else inconclusive; "
                    "judged at every outlier threshold, one verdict if all agree, else "
                    "depends on the definition. " + null_text(null, why)
                ),
                uncertainty=f"{wilson_text(k, n)}; across thresholds: {sweep} → {across}",
                verdict=verdict,
            )
        )
    return claims
