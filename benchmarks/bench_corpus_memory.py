"""Peak memory of a streamed `stats` run against the corpus size: the corpus pipeline
(reading, chunked tokenisation, windows) must keep memory flat in the number of tokens.

    python benchmarks/bench_corpus_memory.py --corpus /tmp/corpus.txt --mb 300 \
        --tokens 1M,50M [--seq-len 256] [--batch-size 64]

Writes a local text corpus of `--mb` MB first if the file does not exist (the embedded
English prose, repeated with a numbered heading per copy), then, for each budget, runs one
streaming statistics pass in a fresh process: the built-in SmolLM2 tokenizer (no model
weights) and the smallest random rotary model (one attention-only layer, one head, d_model 8),
so that what is measured is the corpus pipeline. Reports peak RSS (VmHWM) and the time per run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def make_corpus(path: Path, megabytes: float) -> None:
    from rope_interp.data import embedded_texts

    text = "\n\n".join(embedded_texts())
    target = int(megabytes * 1e6)
    written, copy = 0, 0
    with path.open("w", encoding="utf-8") as handle:
        while written < target:
            block = f"\n\n# Copy {copy}\n\n{text}"
            handle.write(block)
            written += len(block.encode("utf-8"))
            copy += 1


def tokenizer_dir() -> Path:
    cached = sorted(Path("~/.cache/rope-interp").expanduser().glob("*/tokenizer"))
    if not cached:
        raise SystemExit("Load the built-in model once first: rope-interp summary --tokens 256")
    return cached[0]


def child(args) -> None:
    from transformers import AutoTokenizer

    from rope_interp.data import TokenStream, parse_token_count
    from rope_interp.stats import collect_pair_stats
    from rope_interp.testing import make_model

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir()))
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
    stream = TokenStream(
        args.corpus, tokenizer, args.seq_len, max_tokens=parse_token_count(args.child)
    )
    start = time.perf_counter()
    stats = collect_pair_stats(model, stream.batches(args.batch_size), progress=False)
    seconds = time.perf_counter() - start
    peak = next(
        int(line.split()[1]) / 1024
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith("VmHWM:")
    )
    print(json.dumps({"tokens": stats.tokens_seen, "peak_mb": peak, "seconds": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="/tmp/rope-interp-corpus.txt")
    parser.add_argument("--mb", type=float, default=300)
    parser.add_argument("--tokens", default="1M,50M")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    corpus = Path(args.corpus)
    if not corpus.exists():
        make_corpus(corpus, args.mb)
    print(f"corpus {corpus}: {corpus.stat().st_size / 1e6:.0f} MB; seq_len {args.seq_len}, "
          f"batch {args.batch_size}")  # fmt: skip
    print("| token budget | tokens | peak RSS (MB) | time (s) |\n|---|---|---|---|")
    for budget in args.tokens.split(","):
        command = [sys.executable, __file__, "--child", budget, "--corpus", str(corpus)]
        command += ["--seq-len", str(args.seq_len), "--batch-size", str(args.batch_size)]
        out = subprocess.run(command, capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {budget} | {result['tokens']} | {result['peak_mb']:.0f} | "
              f"{result['seconds']:.0f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
