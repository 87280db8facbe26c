"""`rope-interp summary`: a quick look at the model's rotary geometry and pair norms."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

from rope_interp.cli import loading
from rope_interp.cli.options import HelpFormatter, ModelSettings, add_model_options


def add_summary_command(commands) -> None:
    summary = commands.add_parser(
        "summary",
        help="print per-layer rotary frequencies and pair norms (quick look)",
        description="Print the model's rotary geometry and, per layer, the mean q/k pair norms "
        "in the high- and low-frequency thirds of the pairs.",
        formatter_class=HelpFormatter,
    )
    add_model_options(summary)
    summary.set_defaults(func=cmd_summary, settings=SummarySettings.from_args)


@dataclass(frozen=True)
class SummarySettings:
    """`summary`'s options (the shared model options only), checked when made."""

    model: ModelSettings

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> SummarySettings:
        return cls(model=ModelSettings.from_args(args))

    def outputs(self) -> list:
        """What `summary` writes: nothing (it prints)."""
        return []


def cmd_summary(settings: SummarySettings) -> None:
    """Per-layer rotary frequencies and pair norms."""
    from rope_interp.core.spec import RotarySpec
    from rope_interp.core.stats import collect_pair_stats

    options = settings.model
    start = time.perf_counter()
    model, corpus = loading.load_model_and_corpus(options, options.device)
    spec = RotarySpec.from_model(model)
    print(f"model: {options.model}\n{spec.summary()}\ncorpus: {corpus.describe()}")
    stats = collect_pair_stats(
        model, corpus.batches(options.batch_size), progress=not options.quiet, spec=spec
    )
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
