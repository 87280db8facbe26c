"""Frequency usage (claim set B) on models whose answer is known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from rope_interp.analysis.usage import band_shares, frequency_usage, layer_usage
from rope_interp.core.spec import RotarySpec
from rope_interp.core.stats import collect_pair_stats
from rope_interp.errors import RopeInterpError
from tests.helpers import random_tokens
from tests.test_analysis_planting import plant_previous_token_head


def test_usage_of_a_planted_single_pair_head(tiny_model):
    spec = RotarySpec.from_model(tiny_model)
    plant_previous_token_head(tiny_model, layer=1, head=0, norm=30.0)
    stats = collect_pair_stats(tiny_model, [random_tokens(tiny_model)], progress=False)
    usage = frequency_usage(stats)
    # Every (kind, layer, head) row is normalised.
    sums = usage.groupby(["kind", "layer", "head"])["share"].sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0, rtol=1e-12)
    q = usage[(usage.kind == "q") & (usage.layer == 1) & (usage["head"] == 0)].set_index("pair")
    np.testing.assert_allclose(q.loc[0, "mean_norm"], 30.0, rtol=1e-6)
    assert q.loc[0, "share"] == pytest.approx(1.0)
    assert q.loc[1:, "mean_norm"].abs().max() == 0.0
    kv = spec.kv_head(0)
    k = usage[(usage.kind == "k") & (usage.layer == 1) & (usage["head"] == kv)].set_index("pair")
    assert k.loc[0, "share"] == pytest.approx(1.0)
    qk = usage[(usage.kind == "qk") & (usage.layer == 1) & (usage["head"] == 0)].set_index("pair")
    np.testing.assert_allclose(qk.loc[0, "mean_norm"], 900.0, rtol=1e-6)

    shares = band_shares(stats, fraction=0.25)
    row = shares[(shares.kind == "q") & (shares.layer == 1) & (shares["head"] == 0)].iloc[0]
    assert row.high_share == pytest.approx(1.0)
    assert row.low_share == pytest.approx(0.0)
    assert row.top_pair == 0
    # A random head is nowhere near that concentrated.
    other = shares[(shares.kind == "q") & (shares.layer == 0)]
    assert other.high_share.max() < 0.9


def test_usage_matches_direct_computation(tiny_model):
    """mean_norm equals E‖z_i‖ computed independently from the cached hook_q."""
    spec = RotarySpec.from_model(tiny_model)
    tokens = random_tokens(tiny_model, batch=3, pos=10)
    stats = collect_pair_stats(tiny_model, [tokens], progress=False)
    _, cache = tiny_model.run_with_cache(tokens, names_filter="blocks.1.attn.hook_q")
    q = cache["blocks.1.attn.hook_q"].double()
    dims = spec.dims
    norms = (q[..., dims[:, 0]] ** 2 + q[..., dims[:, 1]] ** 2).sqrt().mean((0, 1))  # [head, pair]
    usage = frequency_usage(stats)
    got = usage[(usage.kind == "q") & (usage.layer == 1)].pivot(
        index="head", columns="pair", values="mean_norm"
    )
    np.testing.assert_allclose(got.to_numpy(), norms.numpy(), rtol=1e-5)


def test_layer_usage_rows_are_normalised(tiny_model):
    stats = collect_pair_stats(tiny_model, [random_tokens(tiny_model)], progress=False)
    table = layer_usage(stats)
    assert set(table.kind) == {"q", "k", "qk"}
    sums = table.groupby(["kind", "layer"])["share"].sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0, rtol=1e-12)
    assert len(table) == 3 * tiny_model.cfg.n_layers * stats.spec.n_pairs


def test_band_fraction_is_checked(tiny_model):
    stats = collect_pair_stats(tiny_model, [random_tokens(tiny_model)], progress=False)
    with pytest.raises(RopeInterpError, match="band fraction"):
        band_shares(stats, fraction=0.8)
