"""Every analysis figure: built from its table, titled, labelled, never shown."""

from __future__ import annotations

import plotly.graph_objects as go
import pytest
import torch

from rope_interp.analysis import (
    attention_sinks,
    attention_spectra,
    band_shares,
    frequency_usage,
    layer_usage,
    massive_values,
    offset_features,
    positional_heads,
)
from rope_interp.analysis.fourier import power_spectrum
from rope_interp.core.stats import collect_pair_stats
from rope_interp.errors import RopeInterpError
from rope_interp.plots import analysis as plots
from tests.helpers import make_model, random_tokens


@pytest.fixture(scope="module")
def tables():
    model = make_model("gqa")
    tokens = random_tokens(model, pos=40)
    stats = collect_pair_stats(model, [tokens], progress=False)
    pos = positional_heads(model, [tokens], progress=False)
    sinks = attention_sinks(model, [tokens], progress=False)
    return {
        "usage": frequency_usage(stats),
        "layer_usage": layer_usage(stats),
        "shares": band_shares(stats),
        "pos": pos,
        "offsets": offset_features(stats),
        "sinks": sinks,
        "attn": attention_spectra(model, [tokens], progress=False),
        "massive": massive_values(model, [tokens], progress=False),
    }


def _check(fig):
    assert isinstance(fig, go.Figure)
    assert fig.layout.title.text
    assert fig.layout.xaxis.title.text and fig.layout.yaxis.title.text
    assert len(fig.data) >= 1


def test_every_figure(tables):
    _check(plots.plot_usage_map(tables["layer_usage"], "q"))
    fig = plots.plot_usage_map(tables["usage"], "k", layer=1)
    _check(fig)
    assert fig.data[0].z.shape == (2, 4)  # 2 KV heads × 4 pairs
    _check(plots.plot_band_shares(tables["shares"], "qk", "low"))
    _check(plots.plot_positional_heads(tables["pos"].heads, 1))
    _check(plots.plot_pair_margins(tables["pos"].pairs, 0, 1, offset=1))
    _check(plots.plot_pair_margins(tables["sinks"].pairs, 1, 0))
    _check(plots.plot_offset_features(tables["offsets"]))
    _check(plots.plot_sinks(tables["sinks"].heads))
    _check(plots.plot_band_energy(tables["attn"]))
    _check(plots.plot_massive(tables["massive"]))
    freqs, power = power_spectrum(torch.randn(64))
    _check(plots.plot_spectrum(freqs, power, marks=[0.1]))


def test_wrong_table_is_refused(tables):
    with pytest.raises(RopeInterpError, match="missing"):
        plots.plot_sinks(tables["usage"])
    with pytest.raises(RopeInterpError, match="No rows"):
        plots.plot_usage_map(tables["usage"], "q", layer=7)


def test_offset_feature_bound_edges_follow_alpha_minus_sweep_on_the_log_axis():
    import math

    import numpy as np
    import pandas as pd

    from rope_interp.plots.analysis import plot_offset_features

    table = pd.DataFrame(
        {"alpha": [0.1, 2.0], "theta": [1e-4, 1e-2], "flagged": [False, True], "cycles": [0, 0]}
    )
    table.attrs["context"] = 256
    edges = [trace for trace in plot_offset_features(table).data if trace.mode == "lines"]
    assert len(edges) == 2
    for trace, start in zip(edges, (math.pi / 2, -math.pi / 2), strict=True):
        x, y = np.asarray(trace.x), np.asarray(trace.y)
        assert x.min() > 0 and x.max() == pytest.approx(math.pi) and len(x) > 50
        np.testing.assert_allclose(y, start - x)
