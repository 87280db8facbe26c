"""The tests behind the spectral, harmonic, phase, outlier and drift rows of docs/findings.md,
on the built-in SmolLM2-135M and the embedded corpus: every number with its null model or its
p-value. Prints them and writes one CSV per table under --out.

    python benchmarks/findings_science.py --out /tmp/findings-science
    python benchmarks/findings_science.py --sections spectral --long-windows 2 --out /tmp/q

Sections: spectral (spectral vs attention entropy under every definition, at 256 and at
--long-len tokens), bands (attention-row energy in the low / mid / high band under each window
and mean removal), harmonics (MLP peaks at --long-len tokens against a jitter null), outliers
(project and reference rules at L = --long-len … 8192), drift (rotation of the lowest pairs
over the context), phase (symmetric sweep of a constant phase on the 8 highest / lowest q pairs,
with where the positional heads' attention goes), activations (massive activations of the
residual stream, Sun et al.: |h| > 100 and > 1000 × the layer's median).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import pandas as pd
import torch

from rope_interp.analysis import massive_activations, offset_features, positional_heads
from rope_interp.analysis.attention_spectra import (
    PAPER_DEFINITION,
    WINDOWS,
    SpectralDefinition,
    attention_spectra,
    entropy_correlation_table,
    robustness_verdict,
    spectral_entropy_definitions,
)
from rope_interp.analysis.fourier import harmonic_enrichment
from rope_interp.analysis.outliers import bound_summary
from rope_interp.analysis.phase import phase_sweep_attention, symmetric_phis
from rope_interp.analysis.spectral import mlp_spectra
from rope_interp.core.spec import RotarySpec
from rope_interp.core.stats import collect_pair_stats
from rope_interp.interventions.selection import select_band
from rope_interp.loading.data import load_corpus
from rope_interp.loading.models import load_model

SECTIONS = "spectral,bands,harmonics,outliers,drift,phase,activations"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=16, help="windows of --seq-len tokens")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--long-windows", type=int, default=8)
    parser.add_argument("--long-len", type=int, default=1024)
    parser.add_argument("--phase-windows", type=int, default=8)
    parser.add_argument("--phis", type=int, default=17, help="odd number of φ in [−π, π]")
    parser.add_argument("--row-step", type=int, default=4, help="attention rows: every n-th")
    parser.add_argument("--permutations", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/findings-science"))
    parser.add_argument("--sections", default=SECTIONS)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    progress = not args.no_progress
    sections = set(args.sections.split(","))
    torch.manual_seed(args.seed)
    start = time.time()
    model = load_model("smollm2-135m", device="cpu")
    spec = RotarySpec.from_model(model, check_config=False)
    short = load_corpus(model, "pydoc", args.seq_len, args.windows, args.seed)
    long = load_corpus(model, "pydoc", args.long_len, args.long_windows, args.seed)
    print(f"corpora: {short.describe()}; {long.describe()}")
    tables: dict[str, pd.DataFrame] = {}

    if "drift" in sections:
        drift(spec)
    if "spectral" in sections:
        for name, corpus in (("short", short), ("long", long)):
            t0 = time.time()
            table = spectral_entropy_definitions(
                model, corpus.batches(2), row_step=args.row_step, progress=progress
            )
            corr = entropy_correlation_table(table, args.permutations, args.seed)
            tables[f"entropy_{name}"], tables[f"entropy_corr_{name}"] = table, corr
            L = corpus.tokens.shape[1]
            print(f"\n== spectral vs attention entropy over heads ({name}, L = {L}) ==")
            with pd.option_context("display.width", 200, "display.max_colwidth", 60):
                print(
                    corr[
                        ["definition", "spearman", "spearman_p", "pearson", "pearson_p", "n"]
                    ].to_string(index=False, float_format=lambda x: f"{x:.3g}")
                )
            paper = corr[corr.definition == PAPER_DEFINITION.label].iloc[0]
            print(
                f"paper's definition: Spearman {paper.spearman:+.3f} (p {paper.spearman_p:.2g}), "
                f"Pearson {paper.pearson:+.3f} (p {paper.pearson_p:.2g}); negative and p < 0.05 "
                f"in {((corr.spearman < 0) & (corr.spearman_p < 0.05)).sum()} of {len(corr)} "
                f"definitions; Spearman range {corr.spearman.min():+.2f}.."
                f"{corr.spearman.max():+.2f}"
                f"; verdict: {robustness_verdict(corr)} ({time.time() - t0:.0f} s)"
            )
    if "bands" in sections:
        t0 = time.time()
        rows = []
        for window in WINDOWS:
            for remove_mean in (False, True):
                definition = SpectralDefinition(window, remove_mean)
                table = attention_spectra(
                    model,
                    short.batches(2),
                    definition=definition,
                    row_step=args.row_step,
                    progress=progress,
                )
                means = table[["low", "mid", "high"]].mean()
                rows.append({"window": window, "remove_mean": remove_mean, **means.to_dict()})
        bands = pd.DataFrame(rows)
        tables["band_energy"] = bands
        L = short.tokens.shape[1]
        print(f"\n== attention-row energy by band, mean over heads (L = {L}) ==")
        print(bands.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
        print(f"({time.time() - t0:.0f} s)")
    if "activations" in sections:
        t0 = time.time()
        found = massive_activations(model, short.batches(4), progress=progress)
        tables["massive_activations"], tables["massive_top"] = found.layers, found.top
        print(f"\n== massive activations (|h| > {found.min_value:g} and > "
              f"{found.min_ratio:g} × median), L = {short.tokens.shape[1]} ==")  # fmt: skip
        print(found.layers.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
        top = found.top[found.top["rank"] < 3]
        print(top.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
        print(f"({time.time() - t0:.0f} s)")
    if "harmonics" in sections:
        t0 = time.time()
        ms = mlp_spectra(model, long.batches(2), n_peaks=5, progress=progress)
        tables["mlp_spectra_long"] = ms
        print(f"\n== MLP harmonics at L = {args.long_len} (top-5 peaks per layer) ==")
        for jitter in (0.005, 0.02):
            res = harmonic_enrichment(
                ms, spec.thetas, tolerance=1 / args.long_len, jitter=jitter, seed=args.seed
            )
            print(
                f"jitter ±{jitter}: matched {res['observed']:.1%} of {res['n_peaks']} peaks; "
                f"null mean {res['null_mean']:.1%} [{res['null_low']:.1%}, {res['null_high']:.1%}]"
                f", p = {res['p_value']:.3g}; uniform over [f_min, 0.5]: {res['uniform_rate']:.1%}"
            )
        print(
            f"peak frequencies: median {ms.freq.median():.4f}, below 0.05: "
            f"{(ms.freq < 0.05).mean():.0%} ({time.time() - t0:.0f} s)"
        )
    if "outliers" in sections:
        t0 = time.time()
        stats = collect_pair_stats(model, long.batches(2), progress=progress)
        rows = []
        for rule in ("project", "reference"):
            for L in (args.long_len, 2048, 4096, 8192):
                t = offset_features(stats, context=L, rule=rule)
                s = bound_summary(t).set_index("scope")
                f = t[t.flagged]
                rows.append(
                    {
                        "rule": rule,
                        "context": L,
                        "first_partial_pair": spec.first_partial_pair(L),
                        "first_bound_pair": int(
                            (spec.thetas[0] * (L - 1) < math.pi).float().argmax()
                        ),
                        "flagged": len(f),
                        "pair_min": int(f.pair.min()) if len(f) else -1,
                        "pair_median": float(f.pair.median()) if len(f) else math.nan,
                        "layers": int(f.layer.nunique()),
                        "partial_cycle": s.loc["flagged", "partial_cycle"],
                        "partial_base": s.loc["all", "partial_cycle"],
                        "frequency_bound": s.loc["flagged", "frequency_bound"],
                        "bound_base": s.loc["all", "frequency_bound"],
                        "angle_bound": s.loc["flagged", "angle_bound"],
                        "angle_base": s.loc["all", "angle_bound"],
                    }
                )
        out = pd.DataFrame(rows)
        tables["outliers_long"] = out
        print(f"\n== outliers, stats over {long.describe()} ({time.time() - t0:.0f} s) ==")
        print(out.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
        both = offset_features(stats, context=8192, rule="reference")
        proj = offset_features(stats, context=8192)
        overlap = (both.flagged & proj.flagged).sum()
        print(
            f"flagged by both rules: {overlap} (project {proj.flagged.sum()}, reference "
            f"{both.flagged.sum()})"
        )
    if "phase" in sections:
        t0 = time.time()
        corpus = load_corpus(model, "pydoc", args.seq_len, args.phase_windows, args.seed)
        pos = positional_heads(model, corpus.batches(2), offsets=(0, 1), progress=progress).heads
        top = pd.concat([pos[pos.offset == d].nlargest(n, "attn") for d, n in ((1, 4), (0, 2))])
        heads = [(int(r.layer), int(r.head)) for r in top.itertuples()]
        print(f"\n== symmetric phase sweep on q ({corpus.describe()}); heads {heads} ==")
        frames = []
        for band in ("high", "low"):
            sel = select_band(spec, band, k=8)
            sweep = phase_sweep_attention(
                model, corpus.batches(2), sel, heads, symmetric_phis(args.phis), progress=progress
            )
            sweep.insert(0, "band", band)
            frames.append(sweep)
        sweep = pd.concat(frames, ignore_index=True)
        tables["phase_sweep"] = sweep
        kind = {h: ("prev" if i < 4 else "diag") for i, h in enumerate(heads)}
        sweep["kind"] = [kind[(r.layer, r.head)] for r in sweep.itertuples()]
        summary = (
            sweep.groupby(["band", "phi", "kind"])[["delta_loss", "self", "previous", "first"]]
            .mean()
            .reset_index()
        )
        summary["phi/pi"] = summary.phi / math.pi
        print(summary.drop(columns="phi").to_string(index=False, float_format=lambda x: f"{x:.3f}"))
        print(f"({time.time() - t0:.0f} s)")
    for name, frame in tables.items():
        frame.to_csv(args.out / f"{name}.csv", index=False)
    print(f"\ntables: {sorted(tables)} in {args.out}; total {time.time() - start:.0f} s")


def drift(spec: RotarySpec) -> None:
    """How far the lowest pairs turn over a context: θ_i·(L−1) per pair."""
    print("\n== drift of the low-frequency pairs (θ_i·(L−1), radians) ==")
    thetas = spec.thetas[0].double()
    n = spec.n_pairs
    for L in (256, 1024, 8192):
        turn = thetas * (L - 1)
        low = turn[n - 8 :]
        print(
            f"L = {L}: lowest 8 pairs turn {low.min():.3f}..{low.max():.3f} rad; pairs turning "
            f"< π/2: {int((turn < math.pi / 2).sum())} of {n} (cos ≥ 0 kept); < π/8: "
            f"{int((turn < math.pi / 8).sum())}; lowest pair cos(θ(L−1)) = "
            f"{math.cos(float(turn[-1])):.4f}; L at which the lowest pair turns π/2: "
            f"{math.pi / 2 / float(thetas[-1]):.0f}"
        )


if __name__ == "__main__":
    main()
