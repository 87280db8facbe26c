"""Figure of the symmetric phase sweep (`analysis.phase.phase_sweep_attention`): Δloss and
where the followed heads attend (self, previous, first token) against φ."""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from rope_interp.errors import RopeInterpError

DESTINATIONS = ("self", "previous", "first")


def plot_phase_attention(sweep: pd.DataFrame, title: str = "Phase sweep on q") -> go.Figure:
    """Two panels against φ/π: Δloss (nats/token), and the mean attention of the followed
    heads on self, previous and first token (one line each; dashed: one line per head).
    `sweep` is the table of `phase_sweep_attention` (an optional `band` column gives one
    set of lines per band)."""
    needed = ["phi", "layer", "head", "delta_loss", *DESTINATIONS]
    missing = [c for c in needed if c not in sweep.columns]
    if missing:
        raise RopeInterpError(
            f"plot_phase_attention needs column(s) {missing}; pass phase_sweep_attention(...)'s "
            f"table (got columns {list(sweep.columns)})."
        )
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("Δloss (nats/token)", "attention of the followed heads"),
    )
    groups = list(sweep.groupby("band", sort=False)) if "band" in sweep else [("", sweep)]
    for band, part in groups:
        prefix = f"{band}: " if band else ""
        mean = part.groupby("phi")[["delta_loss", *DESTINATIONS]].mean().reset_index()
        x = mean["phi"] / math.pi
        fig.add_trace(
            go.Scatter(x=x, y=mean["delta_loss"], mode="lines+markers", name=f"{prefix}Δloss"),
            row=1,
            col=1,
        )
        for dest in DESTINATIONS:
            fig.add_trace(
                go.Scatter(x=x, y=mean[dest], mode="lines+markers", name=f"{prefix}{dest}"),
                row=1,
                col=2,
            )
    fig.update_xaxes(title_text="φ / π")
    fig.update_yaxes(range=[0, 1], row=1, col=2)
    fig.update_layout(title=title)
    return fig
