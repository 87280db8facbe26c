"""Frequency usage (Barbero et al.): where each layer and head puts its q/k norm across the
rotary frequencies, from one streaming pass over the corpus.

Expected on trained models: most norm in the lowest frequencies (semantic channels), with a few
heads, mostly in the first and last layers, using the highest ones.

    python examples/02_frequency_usage.py [--tokens 4096] [--out out/examples]
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load, parser, save  # noqa: E402

from rope_interp.analysis.usage import band_shares, frequency_usage, layer_usage  # noqa: E402
from rope_interp.core.stats import collect_pair_stats  # noqa: E402
from rope_interp.plots.analysis import plot_band_shares, plot_usage_map  # noqa: E402


def run(model, corpus, batch_size: int = 8, progress: bool = True) -> dict:
    stats = collect_pair_stats(model, corpus.batches(batch_size), progress=progress)
    per_head = frequency_usage(stats)
    per_layer = layer_usage(stats)
    shares = band_shares(stats, fraction=0.25)
    last = model.cfg.n_layers - 1
    figures = {
        "usage_layer_q": plot_usage_map(per_layer, kind="q"),
        "usage_layer_k": plot_usage_map(per_layer, kind="k"),
        "usage_heads_first_layer": plot_usage_map(per_head, kind="qk", layer=0),
        "usage_heads_last_layer": plot_usage_map(per_head, kind="qk", layer=last),
        "usage_high_band_share": plot_band_shares(shares, kind="qk", band="high"),
    }
    return {"figures": figures, "tables": {"band_shares": shares, "layer_usage": per_layer}}


def main(argv: Sequence[str] | None = None) -> dict:
    args = parser(__doc__.splitlines()[0], tokens=4096).parse_args(argv)
    model, corpus = load(args)
    result = run(model, corpus, progress=not args.tiny)
    shares = result["tables"]["band_shares"]
    qk = shares[shares.kind == "qk"]
    print(
        f"mean q·k share in the highest 25 % of frequencies: {qk.high_share.mean():.3f}, "
        f"lowest 25 %: {qk.low_share.mean():.3f} (uniform: {qk.band_fraction.iloc[0]:.2f})"
    )
    print("heads using high frequencies most:")
    print(
        qk.nlargest(5, "high_share")[["layer", "head", "high_share", "top_pair"]].to_string(
            index=False
        )
    )
    save(result["figures"], args.out)
    return result


if __name__ == "__main__":
    main()
