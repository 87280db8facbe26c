"""The backend layer: on models with a QK-norm or clip between hook_q/hook_k and RoPE, every
consumer gets the vectors that really enter the rotation; soft-capped logits are decomposed
before the cap; what cannot be decomposed exactly is refused. Every expected value comes from
TransformerLens itself (hook_attn_scores, the layer's own apply_rotary) or from a norm written
out here, not from rope-interp."""

from __future__ import annotations

import math

import pytest
import torch
from transformer_lens.utilities.activation_functions import apply_softcap

from rope_interp.core.backends import HookedBackend, backend_for
from rope_interp.core.capturing import capture, from_cache
from rope_interp.core.pairs import score_contributions
from rope_interp.core.spec import RotarySpec
from rope_interp.core.stats import collect_pair_stats
from rope_interp.errors import UnsupportedModel
from rope_interp.interventions.ablation import Intervention
from rope_interp.interventions.selection import select_pairs
from tests.helpers import make_model, random_tokens

NORMED = ("qk_norm", "olmo2_norm", "clip_qkv")


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def _independent_pre_rotation(model, kind: str, layer: int, raw: torch.Tensor) -> torch.Tensor:
    """What enters the rotation, written out from the architectures' definitions."""
    cfg, attn = model.cfg, model.blocks[layer].attn
    norm = attn.q_norm if kind == "q" else attn.k_norm
    if cfg.use_qk_norm:
        return _rms(raw, norm.w, cfg.eps)
    if cfg.original_architecture == "Olmo2ForCausalLM":
        flat = raw.flatten(-2)
        return _rms(flat, norm.w, cfg.eps).view_as(raw)
    return raw.clamp(-cfg.clip_qkv, cfg.clip_qkv)


def _scores(model, rot_q, rot_k):
    """Causal-masked q·k / attn_scale (then soft-capped), as hook_attn_scores carries it."""
    group = rot_q.shape[2] // rot_k.shape[2]
    rot_k = rot_k.repeat_interleave(group, dim=2)
    s = torch.einsum("bqhd,bkhd->bhqk", rot_q, rot_k) / model.blocks[0].attn.attn_scale
    return apply_softcap(s, model.cfg.attn_scores_soft_cap)


def _causal(n: int) -> torch.Tensor:
    return torch.ones(n, n, dtype=torch.bool).tril()


@pytest.mark.parametrize("name", NORMED)
def test_captured_q_k_are_what_enters_the_rotation(name):
    model = make_model(name)
    tokens = random_tokens(model)
    _, cache = model.run_with_cache(tokens)
    got = capture(model, tokens)
    cached = from_cache(cache)
    attn = model.blocks[0].attn
    assert not backend_for(model).pre_rotation_is_hooked(0)
    for layer in range(model.cfg.n_layers):
        for kind in ("q", "k"):
            raw = cache[f"blocks.{layer}.attn.hook_{kind}"]
            expected = _independent_pre_rotation(model, kind, layer, raw)
            torch.testing.assert_close(got[(kind, layer)], expected, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(cached[(kind, layer)], expected, rtol=1e-5, atol=1e-6)
            assert (got[(kind, layer)] - raw).abs().max() > 1e-3  # the hook is not the answer
            rotated = model.blocks[layer].attn.apply_rotary(got[(kind, layer)])
            torch.testing.assert_close(rotated, cache[f"blocks.{layer}.attn.hook_rot_{kind}"])
    assert attn is model.blocks[0].attn


@pytest.mark.parametrize("name", (*NORMED, "soft_cap"))
def test_pairs_plus_pass_through_give_the_hosts_attention_scores(name):
    model = make_model(name)
    tokens = random_tokens(model, pos=10)
    _, cache = model.run_with_cache(tokens)
    got = capture(model, tokens, kinds=("q", "k"))
    spec = RotarySpec.from_model(model)
    mask = _causal(tokens.shape[1])
    for layer in range(spec.n_layers):
        parts, passed = score_contributions(
            got.q(layer), got.k(layer), spec, layer, dtype=torch.float64
        )
        logit = parts.sum(-1) + passed
        host = cache[f"blocks.{layer}.attn.hook_attn_scores"].double()
        capped = apply_softcap(logit, model.cfg.attn_scores_soft_cap)
        rel = ((capped - host).abs()[..., mask].max() / host[..., mask].abs().max()).item()
        assert rel < 1e-5, rel
        if name == "soft_cap":  # the cap bites: the pre-cap logit is not the score
            assert (logit - host).abs()[..., mask].max() > 0.1
            assert backend_for(model).soft_cap() == 2.0


def _with_edit(model, tokens, intervention, layer=0):
    seen = {}

    def keep(x, hook):
        seen["scores"] = x.detach().clone()

    hooks = intervention.hooks() + [(f"blocks.{layer}.attn.hook_attn_scores", keep)]
    model.run_with_hooks(tokens, fwd_hooks=hooks, return_type=None)
    return seen["scores"]


@pytest.mark.parametrize("name", NORMED)
@pytest.mark.parametrize("mode", ["zero", "mean", "nope", "phase", "shift"])
def test_every_ablation_mode_acts_on_the_post_norm_vectors(name, mode):
    model = make_model(name)
    tokens = random_tokens(model, pos=10)
    spec = RotarySpec.from_model(model)
    _, cache = model.run_with_cache(tokens)
    pre_q = _independent_pre_rotation(model, "q", 0, cache["blocks.0.attn.hook_q"])
    pre_k = _independent_pre_rotation(model, "k", 0, cache["blocks.0.attn.hook_k"])
    pair = 1
    a, b = spec.dims[pair].tolist()
    selection = select_pairs(spec, pair, layers=0)
    stats = collect_pair_stats(model, [tokens], layers=[0], progress=False)
    phi, delta = 0.7, 3
    side = "q" if mode in ("phase", "shift") else "both"  # on both sides these cancel
    intervention = Intervention(
        model, selection, mode=mode, side=side, phi=phi, delta=delta, stats=stats
    )
    attn = model.blocks[0].attn
    if mode == "zero":

        def edit(x, kind):
            x[..., [a, b]] = 0.0
            return x

        rq, rk = (
            attn.apply_rotary(edit(pre_q.clone(), "q")),
            attn.apply_rotary(edit(pre_k.clone(), "k")),
        )
    elif mode == "mean":
        means = {kind: stats.mean_vectors(kind)[0][:, pair] for kind in ("q", "k")}

        def edit(x, kind):
            mu = means[kind].to(x.dtype if x.is_complex() else torch.complex64)
            x[..., a] = mu.real.to(x.dtype)
            x[..., b] = mu.imag.to(x.dtype)
            return x

        rq, rk = (
            attn.apply_rotary(edit(pre_q.clone(), "q")),
            attn.apply_rotary(edit(pre_k.clone(), "k")),
        )
    elif mode == "nope":
        rq, rk = attn.apply_rotary(pre_q), attn.apply_rotary(pre_k)
        rq[..., [a, b]], rk[..., [a, b]] = pre_q[..., [a, b]], pre_k[..., [a, b]]
    elif mode == "phase":
        rq, rk = attn.apply_rotary(pre_q), attn.apply_rotary(pre_k)
        x, y = rq[..., a].clone(), rq[..., b].clone()
        rq[..., a] = x * math.cos(phi) - y * math.sin(phi)
        rq[..., b] = x * math.sin(phi) + y * math.cos(phi)
    else:  # shift: the model's own rotation at positions p + Δ (its KV-cache offset)
        rq, rk = attn.apply_rotary(pre_q), attn.apply_rotary(pre_k)
        rq[..., [a, b]] = attn.apply_rotary(pre_q, delta)[..., [a, b]]
    expected = _scores(model, rq, rk)
    got = _with_edit(model, tokens, intervention)
    clean = cache["blocks.0.attn.hook_attn_scores"]
    mask = _causal(tokens.shape[1])
    torch.testing.assert_close(got[..., mask], expected[..., mask], rtol=1e-4, atol=1e-5)
    assert (got - clean)[..., mask].abs().max() > 1e-4


@pytest.mark.parametrize(
    "overrides, reason",
    [
        (dict(use_attention_sinks=True), "attention sinks"),
        (dict(use_logn_attn=True), "log-n"),
        (dict(use_dynamic_ntk_rope=True), "dynamic NTK"),
        (dict(positional_embedding_type="standard"), "no rotary attention"),
    ],
)
def test_what_cannot_be_decomposed_exactly_is_refused_with_the_reason(overrides, reason):
    model = make_model("half_full", **overrides)
    with pytest.raises(UnsupportedModel, match=reason):
        RotarySpec.from_model(model)
    with pytest.raises(UnsupportedModel, match=reason):
        capture(model, random_tokens(model))


def test_one_backend_per_model():
    model = make_model("gqa")
    assert backend_for(model) is backend_for(model)
    assert isinstance(backend_for(model), HookedBackend)
    assert backend_for(model).pre_rotation_is_hooked(0)
