"""Figures for the analysis tables of `rope_interp.analysis` (returned, never shown).

Each function takes the tidy table its analysis returns and draws it; nothing here computes
statistics beyond selecting and pivoting rows.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from rope_interp.errors import RopeInterpError

_SEQUENTIAL = "Viridis"
_DIVERGING = "RdBu_r"


def _require(table: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise RopeInterpError(
            f"{what} needs a table with columns {columns}; missing {missing}. Pass the table "
            "returned by the matching rope_interp.analysis function."
        )


def _heatmap(pivot: pd.DataFrame, title: str, x: str, y: str, colorbar: str, **kw) -> go.Figure:
    fig = go.Figure(
        go.Heatmap(
            z=pivot.to_numpy(),
            x=[str(c) for c in pivot.columns],
            y=[str(i) for i in pivot.index],
            colorbar={"title": colorbar},
            colorscale=kw.pop("colorscale", _SEQUENTIAL),
            **kw,
        )
    )
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y)
    return fig


def plot_usage_map(table: pd.DataFrame, kind: str = "q", layer: int | None = None) -> go.Figure:
    """Usage map from `layer_usage` (layer × pair) or, with `layer`, from `frequency_usage`
    (head × pair of that layer); colour = share of the row's norm in each pair."""
    _require(table, ["kind", "layer", "pair", "share"], "plot_usage_map")
    rows = table[table["kind"] == kind]
    if layer is None:
        pivot = rows.pivot_table(index="layer", columns="pair", values="share", aggfunc="mean")
        title, y = f"Frequency usage of {kind} per layer (row-normalised E‖z_i‖)", "layer"
    else:
        _require(table, ["head"], "plot_usage_map with a layer")
        rows = rows[rows["layer"] == layer]
        if rows.empty:
            raise RopeInterpError(f"No rows for layer {layer} and kind {kind!r} in the table.")
        pivot = rows.pivot(index="head", columns="pair", values="share")
        title, y = f"Frequency usage of {kind}, layer {layer} (row-normalised)", "head"
    return _heatmap(pivot, title, "pair (0 = highest frequency)", y, "share of norm")


def plot_band_shares(table: pd.DataFrame, kind: str = "qk", band: str = "high") -> go.Figure:
    """Layer × head map of the share of usage in the high or low band (`band_shares`)."""
    _require(table, ["kind", "layer", "head", f"{band}_share"], "plot_band_shares")
    rows = table[table["kind"] == kind]
    pivot = rows.pivot(index="layer", columns="head", values=f"{band}_share")
    uniform = float(rows["band_fraction"].iloc[0]) if "band_fraction" in rows else None
    title = f"Share of {kind} usage in the {band}-frequency band"
    if uniform is not None:
        title += f" (uniform = {uniform:.2f})"
    return _heatmap(pivot, title, "head", "layer", "share")


def plot_positional_heads(heads: pd.DataFrame, offset: int = 1) -> go.Figure:
    """Scatter of each head's mean attention at `offset` against its high-frequency q·k share
    (`PositionalHeads.heads`); colour = layer."""
    _require(heads, ["layer", "head", "offset", "attn", "qk_high_share"], "plot_positional_heads")
    rows = heads[heads["offset"] == offset]
    if rows.empty:
        raise RopeInterpError(f"No rows for offset {offset}; offsets: {sorted(heads.offset)}.")
    fig = go.Figure(
        go.Scatter(
            x=rows["qk_high_share"],
            y=rows["attn"],
            mode="markers",
            marker={
                "color": rows["layer"],
                "colorscale": _SEQUENTIAL,
                "colorbar": {"title": "layer"},
                "size": 8,
            },
            text=[f"L{r.layer}H{r.head}" for r in rows.itertuples()],
        )
    )
    name = {0: "the diagonal (self)", 1: "the previous token"}.get(offset, f"offset {offset}")
    fig.update_layout(
        title=f"Attention on {name} vs high-frequency share of q·k usage",
        xaxis_title="high-frequency share of E‖z^q_i‖·E‖z^k_i‖",
        yaxis_title=f"mean attention at Δ = {offset}",
    )
    return fig


def plot_pair_margins(pairs: pd.DataFrame, layer: int, head: int, offset=None) -> go.Figure:
    """Bar chart of each pair's mean contribution to the score margin of one head
    (`PositionalHeads.pairs` with `offset`, or `AttentionSinks.pairs`)."""
    _require(pairs, ["layer", "head", "pair", "margin"], "plot_pair_margins")
    rows = pairs[(pairs["layer"] == layer) & (pairs["head"] == head)]
    if offset is not None:
        rows = rows[rows["offset"] == offset]
    if rows.empty:
        raise RopeInterpError(f"No rows for layer {layer}, head {head}, offset {offset}.")
    what = "first-token" if offset is None else f"Δ = {offset}"
    fig = go.Figure(go.Bar(x=rows["pair"], y=rows["margin"], marker_color="#3366cc"))
    fig.update_layout(
        title=f"Which pairs build the {what} pattern: L{layer}H{head}",
        xaxis_title="pair (0 = highest frequency)",
        yaxis_title="mean score margin from the pair",
    )
    return fig


def plot_offset_features(table: pd.DataFrame) -> go.Figure:
    """Offset angle α against θ_i(L−1) for every (layer, head, pair) of `offset_features`,
    flagged outliers highlighted, with the frequency bound (θ(L−1) = π) and the two angle-bound
    regions' edges (α = ±π/2, α = π/2 − θ(L−1), α = −π/2 − θ(L−1) wrapped)."""
    _require(table, ["alpha", "theta", "flagged"], "plot_offset_features")
    context = table.attrs.get("context") or int(
        round(table["cycles"].iloc[0] * 2 * math.pi / table["theta"].iloc[0])
    )
    sweep = table["theta"] * (context - 1)
    fig = go.Figure()
    for flagged, colour, name in ((False, "#bbbbbb", "other pairs"), (True, "#d62728", "flagged")):
        part = table["flagged"] == flagged
        fig.add_trace(
            go.Scatter(
                x=sweep[part],
                y=table.loc[part, "alpha"],
                mode="markers",
                marker={"color": colour, "size": 5 if not flagged else 8},
                name=name,
            )
        )
    # The edges are straight lines α = α0 − x; on the log x axis they need many points (and x > 0).
    low = max(float(sweep[sweep > 0].min()) if (sweep > 0).any() else 1e-3, 1e-6)
    xs = np.geomspace(low, math.pi, 200)
    for y0, label in ((math.pi / 2, "α = π/2 − θ(L−1)"), (-math.pi / 2, "α = −π/2 − θ(L−1)")):
        fig.add_trace(go.Scatter(x=xs, y=y0 - xs, mode="lines", name=label, line={"dash": "dot"}))
    fig.add_vline(x=math.pi, line_dash="dash", annotation_text="frequency bound θ(L−1) = π")
    fig.update_xaxes(type="log")
    fig.update_layout(
        title=f"Rotary offset features: offset angle vs swept angle (L = {context})",
        xaxis_title="θ_i·(L−1), radians swept over the context (log)",
        yaxis_title="α = ∠μ_q − ∠μ_k (radians)",
    )
    return fig


def plot_sinks(heads: pd.DataFrame, value: str = "importance") -> go.Figure:
    """Layer × head map of first-token importance (Gu et al.) or `first_mass`
    (`AttentionSinks.heads`)."""
    _require(heads, ["layer", "head", value], "plot_sinks")
    pivot = heads.pivot(index="layer", columns="head", values=value)
    return _heatmap(
        pivot,
        f"Attention sinks: first-token {value} per head",
        "head",
        "layer",
        value,
        zmin=0,
        zmax=1,
    )


def plot_band_energy(table: pd.DataFrame) -> go.Figure:
    """Stacked bars of low / mid / high band energy per layer (mean over heads) from
    `attention_spectra` (or per layer from `mlp_spectra`)."""
    _require(table, ["layer", "low", "mid", "high"], "plot_band_energy")
    means = table.groupby("layer")[["low", "mid", "high"]].mean()
    fig = go.Figure()
    for band, colour in (("low", "#1f77b4"), ("mid", "#ff7f0e"), ("high", "#2ca02c")):
        fig.add_trace(go.Bar(x=means.index, y=means[band], name=band, marker_color=colour))
    fig.update_layout(
        barmode="stack",
        title="Spectral energy by band (fractions of Nyquist: low < 0.25 ≤ mid < 0.75 ≤ high)",
        xaxis_title="layer",
        yaxis_title="fraction of power",
    )
    return fig


def plot_spectrum(freqs, power, title: str = "Power spectrum", marks=None) -> go.Figure:
    """A 1-D spectrum (from `power_spectrum`), with optional vertical marks at frequencies
    (e.g. θ_i/2π)."""
    fig = go.Figure(go.Scatter(x=list(map(float, freqs)), y=list(map(float, power)), mode="lines"))
    for f in marks or []:
        fig.add_vline(x=float(f), line_dash="dot", line_color="#999999")
    fig.update_layout(title=title, xaxis_title="frequency (cycles/token)", yaxis_title="power")
    return fig


def plot_massive(table: pd.DataFrame) -> go.Figure:
    """Histogram of the pair position (0 = highest, 1 = lowest frequency) of the top
    dimensions of q and k (`massive_values`)."""
    _require(table, ["kind", "pair_position"], "plot_massive")
    fig = go.Figure()
    for kind, colour in (("q", "#1f77b4"), ("k", "#d62728")):
        rows = table[(table["kind"] == kind) & (table["pair"] >= 0)]
        fig.add_trace(
            go.Histogram(
                x=rows["pair_position"], name=kind, marker_color=colour, opacity=0.7, nbinsx=16
            )
        )
    fig.update_layout(
        barmode="overlay",
        title="Massive values: where the largest q/k dimensions sit",
        xaxis_title="pair position (0 = highest frequency, 1 = lowest)",
        yaxis_title="count of top dimensions",
    )
    return fig


def plot_wavelengths(thetas: np.ndarray, context: int) -> go.Figure:
    """Wavelength 2π/θ_i of every pair (log axis), one line per distinct set of layer
    frequencies, against the context length L (dashed). `thetas`: layers × pairs, float64."""
    n_layers, n_pairs = thetas.shape
    figure = go.Figure()
    seen: set[tuple[float, ...]] = set()
    for layer in range(n_layers):
        key = tuple(round(float(t), 12) for t in thetas[layer])
        if key in seen:
            continue
        seen.add(key)
        figure.add_scatter(
            x=list(range(n_pairs)),
            y=2 * math.pi / thetas[layer],
            mode="lines+markers",
            name=f"layer {layer}" + (" (and all layers with the same θ)" if layer == 0 else ""),
        )
    # A trace, not add_hline: shapes on log axes take log10 coordinates.
    figure.add_scatter(
        x=[0, n_pairs - 1],
        y=[context, context],
        mode="lines",
        line={"dash": "dash", "color": "gray"},
        name=f"context L = {context}",
    )
    figure.update_layout(
        title="Wavelength 2π/θ_i of each rotary pair",
        xaxis_title="pair i (0 = highest frequency)",
        yaxis_title="wavelength (tokens)",
        yaxis_type="log",
        height=380,
    )
    return figure


def plot_pair_maxima(per_pair: pd.DataFrame, first_partial: int, n_pairs: int) -> go.Figure:
    """Bars of the largest q and k pair norm per pair (columns pair, q_max, k_max), the
    partial-cycle band (pairs `first_partial`..`n_pairs` − 1) shaded."""
    _require(per_pair, ["pair", "q_max", "k_max"], "plot_pair_maxima")
    profile = go.Figure()
    profile.add_bar(x=per_pair.pair, y=per_pair.q_max, name="max |z| of q")
    profile.add_bar(x=per_pair.pair, y=per_pair.k_max, name="max |z| of k")
    if first_partial < n_pairs:
        profile.add_vrect(
            x0=first_partial - 0.5,
            x1=n_pairs - 0.5,
            fillcolor="orange",
            opacity=0.12,
            line_width=0,
            annotation_text="partial cycle",
        )
    profile.update_layout(
        title="Largest pair norm over all layers and heads, per pair",
        xaxis_title="pair (0 = highest frequency)",
        yaxis_title="max |z|",
        barmode="group",
        height=400,
    )
    return profile
