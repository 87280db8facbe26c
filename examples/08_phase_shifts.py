"""Phase shifts (Ruscio & Silvestri): rotate chosen pairs of q by a constant angle φ (this
changes the angle α between q and k pairs) and watch attention sharpness (entropy, max weight)
and the loss as a curve over φ. Also the sanity check of relative encoding: shifting every
position by Δ on q and k must leave the scores, hence the loss, unchanged.

    python examples/08_phase_shifts.py [--tokens 1024] [--fraction 0.25]
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load, parser, save  # noqa: E402

from rope_interp.core.spec import RotarySpec  # noqa: E402
from rope_interp.interventions.ablation import Intervention, position_shift  # noqa: E402
from rope_interp.interventions.experiment import Condition, RunSettings, run_experiment  # noqa: E402
from rope_interp.interventions.selection import select_band  # noqa: E402
from rope_interp.plots.ablation import phase_sweep_curves  # noqa: E402

PHASES = (math.pi / 8, math.pi / 4, math.pi / 2, 3 * math.pi / 4, math.pi)


def run(model, corpus, fraction: float = 0.25, n_boot: int = 1000, progress: bool = True) -> dict:
    spec = RotarySpec.from_model(model)
    k = max(1, round(fraction * spec.n_pairs))
    conditions = [Condition("position shift +16", position_shift(model, 16), params={"phi": 0})]
    for band in ("high", "low"):
        selection = select_band(spec, band, k=k)
        for phi in PHASES:
            conditions.append(
                Condition(
                    f"{band} φ={phi:.2f}",
                    Intervention(model, selection, mode="phase", side="q", phi=phi),
                    params={"band": band, "phi": phi},
                )
            )
    result = run_experiment(
        model, conditions, corpus, settings=RunSettings(n_boot=n_boot, progress=progress)
    )
    heads = result.heads.assign(
        d_entropy=lambda f: f.entropy - f.entropy_base,
        d_max_weight=lambda f: f.max_weight - f.max_weight_base,
    )
    per_condition = heads.groupby("condition", as_index=False)[["d_entropy", "d_max_weight"]].mean()
    table = result.summary.merge(per_condition, on="condition")
    figure = phase_sweep_curves(
        table.dropna(subset=["band"]), title=f"Rotating the {k} highest / lowest pairs of q by φ"
    )
    return {"figures": {"phase_shifts": figure}, "tables": {"summary": table}}


def main(argv: Sequence[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0], tokens=1024)
    p.add_argument("--fraction", type=float, default=0.25, help="band size (fraction of pairs)")
    args = p.parse_args(argv)
    model, corpus = load(args)
    result = run(
        model, corpus, args.fraction, n_boot=100 if args.tiny else 1000, progress=not args.tiny
    )
    table = result["tables"]["summary"]
    print(table[["condition", "delta_loss", "d_entropy", "d_max_weight"]].to_string(index=False))
    shift = table[table.condition.str.startswith("position shift")].delta_loss.iloc[0]
    print(f"sanity: shifting all positions changed the loss by {shift:+.2e} (expected ≈ 0)")
    save(result["figures"], args.out)
    return result


if __name__ == "__main__":
    main()
