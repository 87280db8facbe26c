"""The frequency-usage section: where each layer puts its q/k norm across frequencies."""

from __future__ import annotations

from rope_interp.analysis.usage import band_shares, layer_usage
from rope_interp.plots.analysis import plot_band_shares, plot_usage_map
from rope_interp.report.context import ReportContext
from rope_interp.report.document import Claim, Section
from rope_interp.report.registry import section
from rope_interp.report.sections._tables import descending
from rope_interp.report.verdicts import percent, share_verdict, wilson_text


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
    qk = descending(shares[shares.kind == "qk"], "high_share")
    return Section(
        "Frequency usage",
        how_to_read=(
            "each row of a map sums to 1: where a layer puts its q/k norm across frequencies "
            "(pair 0 = highest). Barbero et al. find most norm in the lowest frequencies, with a "
            "few high-frequency heads."
        ),
        figures=figures,
        tables=[("Band shares per head (q·k; high = top 25 % of frequencies)", qk)],
        claims=[usage_claim(qk)],
        key_result=(
            f"q·k usage in the highest 25 % of frequencies: {qk.high_share.mean():.2f}, in the "
            f"lowest 25 %: {qk.low_share.mean():.2f} (uniform: {qk.band_fraction.iloc[0]:.2f}); "
            f"most high-frequency head L{int(qk.iloc[0]['layer'])}H{int(qk.iloc[0]['head'])} "
            f"({qk.iloc[0]['high_share']:.2f})"
        ),
    )


def usage_claim(qk) -> Claim:
    """Barbero et al.: most q/k norm in the lowest frequencies, head by head."""
    k, n = int((qk.low_share > qk.high_share).sum()), len(qk)
    return Claim(
        claim="B. Barbero et al.: most q/k norm sits in the lowest frequencies, not the highest",
        number=(
            f"low band > high band in {k} of {n} heads ({percent(k / n) if n else 'none'}); "
            f"mean q·k share low {qk.low_share.mean():.3f} vs high {qk.high_share.mean():.3f}"
        ),
        test=(
            "per head, the q·k norm share of the lowest 25 % of frequencies vs the highest "
            "25 %; holds if the Wilson 95 % interval of the share of heads with low > high lies "
            "above 50 %, does not hold if below, else inconclusive"
        ),
        uncertainty=wilson_text(k, n),
        verdict=share_verdict(k, n, 0.5),
    )
