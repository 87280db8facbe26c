"""Paired contrasts of the band ablations on the built-in SmolLM2-135M and the embedded corpus:
zero the highest / lowest quarter of the pairs (q and k, every head) against 20 seeded random
selections of the same size, the standard conditions of `rope-interp ablate` and the report.

Prints, for the first n of the windows (n = 8, 16, ... up to --windows), the paired contrasts
(high − low, each band − the mean of the random controls; bootstrap over sequences) and where
each band falls in the distribution of the random controls, so that the table shows how many
windows a decision takes. Losses only (no attention metrics); resumable under --out.

    python benchmarks/findings_contrasts.py --windows 32 --seq-len 256 --out /tmp/findings-contrasts
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch

from rope_interp.core.spec import RotarySpec
from rope_interp.interventions.conditions import standard_conditions
from rope_interp.interventions.contrasts import band_contrasts, control_distribution
from rope_interp.interventions.experiment import ExperimentResult, RunSettings, run_experiment
from rope_interp.loading.data import load_corpus
from rope_interp.loading.models import load_model


def first_sequences(result: ExperimentResult, n: int) -> ExperimentResult:
    """The result restricted to its first `n` sequences (Δloss recomputed from them)."""
    sequences = result.sequences[result.sequences["sequence"] < n]
    delta = sequences.groupby("condition")["delta_loss"].mean()
    summary = result.summary.assign(delta_loss=result.summary["condition"].map(delta))
    return ExperimentResult(summary=summary, heads=result.heads, sequences=sequences)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", default="/tmp/rope-interp-findings-contrasts")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model = load_model("smollm2-135m", device="cpu")
    spec = RotarySpec.from_model(model)
    corpus = load_corpus(model, "pydoc", seq_len=args.seq_len, n_windows=args.windows, seed=0)
    conditions = standard_conditions(model, spec, groups=("band",))
    result = run_experiment(
        model,
        conditions,
        corpus,
        out_dir=args.out,
        settings=RunSettings(batch_size=args.batch_size, attention=False, seed=0),
    )
    print(f"{spec.summary()}\n{corpus.describe()}; {len(conditions)} conditions")
    sizes = sorted({n for n in (8, 16, 32, 64, args.windows) if n <= args.windows})
    rows, places = [], []
    for n in sizes:
        part = first_sequences(result, n)
        rows.append(band_contrasts(part).assign(n=n))
        places.append(control_distribution(part).assign(n=n))
    contrasts = pd.concat(rows)
    contrasts["half_width"] = (contrasts.ci_high - contrasts.ci_low) / 2
    contrasts["decided"] = (contrasts.ci_low > 0) | (contrasts.ci_high < 0)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print("\nPaired contrasts (nats/token; 95 % paired bootstrap over sequences)")
        print(contrasts.to_string(index=False, float_format=lambda v: f"{v:+.3f}"))
        print("\nBands among the random controls")
        print(pd.concat(places).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        controls = result.summary[result.summary["band"] == "random"]
        print("\nRandom controls, all windows: Δloss")
        print(controls["delta_loss"].describe().to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
