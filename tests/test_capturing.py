import pytest
import torch

from rope_interp.core.capturing import (
    HooksDidNotFire,
    RotaryCapture,
    capture,
    from_cache,
    hook_name,
)
from rope_interp.core.pairs import expand_kv_heads
from rope_interp.errors import RopeInterpError
from tests.helpers import make_model, random_tokens


def _attached_hooks(model) -> int:
    return sum(len(hp._forward_hooks) for hp in model.hook_dict.values())


def test_hook_list_composes_with_user_hooks(tiny_model):
    tokens = random_tokens(tiny_model)
    cap = RotaryCapture(tiny_model, layers=[1])
    seen = {}

    def user_hook(pattern, hook):
        seen["pattern"] = pattern.detach().clone()

    logits = tiny_model.run_with_hooks(
        tokens, fwd_hooks=cap.hooks() + [("blocks.1.attn.hook_pattern", user_hook)]
    )
    cap.check_fired()
    _, cache = tiny_model.run_with_cache(tokens)
    for kind in ("q", "k", "rot_q", "rot_k"):
        assert torch.equal(cap.captured[(kind, 1)], cache[hook_name(kind, 1)])
    assert torch.equal(seen["pattern"], cache["blocks.1.attn.hook_pattern"])
    assert torch.equal(logits, tiny_model(tokens))
    assert _attached_hooks(tiny_model) == 0


def test_gqa_keys_stay_per_kv_head():
    model = make_model("gqa")
    tokens = random_tokens(model)
    got = capture(model, tokens, layers=0)
    assert got.q(0).shape == (2, 12, 4, 8)
    assert got.k(0).shape == (2, 12, 2, 8)
    expanded = expand_kv_heads(got.rot_k(0), 4)
    assert torch.equal(expanded[:, :, 0], expanded[:, :, 1])
    assert torch.equal(expanded[:, :, 2], got.rot_k(0)[:, :, 1])


def test_context_manager_undoes_hooks_on_exception(tiny_model):
    tokens = random_tokens(tiny_model)
    before = tiny_model(tokens)
    with pytest.raises(RuntimeError, match="boom"), RotaryCapture(tiny_model):
        tiny_model(tokens)
        raise RuntimeError("boom")
    assert _attached_hooks(tiny_model) == 0
    assert torch.equal(tiny_model(tokens), before)


def test_context_manager_captures():
    model = make_model("interleaved_partial")
    tokens = random_tokens(model)
    with RotaryCapture(model, layers=0, kinds=("rot_q",)) as cap:
        model(tokens)
    assert set(cap.captured.tensors) == {("rot_q", 0)}
    assert _attached_hooks(model) == 0


def test_hooks_that_never_fire_are_an_error():
    model = make_model("half_full")
    tokens = random_tokens(model)
    cap = RotaryCapture(model, layers=[1])
    with pytest.raises(HooksDidNotFire, match="blocks.1.attn.hook_q"):
        cap.run(tokens, stop_at_layer=1)
    with pytest.raises(HooksDidNotFire), RotaryCapture(model, layers=[1]):
        model(tokens, stop_at_layer=1)
    assert _attached_hooks(model) == 0


def test_reading_an_existing_cache():
    model = make_model("gqa")
    tokens = random_tokens(model)
    _, cache = model.run_with_cache(tokens)
    got = from_cache(cache)
    assert got.layers() == [0, 1]
    assert torch.equal(got.rot_k(1), cache["blocks.1.attn.hook_rot_k"])
    _, partial = model.run_with_cache(tokens, names_filter=lambda name: "hook_q" in name)
    with pytest.raises(HooksDidNotFire, match="hook_rot_k"):
        from_cache(partial, layers=0)


def test_bad_layer_or_kind():
    model = make_model("half_full")
    with pytest.raises(RopeInterpError, match="layer 5"):
        RotaryCapture(model, layers=[5])
    with pytest.raises(RopeInterpError, match="kind"):
        RotaryCapture(model, kinds=("v",))
    with pytest.raises(RopeInterpError, match="empty"):
        RotaryCapture(model, layers=[])
