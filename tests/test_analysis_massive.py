"""Massive values on a planted massive dimension."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from rope_interp.analysis.massive import dim_to_pair, massive_values
from rope_interp.core.spec import RotarySpec
from rope_interp.errors import RopeInterpError
from tests.helpers import make_model, random_tokens


def test_planted_massive_dimension_maps_to_its_pair(tiny_model):
    spec = RotarySpec.from_model(tiny_model)
    pair = spec.n_pairs - 1
    dim = int(spec.dims[pair, 1])  # the second member of the lowest-frequency pair
    with torch.no_grad():
        tiny_model.blocks[1].attn.b_Q[1, dim] += 40.0
    tokens = random_tokens(tiny_model, batch=2, pos=12)
    table = massive_values(tiny_model, [tokens], top_k=2, progress=False)
    row = table[
        (table.kind == "q") & (table.layer == 1) & (table["head"] == 1) & (table["rank"] == 0)
    ]
    row = row.iloc[0]
    assert row.dim == dim
    assert row.pair == pair
    assert row.member == 1
    assert row.pair_position == pytest.approx(1.0)
    assert row.theta == pytest.approx(float(spec.thetas[1, pair]))
    assert row.ratio > 5
    # The norm is the sequence 2-norm of that dimension, averaged over sequences.
    _, cache = tiny_model.run_with_cache(tokens, names_filter="blocks.1.attn.hook_q")
    q = cache["blocks.1.attn.hook_q"].double()
    expected = q[:, :, 1, dim].square().sum(1).sqrt().mean()
    assert row.norm == pytest.approx(float(expected), rel=1e-6)
    # v does not rotate: its rows carry no pair.
    assert (table[table.kind == "v"].pair == -1).all()


def test_dim_to_pair_inverts_spec_dims(tiny_model):
    spec = RotarySpec.from_model(tiny_model)
    pair, member = dim_to_pair(spec)
    for i in range(spec.n_pairs):
        assert pair[spec.dims[i, 0]] == i and member[spec.dims[i, 0]] == 0
        assert pair[spec.dims[i, 1]] == i and member[spec.dims[i, 1]] == 1
    assert (pair[spec.rotary_dim :] == -1).all()
    if spec.layout == "interleaved":
        np.testing.assert_array_equal(pair[: spec.rotary_dim].numpy(), np.arange(8) // 2)


def test_bad_top_k_is_refused(tiny_model):
    with pytest.raises(RopeInterpError, match="top_k"):
        massive_values(tiny_model, [random_tokens(tiny_model)], top_k=0, progress=False)


def test_a_bound_spec_is_used_as_it_is_and_gives_the_same_table(tiny_model, monkeypatch):
    tokens = random_tokens(tiny_model, batch=2, pos=12)
    spec = RotarySpec.from_model(tiny_model)
    read = massive_values(tiny_model, [tokens], progress=False)

    def read_again(*args, **kwargs):
        raise AssertionError("the spec was read from the model again")

    monkeypatch.setattr(RotarySpec, "from_model", read_again)
    bound = massive_values(tiny_model, [tokens], progress=False, spec=spec)
    pd.testing.assert_frame_equal(bound, read)


def test_a_spec_of_another_model_is_refused():
    model, twin = make_model("gqa"), make_model("gqa")
    tokens = random_tokens(model, batch=1, pos=8)
    with pytest.raises(RopeInterpError, match="not read from this model"):
        massive_values(twin, [tokens], progress=False, spec=RotarySpec.from_model(model))
