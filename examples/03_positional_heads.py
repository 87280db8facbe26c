"""Positional heads (Barbero et al.): heads that attend to themselves or to the previous token,
joined with how much of their q·k norm sits in the highest frequencies, and which pairs build
the pattern (the exact per-pair split of the score margin).

    python examples/03_positional_heads.py [--tokens 1024] [--out out/examples]
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load, parser, save  # noqa: E402

from rope_interp.analysis.positional import positional_heads  # noqa: E402
from rope_interp.plots.analysis import plot_pair_margins, plot_positional_heads  # noqa: E402


def run(model, corpus, batch_size: int = 4, progress: bool = True) -> dict:
    result = positional_heads(model, corpus.batches(batch_size), offsets=(0, 1), progress=progress)
    heads = result.heads
    prev = heads[heads.offset == 1].sort_values("attn", ascending=False)
    best = prev.iloc[0]
    figures = {
        "positional_self": plot_positional_heads(heads, offset=0),
        "positional_previous": plot_positional_heads(heads, offset=1),
        "positional_best_head_pairs": plot_pair_margins(
            result.pairs, int(best["layer"]), int(best["head"]), offset=1
        ),
    }
    return {"figures": figures, "tables": {"heads": heads, "pairs": result.pairs}, "best": best}


def main(argv: Sequence[str] | None = None) -> dict:
    args = parser(__doc__.splitlines()[0], tokens=1024).parse_args(argv)
    model, corpus = load(args)
    result = run(model, corpus, progress=not args.tiny)
    heads = result["tables"]["heads"]
    cols = ["layer", "head", "attn", "top_pair", "high_margin_fraction", "qk_high_share"]
    for offset, name in ((0, "self"), (1, "previous-token")):
        print(f"top {name} heads:")
        print(heads[heads.offset == offset].nlargest(5, "attn")[cols].to_string(index=False))
    save(result["figures"], args.out)
    return result


if __name__ == "__main__":
    main()
