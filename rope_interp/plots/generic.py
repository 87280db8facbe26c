"""Figures from any tidy table: a pivoted heatmap, bars with confidence intervals, a scatter
with hover text (the report uses them where no analysis-specific figure exists)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go

from rope_interp.utils.numbers import format_number


def plot_heatmap(
    frame: pd.DataFrame, x: str, y: str, value: str, title: str, aggfunc: str = "mean"
) -> go.Figure:
    """`value` pivoted to a `y` × `x` grid (`aggfunc` over repeated cells)."""
    grid = frame.pivot_table(index=y, columns=x, values=value, aggfunc=aggfunc)
    figure = go.Figure(
        go.Heatmap(
            z=grid.to_numpy(), x=list(grid.columns), y=list(grid.index), colorscale="Viridis"
        )
    )
    figure.update_layout(title=title, xaxis_title=x, yaxis_title=y, height=420)
    if len(grid.index) <= 16:
        figure.update_yaxes(dtick=1)
    return figure


def plot_bars(
    frame: pd.DataFrame,
    x: str,
    y: str,
    title: str,
    low: str | None = None,
    high: str | None = None,
    color: str | None = None,
    height: int = 420,
) -> go.Figure:
    """Bars with optional confidence intervals (columns `low`/`high`)."""
    figure = go.Figure()
    groups = [(None, frame)] if color is None else list(frame.groupby(color, sort=False))
    for name, part in groups:
        error = None
        if low is not None and high is not None:
            error = {
                "type": "data",
                "symmetric": False,
                "array": (part[high] - part[y]).to_numpy(),
                "arrayminus": (part[y] - part[low]).to_numpy(),
            }
        figure.add_bar(
            x=part[x].astype(str),
            y=part[y],
            error_y=error,
            name=str(name) if name is not None else y,
        )
    figure.update_layout(title=title, yaxis_title=y, height=height, showlegend=color is not None)
    return figure


def plot_scatter(
    frame: pd.DataFrame,
    x: str,
    y: str,
    title: str,
    hover: Sequence[str] = (),
    color: str | None = None,
    height: int = 420,
) -> go.Figure:
    """Markers of `y` against `x`, hover text from the `hover` columns, one trace per `color`."""
    figure = go.Figure()
    groups = [(None, frame)] if color is None else list(frame.groupby(color, sort=True))
    for name, part in groups:
        text = (
            [
                ", ".join(f"{h}={format_number(v)}" for h, v in zip(hover, row, strict=True))
                for row in part[list(hover)].itertuples(index=False)
            ]
            if hover
            else None
        )
        figure.add_scatter(
            x=part[x], y=part[y], mode="markers", text=text, name=f"{color} {name}" if color else y
        )
    figure.update_layout(
        title=title, xaxis_title=x, yaxis_title=y, height=height, showlegend=color is not None
    )
    return figure
