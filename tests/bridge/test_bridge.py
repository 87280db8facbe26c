"""rope-interp on TransformerLens 4 `TransformerBridge`s around tiny random transformers models.

Every expected value comes from the wrapped HF model's own code (its rotary module, its
apply_rotary_pos_emb, the q/k its attention function receives), not from rope-interp.
"""

from __future__ import annotations

import dataclasses
import math
import sys

import pytest
import torch

from rope_interp.core.backends import BridgeBackend, backend_for
from rope_interp.core.backends.bridge_geometry import is_bridge
from rope_interp.core.backends.bridge_support import _SUPPORT, BridgeSupport, bridge_support
from rope_interp.core.capturing import RotaryCapture, capture
from rope_interp.core.pairs import rotate, score_contributions
from rope_interp.core.spec import RotarySpec
from rope_interp.core.stats import collect_pair_stats
from rope_interp.errors import RopeInterpError, UnsupportedBridge
from tests.bridge.helpers import (
    EXPECTED_LAYOUT,
    HF_BUILDERS,
    boot,
    hf_reference,
    make_bridge,
    make_hf,
    make_native_bridge,
    random_tokens,
)

ARCHS = sorted(HF_BUILDERS)
# TransformerLens 4.3.0 facts, measured (benchmarks/bridge_compat.py): rotated hooks fire only
# where the bridge reimplements attention; on GPT-J hook_attn_scores carries the pattern.
ROTATED_HOOKS_FIRE = {"llama", "llama3", "qwen2", "qwen3"}
SCORES_ARE_PRE_SOFTMAX = {"llama", "llama3", "qwen2", "gpt_neox", "qwen3"}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: thread start-up dominates, and on a busy 2-core machine two threads made
    each forward pass ~500x slower (0.65 s instead of 1 ms)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=ARCHS)
def arch(request) -> str:
    return request.param


def _hf_rotary_module(reference):
    return next(m for n, m in reference.named_modules() if n.endswith("rotary_emb"))


def _hf_thetas(arch: str, reference, rotary_dim: int) -> torch.Tensor:
    rotary = _hf_rotary_module(reference)
    if arch == "gptj":  # a [sin | cos] table per position instead of inv_freq
        row = rotary.embed_positions[1].double()
        return torch.atan2(row[: rotary_dim // 2], row[rotary_dim // 2 :])
    return rotary.inv_freq.double()


def _hf_rotate(arch: str, reference, x: torch.Tensor, rotary_dim: int) -> torch.Tensor:
    """The HF modeling file's own apply_rotary_pos_emb on `[batch, pos, head, d_head]`."""
    modeling = sys.modules[type(reference).__module__]
    rotary = _hf_rotary_module(reference)
    positions = torch.arange(x.shape[1])[None]
    if arch == "gptj":
        sin, cos = rotary(x, positions)
        rotated = modeling.apply_rotary_pos_emb(x[..., :rotary_dim], sin, cos)
        return torch.cat([rotated, x[..., rotary_dim:]], dim=-1)
    cos, sin = rotary(x, positions)
    q = x.transpose(1, 2)
    return modeling.apply_rotary_pos_emb(q, q, cos, sin)[0].transpose(1, 2)


def _hf_pair_dims(arch: str, rotary_dim: int) -> torch.Tensor:
    """Pair → dims as the HF code pairs them (rotate_half vs rotate_every_two)."""
    i = torch.arange(rotary_dim // 2)
    if EXPECTED_LAYOUT[arch] == "half":
        return torch.stack([i, i + rotary_dim // 2], dim=1)
    return torch.stack([2 * i, 2 * i + 1], dim=1)


# ---- spec ---------------------------------------------------------------------------------


def test_is_bridge(arch):
    bridge, reference = make_bridge(arch)
    assert is_bridge(bridge)
    assert not is_bridge(reference)


def test_spec_reads_the_wrapped_models_rotary_embedding(arch):
    bridge, reference = make_bridge(arch)
    spec = RotarySpec.from_model(bridge)
    config = reference.config
    n_heads = config.num_attention_heads
    d_head = config.hidden_size // n_heads
    assert (spec.n_layers, spec.n_heads, spec.d_head) == (config.num_hidden_layers, n_heads, d_head)
    assert spec.n_kv_heads == (getattr(config, "num_key_value_heads", None) or n_heads)
    expected_rotary_dim = {"gpt_neox": d_head // 2, "gptj": getattr(config, "rotary_dim", 0)}.get(
        arch, d_head
    )
    assert spec.rotary_dim == expected_rotary_dim
    assert spec.layout == EXPECTED_LAYOUT[arch]
    thetas = _hf_thetas(arch, reference, spec.rotary_dim)
    for layer in range(spec.n_layers):
        torch.testing.assert_close(spec.thetas[layer], thetas, rtol=1e-6, atol=0)
        assert spec.cos[layer].shape == (config.max_position_embeddings, spec.n_pairs)
    attention = next(m for m in reference.modules() if hasattr(m, "scaling"))
    assert spec.attn_scale == pytest.approx(1 / attention.scaling)


def test_spec_ignores_the_bridge_configs_wrong_rotary_fields():
    """TL 4.3.0's bridge config says base 10 000 and rotary_dim None for this rope_theta=500
    model; the spec follows the model."""
    bridge, _ = make_bridge("llama")
    spec = RotarySpec.from_model(bridge)
    assert spec.bases[0] == 500
    i = torch.arange(spec.n_pairs, dtype=torch.float64)
    torch.testing.assert_close(spec.thetas[0], 500 ** (-2 * i / spec.rotary_dim), rtol=1e-6, atol=0)


def test_llama3_frequency_scaling_is_read_and_checked():
    bridge, reference = make_bridge("llama3")
    spec = RotarySpec.from_model(bridge, check_config=True)
    plain = 10000 ** (-2 * torch.arange(spec.n_pairs, dtype=torch.float64) / spec.rotary_dim)
    assert (spec.thetas[0] < plain * 0.99).any()  # the low frequencies are divided by 8
    torch.testing.assert_close(spec.thetas[0], _hf_rotary_module(reference).inv_freq.double())


def test_layout_matches_hf_apply_rotary_pos_emb(arch):
    """Pair by pair: the rotation must match HF's, and the other layout must not (which is
    what makes every per-pair quantity depend on the layout)."""
    bridge, reference = make_bridge(arch)
    spec = RotarySpec.from_model(bridge)
    x = torch.randn(2, 9, 3, spec.d_head, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        theirs = _hf_rotate(arch, reference, x, spec.rotary_dim)
    torch.testing.assert_close(rotate(x, spec, 0), theirs, rtol=1e-5, atol=1e-6)
    other = "interleaved" if spec.layout == "half" else "half"
    wrong = dataclasses.replace(spec, layout=other)
    assert (rotate(x, wrong, 0) - theirs).abs().max() > 1e-2


class _OpaqueFunc(torch.nn.Module):
    """Like transformers 5.25's hub-kernel "Func": an nn.Module whose signature reads
    `(*args, **kwargs)` and whose forward hides the wrapped function's parameters too."""

    def __init__(self, fn, transform=None):
        super().__init__()
        self._fn, self._transform = fn, transform or (lambda out: out)

    def forward(self, *args, **kwargs):
        return self._transform(self._fn(*args, **kwargs))


def _wrapped_forms(original):
    import functools

    @functools.wraps(original)
    def decorated(*args, **kwargs):
        return original(*args, **kwargs)

    class Func(torch.nn.Module):  # a named forward, as transformers 5.25 writes it
        def forward(self, q, k, cos, sin, unsqueeze_dim=1):
            return original(q, k, cos, sin, unsqueeze_dim)

    return {"functools.wraps": decorated, "module": Func(), "opaque": _OpaqueFunc(original)}


@pytest.mark.parametrize("form", ["functools.wraps", "module", "opaque"])
@pytest.mark.parametrize("name", ["llama", "gpt_neox", "gptj"])
def test_wrapped_rotation_functions_are_called_and_checked(name, form, monkeypatch):
    """However transformers packages apply_rotary_pos_emb, the layout is found by calling it,
    and rotations still match the unwrapped HF function."""
    bridge, reference = make_bridge(name)
    modeling = sys.modules[type(reference).__module__]
    original = modeling.apply_rotary_pos_emb
    if name == "gptj" and form == "module":
        pytest.skip("GPT-J's function takes (tensor, sin, cos): the q/k Func form is Llama's")
    monkeypatch.setattr(modeling, "apply_rotary_pos_emb", _wrapped_forms(original)[form])
    spec = RotarySpec.from_model(bridge)
    assert spec.layout == EXPECTED_LAYOUT[name]
    x = torch.randn(1, 7, 2, spec.d_head, generator=torch.Generator().manual_seed(4))
    monkeypatch.setattr(modeling, "apply_rotary_pos_emb", original)
    with torch.no_grad():
        theirs = _hf_rotate(name, reference, x, spec.rotary_dim)
    torch.testing.assert_close(rotate(x, spec, 0), theirs, rtol=1e-5, atol=1e-6)


def test_a_wrapped_rotation_that_does_not_rotate_is_refused(monkeypatch):
    """An opaque wrapper whose output no layout reproduces (here: q and k swapped with the
    unrotated input) is refused with the measured errors, not guessed around."""
    bridge, reference = make_bridge("llama")
    modeling = sys.modules[type(reference).__module__]
    original = modeling.apply_rotary_pos_emb
    broken = _OpaqueFunc(lambda q, k, cos, sin: (original(q, k, cos, sin)[0] * 0.5, k))
    monkeypatch.setattr(modeling, "apply_rotary_pos_emb", broken)
    with pytest.raises(UnsupportedBridge, match="neither layout reproduces"):
        RotarySpec.from_model(bridge)


# ---- capture ------------------------------------------------------------------------------


def test_capture_matches_the_hf_models_own_rotated_qk(arch):
    bridge, reference = make_bridge(arch)
    tokens = random_tokens()
    cap = RotaryCapture(bridge)
    assert isinstance(backend_for(bridge), BridgeBackend)
    captured = cap.run(tokens)
    expected_derived = () if arch in ROTATED_HOOKS_FIRE else ("rot_q", "rot_k")
    if arch == "qwen3":  # q/k read at hook_q_normed, transposed from [batch, head, pos, d]
        expected_derived = ("q", "k")
    assert cap.derived == expected_derived
    recorded = hf_reference(reference, tokens)
    assert sorted(recorded) == captured.layers()
    for layer, (rot_q, rot_k) in recorded.items():
        torch.testing.assert_close(captured.rot_q(layer), rot_q, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(captured.rot_k(layer), rot_k, rtol=1e-5, atol=1e-6)
        # pre-rotation q/k rotate to the same vectors
        torch.testing.assert_close(
            rotate(captured.q(layer), cap.spec, layer), rot_q, rtol=1e-5, atol=1e-6
        )


def test_context_manager_and_hook_list_agree(arch):
    bridge, _ = make_bridge(arch)
    tokens = random_tokens(seed=5)
    with torch.no_grad():
        before = bridge(tokens)
    once = capture(bridge, tokens, layers=[1])
    with torch.no_grad(), RotaryCapture(bridge, layers=1) as cap:
        bridge(tokens)
    listed = RotaryCapture(bridge, layers=[1], kinds=("rot_q", "k"))
    with torch.no_grad():
        bridge.run_with_hooks(tokens, fwd_hooks=listed.hooks(), return_type=None)
    listed.check_fired()
    for key, value in once.tensors.items():
        torch.testing.assert_close(cap.captured[key], value, rtol=0, atol=0)
    torch.testing.assert_close(listed.captured[("rot_q", 1)], once.rot_q(1), rtol=0, atol=0)
    assert sorted(listed.captured.tensors) == [("k", 1), ("rot_q", 1)]
    with torch.no_grad():
        assert torch.equal(bridge(tokens), before)  # every hook was removed


def test_streaming_capture_sees_derived_rotations(arch):
    bridge, reference = make_bridge(arch)
    tokens = random_tokens()
    seen = {}
    cap = RotaryCapture(
        bridge, layers=0, kinds=("rot_k",), on_capture=lambda *a: seen.update({a[:2]: a[2]})
    )
    cap.run(tokens)
    assert not cap.captured.tensors
    torch.testing.assert_close(
        seen[("rot_k", 0)], hf_reference(reference, tokens)[0][1], rtol=1e-5, atol=1e-6
    )


# ---- scores -------------------------------------------------------------------------------


def test_score_decomposition_sums_to_the_bridges_scores(arch):
    bridge, reference = make_bridge(arch)
    tokens = random_tokens()
    spec = RotarySpec.from_model(bridge)
    seen = {}

    def keep(x, hook):
        seen[hook.name] = x.detach().clone()

    names = [
        f"blocks.{layer}.attn.hook_{what}"
        for layer in (0, 1)
        for what in ("attn_scores", "pattern")
    ]
    with torch.no_grad():
        bridge.run_with_hooks(tokens, fwd_hooks=[(n, keep) for n in names], return_type=None)
    captured = capture(bridge, tokens)
    recorded = hf_reference(reference, tokens)
    n = tokens.shape[1]
    causal = torch.tril(torch.ones(n, n, dtype=torch.bool))
    for layer in (0, 1):
        parts, passthrough = score_contributions(captured.q(layer), captured.k(layer), spec, layer)
        # per pair, against HF's rotated vectors paired the HF way
        rot_q, rot_k = recorded[layer]
        rot_k = torch.repeat_interleave(rot_k, spec.group_size, dim=2)
        for pair, (a, b) in enumerate(_hf_pair_dims(arch, spec.rotary_dim).tolist()):
            expected = torch.einsum("bqhd,bkhd->bhqk", rot_q[..., [a, b]], rot_k[..., [a, b]])
            torch.testing.assert_close(
                parts[..., pair], expected / spec.attn_scale, rtol=1e-4, atol=1e-6
            )
        total = parts.sum(-1) + passthrough
        pattern = torch.softmax(total.masked_fill(~causal, -math.inf), dim=-1)
        torch.testing.assert_close(
            pattern, seen[f"blocks.{layer}.attn.hook_pattern"], rtol=1e-5, atol=1e-6
        )
        scores = seen[f"blocks.{layer}.attn.hook_attn_scores"]
        if arch in SCORES_ARE_PRE_SOFTMAX:
            torch.testing.assert_close(
                total[..., causal], scores[..., causal], rtol=1e-5, atol=1e-6
            )
        else:  # TL 4.3.0 GPT-J: hook_attn_scores fires with the softmaxed pattern
            torch.testing.assert_close(scores, seen[f"blocks.{layer}.attn.hook_pattern"])


# ---- statistics ---------------------------------------------------------------------------


def test_collect_pair_stats_runs_on_a_bridge(arch):
    bridge, _ = make_bridge(arch)
    batches = [random_tokens(seed=s) for s in (1, 2)]
    frame = collect_pair_stats(bridge, batches, progress=False).to_frame()
    spec = RotarySpec.from_model(bridge)
    assert len(frame) == spec.n_layers * (spec.n_heads + spec.n_kv_heads) * spec.n_pairs
    assert (frame["count"] == sum(b.numel() for b in batches)).all()
    captured = [capture(bridge, b, layers=1, kinds=("q",)).q(1) for b in batches]
    q = torch.cat([c.flatten(0, 1) for c in captured])
    dims = spec.dims
    norms = torch.hypot(q[..., dims[:, 0]], q[..., dims[:, 1]]).double()
    rows = frame[(frame.kind == "q") & (frame.layer == 1)].sort_values(["head", "pair"])
    torch.testing.assert_close(
        torch.tensor(rows["mean_norm"].to_numpy()), norms.mean(0).flatten(), rtol=1e-5, atol=1e-7
    )


# ---- TL-native bridges ----------------------------------------------------------------------


def test_native_bridge():
    bridge = make_native_bridge()
    spec = RotarySpec.from_model(bridge)
    assert spec.layout == "interleaved"  # NativeRotary rotates adjacent pairs
    rotary = next(m for m in bridge.original_model.modules() if type(m).__name__ == "NativeRotary")
    i = torch.arange(spec.n_pairs, dtype=torch.float64)
    torch.testing.assert_close(spec.thetas[0], 300 ** (-2 * i / spec.rotary_dim), rtol=1e-6, atol=0)
    tokens = random_tokens()
    cap = RotaryCapture(bridge, layers=0)
    captured = cap.run(tokens)
    assert cap.derived == ("rot_q", "rot_k")
    q = captured.q(0).transpose(1, 2)
    expected = rotary.apply_rope(q, q)[0].transpose(1, 2)
    torch.testing.assert_close(captured.rot_q(0), expected, rtol=1e-5, atol=1e-6)


# ---- clear errors -------------------------------------------------------------------------


def test_non_rotary_bridge_is_refused_by_name():
    from transformers import GPT2Config, GPT2LMHeadModel

    from tests.bridge.helpers import boot

    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=50, n_positions=32)
    )
    bridge = boot(model.eval())
    with pytest.raises(UnsupportedBridge, match="GPT2LMHeadModel.*no rotary_emb"):
        RotarySpec.from_model(bridge)
    with pytest.raises(UnsupportedBridge, match="GPT2LMHeadModel"):
        RotaryCapture(bridge)


def test_unfired_pre_rotation_hooks_are_an_error_not_an_empty_result():
    bridge, _ = make_bridge("gpt_neox")
    fired = {"q": (), "k": (), "rot_q": (), "rot_k": ()}
    _SUPPORT[bridge] = BridgeSupport("GPTNeoXForCausalLM (gpt_neox)", fired, 2)
    with pytest.raises(UnsupportedBridge, match=r"GPTNeoXForCausalLM.*hook_q, hook_k.*do not fire"):
        RotaryCapture(bridge, kinds=("rot_q", "rot_k"))


def test_a_spec_that_disagrees_with_the_fired_rotated_hooks_is_caught():
    bridge, _ = make_bridge("llama")
    spec = RotarySpec.from_model(bridge)
    wrong = dataclasses.replace(spec, layout="interleaved")
    with pytest.raises(RopeInterpError, match="differs from rope-interp's rotation"):
        bridge_support(bridge, wrong)
    assert bridge not in _SUPPORT  # nothing cached after a failure
    assert bridge_support(bridge).rotated_hooks


def test_qk_norm_bridges_read_what_rope_rotates():
    """Qwen3 normalises q/k after hook_q: rope-interp reads hook_q_normed (transformers'
    [batch, head, pos, d_head]) instead, and says so in its read points."""
    bridge, _ = make_bridge("qwen3")
    backend = backend_for(bridge)
    assert not backend.pre_rotation_is_hooked(0)
    point = backend.read_point("q", 1)
    assert point.hook == "blocks.1.attn.hook_q_normed" and point.transform is not None
    assert backend.read_point("rot_k", 1).hook == "blocks.1.attn.hook_rot_k"


_SHARPENED = (
    "q_proj.weight",
    "k_proj.weight",
    "query_key_value.weight",
    "q_norm.weight",
    "k_norm.weight",
)


def _sharp_bridge(name: str):
    """(bridge, untouched HF copy) with q/k weights scaled up so that attention is sharp and
    the rotation changes the logits (the tiny models' attention is nearly uniform)."""
    import copy

    hf_model = make_hf(name)
    with torch.no_grad():
        for param_name, param in hf_model.named_parameters():
            # (QK-norm models: the norm undoes a scaled projection, so scale the norm's weight)
            if param_name.endswith(_SHARPENED):
                param.mul_(30)
    reference = copy.deepcopy(hf_model)
    return boot(hf_model), reference


@pytest.mark.parametrize("name", ["gpt_neox", "gptj", "llama", "qwen3"])
def test_nope_on_every_pair_equals_the_hf_model_without_its_rotation(name, monkeypatch):
    """NoPE on every pair of q and k against an independent model: the untouched HF copy with
    its apply_rotary_pos_emb replaced by the identity. On GPT-NeoX and GPT-J, whose rotated
    hooks never fire, rope-interp applies NoPE before RoPE; on Llama, at the rotated hooks; on
    Qwen3 (QK-norm), at the rotated hooks from the q/k read after the norm."""
    from rope_interp.interventions.ablation import Intervention
    from rope_interp.interventions.selection import select_pairs

    bridge, reference = _sharp_bridge(name)
    spec = RotarySpec.from_model(bridge)
    tokens = random_tokens()
    nope = Intervention(bridge, select_pairs(spec, range(spec.n_pairs)), mode="nope", spec=spec)
    with torch.no_grad():
        clean = bridge(tokens)
        with nope:
            ours = bridge(tokens)
    # (the bridge calls the same function, so the patch comes after every bridge run)
    modeling = sys.modules[type(reference).__module__]
    identity = (lambda x, sin, cos: x) if name == "gptj" else (lambda q, k, cos, sin, *a: (q, k))
    monkeypatch.setattr(modeling, "apply_rotary_pos_emb", identity)
    with torch.no_grad():
        theirs = reference(tokens).logits
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    assert (clean - theirs).abs().max() > 1e-2  # the rotation mattered


@pytest.mark.parametrize("name", ["gpt_neox", "gptj"])
def test_phase_and_shift_before_rope_act_like_rotations(name):
    """Where rotated hooks never fire: a shift of every position on q and k leaves the logits
    unchanged (RoPE is relative), a phase on q equals the opposite phase on k, and both change
    the logits when applied to one side."""
    from rope_interp.interventions.ablation import Intervention, position_shift
    from rope_interp.interventions.selection import select_band

    bridge, _ = _sharp_bridge(name)
    spec = RotarySpec.from_model(bridge)
    tokens = random_tokens()
    band = select_band(spec, "high", k=2)
    with torch.no_grad():
        clean = bridge(tokens)
        with position_shift(bridge, 5, spec=spec):
            shifted = bridge(tokens)
        with position_shift(bridge, 5, side="q", spec=spec):
            shifted_q = bridge(tokens)
        with Intervention(bridge, band, "phase", "q", phi=0.7, spec=spec):
            on_q = bridge(tokens)
        with Intervention(bridge, band, "phase", "k", phi=-0.7, spec=spec):
            on_k = bridge(tokens)
    torch.testing.assert_close(shifted, clean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(on_q, on_k, rtol=1e-5, atol=1e-5)
    assert (shifted_q - clean).abs().max() > 1e-2
    assert (on_q - clean).abs().max() > 1e-2


def test_the_probe_pass_is_invisible_to_hooks_already_attached():
    """The first question to a bridge's backend runs a probe forward pass. It often comes from
    inside a caller's hooked pass (an intervention built within a batch loop): those hooks must
    not see the probe's tokens, and must still be attached afterwards."""
    bridge, _ = make_bridge("llama")
    seen: list[int] = []

    def count(tensor, hook):
        seen.append(tensor.shape[-2])

    with bridge.hooks(fwd_hooks=[("blocks.0.attn.hook_pattern", count)]):
        bridge_support(bridge)  # the probe
        assert seen == []
        with torch.no_grad():
            bridge(random_tokens(pos=9))
    assert seen == [9]


def test_a_phase_sweep_on_a_fresh_bridge_counts_only_its_own_tokens():
    """Regression: the phase sweep's pattern hooks once counted the probe pass (5 tokens) of a
    fresh bridge, inflating 'previous' from 0 to 0.06 on this planted head."""
    from rope_interp.analysis.phase import phase_sweep_attention
    from rope_interp.interventions.selection import select_pairs
    from rope_interp.testing import make_model
    from rope_interp.testing import random_tokens as tiny_tokens
    from tests.test_analysis_planting import plant_previous_token_head

    def sweep(warm: bool):
        model = make_model("half_full")
        plant_previous_token_head(model, layer=0, head=0, norm=60.0)
        if warm:
            bridge_support(model)
        spec = RotarySpec.from_model(model)
        theta0 = float(spec.thetas[0, 0])
        selection = select_pairs(spec, 0, layers=0, heads=0)
        tokens = tiny_tokens(model, batch=2, pos=24)
        return phase_sweep_attention(
            model, [tokens], selection, [(0, 0)], phis=[-theta0], progress=False
        )

    fresh, warm = sweep(False), sweep(True)
    assert fresh.previous.tolist() == warm.previous.tolist() == [0.0]
