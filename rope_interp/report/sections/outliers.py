"""The rotary outliers section: flagged (layer, head, pair) entries against Jonasson's bounds."""

from __future__ import annotations

import pandas as pd

from rope_interp.analysis.outliers import bound_summary, offset_features
from rope_interp.plots.analysis import plot_offset_features, plot_pair_maxima
from rope_interp.plots.generic import plot_heatmap
from rope_interp.report.context import ReportContext
from rope_interp.report.document import Claim, Section
from rope_interp.report.registry import section
from rope_interp.report.sections._tables import descending
from rope_interp.report.verdicts import percent, share_verdict, wilson_text

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
    table = offset_features(stats, context=ctx.context)
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
        claims=outlier_claims(table, ctx.context),
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


def outlier_claims(table: pd.DataFrame, context: int) -> list[Claim]:
    """Jonasson's three conditions on the flagged pairs, each against its base rate over all
    (layer, head, pair) entries."""
    flagged = table[table.flagged]
    n = len(flagged)
    claims = []
    for column, text in _BOUNDS:
        k = int(flagged[column].sum())
        base = float(table[column].mean())
        claims.append(
            Claim(
                claim=f"A. Jonasson: {text} (L = {context})",
                number=(
                    f"{k} of {n} flagged pairs ({percent(k / n) if n else 'none flagged'}); "
                    f"base rate over all {len(table)} entries {percent(base)}"
                ),
                test=(
                    "share of flagged (layer, head, pair) entries (project rule) that meet the "
                    "condition; holds if the Wilson 95 % interval's lower end exceeds the base "
                    "rate, does not hold if its upper end is below it, else inconclusive"
                ),
                uncertainty=wilson_text(k, n),
                verdict=share_verdict(k, n, base),
            )
        )
    return claims
