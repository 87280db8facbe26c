"""Benchmark: a sweep with one condition per layer (zero the 4 highest-frequency pairs of q and
k in that layer only), run by the experiment runner with the resume-from-layer cache
(`reuse_prefix=True`) and with full forward passes (`reuse_prefix=False`), on the built-in
SmolLM2-135M and the embedded corpus. Both modes run in the same process, alternating, and the
results are checked to agree.

    python benchmarks/bench_runner.py --windows 4 --seq-len 256 --repeats 1
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from rope_interp.ablation import Intervention
from rope_interp.data import load_corpus
from rope_interp.experiment import Condition, run_experiment
from rope_interp.models import load_model
from rope_interp.selection import select_band
from rope_interp.spec import RotarySpec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on a shared machine)"
    )
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-attention", action="store_true", help="Δloss only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = load_model("smollm2-135m", device="cpu")
    spec = RotarySpec.from_model(model)
    corpus = load_corpus(model, "pydoc", seq_len=args.seq_len, n_windows=args.windows, seed=0)
    conditions = [
        Condition(
            f"zero high 4 @ layer {layer}",
            Intervention(model, select_band(spec, "high", k=4, layers=[layer]), spec=spec),
        )
        for layer in range(spec.n_layers)
    ]
    # mode → (reuse_prefix, fast_unembed)
    modes = {
        "full forwards, plain model() (TransformerLens unembed)": (False, False),
        "full forwards, cached unembedding": (False, True),
        "resume from cached resid_pre + cached unembedding": (True, True),
    }
    times: dict[str, list[float]] = {m: [] for m in modes}
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    results = {}
    for repeat in range(args.repeats):
        order = list(modes) if repeat % 2 == 0 else list(reversed(modes))
        for mode in order:
            reuse, fast = modes[mode]
            start, start_cpu = time.perf_counter(), time.process_time()
            results[mode] = run_experiment(
                model,
                conditions,
                corpus,
                batch_size=args.batch_size,
                attention=not args.no_attention,
                reuse_prefix=reuse,
                fast_unembed=fast,
                progress=False,
            )
            times[mode].append(time.perf_counter() - start)
            cpu[mode].append(time.process_time() - start_cpu)
    losses = [r.summary.delta_loss.to_numpy() for r in results.values()]
    diff = max(float(np.abs(x - losses[0]).max()) for x in losses)
    print(f"model: SmolLM2-135M ({spec.n_layers} layers); corpus: {corpus.describe()}")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); attention metrics: "
        f"{not args.no_attention}; repeats: {args.repeats} (min shown, order alternated)"
    )
    print(f"max |Δloss difference between modes| = {diff:.2e}")
    n = len(conditions)
    base = min(cpu[next(iter(modes))])
    print(
        "| mode | conditions | wall time (s) | CPU time (s) | CPU s / condition | speed-up (CPU) |"
    )
    print("|---|---|---|---|---|---|")
    for mode in modes:
        wall, c = min(times[mode]), min(cpu[mode])
        print(f"| {mode} | {n} | {wall:.1f} | {c:.1f} | {c / n:.2f} | {base / c:.2f}× |")


if __name__ == "__main__":
    main()
