"""Symmetric phase sweep: a planted previous-token head built by pair 0 (θ_0 = 1 rad/token)
moves onto the token itself at φ = +θ_0 and away from both at φ = −θ_0, as the score term
cos(α + φ + Δθ_0) predicts."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from rope_interp.analysis.phase import phase_sweep_attention, symmetric_phis
from rope_interp.core.spec import RotarySpec
from rope_interp.errors import RopeInterpError
from rope_interp.interventions.selection import select_pairs
from tests.helpers import make_model, random_tokens
from tests.test_analysis_planting import plant_previous_token_head


def test_symmetric_phis():
    phis = symmetric_phis(5)
    assert phis == pytest.approx([-math.pi, -math.pi / 2, 0.0, math.pi / 2, math.pi])
    with pytest.raises(RopeInterpError, match="odd"):
        symmetric_phis(4)


def test_phase_moves_a_previous_token_head_onto_itself():
    model = make_model("half_full")
    plant_previous_token_head(model, layer=0, head=0, norm=60.0)
    spec = RotarySpec.from_model(model)
    theta0 = float(spec.thetas[0, 0])
    sel = select_pairs(spec, 0, layers=0, heads=0)
    tokens = random_tokens(model, batch=2, pos=24)
    table = phase_sweep_attention(
        model, [tokens], sel, [(0, 0), (1, 1)], phis=[-theta0, 0.0, theta0], progress=False
    )
    head = table[(table["layer"] == 0) & (table["head"] == 0)]
    minus, clean, plus = (head.iloc[i] for i in range(3))
    assert clean.phi == 0.0 and clean.previous > 0.9 and clean.delta_loss == 0.0
    assert plus.self > 0.9 and plus.previous < 0.05
    # φ = −θ_0 moves the peak to Δ = 2: neither self nor previous.
    assert minus.self < 0.05 and minus.previous < 0.05
    assert (head.previous_base == clean.previous).all()
    # Layer 1 is untouched by a layer-0 q phase only through its input; the row exists.
    assert len(table) == 6


def test_phase_sweep_refuses_bad_heads(tiny_model):
    spec = RotarySpec.from_model(tiny_model)
    sel = select_pairs(spec, 0)
    with pytest.raises(RopeInterpError, match="outside"):
        phase_sweep_attention(
            tiny_model, [random_tokens(tiny_model)], sel, [(99, 0)], progress=False
        )


def test_phase_figure_draws_loss_and_three_destinations():
    from rope_interp.plots import plot_phase_attention

    sweep = pd.DataFrame(
        {
            "band": ["high"] * 3,
            "phi": [-math.pi, 0.0, math.pi],
            "layer": 0,
            "head": 0,
            "delta_loss": [1.0, 0.0, 1.0],
            "self": [0.1, 0.2, 0.1],
            "previous": [0.0, 0.7, 0.0],
            "first": [0.3, 0.1, 0.3],
        }
    )
    fig = plot_phase_attention(sweep)
    assert [t.name for t in fig.data] == [
        "high: Δloss",
        "high: self",
        "high: previous",
        "high: first",
    ]
    assert list(fig.data[2].y) == [0.0, 0.7, 0.0] and list(fig.data[0].x) == [-1.0, 0.0, 1.0]
    with pytest.raises(RopeInterpError, match="needs column"):
        plot_phase_attention(sweep.drop(columns="first"))
