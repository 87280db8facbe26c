"""The frequency-usage section: where each layer puts its q/k norm across frequencies."""

from __future__ import annotations

import pandas as pd

from rope_interp.analysis.usage import band_shares, layer_usage
from rope_interp.plots.analysis import plot_band_shares, plot_usage_map
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

#: Band sizes (fractions of the pairs) the usage claim is judged under; the primary first.
BAND_FRACTIONS = (0.25, 0.125, 0.5)


@section("usage")
def usage_section(ctx: ReportContext) -> Section:
    stats = ctx.pair_stats()
    layer_map = layer_usage(stats)
    shares = band_shares(stats)
    figures = [
        plot_usage_map(layer_map, kind="q"),
        plot_usage_map(layer_map, kind="k"),
        plot_band_shares(shares, kind="qk", band="high"),
    ]
    qk = _qk(shares)
    return Section(
        "Frequency usage",
        how_to_read=(
            "each row of a map sums to 1: where a layer puts its q/k norm across frequencies "
            "(pair 0 = highest). Barbero et al. find most norm in the lowest frequencies, with a "
            "few high-frequency heads."
        ),
        figures=figures,
        tables=[("Band shares per head (q·k; high = top 25 % of frequencies)", qk)],
        claims=[
            usage_claim(
                {
                    f: qk if f == BAND_FRACTIONS[0] else _qk(band_shares(stats, f))
                    for f in BAND_FRACTIONS
                }
            )
        ],
        key_result=(
            f"q·k usage in the highest 25 % of frequencies: {qk.high_share.mean():.2f}, in the "
            f"lowest 25 %: {qk.low_share.mean():.2f} (uniform: {qk.band_fraction.iloc[0]:.2f}); "
            f"most high-frequency head L{int(qk.iloc[0]['layer'])}H{int(qk.iloc[0]['head'])} "
            f"({qk.iloc[0]['high_share']:.2f})"
        ),
    )


def _qk(shares):
    return descending(shares[shares.kind == "qk"], "high_share")


def usage_claim(by_fraction) -> Claim:
    """Barbero et al.: most q/k norm in the lowest frequencies, head by head; `by_fraction`
    maps a band size (fraction of the pairs, primary first) to the q·k rows of `band_shares`."""
    fractions = list(by_fraction)
    counts = [(int((t.low_share > t.high_share).sum()), len(t)) for t in by_fraction.values()]
    verdicts = [share_verdict(k, n, 0.5) for k, n in counts]
    verdict, across = definition_verdict(
        pd.DataFrame({"band size": fractions, "verdict": verdicts}), ["band size"]
    )
    qk = by_fraction[fractions[0]]
    k, n = counts[0]
    return Claim(
        claim="B. Barbero et al. (paraphrased): most q/k norm sits in the lowest frequencies "
        "(read as semantic channels); high-frequency usage is confined to a few heads",
        number=(
            f"low band > high band in {k} of {n} heads ({percent(k / n) if n else 'none'}) "
            f"with bands of {percent(fractions[0], 0)} of the pairs; mean q·k share low "
            f"{qk.low_share.mean():.3f} vs high {qk.high_share.mean():.3f}"
        ),
        test=(
            "per head, the q·k norm share of the lowest vs the highest band of frequencies; "
            "holds if the Wilson 95 % interval of the share of heads with low > high lies "
            "above 50 %, does not hold if below, else inconclusive; judged at every band "
            "size, one verdict if all agree, else depends on the definition. "
            + null_text(
                "50 % of heads (no preference between the bands)",
                "both bands hold the same number of pairs and nothing in RoPE's construction "
                "makes one band's pre-rotation norm larger",
            )
        ),
        uncertainty=f"{wilson_text(k, n)}; across band sizes: "
        + "; ".join(
            f"{percent(f, 1)}: {kk}/{nn} ({v})"
            for f, (kk, nn), v in zip(fractions, counts, verdicts, strict=True)
        )
        + f" → {across}",
        verdict=verdict,
    )
