"""Inference-time p-RoPE (Barbero et al.): keep the highest fraction p of frequencies rotating
and make the rest NoPE (angle 0 at every position), over a sweep of p; and the reverse (drop
the highest instead). No retraining: this measures how much the trained model relies on each.

    python examples/07_p_rope_sweep.py [--tokens 1024] [--p 1,0.75,0.5,0.25,0]
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load, parser, save  # noqa: E402

from rope_interp.interventions.ablation import p_rope  # noqa: E402
from rope_interp.interventions.experiment import Condition, RunSettings, run_experiment  # noqa: E402
from rope_interp.plots.ablation import delta_loss_curves  # noqa: E402


def run(
    model,
    corpus,
    p_values: Sequence[float] = (1.0, 0.75, 0.5, 0.25, 0.0),
    n_boot: int = 1000,
    progress: bool = True,
) -> dict:
    conditions = []
    for reverse in (False, True):
        for p in p_values:
            name = f"{'drop highest' if reverse else 'drop lowest'} p={p:g}"
            conditions.append(
                Condition(
                    name,
                    p_rope(model, p, reverse=reverse),
                    params={"p": p, "dropped": "highest" if reverse else "lowest"},
                )
            )
    result = run_experiment(
        model,
        conditions,
        corpus,
        settings=RunSettings(n_boot=n_boot, attention=False, progress=progress),
    )
    figure = delta_loss_curves(
        result.summary,
        x="p",
        group="dropped",
        title="Δloss vs fraction p of frequencies kept rotating",
    )
    return {"figures": {"p_rope_sweep": figure}, "tables": {"summary": result.summary}}


def main(argv: Sequence[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0], tokens=1024)
    p.add_argument("--p", default="1,0.75,0.5,0.25,0", help="comma-separated p values")
    args = p.parse_args(argv)
    model, corpus = load(args)
    values = [float(v) for v in args.p.split(",")]
    result = run(model, corpus, values, n_boot=100 if args.tiny else 1000, progress=not args.tiny)
    summary = result["tables"]["summary"]
    print(summary[["condition", "delta_loss", "ci_low", "ci_high"]].to_string(index=False))
    save(result["figures"], args.out)
    return result


if __name__ == "__main__":
    main()
