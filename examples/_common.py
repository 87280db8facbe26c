"""Shared plumbing for the examples: command-line options, the model and corpus, saving figures.

Every example runs offline on the built-in SmolLM2-135M and the embedded corpus, or with
`--tiny` on a tiny random rotary model (seconds; used by the tests so examples cannot rot).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from rope_interp.loading.data import Corpus, load_corpus
from rope_interp.loading.models import load_model

DEFAULT_OUT = "out/examples"


def parser(description: str, tokens: int = 2048, seq_len: int = 256) -> argparse.ArgumentParser:
    """Options every example shares; add your own before `parse_args`."""
    p = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--out", default=DEFAULT_OUT, help="folder for the figures (HTML)")
    p.add_argument("--model", default="smollm2-135m", help="model name or .gguf path")
    p.add_argument("--corpus", default="pydoc", help="'pydoc', 'hf:NAME[:COLUMN]' or text files")
    p.add_argument("--tokens", type=int, default=tokens, help="tokens to analyse")
    p.add_argument("--seq-len", type=int, default=seq_len, help="tokens per window")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if present)")
    p.add_argument("--seed", type=int, default=0, help="window sampling seed")
    p.add_argument(
        "--tiny", action="store_true", help="use a tiny random model instead (a smoke test)"
    )
    return p


def tiny_model(seed: int = 0):
    """A 2-layer random rotary model (half-split layout, 4 heads, 2 KV heads): a bridge under
    TransformerLens 4, a `HookedTransformer` under 3.x."""
    from rope_interp.testing import make_model

    return make_model("gqa", seed=seed)


def tiny_corpus(model, n_windows: int = 4, seq_len: int = 32, seed: int = 0) -> Corpus:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, model.cfg.d_vocab, (n_windows, seq_len), generator=generator)
    return Corpus("random tokens", tokens, prepend_bos=False)


def load(args: argparse.Namespace):
    """(model, corpus) for the parsed options."""
    torch.manual_seed(args.seed)
    if args.tiny:
        model = tiny_model(args.seed)
        return model, tiny_corpus(model, seed=args.seed)
    model = load_model(args.model, device=args.device)
    n_windows = max(1, args.tokens // args.seq_len)
    return model, load_corpus(model, args.corpus, args.seq_len, n_windows, seed=args.seed)


def save(figures: dict, out: str | Path) -> list[Path]:
    """Write each `name → plotly Figure` as `out/name.html`. plotly.js is written once as
    `out/plotly.min.js` next to them, so the files stay small and open offline."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, figure in figures.items():
        path = out / f"{name}.html"
        figure.write_html(path, include_plotlyjs="directory")
        paths.append(path)
        print(f"wrote {path}")
    return paths
