import pytest
import torch

from rope_interp.core.runner import run_batches
from rope_interp.errors import RopeInterpError
from rope_interp.interventions.ablation import attached_hooks
from tests.helpers import make_model, random_tokens


def test_batches_are_pulled_one_at_a_time_and_tokens_counted():
    model = make_model("gqa")
    pulled, seen = [], []

    def lazy():
        for seed in range(3):
            pulled.append(seed)
            yield random_tokens(model, batch=2, pos=5, seed=seed)

    def after(tokens, _):
        seen.append(len(pulled))
        assert not torch.is_grad_enabled()

    n = run_batches(model, lazy(), [], "test", progress=False, after_batch=after)
    assert n == 3 * 2 * 5
    assert seen == [1, 2, 3]  # each batch ran before the next one was pulled


def test_hooks_fire_and_are_removed_even_after_an_error():
    model = make_model("gqa")
    fired = []

    def hook(x, hook):
        fired.append(hook.name)

    hooks = [("blocks.0.attn.hook_pattern", hook)]
    run_batches(model, [random_tokens(model)], hooks, progress=False)
    assert fired == ["blocks.0.attn.hook_pattern"]
    assert attached_hooks(model) == []

    def boom(tokens):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run_batches(model, [random_tokens(model)], hooks, progress=False, forward=boom)
    assert attached_hooks(model) == []


def test_forward_result_goes_to_after_batch_and_a_single_tensor_is_one_batch():
    model = make_model("gqa")
    tokens = random_tokens(model, batch=2, pos=6)
    losses = []
    run_batches(
        model,
        tokens,
        progress=False,
        forward=lambda t: model(t, return_type="loss", loss_per_token=True),
        after_batch=lambda t, loss: losses.append(loss.shape),
    )
    assert losses == [torch.Size([2, 5])]


def test_empty_and_misshapen_batches_are_clear_errors():
    model = make_model("gqa")
    with pytest.raises(RopeInterpError, match="No token batches were given"):
        run_batches(model, iter([]), progress=False)
    assert run_batches(model, iter([]), progress=False, allow_empty=True) == 0
    with pytest.raises(RopeInterpError, match=r"\[batch, pos\]"):
        run_batches(model, [torch.zeros(1, 2, 3, dtype=torch.long)], progress=False)
