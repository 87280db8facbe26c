"""The per-head sections that decompose attention scores on the analysis windows: positional
heads, attention sinks and massive values."""

from __future__ import annotations

import pandas as pd

from rope_interp.analysis.massive import massive_values
from rope_interp.analysis.positional import positional_heads
from rope_interp.analysis.sinks import attention_sinks
from rope_interp.analysis.statistics import spearman
from rope_interp.plots.analysis import (
    plot_massive,
    plot_pair_margins,
    plot_positional_heads,
    plot_sinks,
)
from rope_interp.plots.generic import plot_heatmap, plot_scatter
from rope_interp.report.context import ReportContext
from rope_interp.report.document import Section
from rope_interp.report.registry import section
from rope_interp.report.sections._tables import descending


@section("positional")
def positional_section(ctx: ReportContext) -> Section:
    result = positional_heads(
        ctx.model, ctx.analysis_batches(), offsets=(0, 1), progress=ctx.progress
    )
    heads = result.heads
    figures = []
    for offset, name in ((0, "diagonal (self)"), (1, "previous token")):
        part = heads[heads.offset == offset]
        figures.append(
            plot_heatmap(
                part, "head", "layer", "attn", f"Attention on the {name}: mean A[m, m−{offset}]"
            )
        )
    figures.append(plot_positional_heads(heads, offset=1))
    best = descending(heads[heads.offset == 1], "attn").iloc[0]
    figures.append(plot_pair_margins(result.pairs, int(best["layer"]), int(best["head"]), offset=1))
    top = descending(heads, "attn")
    keep = [
        "layer",
        "head",
        "offset",
        "attn",
        "margin",
        "top_pair",
        "top_pair_margin",
        "high_band_margin",
        "low_band_margin",
        "high_margin_fraction",
        "qk_high_share",
    ]
    return Section(
        "Positional heads",
        how_to_read=(
            "heads with high attention on themselves (offset 0) or the previous token (offset 1) "
            "are positional heads; Barbero et al. predict they use the highest frequencies: "
            "look for large `high_margin_fraction` (the share of the score margin built by the "
            "top 25 % of frequencies) and `qk_high_share` among the top rows."
        ),
        figures=figures,
        tables=[("Heads by attention at the offset", top[[c for c in keep if c in top]])],
        key_result=_positional_key(heads, best),
    )


def _positional_key(heads: pd.DataFrame, best) -> str:
    prev = heads[heads.offset == 1]
    corr = spearman(prev["attn"], prev["qk_high_share"])
    return (
        f"strongest previous-token head L{int(best['layer'])}H{int(best['head'])} "
        f"(attention {best['attn']:.2f}, {best['high_margin_fraction']:.0%} of its margin from the "
        f"high band); Spearman ρ(previous-token attention, high-frequency share) = {corr:.2f}"
    )


@section("sinks")
def sinks_section(ctx: ReportContext) -> Section:
    result = attention_sinks(ctx.model, ctx.analysis_batches(), progress=ctx.progress)
    heads = result.heads
    strongest = descending(heads, "first_mass").iloc[0]
    figures = [
        plot_sinks(heads, "importance"),
        plot_pair_margins(result.pairs, int(strongest["layer"]), int(strongest["head"])),
        plot_scatter(
            heads,
            "first_mass",
            "low_margin_fraction",
            "First-token mass vs the share of its margin built by the lowest frequencies",
            hover=("layer", "head", "top_pair"),
        ),
    ]
    n_sinks = int(heads.is_sink.sum())
    return Section(
        "Attention sinks",
        how_to_read=(
            "a head has a sink when the first token's importance exceeds 0.3 (Gu et al.); "
            "`low_margin_fraction` near 1 means the lowest-frequency pairs make the first key win "
            "(Jonasson's offset features)."
        ),
        prose=f"{n_sinks} of {len(heads)} heads have a sink on the first token.",
        key_result=(
            f"{n_sinks} of {len(heads)} heads have a first-token sink; in them the lowest "
            f"25 % of frequencies build a median "
            f"{heads[heads.is_sink].low_margin_fraction.median():.0%} of the first-token margin"
            if n_sinks
            else f"no sink among {len(heads)} heads"
        ),
        figures=figures,
        tables=[("Heads by first-token attention", descending(heads, "first_mass"))],
    )


@section("massive")
def massive_section(ctx: ReportContext) -> Section:
    table = massive_values(ctx.model, ctx.analysis_batches(), progress=ctx.progress)
    by_kind = table.groupby("kind", as_index=False).agg(
        mean_pair_position=("pair_position", "mean"),
        mean_ratio=("ratio", "mean"),
        max_ratio=("ratio", "max"),
    )
    return Section(
        "Massive values",
        how_to_read=(
            "Jin et al. find each head's largest q/k dimensions in low-frequency pairs "
            "(`pair_position` near 1) and not in v: compare the kinds in the first table."
        ),
        figures=[plot_massive(table)],
        tables=[
            ("Per kind (top dimensions of every head)", by_kind),
            ("Top dimensions per head", descending(table, "ratio")),
        ],
        key_result=", ".join(
            f"{row.kind}: mean pair position {row.mean_pair_position:.2f}"
            for row in by_kind.itertuples()
            if row.kind in ("q", "k")
        )
        + " (0 = highest, 1 = lowest frequency)",
    )
