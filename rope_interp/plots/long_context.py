"""Figures for the long-context tables: per-pair score terms by distance and under attention
(`analysis.long_context`), angle coverage and the partial-cycle boundary
(`analysis.angle_coverage`). Returned, never shown; nothing here computes statistics beyond
selecting, averaging over heads and pivoting rows."""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go

from rope_interp.errors import RopeInterpError
from rope_interp.plots.analysis import _DIVERGING, _heatmap, _require


def _rows_of(table: pd.DataFrame, layer: int, head: int | None, what: str) -> pd.DataFrame:
    rows = table[table["layer"] == layer]
    if head is not None:
        rows = rows[rows["head"] == head]
    if rows.empty:
        where = f"layer {layer}" + ("" if head is None else f", head {head}")
        raise RopeInterpError(f"{what}: no rows for {where} in the table.")
    return rows


def plot_distance_profile(
    distance: pd.DataFrame,
    layer: int,
    head: int | None = None,
    value: str = "mean_abs_contribution",
) -> go.Figure:
    """Pair × distance-bucket map of a layer's mean per-pair score term (`LongContextStats.
    distance`), for one head or averaged over the layer's heads; `value` is
    "mean_abs_contribution" or "mean_contribution" (diverging colours, centred on 0)."""
    columns = ["layer", "head", "bucket", "distance_lo", "distance_hi", "pair", value]
    _require(distance, columns, "plot_distance_profile")
    rows = _rows_of(distance, layer, head, "plot_distance_profile")
    pivot = rows.pivot_table(index="pair", columns="bucket", values=value, aggfunc="mean")
    spans = rows.drop_duplicates("bucket").set_index("bucket")
    pivot.columns = [
        f"{spans.loc[b, 'distance_lo']}–{spans.loc[b, 'distance_hi']}" for b in pivot.columns
    ]
    who = "mean over heads" if head is None else f"head {head}"
    signed = value == "mean_contribution"
    kw = {"colorscale": _DIVERGING, "zmid": 0.0} if signed else {}
    title = f"{value.replace('_', ' ')} by distance, layer {layer} ({who})"
    return _heatmap(
        pivot, title, "distance Δ = m − n (bucket)", "pair (0 = highest freq.)", value, **kw
    )


def plot_attention_contributions(
    pairs: pd.DataFrame, layer: int | None = None, value: str = "attn_contribution"
) -> go.Figure:
    """Attention-weighted per-pair score terms (`LongContextStats.pairs`): layer × pair
    (averaged over heads) or, with `layer`, head × pair. `value` is "attn_contribution"
    (signed, diverging colours), "attn_abs_contribution" or "attn_share"."""
    _require(pairs, ["layer", "head", "pair", value], "plot_attention_contributions")
    if layer is None:
        pivot = pairs.pivot_table(index="layer", columns="pair", values=value, aggfunc="mean")
        y, title = "layer", f"{value.replace('_', ' ')} per layer (mean over heads)"
    else:
        rows = _rows_of(pairs, layer, None, "plot_attention_contributions")
        pivot = rows.pivot(index="head", columns="pair", values=value)
        y, title = "head", f"{value.replace('_', ' ')}, layer {layer}"
    kw = {"colorscale": _DIVERGING, "zmid": 0.0} if value == "attn_contribution" else {}
    return _heatmap(pivot, title, "pair (0 = highest frequency)", y, value, **kw)


def plot_angle_coverage(coverage: pd.DataFrame, layer: int = 0) -> go.Figure:
    """Largest relative angle per pair in training and at the evaluated length, in turns
    (angle / 2π, log scale), from `angle_coverage`; the dashed line is one full turn, and bars
    are coloured by coverage (full / beyond / within)."""
    columns = ["layer", "pair", "train_max_angle", "max_angle", "coverage", "length"]
    _require(coverage, columns + ["train_context"], "plot_angle_coverage")
    rows = _rows_of(coverage, layer, None, "plot_angle_coverage").sort_values("pair")
    colours = {"full": "#4c78a8", "beyond": "#e45756", "within": "#72b7b2"}
    fig = go.Figure()
    fig.add_scatter(
        x=rows["pair"],
        y=rows["train_max_angle"] / (2 * math.pi),
        mode="lines+markers",
        name=f"training ({int(rows['train_context'].iloc[0])} tokens)",
        line={"color": "black"},
    )
    for kind, part in rows.groupby("coverage", sort=False):
        fig.add_bar(
            x=part["pair"],
            y=part["max_angle"] / (2 * math.pi),
            name=f"at {int(rows['length'].iloc[0])} tokens: {kind}",
            marker_color=colours.get(str(kind)),
        )
    fig.add_hline(y=1.0, line_dash="dash", annotation_text="one turn (2π)")
    fig.update_layout(
        title=f"Largest relative angle per pair, layer {layer}",
        xaxis_title="pair (0 = highest frequency)",
        yaxis_title="turns θ(L−1)/2π",
        yaxis_type="log",
        barmode="overlay",
    )
    return fig


def plot_cycle_boundaries(boundaries: pd.DataFrame, layer: int = 0) -> go.Figure:
    """First partial-cycle pair (θL < 2π) and first half-cycle pair (θL < π) against the
    window length L (log scale), from `cycle_boundaries`."""
    columns = ["layer", "length", "first_partial_pair", "first_half_pair"]
    _require(boundaries, columns, "plot_cycle_boundaries")
    rows = _rows_of(boundaries, layer, None, "plot_cycle_boundaries").sort_values("length")
    fig = go.Figure()
    for column, name in (("first_partial_pair", "θL < 2π"), ("first_half_pair", "θL < π")):
        fig.add_scatter(x=rows["length"], y=rows[column], mode="lines+markers", name=name)
    fig.update_layout(
        title=f"First partial-cycle pair against window length, layer {layer}",
        xaxis_title="window length L (tokens)",
        yaxis_title="pair index",
        xaxis_type="log",
    )
    return fig
