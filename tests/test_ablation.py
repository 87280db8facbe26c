"""Interventions on rotary pairs: reference values, invariances, reversibility, GQA."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from rope_interp.core.spec import RotarySpec
from rope_interp.core.stats import collect_pair_stats
from rope_interp.errors import RopeInterpError
from rope_interp.interventions.ablation import Intervention, attached_hooks, p_rope, position_shift
from rope_interp.interventions.selection import (
    PairSelection,
    select_band,
    select_frame,
    select_pairs,
    select_random,
)
from tests.helpers import (
    HookedTransformer,
    HookedTransformerConfig,
    hooked_only,
    make_model,
    random_tokens,
)


def _scores(model, tokens, fwd_hooks=(), layers=None):
    """hook_attn_scores per layer (masked entries left as the model sets them)."""
    layers = range(model.cfg.n_layers) if layers is None else layers
    out = {}

    def save(x, hook):
        out[hook.layer()] = x.detach().clone()

    hooks = list(fwd_hooks) + [(f"blocks.{i}.attn.hook_attn_scores", save) for i in layers]
    with torch.no_grad():
        model.run_with_hooks(tokens, fwd_hooks=hooks, return_type=None)
    return out


def _causal(n):
    return torch.tril(torch.ones(n, n, dtype=torch.bool))


# ---- p-RoPE reference values (Gemma library test) ------------------------------------------
def _gemma_reference_model():
    cfg = HookedTransformerConfig(
        n_layers=1,
        d_model=4,
        n_heads=1,
        d_head=4,
        n_ctx=8,
        d_vocab=5,
        act_fn="silu",
        normalization_type=None,
        positional_embedding_type="rotary",
        rotary_dim=4,
        rotary_base=100,
        default_prepend_bos=False,
        device="cpu",
    )
    model = HookedTransformer(cfg)
    with torch.no_grad():
        model.blocks[0].attn.W_Q.zero_()
        model.blocks[0].attn.b_Q.fill_(1.0)  # q = all ones at every position
    return model.eval()


@hooked_only
@pytest.mark.parametrize(
    "p, expected",
    [
        (0.5, [-0.30116868, 1.0, 1.3817732, 1.0]),
        (1.0, [-0.30116868, 0.89517075, 1.3817732, 1.0948375]),
    ],
)
def test_p_rope_matches_gemma_reference(p, expected):
    model = _gemma_reference_model()
    got = {}

    def save(x, hook):
        got["rot_q"] = x.detach().clone()

    hooks = p_rope(model, p).hooks() + [("blocks.0.attn.hook_rot_q", save)]
    model.run_with_hooks(torch.tensor([[0, 1, 2]]), fwd_hooks=hooks, return_type=None)
    rot = got["rot_q"][0, :, 0]
    torch.testing.assert_close(rot[0], torch.ones(4))
    torch.testing.assert_close(rot[1], torch.tensor(expected), rtol=1e-6, atol=1e-6)


def test_p_rope_counts_and_reverse():
    model = make_model("ntk_by_parts")  # 8 pairs
    for p, dropped in [(1.0, 0), (0.875, 1), (0.75, 2), (0.5, 4), (0.25, 6), (0.0, 8)]:
        forward = p_rope(model, p).selection.mask[0, 0]
        assert forward.sum() == dropped and bool(forward[8 - dropped :].all())
        reverse = p_rope(model, p, reverse=True).selection.mask[0, 0]
        assert reverse.sum() == dropped and bool(reverse[:dropped].all())
    with pytest.raises(RopeInterpError, match="p must lie"):
        p_rope(model, 1.5)


def test_p_one_changes_nothing(tiny_model):
    tokens = random_tokens(tiny_model)
    with torch.no_grad():
        before = tiny_model(tokens)
        for reverse in (False, True):
            with p_rope(tiny_model, 1.0, reverse=reverse):
                assert torch.equal(tiny_model(tokens), before)


# ---- invariances ---------------------------------------------------------------------------
def test_position_shift_leaves_scores_unchanged(tiny_model):
    tokens = random_tokens(tiny_model, pos=12)
    clean = _scores(tiny_model, tokens)
    shifted = _scores(tiny_model, tokens, position_shift(tiny_model, 7).hooks())
    mask = _causal(12)
    for layer in clean:
        torch.testing.assert_close(
            shifted[layer][..., mask], clean[layer][..., mask], rtol=1e-4, atol=1e-4
        )
    # a one-sided shift does change them (the check is not vacuous)
    q_only = _scores(tiny_model, tokens, position_shift(tiny_model, 7, side="q").hooks())
    assert not torch.allclose(q_only[0][..., mask], clean[0][..., mask], atol=1e-3)


def test_phase_on_q_equals_opposite_phase_on_k(tiny_model):
    spec = RotarySpec.from_model(tiny_model)
    tokens = random_tokens(tiny_model)
    sel = select_pairs(spec, [0, spec.n_pairs - 1])
    a = _scores(tiny_model, tokens, Intervention(tiny_model, sel, "phase", "q", phi=0.7).hooks())
    b = _scores(tiny_model, tokens, Intervention(tiny_model, sel, "phase", "k", phi=-0.7).hooks())
    both = _scores(
        tiny_model, tokens, Intervention(tiny_model, sel, "phase", "both", phi=0.7).hooks()
    )
    clean = _scores(tiny_model, tokens)
    mask = _causal(tokens.shape[1])
    torch.testing.assert_close(a[0][..., mask], b[0][..., mask], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(both[0][..., mask], clean[0][..., mask], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(a[0][..., mask], clean[0][..., mask], atol=1e-3)


def _recorder(got: dict):
    """`save(name)`: a `(name, hook)` pair storing what hook `name` carries in
    got[its last part] (keyed by the name asked for: bridges report aliased `hook.name`s)."""

    def save(name):
        def hook(x, hook):
            got[name.split(".")[-1]] = x.detach().clone()

        return name, hook

    return save


def _hand_scores(q, k, spec, rotate_fn):
    """float64 scores from pre-rotation q [b, p, h, d], k [b, p, kv, d]."""
    k = torch.repeat_interleave(k, spec.group_size, dim=2)
    q, k = rotate_fn(q.double()), rotate_fn(k.double())
    return torch.einsum("bqhd,bkhd->bhqk", q, k) / spec.attn_scale


def test_nope_on_every_pair_equals_unrotated_attention(tiny_model):
    spec = RotarySpec.from_model(tiny_model)
    tokens = random_tokens(tiny_model)
    nope = Intervention(tiny_model, select_pairs(spec, range(spec.n_pairs)), "nope", "both")
    got = {}

    save = _recorder(got)

    hooks = nope.hooks() + [
        save("blocks.1.attn.hook_q"),
        save("blocks.1.attn.hook_k"),
        save("blocks.1.attn.hook_attn_scores"),
    ]
    with torch.no_grad():
        tiny_model.run_with_hooks(tokens, fwd_hooks=hooks, return_type=None)
    expected = _hand_scores(got["hook_q"], got["hook_k"], spec, lambda x: x)
    mask = _causal(tokens.shape[1])
    torch.testing.assert_close(
        got["hook_attn_scores"][..., mask].double(), expected[..., mask], rtol=1e-5, atol=1e-5
    )


def test_zero_matches_float64_reference(tiny_model):
    spec = RotarySpec.from_model(tiny_model)
    tokens = random_tokens(tiny_model)
    zeroed = [0, spec.n_pairs - 1]
    sel = select_pairs(spec, zeroed, layers=0)
    got = {}

    save = _recorder(got)

    clean_hooks = [save("blocks.0.attn.hook_q"), save("blocks.0.attn.hook_k")]
    with torch.no_grad():
        tiny_model.run_with_hooks(tokens, fwd_hooks=clean_hooks, return_type=None)
    q, k = got["hook_q"], got["hook_k"]
    scores = _scores(tiny_model, tokens, Intervention(tiny_model, sel, "zero").hooks(), [0])[0]

    dims = spec.dims
    pos = torch.arange(tokens.shape[1], dtype=torch.float64)
    angle = pos[:, None] * spec.thetas[0][None, :]  # [pos, pair]

    def rotate64(x):
        x = x.clone()
        x[..., dims[zeroed].flatten()] = 0.0
        a, b = x[..., dims[:, 0]], x[..., dims[:, 1]]
        cos, sin = angle.cos()[None, :, None], angle.sin()[None, :, None]
        out = x.clone()
        out[..., dims[:, 0]] = a * cos - b * sin
        out[..., dims[:, 1]] = a * sin + b * cos
        return out

    expected = _hand_scores(q, k, spec, rotate64)
    mask = _causal(tokens.shape[1])
    torch.testing.assert_close(
        scores[..., mask].double(), expected[..., mask], rtol=1e-4, atol=1e-4
    )


def test_mean_mode_sets_pre_rotation_pairs_to_the_corpus_mean():
    model = make_model("gqa")
    spec = RotarySpec.from_model(model)
    stats = collect_pair_stats(model, [random_tokens(model, seed=3)], progress=False)
    sel = select_pairs(spec, [1, 2], layers=1)
    got = {}

    save = _recorder(got)

    with Intervention(model, sel, "mean", "both", stats=stats), torch.no_grad():
        model.run_with_hooks(
            random_tokens(model),
            fwd_hooks=[save("blocks.1.attn.hook_q"), save("blocks.1.attn.hook_k")],
            return_type=None,
        )
    for kind, name in (("q", "hook_q"), ("k", "hook_k")):
        mu = stats.mean_vectors(kind)[1, :, 1]  # [head, ] complex
        x = got[name]
        torch.testing.assert_close(x[..., spec.dims[1, 0]], mu.real.float().expand_as(x[..., 0]))
        torch.testing.assert_close(x[..., spec.dims[1, 1]], mu.imag.float().expand_as(x[..., 0]))
    with pytest.raises(RopeInterpError, match="stats"):
        Intervention(model, sel, "mean")


# ---- reversibility -------------------------------------------------------------------------
def test_every_mode_is_undone_also_after_an_exception(tiny_model):
    spec = RotarySpec.from_model(tiny_model)
    tokens = random_tokens(tiny_model)
    stats = collect_pair_stats(tiny_model, [tokens], progress=False)
    with torch.no_grad():
        before = tiny_model(tokens)
    sel = select_band(spec, "high", k=2)
    for mode in ("zero", "mean", "nope", "phase", "shift"):
        intervention = Intervention(tiny_model, sel, mode, phi=1.0, delta=3, stats=stats)
        with torch.no_grad(), intervention:
            changed = tiny_model(tokens)
        assert not torch.equal(changed, before), mode
        with pytest.raises(KeyError), torch.no_grad(), intervention:
            tiny_model(tokens)
            raise KeyError("interrupted")
        assert attached_hooks(tiny_model) == []
        with torch.no_grad():
            assert torch.equal(tiny_model(tokens), before)


def test_composes_with_user_hooks(tiny_model):
    spec = RotarySpec.from_model(tiny_model)
    tokens = random_tokens(tiny_model)
    seen = []
    user = [("blocks.0.hook_resid_pre", lambda x, hook: seen.append(1))]
    with torch.no_grad():
        zeroed = tiny_model.run_with_hooks(
            tokens, fwd_hooks=Intervention(tiny_model, select_pairs(spec, 0)).hooks() + user
        )
        with Intervention(tiny_model, select_pairs(spec, 0)):
            assert torch.equal(tiny_model(tokens), zeroed)
    assert seen == [1]
    assert attached_hooks(tiny_model) == []


# ---- GQA and selections ----------------------------------------------------------------------
def test_gqa_k_side_needs_whole_groups():
    model = make_model("gqa")  # 4 query heads, 2 KV heads
    spec = RotarySpec.from_model(model)
    partial = select_pairs(spec, [0], heads=[0])
    with pytest.raises(RopeInterpError, match="share KV head 0"):
        Intervention(model, partial, "zero", "both")
    Intervention(model, partial, "zero", "q")  # fine: queries are per head
    tokens = random_tokens(model)
    clean = _scores(model, tokens)
    group = _scores(
        model, tokens, Intervention(model, select_pairs(spec, [0], heads=[0, 1]), side="k").hooks()
    )
    # the k-side ablation of KV head 0 hits query heads 0 and 1 and nothing else
    assert not torch.equal(group[0][:, 0], clean[0][:, 0])
    assert not torch.equal(group[0][:, 1], clean[0][:, 1])
    assert torch.equal(group[0][:, 2:], clean[0][:, 2:])


def test_selections():
    model = make_model("gqa")
    spec = RotarySpec.from_model(model)  # 2 layers, 4 heads, 4 pairs
    high = select_band(spec, "high", k=2, layers=[1])
    assert high.n_selected == 1 * 4 * 2 and high.layers() == [1]
    assert bool(high.mask[1, :, :2].all())
    low = select_band(spec, "low", fraction=0.25)
    assert bool(low.mask[..., 3].all()) and low.n_selected == 2 * 4
    rand = select_random(spec, high, seed=1)
    assert torch.equal(rand.mask.sum(-1), high.mask.sum(-1))
    assert torch.equal(select_random(spec, high, seed=1).mask, rand.mask)
    Intervention(model, rand, side="both")  # same pairs across each KV group
    frame = pd.DataFrame({"kind": ["k", "q"], "layer": [0, 1], "head": [1, 3], "pair": [2, 0]})
    picked = select_frame(spec, frame)
    assert picked.to_frame().values.tolist() == [[0, 2, 2], [0, 3, 2], [1, 3, 0]]
    assert isinstance(high | low, PairSelection)
    with pytest.raises(RopeInterpError, match="pair 9"):
        select_pairs(spec, 9)
    with pytest.raises(RopeInterpError, match="exactly one"):
        select_band(spec, "high")
    with pytest.raises(RopeInterpError, match="column"):
        select_frame(spec, pd.DataFrame({"layer": [0]}))
    with pytest.raises(RopeInterpError, match="mode"):
        Intervention(model, high, "scramble")


def test_shift_off_the_table_raises():
    model = make_model("half_full")  # n_ctx 64
    tokens = random_tokens(model, pos=12)
    with pytest.raises(RopeInterpError, match="Positions must lie"), torch.no_grad():
        model.run_with_hooks(tokens, fwd_hooks=position_shift(model, 60).hooks())
    assert attached_hooks(model) == []
    with torch.no_grad():
        assert math.isfinite(float(model(tokens).sum()))


def test_an_intervention_refuses_the_spec_of_another_model():
    model, twin = make_model("gqa"), make_model("gqa")
    spec = RotarySpec.from_model(model)
    with pytest.raises(RopeInterpError, match="not read from this model"):
        Intervention(twin, select_band(spec, "high", k=1), "zero", spec=spec)
    with pytest.raises(RopeInterpError, match="not read from this model"):
        p_rope(twin, 0.5, spec=spec)
