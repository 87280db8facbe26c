"""Cost of streaming pair statistics on the built-in model.

    python benchmarks/bench_stats.py [--batch 8] [--seq-len 512] [--repeats 3] [--device cpu]

Three modes, interleaved in one process so that machine noise hits each alike:
  forward  plain forward pass (return_type=None)
  stream   forward with `collect_pair_stats`'s hooks on every layer (nothing stored)
  cache    `run_with_cache` of q, k, rot_q, rot_k on every layer, then the same statistics
Peak memory: each mode once more in a fresh subprocess (CPU: peak RSS above the loaded model,
with the kernel's peak mark reset after loading;
CUDA: `torch.cuda.max_memory_allocated` above the loaded model).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from rope_interp.capture import KINDS, hook_name
from rope_interp.data import load_corpus
from rope_interp.models import load_model
from rope_interp.spec import RotarySpec
from rope_interp.stats import PairStats, collect_pair_stats


def run_mode(mode: str, model, tokens: torch.Tensor) -> None:
    if mode == "forward":
        with torch.no_grad():
            model(tokens, return_type=None)
    elif mode == "stream":
        collect_pair_stats(model, [tokens], progress=False)
    elif mode == "cache":
        spec = RotarySpec.from_model(model, check_config=False)
        stats = PairStats(spec, device=model.cfg.device)
        names = {hook_name(kind, layer) for layer in range(spec.n_layers) for kind in KINDS}
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
        for layer in range(spec.n_layers):
            stats.update("q", layer, cache[hook_name("q", layer)])
            stats.update("k", layer, cache[hook_name("k", layer)])
    else:
        raise ValueError(mode)
    if tokens.device.type == "cuda":
        torch.cuda.synchronize()


def peak_memory_mb(mode: str, args) -> float:
    """Run one mode in a fresh process; return its peak memory above the loaded model."""
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            mode,
            "--batch",
            str(args.batch),
            "--seq-len",
            str(args.seq_len),
            "--device",
            args.device,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]


def _proc_status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> float:
    """Reset the kernel's peak-RSS mark (Linux) so loading the model does not count; return
    the current RSS in MB."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    return _proc_status_mb("VmRSS")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    model = load_model("smollm2-135m", device=args.device)
    tokens = load_corpus(model, seq_len=args.seq_len, n_windows=args.batch).tokens.to(args.device)
    if args.child:
        cuda = args.device.startswith("cuda")
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            base = _reset_peak_rss()
        run_mode(args.child, model, tokens)
        if cuda:
            peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        else:
            peak = _proc_status_mb("VmHWM") - base
        print(json.dumps({"peak_mb": peak}))
        return

    modes = ("forward", "stream", "cache")
    run_mode("forward", model, tokens)  # warm-up
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(args.repeats):
        for mode in modes:
            start = time.perf_counter()
            run_mode(mode, model, tokens)
            times[mode].append(time.perf_counter() - start)
    base = statistics.median(times["forward"])
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(
        f"device: {device}, torch threads {torch.get_num_threads()}, "
        f"batch {args.batch} × {args.seq_len}, median of {args.repeats}"
    )
    print("| mode | time (s) | × forward | peak memory above model (MB) |")
    print("|---|---|---|---|")
    for mode in modes:
        median = statistics.median(times[mode])
        print(f"| {mode} | {median:.2f} | {median / base:.2f} | {peak_memory_mb(mode, args):.0f} |")


if __name__ == "__main__":
    main()
