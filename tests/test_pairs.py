import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rope_interp.core.capturing import capture
from rope_interp.core.pairs import (
    expand_kv_heads,
    from_pairs,
    pair_angles,
    pair_norms,
    rotate,
    score_contributions,
    to_pairs,
)
from rope_interp.core.spec import RotarySpec
from rope_interp.errors import RopeInterpError
from tests.helpers import FIXTURES, make_model, random_tokens

_SPECS = {name: RotarySpec.from_model(make_model(name)) for name in FIXTURES}


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(sorted(FIXTURES)), seed=st.integers(0, 10_000))
def test_round_trip_is_exact(name, seed):
    spec = _SPECS[name]
    x = torch.randn(3, 5, spec.d_head, generator=torch.Generator().manual_seed(seed))
    z, x_pass = to_pairs(x, spec)
    assert z.shape == (3, 5, spec.n_pairs) and x_pass.shape == (3, 5, spec.n_pass)
    assert torch.equal(from_pairs(z, x_pass, spec), x)
    torch.testing.assert_close(pair_norms(x, spec) * torch.cos(pair_angles(x, spec)), z.real)


def test_pairs_follow_the_layout():
    spec = _SPECS["interleaved_partial"]
    x = torch.arange(16.0)
    z, x_pass = to_pairs(x, spec)
    assert z.tolist() == [complex(0, 1), complex(2, 3), complex(4, 5), complex(6, 7)]
    assert x_pass.tolist() == list(range(8, 16))
    z, _ = to_pairs(torch.arange(8.0), _SPECS["half_full"])
    assert z.tolist() == [complex(0, 4), complex(1, 5), complex(2, 6), complex(3, 7)]


def test_rotate_matches_transformer_lens(tiny_model):
    spec = RotarySpec.from_model(tiny_model)
    cap = capture(tiny_model, random_tokens(tiny_model, pos=20))
    for layer in cap.layers():
        torch.testing.assert_close(rotate(cap.q(layer), spec, layer), cap.rot_q(layer))
        torch.testing.assert_close(rotate(cap.k(layer), spec, layer), cap.rot_k(layer))


def _attn_scores(model, tokens):
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_attn_scores"))
    return cache


def test_pair_scores_sum_to_transformer_lens_scores(tiny_model):
    spec = RotarySpec.from_model(tiny_model)
    tokens = random_tokens(tiny_model, pos=24)
    cap = capture(tiny_model, tokens)
    cache = _attn_scores(tiny_model, tokens)
    causal = torch.tril(torch.ones(24, 24, dtype=torch.bool))
    for layer in cap.layers():
        per_pair, pass_through = score_contributions(cap.q(layer), cap.k(layer), spec, layer)
        assert per_pair.shape == (2, spec.n_heads, 24, 24, spec.n_pairs)
        total = (per_pair.sum(-1) + pass_through)[..., causal]
        reference = cache[f"blocks.{layer}.attn.hook_attn_scores"][..., causal]
        rel = (total - reference).abs().max() / reference.abs().max()
        assert rel < 1e-5
        if spec.n_pass == 0:
            assert torch.equal(pass_through, torch.zeros_like(pass_through))
        else:
            assert pass_through.abs().max() > 0.01


def test_each_pair_matches_a_float64_reference_from_rotated_vectors(tiny_model):
    spec = RotarySpec.from_model(tiny_model)
    cap = capture(tiny_model, random_tokens(tiny_model, pos=16))
    for layer in cap.layers():
        per_pair, _ = score_contributions(
            cap.q(layer), cap.k(layer), spec, layer, dtype=torch.float64
        )
        rot_q = cap.rot_q(layer).double()
        rot_k = expand_kv_heads(cap.rot_k(layer).double(), spec.n_heads)
        for pair, (a, b) in enumerate(spec.dims.tolist()):
            reference = torch.einsum("bqh,bkh->bhqk", rot_q[..., a], rot_k[..., a])
            reference += torch.einsum("bqh,bkh->bhqk", rot_q[..., b], rot_k[..., b])
            torch.testing.assert_close(
                per_pair[..., pair], reference / spec.attn_scale, rtol=1e-5, atol=1e-6
            )


def test_polar_form_with_thetas(tiny_model):
    """|q||k|cos(α + Δθ) from pre-rotation vectors and θ_i alone (no cos/sin tables)."""
    spec = RotarySpec.from_model(tiny_model)
    cap = capture(tiny_model, random_tokens(tiny_model, batch=1, pos=10))
    zq, _ = to_pairs(cap.q(0).double(), spec)
    zk, _ = to_pairs(expand_kv_heads(cap.k(0), spec.n_heads).double(), spec)
    m, n = 7, 3
    alpha = zq[0, m].angle() - zk[0, n].angle()
    polar = zq[0, m].abs() * zk[0, n].abs() * torch.cos(alpha + (m - n) * spec.thetas[0])
    per_pair, _ = score_contributions(cap.q(0), cap.k(0), spec, 0, dtype=torch.float64)
    # The model's cos/sin tables are float32: agreement to ~1e-6, not to float64 precision.
    torch.testing.assert_close(per_pair[0, :, m, n], polar / spec.attn_scale, rtol=1e-5, atol=1e-6)


def test_wrong_layout_keeps_the_sum_but_scrambles_pairs():
    spec = RotarySpec.from_model(make_model("half_full"))
    wrong = dataclasses.replace(spec, layout="interleaved")
    model = make_model("half_full")
    cap = capture(model, random_tokens(model, pos=12), layers=0)
    # Rotating with the wrong layout no longer reproduces the model's rotated vectors...
    assert not torch.allclose(rotate(cap.q(0), wrong, 0), cap.rot_q(0), atol=1e-3)
    right, _ = score_contributions(cap.q(0), cap.k(0), spec, 0)
    scrambled, _ = score_contributions(cap.rot_q(0), cap.rot_k(0), wrong, 0)
    # ... and per-pair values differ even where a sum over pairs might look plausible.
    assert (right - scrambled).abs().max() > 0.1


def test_bands_positions_and_chunks_agree_with_the_full_decomposition(tiny_model):
    spec = RotarySpec.from_model(tiny_model)
    cap = capture(tiny_model, random_tokens(tiny_model, pos=20), layers=1)
    q, k = cap.q(1), cap.k(1)
    full, full_pass = score_contributions(q, k, spec, 1)
    half = spec.n_pairs // 2
    bands = [list(range(half)), list(range(half, spec.n_pairs))]
    banded, _ = score_contributions(q, k, spec, 1, bands=bands, chunk_size=3)
    torch.testing.assert_close(banded[..., 0], full[..., :half].sum(-1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(banded[..., 1], full[..., half:].sum(-1), rtol=1e-5, atol=1e-6)
    # A slice of queries and keys at their true positions gives the same block.
    sliced, sliced_pass = score_contributions(
        q[:, 10:15],
        k[:, 2:6],
        spec,
        1,
        query_positions=torch.arange(10, 15),
        key_positions=torch.arange(2, 6),
    )
    torch.testing.assert_close(sliced, full[:, :, 10:15, 2:6], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sliced_pass, full_pass[:, :, 10:15, 2:6])


def test_bad_inputs_are_clear_errors():
    spec = _SPECS["half_full"]
    with pytest.raises(RopeInterpError, match="d_head=8"):
        to_pairs(torch.zeros(2, 6), spec)
    q = torch.zeros(1, 4, 4, 8)
    with pytest.raises(RopeInterpError, match="query_positions"):
        score_contributions(q, q, spec, 0, query_positions=torch.arange(3))
    with pytest.raises(RopeInterpError, match="Band 0"):
        score_contributions(q, q, spec, 0, bands=[[0, 9]])
    with pytest.raises(RopeInterpError, match="cannot share"):
        expand_kv_heads(torch.zeros(1, 2, 3, 8), 4)
