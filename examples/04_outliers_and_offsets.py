"""Rotary outliers, offset features and their bounds (Jonasson): pairs whose q and k maxima
stand out, the offset angle α = ∠μ_q − ∠μ_k of their mean vectors, and whether they satisfy the
frequency bound θ(L−1) < π and the angle bound (their score term keeps one sign over the
context).

    python examples/04_outliers_and_offsets.py [--tokens 4096] [--threshold 3.5]
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import plotly.graph_objects as go  # noqa: E402
from _common import load, parser, save  # noqa: E402

from rope_interp.analysis.outliers import bound_summary, offset_features  # noqa: E402
from rope_interp.core.stats import collect_pair_stats  # noqa: E402
from rope_interp.plots.analysis import plot_offset_features  # noqa: E402


def run(model, corpus, threshold: float = 3.5, progress: bool = True) -> dict:
    stats = collect_pair_stats(model, corpus.batches(8), progress=progress)
    table = offset_features(stats, context=corpus.tokens.shape[1], threshold=threshold)
    # Jonasson's Figure 1: the largest |q| and |k| per pair over all layers and heads.
    per_pair = table.groupby("pair")[["q_max", "k_max"]].max()
    profile = go.Figure()
    profile.add_bar(x=per_pair.index, y=per_pair.q_max, name="max |z| of q")
    profile.add_bar(x=per_pair.index, y=per_pair.k_max, name="max |z| of k")
    profile.update_layout(
        title="Largest pair norm over all layers and heads",
        xaxis_title="pair (0 = highest frequency)",
        barmode="group",
    )
    figures = {"outliers_profile": profile, "outliers_offset_angles": plot_offset_features(table)}
    return {"figures": figures, "tables": {"pairs": table, "bounds": bound_summary(table)}}


def main(argv: Sequence[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0], tokens=4096)
    p.add_argument("--threshold", type=float, default=3.5, help="robust z-score for an outlier")
    args = p.parse_args(argv)
    model, corpus = load(args)
    result = run(model, corpus, args.threshold, progress=not args.tiny)
    table = result["tables"]["pairs"]
    print(f"{int(table.flagged.sum())} flagged (layer, head, pair) of {len(table)}")
    print(result["tables"]["bounds"].to_string(index=False))
    save(result["figures"], args.out)
    return result


if __name__ == "__main__":
    main()
