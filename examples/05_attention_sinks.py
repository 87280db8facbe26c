"""Attention sinks (Gu et al.): heads whose first-token importance exceeds 0.3, and the rotary
pairs that make the first key win (the exact per-pair split of the first-token margin).

    python examples/05_attention_sinks.py [--tokens 1024] [--out out/examples]
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load, parser, save  # noqa: E402

from rope_interp.analysis.sinks import attention_sinks  # noqa: E402
from rope_interp.plots.analysis import plot_pair_margins, plot_sinks  # noqa: E402


def run(model, corpus, batch_size: int = 4, progress: bool = True) -> dict:
    result = attention_sinks(model, corpus.batches(batch_size), threshold=0.3, progress=progress)
    heads = result.heads
    strongest = heads.sort_values("first_mass", ascending=False).iloc[0]
    figures = {
        "sinks_importance": plot_sinks(heads, "importance"),
        "sinks_strongest_head_pairs": plot_pair_margins(
            result.pairs, int(strongest["layer"]), int(strongest["head"])
        ),
    }
    return {"figures": figures, "tables": {"heads": heads, "pairs": result.pairs}}


def main(argv: Sequence[str] | None = None) -> dict:
    args = parser(__doc__.splitlines()[0], tokens=1024).parse_args(argv)
    model, corpus = load(args)
    result = run(model, corpus, progress=not args.tiny)
    heads = result["tables"]["heads"]
    print(f"{int(heads.is_sink.sum())} of {len(heads)} heads have a first-token sink")
    cols = ["layer", "head", "first_mass", "importance", "top_pair", "low_margin_fraction"]
    print(heads.nlargest(8, "first_mass")[cols].to_string(index=False))
    save(result["figures"], args.out)
    return result


if __name__ == "__main__":
    main()
