"""Massive activations of the residual stream, against an independent run_with_cache."""

import pytest
import torch

from rope_interp.analysis.activations import massive_activations
from rope_interp.errors import RopeInterpError
from rope_interp.testing import make_model, random_tokens


@pytest.fixture(scope="module")
def model():
    return make_model("half_full")


def _reference(model, batches, min_value, min_ratio):
    """Per layer: max |h|, massive count and per-batch thresholds, from the cache."""
    out = {}
    for tokens in batches:
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: "resid_post" in n)
        for layer in range(model.cfg.n_layers):
            h = cache[f"blocks.{layer}.hook_resid_post"].abs().double()
            threshold = max(min_value, min_ratio * float(h.float().median()))
            row = out.setdefault(layer, {"max": 0.0, "n": 0, "all": []})
            row["max"] = max(row["max"], float(h.max()))
            row["n"] += int((h > threshold).sum())
            row["all"].append(h.flatten())
    return out


def test_counts_and_top_entries_match_the_cache(model):
    batches = [random_tokens(model, 2, 12, seed=1), random_tokens(model, 3, 12, seed=2)]
    result = massive_activations(model, batches, min_value=0.0, min_ratio=2.0, top_k=5)
    reference = _reference(model, batches, 0.0, 2.0)
    assert list(result.layers["layer"]) == list(range(model.cfg.n_layers))
    for row in result.layers.itertuples():
        ref = reference[row.layer]
        assert row.max_abs == pytest.approx(ref["max"], rel=1e-6)
        assert row.n_massive == ref["n"] > 0
        top = torch.cat(ref["all"]).topk(5).values
        mine = result.top[result.top["layer"] == row.layer]["abs"].to_numpy()
        assert mine == pytest.approx(top.numpy(), rel=1e-6)


def test_a_planted_massive_activation_is_found_at_its_dim_and_tokens(model):
    planted = make_model("half_full")
    token, dim = 7, 3
    with torch.no_grad():
        planted.W_E[token, dim] = 1e4
    tokens = random_tokens(planted, 4, 16, seed=3)
    tokens[tokens == token] = token + 1
    tokens[:, 0] = token  # the first position of every sequence
    tokens[1, 5] = token
    result = massive_activations(planted, [tokens[:3], tokens[3:]], min_ratio=100.0)
    for row in result.layers.itertuples():
        assert row.dims == (dim,)
        assert row.n_massive == row.n_tokens == 5
        assert row.first_position_share == pytest.approx(4 / 5)
    top = result.top[(result.top["layer"] == 0) & (result.top["rank"] < 5)]
    assert set(zip(top["sequence"], top["position"], strict=True)) == {
        (0, 0),
        (1, 0),
        (2, 0),
        (3, 0),
        (1, 5),
    }
    # Tokens are reported as text where the model has a tokenizer (the bridges), else as ids.
    text = str(token) if planted.tokenizer is None else planted.tokenizer.decode([token])
    assert set(top["dim"]) == {dim} and set(top["token"]) == {text}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(min_value=-1.0), "min_value and min_ratio"),
        (dict(min_ratio=float("nan")), "min_value and min_ratio"),
        (dict(top_k=0), "top_k"),
        (dict(layers=[99]), "layer"),
    ],
)
def test_bad_arguments_are_refused_before_any_forward(model, kwargs, match):
    with pytest.raises(RopeInterpError, match=match):
        massive_activations(model, [random_tokens(model)], **kwargs)
