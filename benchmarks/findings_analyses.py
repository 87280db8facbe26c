"""Run every analysis of `rope_interp.analysis` on the built-in SmolLM2-135M and the embedded
corpus, print the numbers behind the "## Analyses" section of docs/findings.md, and save the
tables (CSV) and, if kaleido works, figures (PNG) under --out.

    python benchmarks/findings_analyses.py                       # 16 windows × 256 tokens
    python benchmarks/findings_analyses.py --windows 2 --seq-len 128 --out /tmp/quick
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import pandas as pd
import torch

from rope_interp.analysis import (
    attention_sinks,
    attention_spectra,
    band_shares,
    bound_summary,
    frequency_usage,
    layer_usage,
    massive_values,
    mlp_spectra,
    offset_features,
    pair_spectra,
    phase_alignment,
    positional_heads,
)
from rope_interp.analysis.decay import reference_decay, score_decay
from rope_interp.analysis.fourier import harmonic_enrichment
from rope_interp.analysis.statistics import spearman
from rope_interp.core.stats import collect_pair_stats
from rope_interp.loading.data import load_corpus
from rope_interp.loading.models import load_model
from rope_interp.plots import analysis as plots
from rope_interp.report.sections.heads import sink_claims
from rope_interp.report.sections.outliers import OUTLIER_THRESHOLDS, outlier_claims


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", type=float, default=3.5, help="outlier robust z")
    parser.add_argument("--out", type=Path, default=Path("/tmp/rope_interp_findings"))
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--sections",
        default="usage,positional,outliers,sinks,spectra,massive,decay",
        help="comma-separated subset of: usage,positional,outliers,sinks,spectra,massive,decay",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    progress = not args.no_progress
    sections = set(args.sections.split(","))
    torch.manual_seed(args.seed)
    start = time.time()

    model = load_model("smollm2-135m", device="cpu")
    corpus = load_corpus(model, "pydoc", args.seq_len, args.windows, args.seed)
    print(f"model: SmolLM2-135M-Instruct (Q4_1 dequantized); corpus: {corpus.describe()}")

    def batches():
        return corpus.batches(args.batch_size)

    tables: dict[str, pd.DataFrame] = {}
    stats = collect_pair_stats(model, batches(), progress=progress)
    spec = stats.spec
    L = args.seq_len
    tables["usage"] = frequency_usage(stats)
    tables["layer_usage"] = layer_usage(stats)
    tables["band_shares"] = shares = band_shares(stats, fraction=0.25)

    if "usage" in sections:
        print_usage(shares)
    flagged = pd.DataFrame(columns=["layer", "head", "pair"])
    if "positional" in sections:
        pos = positional_heads(model, batches(), offsets=(0, 1, 2), progress=progress)
        tables["positional_heads"], tables["positional_pairs"] = pos.heads, pos.pairs
        print_positional(pos)
    if "outliers" in sections:
        table = offset_features(stats, context=L, threshold=args.threshold)
        tables["offset_features"] = table
        tables["bound_summary"] = bound_summary(table)
        flagged = print_outliers(table, stats, L, args.threshold)
    if "sinks" in sections:
        sinks = attention_sinks(model, batches(), progress=progress)
        tables["sink_heads"], tables["sink_pairs"] = sinks.heads, sinks.pairs
        print_sinks(sinks, spec, flagged)
    if "spectra" in sections:
        tables.update(run_spectra(model, batches, progress, L))
    if "massive" in sections:
        tables["massive_values"] = mv = massive_values(model, batches(), top_k=4, progress=progress)
        print_massive(mv)
    if "decay" in sections:
        tables["reference_decay"] = ref = reference_decay(spec, 0, max_distance=L - 1)
        tables["score_decay"], tables["score_decay_heads"] = curves, heads = score_decay(
            model, batches(), progress=progress
        )
        print_decay(ref, heads)
    save(tables, args.out)
    print(f"total {time.time() - start:.0f} s")


def print_decay(ref: pd.DataFrame, heads: pd.DataFrame) -> None:
    print("\n== score against distance (Barbero et al.) ==")
    ones = ref.set_index("distance")["ones"]
    print(
        f"all-ones score at Δ = 0, 8, {ones.index[-1]}: {ones.iloc[0]:.1f}, {ones.loc[8]:.1f}, "
        f"{ones.iloc[-1]:.1f}"
    )
    z = (ref["gaussian_mean"].abs() / ref["gaussian_se"]).max()
    print(f"independent Gaussian q, k: |mean| ≤ {z:.1f} standard errors at every Δ")
    print(
        f"trained model: Spearman(distance, mean score) < 0 in {(heads.spearman < 0).mean():.1%} "
        f"of {len(heads)} heads (median {heads.spearman.median():.2f}); mean score near "
        f"(Δ 1-8) {heads.near.mean():+.2f}, far (last quarter) {heads.far.mean():+.2f}"
    )


def print_usage(shares: pd.DataFrame) -> None:
    print("\n== B. Frequency usage (share of E‖z_i‖ per head; bands = 8 of 32 pairs) ==")
    for kind in ("q", "k", "qk"):
        s = shares[shares.kind == kind]
        print(
            f"{kind:>2}: high-band share mean {s.high_share.mean():.3f}, low-band share mean "
            f"{s.low_share.mean():.3f} (uniform 0.25); heads with low > high: "
            f"{(s.low_share > s.high_share).mean():.1%} of {len(s)}"
        )
    qk = shares[shares.kind == "qk"]
    hf = qk[qk.high_share > 0.5]
    print(f"heads with qk high share > 0.5 (2× uniform): {len(hf)}; layers {sorted(hf.layer)}")
    per_layer = qk.groupby("layer").high_share.mean()
    print("qk high share by layer: " + ", ".join(f"{i}:{v:.2f}" for i, v in per_layer.items()))


def print_positional(pos) -> None:
    print("\n== B. Positional heads ==")
    for d, name in ((0, "diagonal"), (1, "previous-token"), (2, "offset 2")):
        h = pos.heads[pos.heads.offset == d]
        strong = h[h.attn > 0.5]
        others = h[h.attn <= 0.5]
        rho = spearman(h.attn, h.qk_high_share)
        print(
            f"{name}: {len(strong)} heads with mean attention > 0.5 "
            f"{[f'L{r.layer}H{r.head}' for r in strong.itertuples()][:12]}; "
            f"their qk high share {strong.qk_high_share.mean():.3f} vs others "
            f"{others.qk_high_share.mean():.3f}; Spearman(attn, high share) over heads {rho:.3f}"
        )
        if len(strong):
            print(
                f"   margin from the high band / Σ|margin_i| in those heads: mean "
                f"{strong.high_margin_fraction.mean():.3f}; top pairs "
                f"{strong.top_pair.value_counts().head(5).to_dict()}"
            )


def print_outliers(table: pd.DataFrame, stats, L: int, threshold: float) -> pd.DataFrame:
    spec = stats.spec
    summary = bound_summary(table)
    print(
        f"\n== A. Outliers / offset features (robust z > {threshold} and max ≥ 2× head median, "
        "in q and k) =="
    )
    print(summary.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    flagged = table[table.flagged]
    print(
        f"flagged pairs: {len(flagged)} of {len(table)}; pair index median "
        f"{flagged.pair.median() if len(flagged) else math.nan}, range "
        f"{flagged.pair.min() if len(flagged) else '-'}.."
        f"{flagged.pair.max() if len(flagged) else '-'}"
        f"; first partial pair (θL<2π) {spec.first_partial_pair(L)}, first with θ(L−1)<π "
        f"{int((spec.thetas[0] * (L - 1) < math.pi).float().argmax())}"
    )
    print(f"flagged per layer: {flagged.groupby('layer').size().to_dict()}")
    for ctx in (spec.n_ctx,):
        t2 = offset_features(stats, context=ctx, threshold=threshold)
        print(
            f"with L = model context {ctx}: "
            + bound_summary(t2).iloc[0].to_string().replace("\n", "; ")
        )
    # The report's claims: each condition against its null, at every outlier threshold.
    thresholds = (threshold, *(t for t in OUTLIER_THRESHOLDS if t != threshold))
    sweep = {t: offset_features(stats, context=L, threshold=t) for t in thresholds}
    print_claims(outlier_claims(sweep, L))
    # Concentration of the flagged pairs against unflagged pairs of the same frequencies.
    if len(flagged):
        same = table[~table.flagged & table.pair.isin(set(flagged.pair))]
        weights = flagged.pair.value_counts()
        per_pair = same.groupby("pair")[["q_conc", "k_conc"]].mean()
        matched = (per_pair.loc[weights.index].mul(weights, axis=0).sum() / weights.sum()).round(3)
        print(
            f"concentration flagged q {flagged.q_conc.mean():.3f}, k {flagged.k_conc.mean():.3f}; "
            f"unflagged pairs of the same frequencies (weighted as the flagged): "
            f"q {matched['q_conc']:.3f}, k {matched['k_conc']:.3f}"
        )
    return flagged


def print_claims(claims) -> None:
    for claim in claims:
        print(f"- {claim.claim}\n  number: {claim.number}\n  uncertainty: {claim.uncertainty}")
        print(f"  verdict: {claim.verdict}")


def print_sinks(sinks, spec, flagged: pd.DataFrame) -> None:
    print("\n== Sinks (Gu et al.: first-token importance > 0.3) ==")
    sh = sinks.heads
    s = sh[sh.is_sink]
    print(
        f"sink heads: {len(s)} of {len(sh)}; by layer {s.groupby('layer').size().to_dict()}; "
        f"mean first-token mass over all heads {sh.first_mass.mean():.3f}"
    )
    if len(s):
        low = set(range(spec.n_pairs - 8, spec.n_pairs))
        print(
            f"in sink heads: low-band margin fraction mean {s.low_margin_fraction.mean():.3f}; "
            f"top pair in lowest 8: {s.top_pair.isin(low).mean():.1%}; top pairs "
            f"{s.top_pair.value_counts().head(6).to_dict()}"
        )
        joined = s.merge(
            flagged[["layer", "head", "pair"]].rename(columns={"pair": "top_pair"}),
            on=["layer", "head", "top_pair"],
        )
        print(f"sink heads whose top margin pair is a flagged outlier pair: {len(joined)}")
    # The report's claims: sink heads against the heads without a sink, at every threshold.
    print_claims(sink_claims(sh, spec.n_pairs))


def run_spectra(model, batches, progress: bool, L: int) -> dict[str, pd.DataFrame]:
    tables = {}
    print("\n== C. Spectra ==")
    ps = pair_spectra(model, batches(), progress=progress)
    tables["pair_spectra"] = ps
    for kind in ("q", "k"):
        r = ps[(ps.kind == kind) & ps.resolvable]
        print(
            f"{kind}: rotated pairs whose spectral peak is at θ_i/2π (±1/L), resolvable pairs: "
            f"{r.matches.mean():.1%} of {len(r)}; mean power share at θ_i/2π "
            f"{r.peak_share.mean():.3f}"
        )
    at = attention_spectra(model, batches(), progress=progress)
    tables["attention_spectra"] = at
    print(
        f"attention rows: band energy low {at.low.mean():.3f}, mid {at.mid.mean():.3f}, high "
        f"{at.high.mean():.3f} (paper: 0.60–0.80 / 0.15–0.25 / 0.05–0.15); "
        f"Pearson(spectral entropy, attention entropy) over heads "
        f"{at.spectral_entropy.corr(at.attention_entropy):.3f}"
    )
    ms = mlp_spectra(model, batches(), progress=progress)
    tables["mlp_spectra"] = ms
    per_layer = ms.groupby("layer")[["low", "mid", "high"]].first()
    print(
        f"MLP: band energy low {per_layer.low.mean():.3f}, mid {per_layer.mid.mean():.3f}, "
        f"high {per_layer.high.mean():.3f}"
    )
    res = harmonic_enrichment(ms, spec_thetas(model), tolerance=1 / L)
    print(
        f"   top-5 peaks on a harmonic (±1/L): {res['observed']:.1%}; jitter null (±0.02) "
        f"{res['null_mean']:.1%} [{res['null_low']:.1%}, {res['null_high']:.1%}], "
        f"p = {res['p_value']:.3g} (benchmarks/findings_science.py tests it at 1024 tokens)"
    )
    pa = phase_alignment(model, batches(), progress=progress)
    tables["phase_alignment"] = pa
    print(
        f"phase alignment vs MLP magnitude: Spearman per layer mean {pa.spearman.mean():.3f}, "
        f"range {pa.spearman.min():.3f}..{pa.spearman.max():.3f}, positive in "
        f"{(pa.spearman > 0).sum()} of {len(pa)} layers"
    )
    return tables


def print_massive(mv: pd.DataFrame) -> None:
    print("\n== Massive values (Jin et al.; top-4 dims per head by sequence norm) ==")
    for kind in ("q", "k", "v"):
        r = mv[mv.kind == kind]
        top1 = r[r["rank"] == 0]
        extra = ""
        if kind != "v":
            extra = (
                f"; in the low-frequency half (pair ≥ 16): {(r.pair_position >= 0.5).mean():.1%}"
                f", lowest quarter (pair ≥ 24): {(r.pair >= 24).mean():.1%}"
            )
        print(f"{kind}: top-1 / median dim norm mean {top1.ratio.mean():.2f}{extra}")


def save(tables: dict[str, pd.DataFrame], out: Path) -> None:
    for name, frame in tables.items():
        frame.to_csv(out / f"{name}.csv", index=False)
    makers = {
        "usage_q_layers": ("layer_usage", lambda t: plots.plot_usage_map(t, "q")),
        "usage_k_layers": ("layer_usage", lambda t: plots.plot_usage_map(t, "k")),
        "band_high_qk": ("band_shares", lambda t: plots.plot_band_shares(t, "qk", "high")),
        "positional_prev": ("positional_heads", lambda t: plots.plot_positional_heads(t, 1)),
        "offset_features": ("offset_features", plots.plot_offset_features),
        "sinks": ("sink_heads", plots.plot_sinks),
        "attention_bands": ("attention_spectra", plots.plot_band_energy),
        "massive": ("massive_values", plots.plot_massive),
    }
    figures = {name: make(tables[key]) for name, (key, make) in makers.items() if key in tables}
    args = argparse.Namespace(out=out)
    try:
        for name, fig in figures.items():
            fig.write_image(str(args.out / f"{name}.png"), width=900, height=600)
        print(f"\nfigures: {len(figures)} PNGs in {args.out}")
    except Exception as exc:  # kaleido missing or unable to start: keep the numbers
        print(f"\nfigures not saved as PNG ({type(exc).__name__}: {exc}); tables are in {args.out}")
    print(f"tables: {len(tables)} CSVs in {args.out}")


def spec_thetas(model) -> torch.Tensor:
    from rope_interp.core.spec import RotarySpec

    return RotarySpec.from_model(model, check_config=False).thetas


if __name__ == "__main__":
    main()
