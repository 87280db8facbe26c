"""The `rope-interp` command."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from rope_interp.errors import RopeInterpError


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by every subcommand that runs a model on a corpus."""
    parser.add_argument(
        "--model",
        default="smollm2-135m",
        help="built-in 'smollm2-135m' (offline), a .gguf path, or a TransformerLens model name",
    )
    parser.add_argument(
        "--corpus",
        default="pydoc",
        help="'pydoc' (embedded English prose), 'hf:NAME[:COLUMN]', or text file paths/globs",
    )
    parser.add_argument("--tokens", type=int, default=4096, help="tokens to analyse (default 4096)")
    parser.add_argument("--seq-len", type=int, default=256, help="tokens per window (default 256)")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if present)")
    parser.add_argument("--dtype", default="float32", help="model dtype (default float32)")
    parser.add_argument("--seed", type=int, default=0, help="window sampling seed (default 0)")


def load_model_and_corpus(args: argparse.Namespace):
    """The model and corpus named by `add_model_options`'s arguments."""
    from rope_interp.data import load_corpus
    from rope_interp.models import load_model

    model = load_model(args.model, device=args.device, dtype=args.dtype)
    n_windows = max(1, args.tokens // args.seq_len)
    corpus = load_corpus(model, args.corpus, args.seq_len, n_windows, seed=args.seed)
    return model, corpus


def cmd_summary(args: argparse.Namespace) -> None:
    """Per-layer rotary frequencies and pair norms."""
    from rope_interp.spec import RotarySpec
    from rope_interp.stats import collect_pair_stats

    start = time.perf_counter()
    model, corpus = load_model_and_corpus(args)
    spec = RotarySpec.from_model(model)
    print(f"model: {args.model}\n{spec.summary()}\ncorpus: {corpus.describe()}")
    stats = collect_pair_stats(model, corpus.batches(args.batch_size))
    frame = stats.to_frame()
    context = corpus.tokens.shape[1]
    n_pairs = spec.n_pairs
    third = max(1, n_pairs // 3)
    print(
        f"\nPer layer (pairs: high = 0..{third - 1}, low = {n_pairs - third}..{n_pairs - 1}; "
        f"partial-cycle pairs have θ·{context} < 2π):"
    )
    header = (
        f"{'layer':>5} {'θ_0':>7} {'θ_last':>9} {'partial':>7} "
        f"{'|q| high':>9} {'|q| low':>8} {'|k| high':>9} {'|k| low':>8} {'max |k|':>8}"
    )
    print(header)
    partial = spec.partial_cycle_mask(context).sum(1)
    for layer in stats.layers:
        rows = frame[frame.layer == layer]
        norms = {
            (kind, band): rows[(rows.kind == kind) & pairs].mean_norm.mean()
            for kind in ("q", "k")
            for band, pairs in (
                ("high", rows.pair < third),
                ("low", rows.pair >= n_pairs - third),
            )
        }
        print(
            f"{layer:>5} {spec.thetas[layer, 0]:>7.3f} {spec.thetas[layer, -1]:>9.2e} "
            f"{int(partial[layer]):>7} {norms['q', 'high']:>9.3f} {norms['q', 'low']:>8.3f} "
            f"{norms['k', 'high']:>9.3f} {norms['k', 'low']:>8.3f} "
            f"{rows[rows.kind == 'k'].max_norm.max():>8.2f}"
        )
    print(f"\n{stats.tokens_seen} tokens in {time.perf_counter() - start:.1f} s")


def cmd_stats(args: argparse.Namespace) -> None:
    """Streaming pair statistics to a file (.safetensors keeps the accumulators; .csv/.parquet
    the tidy table)."""
    from rope_interp.stats import collect_pair_stats

    model, corpus = load_model_and_corpus(args)
    print(f"corpus: {corpus.describe()}", file=sys.stderr)
    stats = collect_pair_stats(model, corpus.batches(args.batch_size))
    out = args.out
    if out.endswith(".safetensors"):
        stats.save(out)
    elif out.endswith(".parquet"):
        stats.to_frame().to_parquet(out)
    elif out.endswith(".csv"):
        stats.to_frame().to_csv(out, index=False)
    else:
        raise RopeInterpError(f"--out must end in .safetensors, .csv or .parquet, got {out!r}.")
    print(f"wrote {out} ({stats.tokens_seen} tokens)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rope-interp",
        description=(
            "See and test how a rotary language model uses its RoPE frequencies. "
            "Every command runs offline on the built-in SmolLM2-135M and embedded corpus."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    summary = commands.add_parser(
        "summary", help="print per-layer rotary frequencies and pair norms"
    )
    add_model_options(summary)
    summary.set_defaults(func=cmd_summary)

    stats = commands.add_parser("stats", help="streaming per-pair statistics to a file")
    add_model_options(stats)
    stats.add_argument(
        "--out", required=True, help="output: .safetensors, .csv or .parquet"
    )
    stats.set_defaults(func=cmd_stats)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except RopeInterpError as error:
        print(f"rope-interp: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rope-interp: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
