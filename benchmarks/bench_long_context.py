"""Time and memory of `long_context_stats` on the built-in SmolLM2-135M at long context (CPU).

    python benchmarks/bench_long_context.py [--lengths 2048,8192] [--layers 0] [--tile-size 32]
    python benchmarks/bench_long_context.py --gpu --lengths 2048,8192,16384,32768 --tile-size 512

For each length, three fresh processes (so that each peak RSS is its own) load the model, take
one window of that many tokens of the embedded corpus, and run:

- `forward`: the host's forward pass up to the last chosen layer (`stop_at_layer`), nothing
  attached: what the host costs by itself;
- `stats`: `long_context_stats` on the chosen layers (the same forward with its capture hooks,
  each layer reduced over tiles as the forward runs);
- `reduce`: the tile reduction alone (`tiled.tiled_sums`) on the captured rot_q/rot_k of the
  first chosen layer, with the resident memory sampled every 2 ms: rope-interp's own peak above
  what was resident before it started (after handing the forward's freed heap back to the OS).

Memory is the peak resident set size above the resident size after loading the model. The
host's eager attention builds each layer's [head, pos, pos] scores and pattern, so the
`forward` row is O(pos²) whatever rope-interp does. Prints a Markdown table and one JSON line
per measurement.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = ("forward", "stats", "reduce")


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Sampler:
    """Highest resident size seen while the block runs (sampled every 2 ms)."""

    def __enter__(self):
        self.peak, self._stop = _rss_mb(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_mb())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())


def _release_free_heap() -> None:
    """Hand memory the forward pass freed back to the OS (glibc), so that what the reduction
    allocates shows in the resident size instead of reusing freed pages unseen."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def measure(mode: str, length: int, layers: list[int], tile_size: int, threads: int) -> dict:
    """One measurement in this process (the model is loaded here)."""
    import torch

    from rope_interp.analysis.long_context import long_context_stats
    from rope_interp.core.capturing import capture
    from rope_interp.core.pairs import distance_buckets
    from rope_interp.core.spec import RotarySpec
    from rope_interp.core.tiled import tiled_sums
    from rope_interp.loading.data import load_corpus
    from rope_interp.loading.models import load_model

    torch.set_num_threads(threads)
    model = load_model("smollm2-135m", device="cpu")
    tokens = load_corpus(model, "pydoc", length, 1, seed=0).tokens
    stop = max(layers) + 1
    extra = {"stop_at_layer": stop} if stop < model.cfg.n_layers else {}
    # Warm-up in every mode: a capture on 8 tokens runs a bridge's one-off probe pass (which
    # keeps ~0.5 GB resident) and reads the spec, so that no mode counts them.
    capture(model, tokens[:, :8], layers=layers[0], kinds=("rot_q", "rot_k"), **extra)
    RotarySpec.from_model(model, check_config=False)
    base = _rss_mb()
    start = time.perf_counter()
    reduce_peak = None
    if mode == "forward":
        with torch.no_grad():
            model(tokens, return_type=None, **extra)
    elif mode == "stats":
        long_context_stats(model, tokens, layers=layers, tile_size=tile_size)
    else:
        spec = RotarySpec.from_model(model, check_config=False)
        cap = capture(model, tokens, layers=layers[0], kinds=("rot_q", "rot_k"), **extra)
        _release_free_heap()
        before = _rss_mb()
        start = time.perf_counter()
        with _Sampler() as sampler:
            tiled_sums(
                cap.rot_q(layers[0]),
                cap.rot_k(layers[0]),
                spec,
                distance_buckets(length),
                tile_size,
            )
        reduce_peak = sampler.peak - before
    seconds = time.perf_counter() - start
    return {
        "mode": mode,
        "length": length,
        "layers": layers,
        "tile_size": tile_size,
        "threads": threads,
        "seconds": round(seconds, 2),
        "peak_above_load_mb": round(_peak_rss_mb() - base, 1),
        "reduce_peak_mb": None if reduce_peak is None else round(reduce_peak, 1),
        "host": type(model).__name__,
    }


def gpu_main(args) -> None:
    """On CUDA, a random-weight Llama-3-8B-shape bridge in bfloat16 (benchmarks/bench_stats.py):
    per length, the host's forward up to the chosen layers against `long_context_stats` on them,
    time and peak GPU memory above the loaded model; a length the host cannot run is said so."""
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_stats import random_model

    from rope_interp.analysis.long_context import long_context_stats

    lengths = [int(x) for x in args.lengths.split(",")]
    layers = [int(x) for x in args.layers.split(",")]
    model = random_model("llama-3-8b", torch.bfloat16, "cuda", n_ctx=max(lengths))
    stop = {"stop_at_layer": max(layers) + 1}
    print(f"{torch.cuda.get_device_name()}: random Llama-3-8B shape, bf16, layers {layers}, "
          f"tile {args.tile_size}")  # fmt: skip
    print("| tokens | host forward (s) | host peak (GiB) | stats (s) | stats peak (GiB) |")
    print("|---|---|---|---|---|")
    for length in lengths:
        tokens = torch.randint(0, 128256, (1, length), generator=torch.Generator().manual_seed(0))
        tokens = tokens.cuda()
        row = [str(length)]
        for job in (
            lambda t=tokens: model(t, return_type=None, **stop),
            lambda t=tokens: long_context_stats(model, t, layers=layers, tile_size=args.tile_size),
        ):
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            try:
                with torch.no_grad():
                    job()
                torch.cuda.synchronize()
            except torch.OutOfMemoryError:
                row += ["out of memory", "-"]
                continue
            peak = (torch.cuda.max_memory_allocated() - base) / 2**30
            row += [f"{time.perf_counter() - start:.2f}", f"{peak:.2f}"]
        print("| " + " | ".join(row) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="2048,8192")
    parser.add_argument("--layers", default="0", help="comma-separated layer indices")
    parser.add_argument("--tile-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--gpu", action="store_true", help="random Llama-3-8B shape on CUDA")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: MODE:LENGTH in this process
    args = parser.parse_args()
    if args.gpu:
        return gpu_main(args)
    layers = [int(x) for x in args.layers.split(",")]
    if args.one:
        mode, length = args.one.split(":")
        print(json.dumps(measure(mode, int(length), layers, args.tile_size, args.threads)))
        return
    rows = []
    for length in (int(x) for x in args.lengths.split(",")):
        for mode in args.modes.split(","):
            command = [sys.executable, __file__, "--one", f"{mode}:{length}"]
            command += ["--layers", args.layers, "--tile-size", str(args.tile_size)]
            command += ["--threads", str(args.threads)]
            out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            print(json.dumps(row), flush=True)
            rows.append(row)
    print("\n| tokens | mode | time (s) | peak RSS above load (MB) | reduction's own peak (MB) |")
    print("|---|---|---|---|---|")
    for r in rows:
        own = "" if r["reduce_peak_mb"] is None else r["reduce_peak_mb"]
        print(
            f"| {r['length']} | {r['mode']} | {r['seconds']} | {r['peak_above_load_mb']} | {own} |"
        )


if __name__ == "__main__":
    main()
