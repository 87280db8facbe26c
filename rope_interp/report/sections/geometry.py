"""The rotary geometry section: frequencies and wavelengths against the context length."""

from __future__ import annotations

import math

import pandas as pd

from rope_interp.plots.analysis import plot_wavelengths
from rope_interp.report.context import ReportContext
from rope_interp.report.document import Section
from rope_interp.report.registry import section


@section("geometry")
def geometry_section(ctx: ReportContext) -> Section:
    spec, length = ctx.spec, ctx.context
    thetas = spec.thetas.cpu()
    partial = spec.partial_cycle_mask(length).sum(1)
    half = spec.partial_cycle_mask(length, math.pi).sum(1)
    frame = pd.DataFrame(
        {
            "layer": range(spec.n_layers),
            "base": list(spec.bases) or [float("nan")] * spec.n_layers,
            "theta_0": thetas[:, 0].numpy(),
            "theta_last": thetas[:, -1].numpy(),
            "wavelength_max": (2 * math.pi / thetas[:, -1]).numpy(),
            "partial_cycle_pairs": partial.numpy(),
            "half_cycle_pairs": half.numpy(),
            "first_partial_pair": [
                spec.first_partial_pair(length, layer) for layer in range(spec.n_layers)
            ],
        }
    )
    figure = plot_wavelengths(thetas.numpy(), length)
    collapsed = frame.drop(columns="layer").drop_duplicates()
    table = frame if len(collapsed) > 1 else frame.head(1).assign(layer="all")
    first = int(frame.first_partial_pair.iloc[0])
    return Section(
        "Rotary geometry",
        how_to_read=(
            "pairs above the dashed line turn less than one full cycle within the context "
            "(partial-cycle pairs): the candidates for outlier and offset features."
        ),
        prose=(
            f"{spec.summary()}. With windows of L = {length} tokens, pairs {first}.."
            f"{spec.n_pairs - 1} complete less than one turn (θ_i·L < 2π); the frequencies were "
            "read from the model's own cos/sin buffers and checked against its config."
        ),
        figures=[figure],
        tables=[("Frequencies per layer", table)],
        key_result=(
            f"{spec.n_pairs - first} of {spec.n_pairs} pairs turn less than once in "
            f"L = {length} tokens (pairs {first}..{spec.n_pairs - 1})"
        ),
    )
