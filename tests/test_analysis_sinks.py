"""Attention sinks on a planted sink head built by the lowest-frequency pair."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rope_interp.analysis.sinks import attention_sinks
from rope_interp.core.capturing import capture
from rope_interp.core.pairs import score_contributions
from rope_interp.core.spec import RotarySpec
from tests.helpers import make_model, random_tokens
from tests.test_analysis_planting import plant_sink, sink_tokens


@pytest.mark.parametrize("name", ["half_full", "interleaved_partial", "gqa"])
def test_planted_sink_is_found_and_made_by_its_pair(name):
    model = make_model(name)
    pair = plant_sink(model, layer=0, head=0)
    tokens = sink_tokens(model, pos=16)
    result = attention_sinks(model, [tokens], band_fraction=0.25, progress=False)
    heads = result.heads.set_index(["layer", "head"])
    row = heads.loc[(0, 0)]
    assert row.is_sink
    assert row.importance > 0.99
    assert row.first_mass > 0.99
    assert row.top_pair == pair
    assert row.low_margin_fraction == pytest.approx(1.0)
    assert row.margin_pass == pytest.approx(0.0, abs=1e-9)
    pairs = result.pairs.set_index(["layer", "head", "pair"])
    assert pairs.loc[(0, 0, pair)].margin_fraction == pytest.approx(1.0)
    assert pairs.loc[(0, 0, pair)].margin > 10


def test_importance_matches_gu_definition(tiny_model):
    """Importance of key 0 = mean over all queries of A[i, 0] (Gu et al.), from the cache."""
    tokens = random_tokens(tiny_model, batch=3, pos=10)
    result = attention_sinks(tiny_model, [tokens], threshold=0.3, progress=False)
    _, cache = tiny_model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    for layer in range(tiny_model.cfg.n_layers):
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"].double()
        expected = pattern[:, :, :, 0].mean((0, 2))
        got = result.heads[result.heads.layer == layer].sort_values("head")
        np.testing.assert_allclose(got.importance.to_numpy(), expected.numpy(), rtol=1e-6)
        np.testing.assert_array_equal(got.is_sink.to_numpy(), (expected > 0.3).numpy())
        first_mass = pattern[:, :, 1:, 0].mean((0, 2))
        np.testing.assert_allclose(got.first_mass.to_numpy(), first_mass.numpy(), rtol=1e-6)


def test_first_token_margins_equal_score_contributions(tiny_model):
    spec = RotarySpec.from_model(tiny_model)
    tokens = random_tokens(tiny_model, batch=2, pos=12)
    result = attention_sinks(tiny_model, [tokens], layers=1, progress=False)
    cap = capture(tiny_model, tokens, layers=1, kinds=("q", "k"))
    contrib, _ = score_contributions(cap.q(1), cap.k(1), spec, 1, dtype=torch.float64)
    n = tokens.shape[1]
    others = torch.ones(n, n, dtype=torch.float64).tril()
    others[:, 0] = 0
    mean_other = (contrib * others[..., None]).sum(3) / others.sum(1).clamp(min=1)[:, None]
    expected = (contrib[:, :, 1:, 0] - mean_other[:, :, 1:]).mean((0, 2))
    got = result.pairs.pivot(index="head", columns="pair", values="margin")
    np.testing.assert_allclose(got.to_numpy(), expected.numpy(), rtol=1e-6, atol=1e-9)
