"""The three ablation sections (high vs low bands, p-RoPE, phase shifts): one experiment run of
the standard conditions, shared through the context's cache."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from rope_interp.interventions.conditions import standard_conditions
from rope_interp.interventions.contrasts import (
    band_contrasts,
    control_distribution,
    paired_contrast,
)
from rope_interp.interventions.experiment import ExperimentResult, run_experiment
from rope_interp.plots.ablation import (
    delta_loss_bars,
    head_metric_heatmap,
    phase_sweep_curves,
    prope_sweep_curves,
    random_control_strip,
)
from rope_interp.plots.generic import plot_bars
from rope_interp.report.context import ReportContext
from rope_interp.report.document import Claim, Section, Table
from rope_interp.report.registry import section
from rope_interp.report.verdicts import (
    contrast_and_controls_verdict,
    count_verdict,
    interval_verdict,
    null_text,
    percent,
)

#: |Δloss| below which shifting every position counts as leaving the loss unchanged.
SHIFT_TOLERANCE = 1e-4
#: The p-RoPE fraction whose forward and reversed conditions the claim compares.
PROPE_P = 0.75
#: Below this angle (radians) over the whole context, making a pair NoPE barely changes it:
#: a p-RoPE test whose dropped pairs all turn less is a weak test.
WEAK_SWEEP = math.pi / 8

_RANDOM_NULL = (
    "seeded random selections of the same number of pairs in every head",
    "zeroing any quarter of a trained model's pairs raises the loss; only an effect beyond "
    "same-size selections of other pairs is specific to the band",
)

_SHARED_RUN = "Measured in the ablation run of the high vs low section (its time is counted there)."


def _ablations(ctx: ReportContext) -> ExperimentResult:
    """The shared experiment result (run once for the three ablation sections)."""
    if "ablations" not in ctx.cache:
        ctx.cache["ablations"] = run_experiment(
            ctx.model,
            standard_conditions(
                ctx.model,
                ctx.spec,
                ctx.seed,
                seq_len=int(ctx.ablation_corpus.tokens.shape[1]),
            ),
            ctx.ablation_corpus,
            settings=ctx.settings,
        )
    return ctx.cache["ablations"]


def _summary_cols(frame: pd.DataFrame) -> pd.DataFrame:
    keep = [
        "condition",
        "selection",
        "n_selected",
        "mode",
        "side",
        "delta_loss",
        "ci_low",
        "ci_high",
        "loss_base",
        "loss",
        "n_sequences",
        "n_tokens",
    ]
    return frame[[c for c in keep if c in frame]]


def _head_effects(heads: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """Per condition: mean KL and the change of diag / prev / first attention, averaged over
    heads, plus the change on the clean model's top previous-token heads."""
    rows = []
    for name in names:
        part = heads[heads.condition == name]
        if part.empty:
            continue
        top_prev = part.nlargest(max(1, len(part) // 20), "prev_base")
        rows.append(
            {
                "condition": name,
                "kl": part.kl.mean(),
                "d_diag": (part.diag - part.diag_base).mean(),
                "d_prev": (part.prev - part.prev_base).mean(),
                "d_prev_top_heads": (top_prev.prev - top_prev.prev_base).mean(),
                "d_first": (part["first"] - part.first_base).mean(),
                "d_entropy": (part.entropy - part.entropy_base).mean(),
                "d_max_weight": (part.max_weight - part.max_weight_base).mean(),
            }
        )
    return pd.DataFrame(rows)


def _ci(row) -> str:
    return f"{row['delta_loss']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]"


@section("ablation_bands")
def band_ablation_section(ctx: ReportContext) -> Section:
    result = _ablations(ctx)
    summary = result.summary
    part = summary[summary.get("group", pd.Series(dtype=str)) == "band"]
    effects = _head_effects(result.heads, list(part.condition))
    table = _summary_cols(part).merge(effects, on="condition", how="left")
    paired = band_contrasts(result, n_boot=ctx.n_bootstrap, seed=ctx.seed)
    places = control_distribution(result)
    figures = [delta_loss_bars(part, "Δloss (nats/token) with 95 % bootstrap CI")]
    if len(places):
        figures.append(random_control_strip(part, places))
    high = part[part.get("band", pd.Series(dtype=str)) == "high"]
    if len(high) and len(result.heads):
        figures.append(
            head_metric_heatmap(result.heads, high.condition.iloc[0], "prev", change=True)
        )
    if not effects.empty:
        figures.append(
            plot_bars(
                effects,
                "condition",
                "d_prev_top_heads",
                "Change of previous-token attention in the top 5 % previous-token heads",
            )
        )
    tables: list[Table | tuple[str, Any]] = [("Paired contrasts", paired)] if len(paired) else []
    if len(places):
        tables.append(("Where the bands fall among the random controls", places))
    tables.append(("Conditions", table))
    return Section(
        "Ablation: high vs low frequencies",
        how_to_read=(
            "each bar zeroes a quarter of the rotary pairs in q and k of every head; seeded "
            "random selections of the same number of pairs per head are the control, shown as "
            "a distribution with the percentile where each band falls. Contrasts are paired: "
            "A − B per sequence, with a bootstrap over sequences (the random draws held fixed). "
            "Barbero et al. predict that removing the highest frequencies breaks positional "
            "heads (negative `d_prev_top_heads`) and costs more loss than removing the lowest; "
            "a band is only special if it falls outside the random draws."
        ),
        prose=(
            f"The three ablation sections share one experiment run: {len(summary)} conditions "
            f"over {ctx.ablation_corpus.describe()}, each measured against the clean model "
            f"(its time is counted here). Δloss is the mean over sequences of ablated − clean "
            f"next-token loss; the interval is a percentile bootstrap over sequences "
            f"({ctx.n_bootstrap} resamples). Attention changes average over query rows ≥ 1."
        ),
        figures=figures,
        tables=tables,
        key_result=_bands_key(table, paired, places),
        claims=band_claims(table, paired, places),
    )


def _paired_row(paired: pd.DataFrame, a: str, b_prefix: str):
    """The row of `paired` whose contrast is `a − <b_prefix…>`, or None."""
    for row in paired.itertuples():
        left, _, right = row.contrast.partition(" − ")
        if left == a and right.startswith(b_prefix):
            return row
    return None


def _paired_text(row) -> str:
    return f"paired {row.contrast}: {row.delta:+.3f} [{row.ci_low:+.3f}, {row.ci_high:+.3f}]"


def _paired_uncertainty(row) -> str:
    return (
        f"paired percentile bootstrap 95 % CI over {row.n_sequences} sequences "
        f"[{row.ci_low:+.3f}, {row.ci_high:+.3f}]"
    )


def band_claims(table: pd.DataFrame, paired: pd.DataFrame, places: pd.DataFrame) -> list[Claim]:
    """Barbero et al. on the band ablations: high vs low, each band vs random pairs, and the
    previous-token heads without the highest frequencies."""
    if places.empty:
        return []
    name = dict(zip(places.band, places.condition, strict=True))
    rows = table.set_index("condition")
    claims = []
    if "high" in name and "low" in name:
        row = _paired_row(paired, name["high"], name["low"])
        if row is not None:
            claims.append(
                Claim(
                    claim="Project hypothesis (not Barbero et al.'s: they remove frequencies "
                    "as NoPE, not by zeroing, and their reading of the low frequencies as "
                    "semantic channels predicts the opposite order): zeroing the highest "
                    "frequencies costs more loss than zeroing the lowest",
                    number=_paired_text(row),
                    test="paired Δloss (nats/token) of the high band − the low band, per "
                    "sequence; holds if its CI lies above 0, does not hold if below, else "
                    "inconclusive. "
                    + null_text(
                        "the other band, zeroed in the same heads with the same number of pairs",
                        "the claim orders two perturbations of equal size; each is the "
                        "other's matched control",
                    ),
                    uncertainty=_paired_uncertainty(row),
                    verdict=interval_verdict(row.ci_low, row.ci_high),
                )
            )
    for place in places.itertuples():
        row = _paired_row(paired, place.condition, "mean of")
        if row is None:
            continue
        claims.append(
            Claim(
                claim=f"Project hypothesis (after Barbero et al.'s usage maps): the "
                f"{place.band}-frequency quarter matters more than random pairs (zeroing it "
                "costs more loss)",
                number=(
                    f"{_paired_text(row)}; Δloss {place.delta_loss:+.3f} at the "
                    f"{place.percentile:.0f}th percentile of {place.n_controls} random controls "
                    f"({place.controls_min:+.3f} to {place.controls_max:+.3f})"
                ),
                test="the paired Δloss of the band − the mean of the random controls, and "
                "where the band falls among the controls; holds if the CI lies above 0 and "
                "the band above every control, partly if only the CI is above 0, "
                "inconclusive if the CI contains 0, does not hold if it lies below 0. "
                + null_text(*_RANDOM_NULL),
                uncertainty=f"{_paired_uncertainty(row)}; {place.n_controls} random draws",
                verdict=contrast_and_controls_verdict(
                    row.ci_low, row.ci_high, place.delta_loss > place.controls_max
                ),
            )
        )
    if "high" in name and "d_prev_top_heads" in rows:
        high = float(rows.loc[name["high"], "d_prev_top_heads"])
        randoms = rows.loc[[n for n in rows.index if n.startswith("zero random")]]
        lowest = float(randoms.d_prev_top_heads.min()) if len(randoms) else float("nan")
        checks = [high < 0, len(randoms) > 0 and high < lowest]
        claims.append(
            Claim(
                claim="Project prediction from Barbero et al.'s theory (the highest "
                "frequency builds the sharpest positional pattern): zeroing the highest "
                "frequencies breaks the previous-token heads",
                number=(
                    f"previous-token attention of the top 5 % previous-token heads "
                    f"{high:+.3f} (random controls: lowest {lowest:+.3f})"
                ),
                test="two checks: the change of previous-token attention in the clean "
                "model's top 5 % previous-token heads is negative, and below every random "
                "control's change; holds if both pass, partly if one does, does not hold if "
                "none. " + null_text(*_RANDOM_NULL),
                uncertainty=f"none: attention means (no interval); {len(randoms)} random draws",
                verdict=count_verdict(sum(bool(c) for c in checks), len(checks)),
            )
        )
    return claims


def _bands_key(table: pd.DataFrame, paired: pd.DataFrame, places: pd.DataFrame) -> str:
    if table.empty:
        return ""
    rows = table.set_index("condition")
    named = [n for n in rows.index if not n.startswith("zero random")]
    parts = [f"Δloss {name}: {_ci(rows.loc[name])}" for name in named]
    if len(paired):
        first = paired.iloc[0]
        decided = "separable" if first.ci_low > 0 or first.ci_high < 0 else "not separable"
        parts.append(
            f"paired {first.contrast}: {first.delta:+.3f} [{first.ci_low:+.3f}, "
            f"{first.ci_high:+.3f}] ({decided} at n = {first.n_sequences})"
        )
    for place in places.itertuples():
        parts.append(
            f"{place.band} band at the {place.percentile:.0f}th percentile of "
            f"{place.n_controls} random controls ({place.controls_min:+.3f} to "
            f"{place.controls_max:+.3f})"
        )
    if "d_prev_top_heads" in rows and len(named):
        parts.append(
            "previous-token attention of the top heads "
            + ", ".join(f"{n.split()[1]} {rows.loc[n, 'd_prev_top_heads']:+.2f}" for n in named)
        )
    return "; ".join(parts)


@section("ablation_prope")
def prope_section(ctx: ReportContext) -> Section:
    result = _ablations(ctx)
    summary = result.summary
    part = summary[summary.get("group", pd.Series(dtype=str)) == "p-rope"].copy()
    table = _summary_cols(part).merge(
        _head_effects(result.heads, list(part.condition)), on="condition", how="left"
    )
    return Section(
        "Ablation: p-RoPE sweep",
        how_to_read=(
            "inference-time p-RoPE (no retraining) keeps the highest fraction p of frequencies "
            "rotating; Barbero et al. find that dropping the lowest ~25 % costs little, and less "
            "than dropping the highest (compare the two curves at the same p)."
        ),
        prose=_SHARED_RUN,
        figures=[prope_sweep_curves(part)],
        tables=[("Conditions", table)],
        key_result="; ".join(
            f"{row.condition}: {_ci(row._asdict())}"
            for row in table.itertuples()
            if row.condition.endswith("p=0.75")
        ),
        claims=prope_claims(
            result, table, ctx.n_bootstrap, ctx.seed, _dropped_sweep(ctx.spec, ctx.context)
        ),
    )


def _dropped_sweep(spec, context: int) -> float:
    """The largest angle (radians) any pair that p-RoPE at `PROPE_P` makes NoPE turns over
    `context` tokens: θ(L − 1) of the fastest dropped pair, over layers."""
    n_kept = round(PROPE_P * spec.n_pairs)
    dropped = spec.thetas[:, n_kept:]
    return float(dropped.max()) * (context - 1) if dropped.numel() else 0.0


def prope_claims(
    result: ExperimentResult,
    table: pd.DataFrame,
    n_boot: int,
    seed: int,
    dropped_sweep: float = float("nan"),
):
    """Barbero et al.: keeping the highest 75 % rotating (the lowest 25 % as NoPE) costs less
    than keeping the lowest 75 % (the reversed sweep). `dropped_sweep`: the largest angle the
    pairs made NoPE turn over the context; below `WEAK_SWEEP` the test is marked weak."""
    keep, drop = f"p-RoPE p={PROPE_P:g}", f"reversed p-RoPE p={PROPE_P:g}"
    rows = table.set_index("condition")
    if keep not in rows.index or drop not in rows.index:
        return []
    row = paired_contrast(result, drop, keep, n_boot, seed)
    weak = (
        f"; weak test: the pairs made NoPE turn at most {dropped_sweep:.3g} rad over the "
        f"context (< π/8), so NoPE barely changes them here"
        if dropped_sweep < WEAK_SWEEP
        else ""
    )
    return [
        Claim(
            claim=f"B. Barbero et al. (trained from scratch; tested here at inference, "
            f"without retraining): removing the lowest {percent(1 - PROPE_P, 0)} of "
            f"frequencies (p-RoPE, NoPE) costs less than removing the highest "
            f"{percent(1 - PROPE_P, 0)}",
            number=(
                f"Δloss {keep}: {_ci(rows.loc[keep])}; {drop}: {_ci(rows.loc[drop])}; paired "
                f"{row['contrast']}: {row['delta']:+.3f}"
            ),
            test=f"paired Δloss of reversed − forward p-RoPE at p = {PROPE_P:g}, per "
            "sequence; holds if its CI lies above 0, does not hold if below, else "
            "inconclusive. "
            + null_text(
                "the same number of pairs made NoPE at the other end of the spectrum",
                "the claim orders two removals of equal size; each is the other's control",
            ),
            uncertainty=(
                f"paired percentile bootstrap 95 % CI over {row['n_sequences']} sequences "
                f"[{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]{weak}"
            ),
            verdict=interval_verdict(row["ci_low"], row["ci_high"]),
        )
    ]


@section("ablation_phase")
def phase_section(ctx: ReportContext) -> Section:
    result = _ablations(ctx)
    summary = result.summary
    group = summary.get("group", pd.Series(dtype=str))
    part = summary[group == "phase"]
    effects = _head_effects(result.heads, list(part.condition))
    merged = part.merge(effects, on="condition", how="left")
    figure = phase_sweep_curves(
        merged, title="Rotating a quarter of the pairs of q by a constant angle φ"
    )
    sanity = summary[group == "sanity"]
    prose = _SHARED_RUN
    if len(sanity):
        row = sanity.iloc[0]
        prose = (
            f"{_SHARED_RUN} Sanity check of relative encoding: shifting every position by "
            f"{int(row['delta'])} on q and k changed the loss by {row.delta_loss:+.2e} "
            "nats/token (expected ≈ 0)."
        )
    table = _summary_cols(pd.concat([part, sanity])).merge(effects, on="condition", how="left")
    mechanism, n_heads = _phase_mechanism(result.heads, part)
    return Section(
        "Ablation: phase shifts",
        how_to_read=(
            "a phase shift changes the angle α between q and k pairs; Ruscio & Silvestri "
            "predict misalignment flattens attention (entropy up, max weight down) and raises "
            "the loss, most for the bands the model relies on. φ runs both ways: on q, φ moves "
            "the offset a head's pairs select by −φ/θ_i tokens, so φ > 0 can turn a "
            "previous-token head into a self head and φ < 0 pushes it further back; the second "
            "table follows the strongest previous-token heads."
        ),
        prose=prose,
        figures=[figure],
        tables=[
            ("Conditions", table),
            (
                f"Where the {n_heads} strongest previous-token heads attend (mean weight on the "
                "token itself, the previous token and the first token, query rows ≥ 1)",
                mechanism,
            ),
        ],
        key_result=_phase_key(merged, sanity),
        claims=phase_claims(part, sanity),
    )


def phase_claims(part: pd.DataFrame, sanity: pd.DataFrame) -> list[Claim]:
    """Ruscio & Silvestri: misalignment raises the loss; relative encoding: a shift of every
    position leaves it unchanged."""
    claims = []
    if len(part):
        above = part[part.ci_low > 0]
        claims.append(
            Claim(
                claim="C. Ruscio & Silvestri (paraphrased): phase misalignment weakens "
                "attention and disrupts positional patterns; tested here as: a constant φ ≠ 0 "
                "on q raises the loss",
                number=(
                    f"Δloss CI above 0 in {len(above)} of {len(part)} conditions (bands × φ); "
                    f"Δloss from {part.delta_loss.min():+.3f} to {part.delta_loss.max():+.3f}"
                ),
                test="rotate the high or the low quarter of q's pairs by each φ ≠ 0; holds if "
                "every condition's Δloss CI lies above 0, partly if some do, does not hold if "
                "none does. "
                + null_text(
                    "the clean model (Δloss = 0); no control phase shift of the same size on "
                    "other pairs is run",
                    "the claim is that misalignment hurts at all; but any perturbation of a "
                    "trained model raises its loss, so this null cannot separate phase from "
                    "perturbation",
                ),
                uncertainty=(
                    f"percentile bootstrap 95 % CI per condition; smallest lower end "
                    f"{part.ci_low.min():+.3f}; weak test: no same-size control perturbation"
                ),
                verdict=count_verdict(len(above), len(part)),
            )
        )
    if len(sanity):
        row = sanity.iloc[0]
        claims.append(
            Claim(
                claim="RoPE's construction (a sanity check, no paper's claim): shifting every "
                "position leaves the loss unchanged",
                number=f"Δloss {row.delta_loss:+.2e} for a shift of +{int(row['delta'])}",
                test=f"shift every position on q and k; holds if |Δloss| < {SHIFT_TOLERANCE:g} "
                "nats/token, does not hold otherwise. "
                + null_text(
                    "float rounding (|Δloss| below the tolerance)",
                    "exact relative encoding predicts no change at all, so any change above "
                    "rounding refutes it",
                ),
                uncertainty=(
                    f"percentile bootstrap 95 % CI [{row.ci_low:+.2e}, {row.ci_high:+.2e}]"
                ),
                verdict="holds" if abs(row.delta_loss) < SHIFT_TOLERANCE else "does not hold",
            )
        )
    return claims


def _phase_mechanism(heads: pd.DataFrame, part: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Attention of the clean model's top previous-token heads (the top 5 %, as for
    `d_prev_top_heads`) under each phase condition, after a "clean" row."""
    names = list(part.condition)
    first = heads[heads.condition.isin(names)]
    if first.empty:
        return pd.DataFrame(columns=["condition", "band", "phi", "self", "prev", "first"]), 0
    clean = first[first.condition == names[0]]
    top = clean.nlargest(max(1, len(clean) // 20), "prev_base")[["layer", "head"]]
    chosen = first.merge(top, on=["layer", "head"])
    base = chosen[chosen.condition == names[0]]
    rows = [
        {
            "condition": "clean",
            "band": "",
            "phi": 0.0,
            "self": base.diag_base.mean(),
            "prev": base.prev_base.mean(),
            "first": base.first_base.mean(),
        }
    ]
    for row in part.sort_values(["band", "phi"]).itertuples():
        mine = chosen[chosen.condition == row.condition]
        rows.append(
            {
                "condition": row.condition,
                "band": row.band,
                "phi": row.phi,
                "self": mine.diag.mean(),
                "prev": mine.prev.mean(),
                "first": mine["first"].mean(),
            }
        )
    return pd.DataFrame(rows), len(top)


def _phase_key(merged: pd.DataFrame, sanity: pd.DataFrame) -> str:
    parts = []
    for end in ("high", "low"):
        line = merged[merged.band == end]
        if len(line):
            worst = line.loc[line.delta_loss.idxmax()]
            text = f"{end} band: largest Δloss {worst.delta_loss:+.2f} at φ = {worst.phi:+.2f}"
            by_phi = dict(zip(line.phi.round(6), line.delta_loss, strict=True))
            mirrored = sorted(phi for phi in by_phi if phi > 0 and -phi in by_phi)
            if mirrored:  # the asymmetry at the smallest mirrored angle
                phi = mirrored[0]
                text += f" (φ = ±{phi:.2f}: {by_phi[phi]:+.2f} vs {by_phi[-phi]:+.2f})"
            parts.append(text)
    if len(sanity):
        parts.append(f"position shift (sanity): Δloss {sanity.iloc[0].delta_loss:+.1e}")
    return "; ".join(parts)
