"""The standard ablations of rope-interp as experiment `Condition`s (used by `rope-interp
ablate` and the report): zero the high / low frequency band against seeded random controls,
p-RoPE and its reverse, phase shifts of each band, and a position-shift sanity check.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rope_interp.errors import RopeInterpError
from rope_interp.host import HostModel
from rope_interp.interventions.ablation import Intervention, p_rope, position_shift
from rope_interp.interventions.experiment import Condition
from rope_interp.interventions.selection import select_band, select_random

# Symmetric about 0 (π ≡ −π): on the high band the sign of φ matters (φ > 0 turns previous-
# token heads into self heads, φ < 0 pushes them further back), so a one-sided sweep hides it.
PHASES = (-math.pi / 2, -math.pi / 4, math.pi / 4, math.pi / 2, math.pi)
P_VALUES = (1.0, 0.75, 0.5, 0.25, 0.0)
N_RANDOM_CONTROLS = 20


ABLATION_GROUPS = ("band", "p-rope", "phase", "sanity")
MAX_RANDOM_CONTROLS = 10_000


def check_standard_options(
    groups: Sequence[str],
    fraction: float,
    n_random: int,
    names: tuple[str, str, str] = ("groups", "fraction", "n_random"),
) -> None:
    """The arguments of `standard_conditions` that need no model, each checked here only (the
    command line calls this too, before the model loads, with its option names as `names`):
    known groups, a band fraction in (0, 0.5], 0 to `MAX_RANDOM_CONTROLS` random controls."""
    group_name, fraction_name, random_name = names
    unknown = sorted(set(groups) - set(ABLATION_GROUPS))
    if unknown:
        raise RopeInterpError(
            f"Unknown ablation group(s) {unknown} in {group_name}; choose from "
            f"{', '.join(ABLATION_GROUPS)}."
        )
    if isinstance(fraction, bool) or not isinstance(fraction, int | float):
        raise RopeInterpError(f"{fraction_name} must be a number in (0, 0.5]; got {fraction!r}.")
    if not 0 < fraction <= 0.5:
        raise RopeInterpError(f"{fraction_name} must lie in (0, 0.5]; got {fraction}.")
    if (
        not isinstance(n_random, int)
        or isinstance(n_random, bool)
        or not 0 <= n_random <= MAX_RANDOM_CONTROLS
    ):
        raise RopeInterpError(
            f"{random_name} must be an integer in [0, {MAX_RANDOM_CONTROLS}] (random-pair "
            f"controls); got {n_random!r}."
        )


def standard_conditions(
    model: HostModel,
    spec,
    seed: int = 0,
    fraction: float = 0.25,
    groups: Sequence[str] = ABLATION_GROUPS,
    p_values: Sequence[float] = P_VALUES,
    phases: Sequence[float] = PHASES,
    n_random: int = N_RANDOM_CONTROLS,
    seq_len: int | None = None,
) -> list:
    """The standard ablations as experiment `Condition`s, by group:

    - "band": zero the highest / lowest `fraction` of pairs (q and k, every head), plus
      `n_random` random controls of the same size (seeds `seed`, `seed + 1`, ...; 20 by
      default, so that each band's place in their distribution can be read as a percentile:
      `rope_interp.interventions.contrasts.control_distribution`);
    - "p-rope": p-RoPE and reversed p-RoPE for each p in `p_values`;
    - "phase": rotate the high and the low band of q by each φ in `phases` (default
      −π/2, −π/4, π/4, π/2, π; φ = 0 is the clean model and is skipped);
    - "sanity": shift every position by 16 on q and k (the scores, hence Δloss, must not move);
      with `seq_len`, by less where windows of that length shifted by 16 would pass the end of
      the model's rotary tables, and not at all where the windows fill them.
    """
    check_standard_options(groups, fraction, n_random)
    k = max(1, round(fraction * spec.n_pairs))
    conditions = []
    high = select_band(spec, "high", k=k)
    low = select_band(spec, "low", k=k)
    if "band" in groups:
        for end, selection in (("high", high), ("low", low)):
            conditions.append(
                Condition(
                    f"zero {end} {k}",
                    Intervention(model, selection, "zero", "both", spec=spec),
                    params={"group": "band", "band": end, "k": k},
                )
            )
        for i in range(n_random):
            random = select_random(spec, high, seed=seed + i)
            conditions.append(
                Condition(
                    f"zero random {k} #{i + 1}",
                    Intervention(model, random, "zero", "both", spec=spec),
                    params={"group": "band", "band": "random", "k": k},
                )
            )
    if "p-rope" in groups:
        for reverse in (False, True):
            for p in p_values:
                if reverse and p in (0.0, 1.0):
                    continue  # identical to the forward sweep's end points
                conditions.append(
                    Condition(
                        f"{'reversed ' if reverse else ''}p-RoPE p={p:g}",
                        p_rope(model, p, reverse=reverse, spec=spec),
                        params={"group": "p-rope", "p": p, "reverse": reverse},
                    )
                )
    if "phase" in groups:
        for end, selection in (("high", high), ("low", low)):
            for phi in phases:
                if phi == 0:
                    continue
                conditions.append(
                    Condition(
                        f"phase {end} q φ={phi:.3f}",
                        Intervention(model, selection, "phase", "q", phi=phi, spec=spec),
                        params={"group": "phase", "band": end, "phi": phi},
                    )
                )
    room = None if seq_len is None else min(int(c.shape[0]) for c in spec.cos) - seq_len
    delta = 16 if room is None else min(16, room)
    if "sanity" in groups and delta > 0:
        conditions.append(
            Condition(
                f"position shift +{delta}",
                position_shift(model, delta, spec=spec),
                params={"group": "sanity", "delta": delta},
            )
        )
    return conditions
