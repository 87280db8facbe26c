"""Peak memory of reading a corpus, against its size and its line lengths: the corpus pipeline
(reading, chunked tokenisation, windows) must keep memory flat in the size of the corpus.

    python benchmarks/bench_corpus_memory.py --corpus /tmp/corpus.txt --mb 300 \
        --tokens 1M,50M [--seq-len 256] [--batch-size 64]
    python benchmarks/bench_corpus_memory.py --corpus /tmp/flat.txt --mb 50 --one-line \
        --tokens 512 --load 4096

Writes a local text corpus of `--mb` MB first if the file does not exist (the embedded
English prose, repeated with a numbered heading per copy; with `--one-line`, every newline
replaced by a space: one 50 MB line), then runs each measurement in a fresh process with the
built-in SmolLM2 tokenizer (no model weights):

- `--tokens`: one streaming statistics pass (`stats --tokens B`) with the smallest random rotary
  model (one attention-only layer, one head, d_model 8), so that what is measured is the
  corpus pipeline and the accumulators;
- `--load`: `load_corpus` as `report`, `summary` and `ablate` call it (`--tokens T`: T // seq-len
  windows), without a model.

Reports peak RSS (VmHWM), the RSS before the corpus is touched (imports and tokenizer), and the
time. With `PYTHONPATH=OLD_CHECKOUT` it measures another version of rope-interp.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def make_corpus(path: Path, megabytes: float, one_line: bool) -> None:
    from rope_interp.loading.data import embedded_texts

    text = "\n\n".join(embedded_texts())
    if one_line:
        text = " ".join(text.split("\n"))
    target = int(megabytes * 1e6)
    written, copy = 0, 0
    with path.open("w", encoding="utf-8") as handle:
        while written < target:
            block = f" # Copy {copy} {text}" if one_line else f"\n\n# Copy {copy}\n\n{text}"
            handle.write(block)
            written += len(block.encode("utf-8"))
            copy += 1


def tokenizer_dir() -> Path:
    cached = sorted(Path("~/.cache/rope-interp").expanduser().glob("*/tokenizer"))
    if not cached:
        raise SystemExit("Load the built-in model once first: rope-interp summary --tokens 256")
    return cached[0]


def memory_mb(field: str) -> float:
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) / 1024 for line in status if line.startswith(field + ":"))


def child(args) -> None:
    from transformers import AutoTokenizer

    from rope_interp.loading.data import parse_token_count

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir()))
    path, budget = args.child.split(":")
    if path == "stream":
        from rope_interp.core.stats import collect_pair_stats
        from rope_interp.loading.data import TokenStream
        from rope_interp.testing import make_model

        # The smallest rotary model (one attention-only layer, one head of 8 dims): what is
        # measured is the corpus pipeline and the accumulators, not the model.
        model = make_model(
            "half_full",
            d_vocab=len(tokenizer),
            n_ctx=args.seq_len,
            n_layers=1,
            d_model=8,
            n_heads=1,
            attn_only=True,
        )
        before = memory_mb("VmRSS")
        start = time.perf_counter()
        stream = TokenStream(
            args.corpus, tokenizer, args.seq_len, max_tokens=parse_token_count(budget)
        )
        stats = collect_pair_stats(model, stream.batches(args.batch_size), progress=False)
        tokens = stats.tokens_seen
    else:
        from types import SimpleNamespace

        from rope_interp.loading.data import load_corpus

        # What load_corpus reads of a model: its tokenizer, context and BOS default.
        model = SimpleNamespace(
            tokenizer=tokenizer,
            cfg=SimpleNamespace(default_prepend_bos=False, n_ctx=args.seq_len),
        )
        n_windows = max(1, parse_token_count(budget) // args.seq_len)
        before = memory_mb("VmRSS")
        start = time.perf_counter()
        tokens = load_corpus(model, args.corpus, args.seq_len, n_windows).n_tokens
    seconds = time.perf_counter() - start
    result = {"tokens": tokens, "peak_mb": memory_mb("VmHWM"), "before_mb": before}
    print(json.dumps(result | {"seconds": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="/tmp/rope-interp-corpus.txt")
    parser.add_argument("--mb", type=float, default=300)
    parser.add_argument("--one-line", action="store_true", help="a corpus without newlines")
    parser.add_argument("--tokens", default="1M,50M", help="budgets of streamed stats runs")
    parser.add_argument("--load", default="", help="--tokens of load_corpus runs (report path)")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    corpus = Path(args.corpus)
    if not corpus.exists():
        make_corpus(corpus, args.mb, args.one_line)
    print(f"corpus {corpus}: {corpus.stat().st_size / 1e6:.0f} MB; seq_len {args.seq_len}, "
          f"batch {args.batch_size}")  # fmt: skip
    print("| path | token budget | tokens | RSS before (MB) | peak RSS (MB) | time (s) |")
    print("|---|---|---|---|---|---|")
    runs = [("stream", b) for b in args.tokens.split(",") if b]
    runs += [("load", b) for b in args.load.split(",") if b]
    for path, budget in runs:
        command = [sys.executable, __file__, "--child", f"{path}:{budget}"]
        command += ["--corpus", str(corpus), "--seq-len", str(args.seq_len)]
        command += ["--batch-size", str(args.batch_size)]
        out = subprocess.run(command, capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        name = "stats (streamed)" if path == "stream" else "load_corpus (report, summary, ablate)"
        print(f"| {name} | {budget} | {result['tokens']} | {result['before_mb']:.0f} | "
              f"{result['peak_mb']:.0f} | {result['seconds']:.1f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
