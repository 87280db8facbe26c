"""Paired contrasts and control distributions from an experiment's per-sequence losses.

    result = run_experiment(model, standard_conditions(model, spec), corpus)
    paired_contrast(result, "zero high 8", "zero low 8")          # Δ of A − B, paired CI
    paired_contrast(result, "zero high 8", random_controls(result))  # vs the controls' mean
    control_distribution(result)    # where each band falls among the random draws

Paired: every condition ran on the same sequences, so A − B is formed per sequence and the
bootstrap resamples sequences (the CI covers the sampling of text, with the random selections
held fixed; their spread is shown by `control_distribution`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from rope_interp.errors import RopeInterpError
from rope_interp.interventions.results import ExperimentResult, bootstrap_ci


def _per_sequence(result: ExperimentResult, names: str | Sequence[str]) -> pd.Series:
    """Per-sequence loss of one condition, or the mean over several (indexed by sequence)."""
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise RopeInterpError("A contrast side needs at least one condition name.")
    frame = result.sequences
    if frame is None or frame.empty or "loss" not in frame:
        raise RopeInterpError(
            "This result has no per-sequence losses (run it with rope-interp ≥ 0.2, or load "
            "its run directory with merge_results)."
        )
    known = set(frame["condition"])
    missing = [n for n in names if n not in known]
    if missing:
        raise RopeInterpError(f"Unknown condition(s) {missing}; known: {sorted(known)}.")
    columns = []
    ids = None
    for name in names:
        part = frame[frame["condition"] == name].sort_values("sequence")
        if ids is None:
            ids = part["sequence_id"].to_numpy()
        elif not np.array_equal(ids, part["sequence_id"].to_numpy()):
            raise RopeInterpError(
                f"Condition {name!r} ran on other sequences than {names[0]!r}; a paired "
                "contrast needs the same sequences in the same order."
            )
        columns.append(part["loss"].to_numpy(dtype=np.float64))
    return pd.Series(np.mean(columns, axis=0), index=pd.Index(ids, name="sequence_id"))


def paired_contrast(
    result: ExperimentResult,
    a: str | Sequence[str],
    b: str | Sequence[str],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Mean over sequences of loss(A) − loss(B) (nats/token) with a paired percentile bootstrap
    CI. `a`/`b`: a condition name, or a list of names (their per-sequence mean, e.g. the random
    controls). Returns contrast, delta, ci_low, ci_high, n_sequences."""
    if not isinstance(n_boot, int) or n_boot < 1:
        raise RopeInterpError(f"n_boot must be a positive integer, got {n_boot!r}.")
    left, right = _per_sequence(result, a), _per_sequence(result, b)
    if not np.array_equal(left.index.to_numpy(), right.index.to_numpy()):
        raise RopeInterpError("The two sides ran on different sequences; nothing to pair.")
    diff = left.to_numpy() - right.to_numpy()
    low, high = bootstrap_ci(diff, n_boot, seed, level)
    return {
        "contrast": f"{_label(a)} − {_label(b)}",
        "delta": float(diff.mean()),
        "ci_low": low,
        "ci_high": high,
        "n_sequences": len(diff),
    }


def _label(names: str | Sequence[str]) -> str:
    if isinstance(names, str):
        return names
    return f"mean of {len(names)} random controls" if len(names) > 1 else names[0]


def _band_rows(result: ExperimentResult) -> tuple[dict[str, str], list[str]]:
    """{"high": name, "low": name} and the random controls of the standard band group."""
    summary = result.summary
    if "band" not in summary or "group" not in summary:
        return {}, []
    part = summary[summary["group"] == "band"]
    bands = {row.band: row.condition for row in part.itertuples() if row.band in ("high", "low")}
    return bands, list(part[part["band"] == "random"]["condition"])


def random_controls(result: ExperimentResult) -> list[str]:
    """Names of the standard conditions' random-pair controls."""
    return _band_rows(result)[1]


def band_contrasts(result: ExperimentResult, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """The headline paired contrasts of the standard band conditions: high − low, and each band
    − the mean of the random controls (empty when the result has no band group)."""
    bands, controls = _band_rows(result)
    pairs: list[tuple[str, str | list[str]]] = []
    if "high" in bands and "low" in bands:
        pairs.append((bands["high"], bands["low"]))
    if controls:
        pairs += [(bands[end], controls) for end in ("high", "low") if end in bands]
    rows = [paired_contrast(result, a, b, n_boot, seed) for a, b in pairs]
    return pd.DataFrame(rows, columns=["contrast", "delta", "ci_low", "ci_high", "n_sequences"])


def control_distribution(result: ExperimentResult) -> pd.DataFrame:
    """Where each band's Δloss falls among the random controls' Δloss: one row per band with
    `percentile` (share of controls below it, ties counted half, in %), the controls' count,
    min, median and max."""
    bands, controls = _band_rows(result)
    if not controls:
        return pd.DataFrame(columns=["condition", "delta_loss", "percentile", "n_controls"])
    summary = result.summary.set_index("condition")
    draws = summary.loc[controls, "delta_loss"].to_numpy(dtype=np.float64)
    rows = []
    for end in ("high", "low"):
        if end not in bands:
            continue
        value = float(summary.loc[bands[end], "delta_loss"])
        below = (draws < value).sum() + 0.5 * (draws == value).sum()
        rows.append(
            {
                "condition": bands[end],
                "band": end,
                "delta_loss": value,
                "percentile": 100.0 * below / len(draws),
                "n_controls": len(draws),
                "controls_min": float(draws.min()),
                "controls_median": float(np.median(draws)),
                "controls_max": float(draws.max()),
            }
        )
    return pd.DataFrame(rows)
