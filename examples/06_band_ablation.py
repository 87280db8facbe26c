"""High vs low band ablation (Barbero et al.): zero the highest or the lowest quarter of the
rotary pairs in q and k of every head, against random pairs of the same number, and measure
Δloss (bootstrap 95 % CI over sequences) and the change in previous-token attention.

Expected: removing the highest frequencies breaks positional heads.

    python examples/06_band_ablation.py [--tokens 1024] [--fraction 0.25]
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load, parser, save  # noqa: E402

from rope_interp.core.spec import RotarySpec  # noqa: E402
from rope_interp.interventions.ablation import Intervention  # noqa: E402
from rope_interp.interventions.experiment import Condition, RunSettings, run_experiment  # noqa: E402
from rope_interp.interventions.selection import select_band, select_random  # noqa: E402
from rope_interp.plots.ablation import delta_loss_bars, head_metric_heatmap  # noqa: E402


def run(
    model,
    corpus,
    fraction: float = 0.25,
    n_random: int = 3,
    n_boot: int = 1000,
    progress: bool = True,
) -> dict:
    spec = RotarySpec.from_model(model)
    k = max(1, round(fraction * spec.n_pairs))
    high, low = select_band(spec, "high", k=k), select_band(spec, "low", k=k)
    conditions = [
        Condition(f"zero high {k}", Intervention(model, high, mode="zero", side="both")),
        Condition(f"zero low {k}", Intervention(model, low, mode="zero", side="both")),
    ] + [
        Condition(
            f"random {k} #{i + 1}",
            Intervention(model, select_random(spec, high, seed=i), mode="zero"),
        )
        for i in range(n_random)
    ]
    result = run_experiment(
        model, conditions, corpus, settings=RunSettings(n_boot=n_boot, progress=progress)
    )
    figures = {
        "bands_delta_loss": delta_loss_bars(result.summary, "Δloss: zero high vs low vs random"),
        "bands_prev_change_high": head_metric_heatmap(
            result.heads, f"zero high {k}", "prev", change=True
        ),
        "bands_prev_change_low": head_metric_heatmap(
            result.heads, f"zero low {k}", "prev", change=True
        ),
    }
    return {"figures": figures, "tables": {"summary": result.summary, "heads": result.heads}}


def main(argv: Sequence[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0], tokens=1024)
    p.add_argument("--fraction", type=float, default=0.25, help="band size (fraction of pairs)")
    args = p.parse_args(argv)
    model, corpus = load(args)
    result = run(
        model, corpus, args.fraction, n_boot=100 if args.tiny else 1000, progress=not args.tiny
    )
    summary = result["tables"]["summary"]
    print(summary[["condition", "delta_loss", "ci_low", "ci_high"]].to_string(index=False))
    save(result["figures"], args.out)
    return result


if __name__ == "__main__":
    main()
