"""Figures from the experiment runner's tables (`ExperimentResult.summary` / `.heads`).

Plots only draw tables: every function takes a DataFrame and returns a `go.Figure`.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from rope_interp.errors import RopeInterpError


def _need(frame: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise RopeInterpError(
            f"{what} needs column(s) {missing}; pass run_experiment(...).summary or .heads "
            f"(got columns {list(frame.columns)})."
        )


def delta_loss_bars(summary: pd.DataFrame, title: str = "Δloss per condition") -> go.Figure:
    """Bars of Δloss (nats/token) per condition with the bootstrap 95 % interval."""
    _need(summary, ["condition", "delta_loss", "ci_low", "ci_high"], "delta_loss_bars")
    fig = go.Figure(
        go.Bar(
            x=summary["condition"],
            y=summary["delta_loss"],
            error_y=dict(
                type="data",
                symmetric=False,
                array=summary["ci_high"] - summary["delta_loss"],
                arrayminus=summary["delta_loss"] - summary["ci_low"],
            ),
        )
    )
    fig.update_layout(title=title, xaxis_title="condition", yaxis_title="Δloss (nats/token)")
    return fig


def delta_loss_curves(
    summary: pd.DataFrame, x: str, group: str | None = None, title: str | None = None
) -> go.Figure:
    """Δloss against a numeric parameter column `x` (e.g. "k", "p", "phi"), one line per value
    of `group` (e.g. "band"), with the 95 % interval as error bars."""
    _need(summary, [x, "delta_loss", "ci_low", "ci_high"], "delta_loss_curves")
    fig = go.Figure()
    groups = [(None, summary)] if group is None else list(summary.groupby(group, sort=False))
    for name, frame in groups:
        frame = frame.sort_values(x)
        fig.add_trace(
            go.Scatter(
                x=frame[x],
                y=frame["delta_loss"],
                mode="lines+markers",
                name=str(name) if name is not None else "Δloss",
                error_y=dict(
                    type="data",
                    symmetric=False,
                    array=frame["ci_high"] - frame["delta_loss"],
                    arrayminus=frame["delta_loss"] - frame["ci_low"],
                ),
            )
        )
    fig.update_layout(
        title=title or f"Δloss against {x}", xaxis_title=x, yaxis_title="Δloss (nats/token)"
    )
    return fig


def head_metric_heatmap(
    heads: pd.DataFrame, condition: str, metric: str = "kl", change: bool = False
) -> go.Figure:
    """Layer × head map of one attention metric for one condition (`change=True`: minus the
    clean model's value, for metrics with a `*_base` column)."""
    _need(heads, ["condition", "layer", "head", metric], "head_metric_heatmap")
    frame = heads[heads["condition"] == condition]
    if frame.empty:
        known = sorted(heads["condition"].unique())
        raise RopeInterpError(f"No rows for condition {condition!r}; conditions: {known}.")
    values = frame[metric]
    label = metric
    if change:
        _need(heads, [f"{metric}_base"], "head_metric_heatmap(change=True)")
        values = values - frame[f"{metric}_base"]
        label = f"Δ{metric}"
    grid = frame.assign(value=values).pivot(index="layer", columns="head", values="value")
    fig = go.Figure(
        go.Heatmap(z=grid.values, x=grid.columns, y=grid.index, colorbar=dict(title=label))
    )
    fig.update_layout(title=f"{label}: {condition}", xaxis_title="head", yaxis_title="layer")
    return fig


def phase_sweep_curves(table: pd.DataFrame, title: str = "Phase shifts of q") -> go.Figure:
    """Δloss, Δ attention entropy and Δ max weight against φ, one line per `band`, each
    starting at the unablated origin (φ = 0, no change). Needs columns band, phi, delta_loss,
    d_entropy, d_max_weight (one row per condition)."""
    from plotly.subplots import make_subplots

    metrics = ("delta_loss", "d_entropy", "d_max_weight")
    _need(table, ["band", "phi", *metrics], "phase_sweep_curves")
    figure = make_subplots(
        rows=1,
        cols=3,
        subplot_titles=(
            "Δloss (nats/token)",
            "Δ attention entropy (nats)",
            "Δ max attention weight",
        ),
    )
    colors = {"high": "#1f77b4", "low": "#d62728"}
    origin = pd.DataFrame({"phi": [0.0], **{metric: [0.0] for metric in metrics}})
    for band in [b for b in ("high", "low") if b in set(table["band"])]:
        line = pd.concat([origin, table[table["band"] == band]]).sort_values("phi")
        for col, metric in enumerate(metrics, start=1):
            figure.add_trace(
                go.Scatter(
                    x=line["phi"],
                    y=line[metric],
                    mode="lines+markers",
                    name=f"{band} band",
                    legendgroup=band,
                    line={"color": colors[band]},
                    showlegend=col == 1,
                ),
                row=1,
                col=col,
            )
    figure.update_xaxes(title_text="φ (radians)")
    figure.update_layout(title=title, height=400)
    return figure


def random_control_strip(
    summary: pd.DataFrame,
    places: pd.DataFrame | None = None,
    title: str = "Δloss of the bands among random-pair controls",
) -> go.Figure:
    """The random controls' Δloss as a strip (one dot per seeded draw, with a box) and each
    band's Δloss as a vertical line, labelled with its percentile among the draws when `places`
    (`interventions.contrasts.control_distribution`) is given. Needs columns condition, band
    ("high", "low", "random") and delta_loss."""
    _need(summary, ["condition", "band", "delta_loss"], "random_control_strip")
    draws = summary[summary["band"] == "random"]
    figure = go.Figure(
        go.Box(
            x=draws["delta_loss"],
            text=draws["condition"],
            name=f"{len(draws)} random draws",
            boxpoints="all",
            jitter=0.5,
            pointpos=0,
            orientation="h",
            marker={"color": "#7f7f7f"},
            hovertemplate="%{text}: Δloss %{x:.3f}<extra></extra>",
        )
    )
    percentile = {}
    if places is not None and len(places):
        _need(places, ["band", "percentile"], "random_control_strip(places=...)")
        percentile = dict(zip(places["band"], places["percentile"], strict=True))
    colors = {"high": "#1f77b4", "low": "#d62728"}
    for end in ("high", "low"):
        row = summary[summary["band"] == end]
        if row.empty:
            continue
        value = float(row["delta_loss"].iloc[0])
        label = f"{end} band {value:+.3f}"
        if end in percentile:
            label += f" ({percentile[end]:.0f}th percentile)"
        figure.add_vline(
            x=value,
            line={"color": colors[end], "width": 3},
            annotation={"text": label, "font": {"color": colors[end]}},
            # both labels above the plot (below it they overlap the axis ticks), on opposite
            # sides of their lines so that they do not overlap each other
            annotation_position="top left" if end == "high" else "top right",
        )
    figure.update_layout(
        title=title, xaxis_title="Δloss (nats/token)", height=320, showlegend=False
    )
    return figure


def prope_sweep_curves(
    summary: pd.DataFrame,
    title: str = "Δloss vs the fraction p of frequencies that keep rotating",
) -> go.Figure:
    """Δloss with its interval against p for the p-RoPE conditions (columns p, reverse,
    delta_loss, ci_low, ci_high): p-RoPE and its reverse, both ending at p = 0 and p = 1."""
    _need(summary, ["p", "delta_loss", "ci_low", "ci_high"], "prope_sweep_curves")
    figure = go.Figure()
    for reverse, label in (
        (False, "p-RoPE: lowest 1−p become NoPE"),
        (True, "reversed: highest 1−p become NoPE"),
    ):
        line = summary[summary.reverse == reverse] if "reverse" in summary else summary
        if reverse:
            ends = summary[(summary.reverse == False) & summary.p.isin([0.0, 1.0])]  # noqa: E712
            line = pd.concat([line, ends])
        line = line.sort_values("p")
        figure.add_scatter(
            x=line.p,
            y=line.delta_loss,
            mode="lines+markers",
            name=label,
            error_y={
                "type": "data",
                "symmetric": False,
                "array": (line.ci_high - line.delta_loss).to_numpy(),
                "arrayminus": (line.delta_loss - line.ci_low).to_numpy(),
            },
        )
    figure.update_layout(title=title, xaxis_title="p", yaxis_title="Δloss (nats/token)", height=420)
    return figure
