"""The per-head sections that decompose attention scores on the analysis windows: positional
heads, attention sinks and massive values."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from rope_interp.analysis._common import bands
from rope_interp.analysis.activations import massive_activations
from rope_interp.analysis.massive import massive_values
from rope_interp.analysis.positional import positional_heads
from rope_interp.analysis.sinks import attention_sinks
from rope_interp.analysis.statistics import correlation_test, fisher_exact, spearman
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
    definition_verdict,
    null_text,
    percent,
    pvalue_text,
    share_verdict,
    two_share_verdict,
    wilson_text,
)

#: Permutations behind the positional-heads correlation's p-value.
N_PERMUTATIONS = 2000


@section("positional")
def positional_section(ctx: ReportContext) -> Section:
    result = positional_heads(
        ctx.model, ctx.analysis_batches(), offsets=(0, 1), progress=ctx.progress, spec=ctx.spec
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
        claim="B. Barbero et al. (paraphrased): heads that use the highest frequencies are "
        "positional heads (previous-token and diagonal); tested here on the previous-token "
        "heads",
        number=f"Spearman ρ(attention at Δ = 1, q·k high-frequency share) = "
        f"{test['spearman']:.2f} over {test['n']} heads",
        test=(
            "Spearman correlation over heads of the mean attention on the previous token and "
            "the share of q·k norm in the highest 25 % of frequencies; holds if ρ > 0 with "
            "permutation p < 0.05, does not hold if ρ < 0 with p < 0.05, else no evidence. "
            + null_text(
                "the same heads with their high-frequency shares permuted",
                "the claim contrasts positional heads with the other heads of the same model; "
                "permuting keeps both distributions and breaks only their pairing",
            )
        ),
        uncertainty=f"two-sided permutation {pvalue_text(test['spearman_p'], N_PERMUTATIONS)}",
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
    result = attention_sinks(
        ctx.model, ctx.analysis_batches(), progress=ctx.progress, spec=ctx.spec
    )
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


#: First-token importance thresholds the sink claims are judged under; Gu et al.'s 0.3 first.
SINK_THRESHOLDS = (0.3, 0.2, 0.4, 0.5)


def _sink_split(heads: pd.DataFrame, low: set, threshold: float) -> dict:
    """Sink heads (importance > threshold) vs the other heads: how many of each have their
    top first-token margin pair in `low`, and the verdicts of both sink claims."""
    sink = heads.importance > threshold
    top_low = heads.top_pair.isin(low)
    k1, n1 = int((top_low & sink).sum()), int(sink.sum())
    k2, n2 = int((top_low & ~sink).sum()), int((~sink).sum())
    return {
        "k1": k1,
        "n1": n1,
        "k2": k2,
        "n2": n2,
        "p": fisher_exact(k1, n1, k2, n2, "greater") if n1 and n2 else float("nan"),
        "most": share_verdict(n1, len(heads), 0.5),
        "low": two_share_verdict(k1, n1, k2, n2),
    }


def sink_claims(
    heads: pd.DataFrame, n_pairs: int, thresholds: Sequence[float] = SINK_THRESHOLDS
) -> list[Claim]:
    """Gu et al.: first-token sinks in most heads; Jonasson: the lowest frequencies build
    them (the top margin pair of a sink head in the lowest quarter of pairs), against the
    heads without a sink. Both judged at every importance threshold (primary first)."""
    n = len(heads)
    high_pairs, low_pairs = bands(n_pairs, 0.25)
    low = set(low_pairs)
    splits = [_sink_split(heads, low, t) for t in thresholds]
    first = splits[0]
    k = first["n1"]

    def across(key: str) -> tuple[str, str]:
        frame = pd.DataFrame(
            {"sink threshold": list(thresholds), "verdict": [s[key] for s in splits]}
        )
        return definition_verdict(frame, ["sink threshold"])

    most_verdict, most_text = across("most")
    low_verdict, low_text = across("low")
    # Why the uniform 25 % is no null: a fast-turning pair averages its first-key advantage away.
    per_pair_high = float(heads.high_band_margin.mean()) / max(1, len(high_pairs))
    per_pair_low = float(heads.low_band_margin.mean()) / max(1, len(low_pairs))
    return [
        Claim(
            claim="Gu et al. (paraphrased): attention sinks on the first token emerge in "
            "trained LMs, measured as the share of heads whose first-token importance exceeds "
            'ε = 0.3; "most heads" is this project\'s reading',
            number=f"{k} of {n} heads ({percent(k / n) if n else 'none'}) at ε = {thresholds[0]:g}",
            test=(
                "share of heads whose first-token importance exceeds ε; holds if the "
                "Wilson 95 % interval lies above 50 %, does not hold if below, else "
                "inconclusive; judged at every ε, one verdict if all agree, else depends on "
                "the definition. "
                + null_text("50 % of heads", "the claim is that a majority of heads has a sink")
            ),
            uncertainty=f"{wilson_text(k, n)}; across ε: "
            + "; ".join(
                f"ε = {t:g}: {s['n1']}/{n} ({s['most']})"
                for t, s in zip(thresholds, splits, strict=True)
            )
            + f" → {most_text}",
            verdict=most_verdict,
        ),
        Claim(
            claim="A. Jonasson (paraphrased): rotary offset features — low-frequency pairs — "
            "build the attention sinks",
            number=(
                f"top first-token margin pair in the lowest {len(low)} of {n_pairs} pairs in "
                f"{first['k1']} of {first['n1']} sink heads "
                f"({percent(first['k1'] / first['n1']) if first['n1'] else 'no sink heads'}) vs "
                f"{first['k2']} of {first['n2']} heads without a sink "
                f"({percent(first['k2'] / first['n2']) if first['n2'] else 'none'}); the "
                f"uniform rate {percent(len(low) / n_pairs)} is no null: mean first-token "
                f"margin per pair {per_pair_low:+.3g} in the lowest {len(low)} vs "
                f"{per_pair_high:+.3g} in the highest {len(high_pairs)}"
            ),
            test=(
                "share of sink heads (importance > ε) whose largest first-token margin comes "
                "from a pair in the lowest 25 % of frequencies, against the same share in the "
                "heads without a sink; holds if Fisher's exact one-sided p < 0.05 (sink heads "
                "higher), does not hold if p < 0.05 the other way, else no evidence; judged at "
                "every ε, one verdict if all agree, else depends on the definition. "
                + null_text(
                    "the heads without a sink",
                    "a high-frequency pair turns fast and cannot keep a first-token margin, so "
                    "the lowest pairs top most heads' margins whether or not the head has a "
                    "sink; only an excess over the other heads ties them to the sink",
                )
            ),
            uncertainty=(
                f"Fisher's exact one-sided p = {first['p']:.2g}; "
                f"{wilson_text(first['k1'], first['n1'])}; across ε: "
                + "; ".join(
                    f"ε = {t:g}: {s['k1']}/{s['n1']} vs {s['k2']}/{s['n2']} ({s['low']})"
                    for t, s in zip(thresholds, splits, strict=True)
                )
                + f" → {low_text}"
            ),
            verdict=low_verdict,
        ),
    ]


@section("massive")
def massive_section(ctx: ReportContext) -> Section:
    batches = ctx.analysis_batches()
    table = massive_values(ctx.model, batches, progress=ctx.progress, spec=ctx.spec)
    activations = massive_activations(ctx.model, batches, progress=ctx.progress, spec=ctx.spec)
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
        claim="Jin et al. (paraphrased): massive values concentrate in the low-frequency "
        "dimensions of q and k, not in v",
        number=(
            f"top-{int(table['rank'].max()) + 1} dims per head in the low-frequency half: "
            f"{', '.join(shares)}; mean top-1 / median dim norm: {ratios}"
        ),
        test=(
            f"three checks: for q and for k, the Wilson 95 % interval of the share of top "
            f"dimensions in the lowest half of the pairs lies above the half's share of pairs "
            f"({percent(base)}); v's mean top-1 ratio lies below both q's and k's. Holds if "
            "all pass, partly if some do, does not hold if none. "
            + null_text(
                "the low half's share of pairs (top dimensions blind to frequency), and v",
                "the claim is where along the frequency axis the largest dimensions sit, and v, "
                "which is not rotated, is the control for a concentration RoPE does not cause",
            )
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


#: Ratios to the layer's median |h| the massive-activations claim is judged under (primary
#: first: Sun et al.'s "~1000×").
ACTIVATION_RATIOS = (1000.0, 100.0, 300.0, 3000.0, 10000.0)


def massive_activations_claim(layers: pd.DataFrame, min_value: float, min_ratio: float) -> Claim:
    """Sun et al.: the residual stream has massive activations; judged at the analysis's
    ratio (from the counted entries) and at the other `ACTIVATION_RATIOS` (from each layer's
    peak |h| / median |h|)."""
    info = _activations_summary(layers)
    hit = info["hit"]
    dims = sorted({d for text in hit.dims for d in text.split(", ") if d != "…"}, key=int)
    number = _activations_line(layers)
    if len(hit):
        number += f"; dims over all layers: {', '.join(dims)}"
    ratios = [min_ratio] + [r for r in ACTIVATION_RATIOS if r != min_ratio]
    counts = [len(hit)] + [
        int(((layers.ratio > r) & (layers.max_abs > min_value)).sum()) for r in ratios[1:]
    ]
    verdict, across = definition_verdict(
        pd.DataFrame(
            {
                "ratio": ratios,
                "verdict": ["holds" if c else "does not hold" for c in counts],
            }
        ),
        ["ratio"],
    )
    return Claim(
        claim="Sun et al. (paraphrased): a few residual-stream activations are massive, "
        "> 100 and ~1000× the median",
        number=number,
        test=(
            f"per layer, entries of `hook_resid_post` with |h| > max({min_value:g}, "
            f"{min_ratio:g} × the layer's median |h|); holds if any layer has one, does not "
            "hold if none does; judged at every ratio, one verdict if all agree, else depends "
            "on the definition. "
            + null_text(
                "the layer's typical magnitude (its median |h|)",
                "Sun et al. define massive relative to the median of the same layer",
            )
        ),
        uncertainty="none: counts over one corpus (no interval); layers over each ratio "
        "(other ratios from each layer's peak / median): "
        + ", ".join(f"{r:g}×: {c}" for r, c in zip(ratios, counts, strict=True))
        + f" → {across}",
        verdict=verdict,
    )
