"""Cost of streaming pair statistics against a plain forward pass.

CPU mode (the built-in SmolLM2-135M and embedded corpus):

    python benchmarks/bench_stats.py [--batch 8] [--seq-len 512] [--repeats 5] [--memory]

GPU mode (random-weight models of real shapes, no download; bf16 and fp32; a
`HookedTransformer` under TransformerLens 3, a `TransformerBridge` of a transformers Llama under 4):

    python benchmarks/bench_stats.py --gpu [--shapes smollm2-135m,llama-3-8b]
        [--dtypes bfloat16,float32] [--repeats 10]

Modes, interleaved in one process (each repeat runs every mode once, in turn) so that machine
noise hits each alike; medians are reported:
  forward  plain `model(tokens, return_type=None)`
  minimal  the same with a minimal hook on the same hook points (hook_q, hook_k of every
           layer): the sum of fp32 per-pair norms, the least any statistic can cost
  stream   one pass of `collect_pair_stats` (every layer, q and k); on CUDA its reduction
           runs through `torch.compile` (rope_interp/core/pair_reduction.py)
  eager    (GPU) the same with the eager reduction (`PairStats(reduce_compiled=False)`)
  cache    (CPU, with --cache) `run_with_cache` of q, k, rot_q, rot_k, then the statistics
With --memory (CPU): each mode once more in a fresh process, peak RSS above the loaded model.
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

from rope_interp.core.backends import backend_for
from rope_interp.core.capturing import KINDS, hook_name
from rope_interp.core.spec import RotarySpec
from rope_interp.core.stats import PairStats, collect_pair_stats
from rope_interp.testing import HOST

# Random-weight stand-ins for real models: (config fields, batch, seq_len).
GPU_SHAPES = {
    "smollm2-135m": (
        dict(
            n_layers=30,
            d_model=576,
            n_heads=9,
            n_key_value_heads=3,
            d_head=64,
            d_mlp=1536,
            d_vocab=49152,
            rotary_base=100000,
        ),
        32,
        1024,
    ),
    "llama-3-8b": (
        dict(
            n_layers=32,
            d_model=4096,
            n_heads=32,
            n_key_value_heads=8,
            d_head=128,
            d_mlp=14336,
            d_vocab=128256,
            rotary_base=500000,
        ),
        8,
        2048,
    ),
}


def random_model(shape: str, dtype: torch.dtype, device: str, n_ctx: int):
    """A Llama-architecture model of a real model's shape with random weights built directly on
    `device`: a `HookedTransformer` where TransformerLens has one, else a `TransformerBridge`."""
    if HOST == "bridge":
        return random_bridge(shape, dtype, device, n_ctx)
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    fields = GPU_SHAPES[shape][0]
    cfg = HookedTransformerConfig(
        **fields,
        n_ctx=n_ctx,
        rotary_dim=fields["d_head"],
        act_fn="silu",
        normalization_type="RMS",
        positional_embedding_type="rotary",
        gated_mlp=True,
        final_rms=True,
        default_prepend_bos=False,
        init_weights=False,
        device=device,
        dtype=dtype,
    )
    with torch.device(device):
        model = HookedTransformer(cfg, move_to_device=False)
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".w"):  # RMSNorm scales
                param.fill_(1.0)
            elif name.rsplit(".", 1)[-1].startswith("b_"):  # biases
                param.zero_()
            else:
                param.normal_(0, 0.02, generator=generator)
    return model.eval()


def random_bridge(shape: str, dtype: torch.dtype, device: str, n_ctx: int):
    """The same shape as a transformers `LlamaForCausalLM` (random init on `device`), wrapped
    in a `TransformerBridge`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from rope_interp.loading.hf_loading import boot, quiet
    from rope_interp.testing import word_tokenizer

    f = GPU_SHAPES[shape][0]
    config = LlamaConfig(
        hidden_size=f["d_model"],
        num_hidden_layers=f["n_layers"],
        num_attention_heads=f["n_heads"],
        num_key_value_heads=f["n_key_value_heads"],
        head_dim=f["d_head"],
        intermediate_size=f["d_mlp"],
        vocab_size=f["d_vocab"],
        rope_theta=f["rotary_base"],
        max_position_embeddings=n_ctx,
        initializer_range=0.02,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    with quiet(), torch.device(device):
        hf_model = LlamaForCausalLM(config).to(dtype)
    return boot(hf_model, word_tokenizer(), device, dtype, default_prepend_bos=False)


def minimal_hooks(model, sink: list):
    """Hooks on the q/k read points of every layer adding the sum of fp32 per-pair norms to
    `sink` (on a bridge, the same hooks and transforms the statistics read)."""
    spec = RotarySpec.from_model(model, check_config=False)
    backend = backend_for(model)
    rot, n_pairs = spec.rotary_dim, spec.n_pairs

    def hook_for(point):
        def hook(tensor, hook):
            squares = point.read(tensor)[..., :rot].float().square()
            sink.append((squares[..., :n_pairs] + squares[..., n_pairs:]).sqrt().sum())

        return hook

    points = [backend.read_point(kind, layer) for layer in range(spec.n_layers) for kind in "qk"]
    return [(point.hook, hook_for(point)) for point in points]


def run_mode(mode: str, model, tokens: torch.Tensor) -> None:
    if mode == "forward":
        with torch.no_grad():
            model(tokens, return_type=None)
    elif mode == "minimal":
        sink: list = []
        with torch.no_grad():
            model.run_with_hooks(tokens, fwd_hooks=minimal_hooks(model, sink), return_type=None)
        torch.stack(sink).sum().item()
    elif mode in ("stream", "eager"):
        spec = RotarySpec.from_model(model, check_config=False)
        compiled = None if mode == "stream" else False  # None: compiled on CUDA
        stats = PairStats(spec, device=tokens.device, reduce_compiled=compiled)
        collect_pair_stats(model, [tokens], progress=False, stats=stats)
    elif mode == "cache":
        spec = RotarySpec.from_model(model, check_config=False)
        stats = PairStats(spec, device=model.cfg.device)
        names = {hook_name(kind, layer) for layer in range(spec.n_layers) for kind in KINDS}
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
        for layer in range(spec.n_layers):
            stats.update("q", layer, cache[hook_name("q", layer)])
            stats.update("k", layer, cache[hook_name("k", layer)])
        stats.flush()
    else:
        raise ValueError(mode)
    if tokens.device.type == "cuda":
        torch.cuda.synchronize()


def time_modes(modes, model, tokens, repeats: int) -> dict[str, float]:
    """Median seconds per mode; modes interleaved within each repeat, after one warm-up each."""
    for mode in modes:
        run_mode(mode, model, tokens)
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    for repeat in range(repeats):
        order = modes if repeat % 2 == 0 else modes[::-1]
        for mode in order:
            start = time.perf_counter()
            run_mode(mode, model, tokens)
            times[mode].append(time.perf_counter() - start)
    return {mode: statistics.median(values) for mode, values in times.items()}


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


def peak_memory_mb(mode: str, args) -> float:
    """Run one mode in a fresh process; return its peak RSS above the loaded model."""
    command = [sys.executable, __file__, "--child", mode, "--batch", str(args.batch)]
    command += ["--seq-len", str(args.seq_len)]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]


def cpu_main(args) -> None:
    from rope_interp.loading.data import load_corpus
    from rope_interp.loading.models import load_model

    model = load_model("smollm2-135m", device="cpu")
    tokens = load_corpus(model, seq_len=args.seq_len, n_windows=args.batch).tokens
    if args.child:
        base = _reset_peak_rss()
        run_mode(args.child, model, tokens)
        print(json.dumps({"peak_mb": _proc_status_mb("VmHWM") - base}))
        return
    modes = ("forward", "minimal", "stream") + (("cache",) if args.cache else ())
    medians = time_modes(modes, model, tokens, args.repeats)
    print(
        f"CPU, torch {torch.__version__}, {torch.get_num_threads()} threads; built-in "
        f"SmolLM2-135M float32, batch {args.batch} × {args.seq_len}; median of {args.repeats}"
    )
    memory = "| peak RSS above model (MB) " if args.memory else ""
    print(f"| mode | time (s) | × forward | × minimal {memory}|")
    print("|---|---|---|---|" + ("---|" if args.memory else ""))
    for mode in modes:
        row = (
            f"| {mode} | {medians[mode]:.3f} | {medians[mode] / medians['forward']:.3f} | "
            f"{medians[mode] / medians['minimal']:.3f} |"
        )
        if args.memory:
            row += f" {peak_memory_mb(mode, args):.0f} |"
        print(row)


def gpu_main(args) -> None:
    if not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA GPU; run without --gpu for the CPU mode.")
    device = "cuda"
    print(
        f"{torch.cuda.get_device_name()}, torch {torch.__version__}; random-weight models; "
        f"median of {args.repeats} interleaved repeats"
    )
    print(
        "| shape | dtype | batch × seq | forward (ms) | minimal ×fwd | eager ×fwd | stream ×fwd "
        "| eager ×minimal | stream ×minimal | stream peak above forward (MiB) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for shape in args.shapes.split(","):
        _, batch, seq_len = GPU_SHAPES[shape]
        for dtype_name in args.dtypes.split(","):
            dtype = getattr(torch, dtype_name)
            model = random_model(shape, dtype, device, n_ctx=seq_len)
            generator = torch.Generator().manual_seed(0)
            tokens = torch.randint(
                0, GPU_SHAPES[shape][0]["d_vocab"], (batch, seq_len), generator=generator
            )
            tokens = tokens.to(device)
            modes = ("forward", "minimal", "eager", "stream")
            medians = time_modes(modes, model, tokens, args.repeats)
            peaks = {}
            for mode in ("forward", "stream"):
                torch.cuda.reset_peak_memory_stats()
                run_mode(mode, model, tokens)
                peaks[mode] = torch.cuda.max_memory_allocated() / 2**20
            fwd = medians["forward"]
            print(
                f"| {shape} | {dtype_name} | {batch} × {seq_len} | {fwd * 1e3:.1f} | "
                f"{medians['minimal'] / fwd:.3f} | {medians['eager'] / fwd:.3f} | "
                f"{medians['stream'] / fwd:.3f} | {medians['eager'] / medians['minimal']:.3f} | "
                f"{medians['stream'] / medians['minimal']:.3f} | "
                f"{peaks['stream'] - peaks['forward']:.0f} |",
                flush=True,
            )
            del model, tokens
            gc.collect()
            torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="random-weight shapes on CUDA")
    parser.add_argument("--shapes", default=",".join(GPU_SHAPES))
    parser.add_argument("--dtypes", default="bfloat16,float32")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cache", action="store_true", help="also time run_with_cache (CPU)")
    parser.add_argument("--memory", action="store_true", help="peak RSS per mode (CPU)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.gpu:
        gpu_main(args)
    else:
        cpu_main(args)


if __name__ == "__main__":
    main()
