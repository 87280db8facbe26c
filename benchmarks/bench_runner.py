"""Benchmark: a sweep with one condition per layer (zero the 4 highest-frequency pairs of q and
k in that layer only), run by the experiment runner with the resume-from-layer cache
(`reuse_prefix=True`) and with full forward passes (`reuse_prefix=False`), on the built-in
SmolLM2-135M and the embedded corpus. Both modes run in the same process, alternating, and the
results are checked to agree.

    python benchmarks/bench_runner.py --windows 4 --seq-len 256 --repeats 1

GPU mode (random-weight SmolLM2-135M and Llama-3-8B shapes from bench_stats.py): the runner's
cost per condition against one plain forward, with no attention metrics, 4 conditions + clean:

    python benchmarks/bench_runner.py --gpu [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from rope_interp.core.spec import RotarySpec
from rope_interp.interventions.ablation import Intervention
from rope_interp.interventions.experiment import Condition, RunSettings, run_experiment
from rope_interp.interventions.selection import select_band
from rope_interp.loading.data import load_corpus
from rope_interp.loading.models import load_model


def gpu_main(args) -> None:
    """Per-condition runner time ÷ one forward, without and with a run folder (resume keys)."""
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; median of {args.repeats}")
    print(
        "| shape | dtype | batch × seq | forward (ms) | runner ÷ (5 forwards) | with run folder |"
    )
    print("|---|---|---|---|---|---|")
    shapes = {"smollm2-135m": (8, 1024), "llama-3-8b": (8, 2048)}
    for shape in args.shapes.split(","):
        batch, seq_len = shapes[shape]
        for dtype in (torch.bfloat16, torch.float32)[: 1 if shape == "llama-3-8b" else 2]:
            fwd, run, stored = gpu_ratios(shape, dtype, batch, seq_len, args.repeats)
            print(
                f"| {shape} | {str(dtype)[6:]} | {batch} × {seq_len} | {fwd * 1e3:.1f} | "
                f"{run / fwd:.3f} | {stored / fwd:.3f} |",
                flush=True,
            )
            torch.cuda.empty_cache()


def gpu_ratios(shape: str, dtype, batch: int, seq_len: int, repeats: int):
    """Median seconds of one forward (with loss), and of the runner per condition (4 + clean)
    without and with a run folder."""
    import statistics
    import sys
    import tempfile
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_stats import GPU_SHAPES, random_model

    model = random_model(shape, dtype, "cuda", n_ctx=seq_len)
    spec = RotarySpec.from_model(model)
    vocab = GPU_SHAPES[shape][0]["d_vocab"]
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, vocab, (batch, seq_len), generator=generator).cuda()
    conditions = [
        Condition(f"zero {band} {k}", Intervention(model, select_band(spec, band, k=k)))
        for band in ("high", "low")
        for k in (4, 8)
    ]

    def forward():
        with torch.no_grad():
            model(tokens, return_type="loss")
        torch.cuda.synchronize()

    def runner(out_dir=None):
        settings = RunSettings(batch_size=batch, attention=False, progress=False, n_boot=100)
        run_experiment(model, conditions, tokens, out_dir=out_dir, settings=settings)
        torch.cuda.synchronize()

    forward(), runner()  # warm-up
    times: dict[str, list[float]] = {"forward": [], "runner": [], "stored": []}
    for _ in range(repeats):
        for name, job in (("forward", forward), ("runner", runner)):
            start = time.perf_counter()
            job()
            times[name].append(time.perf_counter() - start)
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            runner(Path(folder) / "run")
            times["stored"].append(time.perf_counter() - start)
    n = len(conditions) + 1
    fwd, run, stored = (statistics.median(v) for v in times.values())
    return fwd, run / n, stored / n


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
    parser.add_argument("--gpu", action="store_true", help="random-weight shapes on CUDA")
    parser.add_argument("--shapes", default="smollm2-135m,llama-3-8b", help="with --gpu")
    args = parser.parse_args()
    if args.gpu:
        return gpu_main(args)
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
                settings=RunSettings(
                    batch_size=args.batch_size,
                    attention=not args.no_attention,
                    reuse_prefix=reuse,
                    fast_unembed=fast,
                    progress=False,
                ),
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
