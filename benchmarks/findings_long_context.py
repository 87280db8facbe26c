"""Loss and attention by position on the built-in SmolLM2-135M at its full 8,192-token context:
the clean model, p-RoPE at inference (the lowest quarter of the frequencies unrotated) and the
highest / lowest quarter of the pairs zeroed (q and k, every head), on windows of the embedded
corpus (`length_sweep`).

    python benchmarks/findings_long_context.py --seq-len 8192 --windows 1

Prints the loss table (Δloss against the clean model per position bucket, paired per token, with
its standard error) and the first-token weight and entropy of the first, a middle and the last
layer by position.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch

from rope_interp.analysis.length_sweep import length_sweep
from rope_interp.core.spec import RotarySpec
from rope_interp.interventions.ablation import Intervention, p_rope
from rope_interp.interventions.experiment import Condition
from rope_interp.interventions.selection import select_band
from rope_interp.loading.data import load_corpus
from rope_interp.loading.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seq-len", type=int, default=8192)
    parser.add_argument("--windows", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model = load_model("smollm2-135m", device="cpu")
    spec = RotarySpec.from_model(model)
    quarter = spec.n_pairs // 4
    corpus = load_corpus(model, "pydoc", seq_len=args.seq_len, n_windows=args.windows, seed=0)
    conditions = [
        Condition("p-RoPE 0.75", p_rope(model, 0.75, spec=spec)),
        Condition(
            f"zero high {quarter}",
            Intervention(model, select_band(spec, "high", k=quarter), spec=spec),
        ),
        Condition(
            f"zero low {quarter}",
            Intervention(model, select_band(spec, "low", k=quarter), spec=spec),
        ),
    ]
    sweep = length_sweep(model, corpus.tokens, conditions)
    pd.set_option("display.width", 200)
    pd.set_option("display.max_rows", 200)
    print(f"{corpus.describe()}; {time.perf_counter() - started:.0f} s")
    loss = sweep.loss.round(4)
    print(loss.to_string(index=False))
    last = spec.n_layers - 1
    chosen = sweep.attention[sweep.attention.layer.isin([0, last // 2, last])]
    print(chosen.round(4).to_string(index=False))


if __name__ == "__main__":
    main()
