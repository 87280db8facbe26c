"""What the TransformerLens 4 bridge costs against a TransformerLens 3.9 HookedTransformer, on the
built-in SmolLM2-135M (float32, CPU): a plain forward, `collect_pair_stats` and one report
section with score decompositions, each timed in both hosts.

    python benchmarks/bench_hosts.py [--rounds 3] [--batch 4] [--seq-len 256]

Needs .venv (TL 4.3) and .venv-tl3 (TL 3.9) (bash scripts/test.sh builds both). Each round runs
one process per host, in turn (TL 3.9, TL 4.3, TL 3.9, ...), so that a drift of the machine's
speed hits both; each process loads the model once (not timed) and reports the median of three
timings of each job. Prints the medians over rounds and the ratios bridge / HookedTransformer.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOSTS = {"HookedTransformer (TL 3.9)": ".venv-tl3", "TransformerBridge (TL 4.3)": ".venv"}


def _median_seconds(job, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        job()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(batch: int, seq_len: int) -> dict[str, float]:
    """Seconds per job on the installed host (the model loaded beforehand)."""
    import torch

    from rope_interp.analysis.positional import positional_heads
    from rope_interp.core.stats import collect_pair_stats
    from rope_interp.loading.data import load_corpus
    from rope_interp.loading.models import load_model

    torch.set_num_threads(2)
    model = load_model("smollm2-135m", device="cpu")
    tokens = load_corpus(model, "pydoc", seq_len, batch, seed=0).tokens
    with torch.no_grad():
        model(tokens)  # warm-up (and the bridge's probe pass, on first use)
        collect_pair_stats(model, [tokens], progress=False)
        return {
            "forward": _median_seconds(lambda: model(tokens)),
            "pair statistics": _median_seconds(
                lambda: collect_pair_stats(model, [tokens], progress=False)
            ),
            "positional heads (score decomposition)": _median_seconds(
                lambda: positional_heads(model, [tokens[:2]], progress=False), repeats=1
            ),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        print(json.dumps(measure(args.batch, args.seq_len)))
        return
    runs: dict[str, list[dict[str, float]]] = {host: [] for host in HOSTS}
    for _ in range(args.rounds):
        for host, venv in HOSTS.items():
            python = ROOT / venv / "bin" / "python"
            command = [str(python), __file__, "--inner", "--batch", str(args.batch)]
            command += ["--seq-len", str(args.seq_len)]
            done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
            runs[host].append(json.loads(done.stdout.strip().splitlines()[-1]))
    hooked, bridge = (
        {job: statistics.median(r[job] for r in runs[host]) for job in runs[host][0]}
        for host in HOSTS
    )
    print(f"{args.batch} × {args.seq_len} tokens, median of {args.rounds} rounds (seconds)")
    print(f"| job | {' | '.join(HOSTS)} | bridge / HookedTransformer |")
    print("|---|---|---|---|")
    for job in hooked:
        print(
            f"| {job} | {hooked[job]:.3f} | {bridge[job]:.3f} | {bridge[job] / hooked[job]:.2f} |"
        )


if __name__ == "__main__":
    main()
