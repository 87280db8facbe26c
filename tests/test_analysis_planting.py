"""Planting known structure into tiny rotary models, for the analysis tests; plus the checks
that the planting does what it says (and that TransformerLens's sign convention is the one
docs/theory.md derives)."""

from __future__ import annotations

import cmath
import math

import pytest
import torch

from rope_interp.core.capturing import capture
from rope_interp.core.pairs import to_pairs
from rope_interp.core.spec import RotarySpec
from tests.helpers import make_model


def k_params(attn):
    """(W_K, b_K) as stored parameters (per KV head under GQA)."""
    if hasattr(attn, "_W_K"):
        return attn._W_K, attn._b_K
    return attn.W_K, attn.b_K


def set_constant_pair(model, layer: int, head: int, pair: int, zq: complex, zk: complex) -> None:
    """Make q of `head` the constant zq in `pair` (zero everywhere else) and k of its KV head the
    constant zk in `pair`: weights zeroed, biases set. Other heads are left alone."""
    spec = RotarySpec.from_model(model, check_config=False)
    a, b = (int(d) for d in spec.dims[pair])
    attn = model.blocks[layer].attn
    w_k, b_k = k_params(attn)
    kv = spec.kv_head(head)
    with torch.no_grad():
        attn.W_Q[head].zero_()
        attn.b_Q[head].zero_()
        attn.b_Q[head, a], attn.b_Q[head, b] = zq.real, zq.imag
        w_k[kv].zero_()
        b_k[kv].zero_()
        b_k[kv, a], b_k[kv, b] = zk.real, zk.imag


def plant_previous_token_head(model, layer: int = 0, head: int = 0, norm: float = 30.0) -> None:
    """Head `head` becomes a previous-token head that uses only pair 0: constant q = norm and
    k = norm·e^{iθ_0}, so α = −θ_0 and the score term norm²·cos((Δ − 1)θ_0) peaks at Δ = 1."""
    spec = RotarySpec.from_model(model, check_config=False)
    theta = float(spec.thetas[layer, 0])
    set_constant_pair(model, layer, head, 0, complex(norm), norm * cmath.exp(1j * theta))


def plant_sink(model, layer: int = 0, head: int = 0, q_norm: float = 10.0, k_gain: float = 3.0):
    """Head `head` gets a first-token sink built only by the lowest-frequency pair: token 0 alone
    has embedding direction 0, the KV head's k reads that direction into the last pair, and q is
    a constant aligned with it (α = 0, cos(Δθ) > 0 over short contexts). Put token 0 at position
    0 and nowhere else. Returns the pair."""
    spec = RotarySpec.from_model(model, check_config=False)
    pair = spec.n_pairs - 1
    set_constant_pair(model, layer, head, pair, complex(q_norm), 0j)
    a, _ = (int(d) for d in spec.dims[pair])
    w_k, _ = k_params(model.blocks[layer].attn)
    with torch.no_grad():
        model.W_E[:, 0] = 0.0
        model.W_E[0] = 0.0
        model.W_E[0, 0] = 1.0
        w_k[spec.kv_head(head)][0, a] = k_gain
    return pair


def sink_tokens(model, batch: int = 2, pos: int = 16, seed: int = 3):
    """Random tokens from 1..d_vocab−1 with token 0 at position 0 only."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, model.cfg.d_vocab, (batch, pos), generator=generator)
    tokens[:, 0] = 0
    return tokens


def test_tl_rotation_sign_convention(tiny_model):
    """TransformerLens rotates z = x_a + i x_b by e^{+ipθ}: the rotated pair dot product of a
    query at m and a key at n equals |z_q||z_k|cos(α + (m−n)θ) with α = ∠z_q − ∠z_k. This is the
    convention the bounds in docs/theory.md rest on; with e^{−ipθ} the sign of Δθ would flip."""
    spec = RotarySpec.from_model(tiny_model)
    tokens = torch.randint(
        0, tiny_model.cfg.d_vocab, (1, 20), generator=torch.Generator().manual_seed(5)
    )
    cap = capture(tiny_model, tokens, layers=0)
    zq, _ = to_pairs(cap.q(0).double(), spec)
    zk, _ = to_pairs(cap.k(0).double(), spec)
    rq, _ = to_pairs(cap.rot_q(0).double(), spec)
    rk, _ = to_pairs(cap.rot_k(0).double(), spec)
    kv = spec.kv_head(0)
    theta = spec.thetas[0].double()
    for m, n in ((7, 2), (19, 0), (11, 11)):
        measured = (rq[0, m, 0] * rk[0, n, kv].conj()).real
        alpha = zq[0, m, 0].angle() - zk[0, n, kv].angle()
        predicted = zq[0, m, 0].abs() * zk[0, n, kv].abs() * torch.cos(alpha + (m - n) * theta)
        torch.testing.assert_close(measured, predicted, rtol=1e-4, atol=1e-5)
        if m != n:  # the opposite convention gives a different number
            wrong = zq[0, m, 0].abs() * zk[0, n, kv].abs() * torch.cos(alpha - (m - n) * theta)
            assert (wrong - measured).abs().max() > 1e-3


def test_planted_previous_token_head_attends_to_previous_token():
    model = make_model("half_full")
    plant_previous_token_head(model)
    tokens = torch.randint(0, 50, (2, 16), generator=torch.Generator().manual_seed(0))
    _, cache = model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_pattern")
    pattern = cache["blocks.0.attn.hook_pattern"][:, 0]
    m = torch.arange(1, 16)
    assert pattern[:, m, m - 1].min() > 0.99


@pytest.mark.parametrize("name", ["half_full", "gqa"])
def test_planted_sink_attends_to_first_token(name):
    model = make_model(name)
    plant_sink(model)
    _, cache = model.run_with_cache(sink_tokens(model), names_filter="blocks.0.attn.hook_pattern")
    assert cache["blocks.0.attn.hook_pattern"][:, 0, :, 0].min() > 0.99
    assert math.isfinite(float(cache["blocks.0.attn.hook_pattern"].sum()))
