"""The per-head sections that decompose attention scores on the analysis windows: positional
heads, attention sinks and massive values."""

from __future__ import annotations

import pandas as pd

from rope_interp.analysis._common import bands
from rope_interp.analysis.activations import massive_activations
from rope_interp.analysis.massive import massive_values
from rope_interp.analysis.positional import positional_heads
from rope_interp.analysis.sinks import attention_sinks
from rope_interp.analysis.statistics import correlation_test, spearman
from rope_interp.plots.analysis import (
    plot_massive,
    plot_pair_margins,
    plot_positional_heads,
    plot_sinks,
)
from rope_interp.plots.generic import plot_heatmap, plot_scatter
from rope_interp.report.context import ReportContext
from rope_interp.report.document import Claim, Section
from rope_interp.report.registry import section
from rope_interp.report.sections._tables import descending
from rope_interp.report.verdicts import (
    correlation_verdict,
    count_verdict,
    percent,
    share_verdict,
    wilson_text,
)

#: Permutations behind the positional-heads correlation's p-value.
N_PERMUTATIONS = 2000


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
        claims=[positional_claim(heads)],
    )


def positional_claim(heads: pd.DataFrame) -> Claim:
    """Barbero et al.: previous-token heads use the highest frequencies (over all heads)."""
    prev = heads[heads.offset == 1]
    test = correlation_test(prev["attn"], prev["qk_high_share"], n_permutations=N_PERMUTATIONS)
    return Claim(
        claim="B. Barbero et al.: previous-token heads use the highest frequencies",
        number=f"Spearman ρ(attention at Δ = 1, q·k high-frequency share) = "
        f"{test['spearman']:.2f} over {test['n']} heads",
        test=(
            "Spearman correlation over heads of the mean attention on the previous token and "
            "the share of q·k norm in the highest 25 % of frequencies; holds if ρ > 0 with "
            "permutation p < 0.05, does not hold if ρ < 0 with p < 0.05, else no evidence"
        ),
        uncertainty=f"two-sided permutation p = {test['spearman_p']:.2g} "
        f"({N_PERMUTATIONS} permutations)",
        verdict=correlation_verdict(test["spearman"], test["spearman_p"]),
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
        claims=sink_claims(heads, ctx.spec.n_pairs),
    )


def sink_claims(heads: pd.DataFrame, n_pairs: int) -> list[Claim]:
    """Gu et al.: first-token sinks in most heads; Jonasson: the lowest frequencies build
    them (the top margin pair of a sink head in the lowest quarter of pairs)."""
    k, n = int(heads.is_sink.sum()), len(heads)
    sinks = heads[heads.is_sink]
    low = set(bands(n_pairs, 0.25)[1])
    base = len(low) / n_pairs
    k_low = int(sinks.top_pair.isin(low).sum())
    return [
        Claim(
            claim="Gu et al.: most heads put a sink on the first token (importance > 0.3)",
            number=f"{k} of {n} heads ({percent(k / n) if n else 'none'})",
            test=(
                "share of heads whose first-token importance exceeds 0.3; holds if the "
                "Wilson 95 % interval lies above 50 %, does not hold if below, else "
                "inconclusive"
            ),
            uncertainty=wilson_text(k, n),
            verdict=share_verdict(k, n, 0.5),
        ),
        Claim(
            claim="A. Jonasson: the lowest frequencies (offset features) build the sinks",
            number=(
                f"top margin pair in the lowest {len(low)} of {n_pairs} pairs in {k_low} of "
                f"{k} sink heads ({percent(k_low / k) if k else 'no sink heads'}); base rate "
                f"{percent(base)}"
            ),
            test=(
                "share of sink heads whose largest first-token margin comes from a pair in the "
                "lowest 25 % of frequencies; holds if the Wilson 95 % interval's lower end "
                "exceeds that band's share of pairs (the base rate), does not hold if its "
                "upper end is below it, else inconclusive"
            ),
            uncertainty=wilson_text(k_low, k),
            verdict=share_verdict(k_low, k, base),
        ),
    ]


@section("massive")
def massive_section(ctx: ReportContext) -> Section:
    batches = ctx.analysis_batches()
    table = massive_values(ctx.model, batches, progress=ctx.progress)
    activations = massive_activations(ctx.model, batches, progress=ctx.progress)
    layers = _activation_layers(activations.layers)
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
        prose=(
            "The last table follows Sun et al.'s massive activations in the residual stream "
            f"(`blocks.l.hook_resid_post`): an entry is massive when |h| > "
            f"max({activations.min_value:g}, {activations.min_ratio:g} × the layer's median "
            f"|h|). {_activations_line(layers)}."
        ),
        figures=[plot_massive(table)],
        tables=[
            ("Per kind (top dimensions of every head)", by_kind),
            ("Top dimensions per head", descending(table, "ratio")),
            ("Massive activations of the residual stream per layer (Sun et al.)", layers),
        ],
        claims=[
            massive_values_claim(table, ctx.spec.n_pairs),
            massive_activations_claim(layers, activations.min_value, activations.min_ratio),
        ],
        key_result=", ".join(
            f"{row.kind}: mean pair position {row.mean_pair_position:.2f}"
            for row in by_kind.itertuples()
            if row.kind in ("q", "k")
        )
        + " (0 = highest, 1 = lowest frequency)",
    )


def massive_values_claim(table: pd.DataFrame, n_pairs: int) -> Claim:
    """Jin et al.: the largest q/k dimensions sit in the low-frequency half, and v has no
    such concentration."""
    low_start = n_pairs - n_pairs // 2  # the lowest-frequency half of the pairs
    base = (n_pairs // 2) / n_pairs
    shares, checks, intervals = [], [], []
    for kind in ("q", "k"):
        rows = table[(table.kind == kind) & (table.pair >= 0)]
        k, n = int((rows.pair >= low_start).sum()), len(rows)
        shares.append(f"{kind} {percent(k / n) if n else 'none'}")
        intervals.append(f"{kind} {wilson_text(k, n)}")
        checks.append(share_verdict(k, n, base) == "holds")
    top1 = table[table["rank"] == 0].groupby("kind").ratio.mean()
    ratios = ", ".join(f"{kind} {top1[kind]:.1f}" for kind in ("q", "k", "v") if kind in top1)
    if "v" in top1:
        checks.append(all(top1["v"] < top1[kind] for kind in ("q", "k") if kind in top1))
    return Claim(
        claim="Jin et al.: massive values sit in the low-frequency q/k dimensions, not in v",
        number=(
            f"top-{int(table['rank'].max()) + 1} dims per head in the low-frequency half: "
            f"{', '.join(shares)}; mean top-1 / median dim norm: {ratios}"
        ),
        test=(
            f"three checks: for q and for k, the Wilson 95 % interval of the share of top "
            f"dimensions in the lowest half of the pairs lies above the half's share of pairs "
            f"({percent(base)}); v's mean top-1 ratio lies below both q's and k's. Holds if "
            "all pass, partly if some do, does not hold if none"
        ),
        uncertainty="; ".join(intervals) + "; the ratios: none (one corpus)",
        verdict=count_verdict(sum(checks), len(checks)),
    )


def _activation_layers(frame: pd.DataFrame) -> pd.DataFrame:
    """The per-layer table with `dims` as text (the 8 most frequent, most frequent first)."""
    frame = frame.copy()
    frame["dims"] = [
        ", ".join(str(d) for d in dims[:8]) + (", …" if len(dims) > 8 else "")
        for dims in frame["dims"]
    ]
    return frame


def _activations_summary(layers: pd.DataFrame) -> dict:
    hit = layers[layers.n_massive > 0]
    n = int(hit.n_massive.sum())
    first = float((hit.first_position_share * hit.n_massive).sum() / n) if n else float("nan")
    return {"hit": hit, "n": n, "first": first}


def _activations_line(layers: pd.DataFrame) -> str:
    info = _activations_summary(layers)
    hit = info["hit"]
    if hit.empty:
        peak = layers.loc[layers.ratio.idxmax()]
        return (
            f"No layer has a massive entry; the largest |h| relative to its layer's median, "
            f"{peak.max_abs:.3g} = {peak.ratio:.0f}× the median, is in layer {int(peak.layer)}"
        )
    peak = hit.loc[hit.max_abs.idxmax()]
    return (
        f"Layers {', '.join(str(int(x)) for x in hit.layer)} have massive entries "
        f"({info['n']} in all, {percent(info['first'])} at position 0); the largest, "
        f"{peak.max_abs:.3g} = {peak.ratio:.0f}× the median, in layer {int(peak.layer)} "
        f"(dims {peak.dims})"
    )


def massive_activations_claim(layers: pd.DataFrame, min_value: float, min_ratio: float) -> Claim:
    """Sun et al.: the residual stream has massive activations."""
    info = _activations_summary(layers)
    hit = info["hit"]
    dims = sorted({d for text in hit.dims for d in text.split(", ") if d != "…"}, key=int)
    number = _activations_line(layers)
    if len(hit):
        number += f"; dims over all layers: {', '.join(dims)}"
    return Claim(
        claim="Sun et al.: the residual stream carries massive activations",
        number=number,
        test=(
            f"per layer, entries of `hook_resid_post` with |h| > max({min_value:g}, "
            f"{min_ratio:g} × the layer's median |h|); holds if any layer has one, does not "
            "hold if none does"
        ),
        uncertainty="none: counts over one corpus (no interval)",
        verdict="holds" if len(hit) else "does not hold",
    )
