"""Positional heads on a planted previous-token head; the per-pair margins are checked against
an independent computation from `score_contributions`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rope_interp.analysis.positional import positional_heads
from rope_interp.core.capturing import capture
from rope_interp.core.pairs import score_contributions
from rope_interp.core.spec import RotarySpec
from rope_interp.errors import RopeInterpError
from tests.helpers import random_tokens
from tests.test_analysis_planting import plant_previous_token_head


def test_planted_previous_token_head_is_found_and_explained(tiny_model):
    plant_previous_token_head(tiny_model, layer=0, head=0)
    tokens = random_tokens(tiny_model, batch=2, pos=16)
    result = positional_heads(tiny_model, [tokens], offsets=(0, 1, 2), progress=False)
    heads = result.heads.set_index(["layer", "head", "offset"])
    prev = heads.loc[(0, 0, 1)]
    assert prev.attn > 0.99
    assert heads.loc[(0, 0, 0)].attn < 0.01
    assert heads.loc[(0, 0, 2)].attn < 0.01
    assert prev.top_pair == 0
    assert prev.margin > 50  # norm² (1 − mean cos)/scale is large
    assert prev.margin_pass == pytest.approx(0.0, abs=1e-9)
    assert prev.qk_high_share == pytest.approx(1.0)
    assert prev.high_margin_fraction == pytest.approx(1.0)
    pairs = result.pairs.set_index(["layer", "head", "offset", "pair"])
    assert pairs.loc[(0, 0, 1, 0)].margin_fraction == pytest.approx(1.0)
    # Pair 0's score term at Δ = 1 is norm²·cos(0)/attn_scale.
    spec = RotarySpec.from_model(tiny_model)
    assert pairs.loc[(0, 0, 1, 0)].score == pytest.approx(900 / spec.attn_scale, rel=1e-5)
    # A random head of layer 1 is not a previous-token head.
    assert heads.loc[(1, 1, 1)].attn < 0.9


def test_margins_equal_score_contributions(tiny_model):
    """The O(pos) cumulative-sum margins equal those from the full decomposition."""
    spec = RotarySpec.from_model(tiny_model)
    tokens = random_tokens(tiny_model, batch=2, pos=14)
    result = positional_heads(tiny_model, [tokens], offsets=(0, 3), layers=1, progress=False)
    cap = capture(tiny_model, tokens, layers=1, kinds=("q", "k"))
    contrib, pass_through = score_contributions(cap.q(1), cap.k(1), spec, 1, dtype=torch.float64)
    n = tokens.shape[1]
    causal = torch.ones(n, n, dtype=torch.float64).tril()
    row_mean = (contrib * causal[..., None]).sum(3) / causal.sum(1)[:, None]
    row_mean_pass = (pass_through * causal).sum(3) / causal.sum(1)
    for d in (0, 3):
        m = torch.arange(max(d, 1), n)
        expected = (contrib[:, :, m, m - d] - row_mean[:, :, m]).mean((0, 2))  # [head, pair]
        got = result.pairs[result.pairs.offset == d].pivot(
            index="head", columns="pair", values="margin"
        )
        np.testing.assert_allclose(got.to_numpy(), expected.numpy(), rtol=1e-6, atol=1e-9)
        expected_total = expected.sum(-1) + (
            pass_through[:, :, m, m - d] - row_mean_pass[:, :, m]
        ).mean((0, 2))
        got_total = result.heads[result.heads.offset == d].sort_values("head").margin
        np.testing.assert_allclose(got_total.to_numpy(), expected_total.numpy(), rtol=1e-6)


def test_attention_at_offsets_matches_the_pattern(tiny_model):
    tokens = random_tokens(tiny_model, batch=2, pos=12)
    result = positional_heads(tiny_model, [tokens], offsets=(1,), layers=0, progress=False)
    _, cache = tiny_model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_pattern")
    pattern = cache["blocks.0.attn.hook_pattern"].double()
    m = torch.arange(1, 12)
    expected = pattern[:, :, m, m - 1].mean((0, 2))
    got = result.heads.sort_values("head").attn.to_numpy()
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-6)


def test_negative_offsets_are_refused(tiny_model):
    with pytest.raises(RopeInterpError, match="non-negative"):
        positional_heads(tiny_model, [random_tokens(tiny_model)], offsets=(-1,), progress=False)
