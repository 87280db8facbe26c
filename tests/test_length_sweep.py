"""Loss and attention by position (`length_sweep`) against independent computations: the host's
logits scored in float64 by hand, and the host's own attention pattern."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rope_interp.analysis.length_sweep import length_sweep
from rope_interp.core.pairs import distance_buckets
from rope_interp.errors import RopeInterpError
from rope_interp.interventions.ablation import p_rope
from rope_interp.interventions.experiment import Condition
from tests.helpers import random_tokens


def token_losses(model, tokens, intervention=None) -> np.ndarray:
    """float64 next-token losses `[batch, pos - 1]` from the model's own logits."""
    with torch.no_grad():
        if intervention is None:
            logits = model(tokens, return_type="logits")
        else:
            with intervention:
                logits = model(tokens, return_type="logits")
    logp = torch.log_softmax(logits.double(), -1)[:, :-1]
    return -logp.gather(-1, tokens[:, 1:, None]).squeeze(-1).numpy()


def bucket_of(length: int) -> np.ndarray:
    edges = distance_buckets(length - 1).numpy()
    return np.searchsorted(edges, np.arange(length), side="right") - 1


def test_loss_by_position_matches_the_models_own_logits(tiny_model):
    tokens = random_tokens(tiny_model, batch=3, pos=20)
    condition = Condition("p=0.5", p_rope(tiny_model, 0.5))
    sweep = length_sweep(tiny_model, tokens, [condition], batch_size=2)
    clean = token_losses(tiny_model, tokens)
    ablated = token_losses(tiny_model, tokens, p_rope(tiny_model, 0.5))
    buckets = bucket_of(20)[:-1]  # the prediction made at position p
    table = sweep.loss.set_index(["condition", "position_lo"])
    assert set(table.index.get_level_values(0)) == {"clean", "p=0.5"}
    for b in np.unique(buckets):
        lo = int(distance_buckets(19)[b])
        got = table.loc[("clean", lo)]
        want = clean[:, buckets == b]
        assert got.n_tokens == want.size
        assert got.mean_loss == pytest.approx(want.mean(), rel=1e-9)
        assert got.delta_loss == 0
        delta = (ablated - clean)[:, buckets == b]
        got = table.loc[("p=0.5", lo)]
        assert got.delta_loss == pytest.approx(delta.mean(), rel=1e-9, abs=1e-12)
        if delta.size > 1:
            se = delta.std(ddof=1) / np.sqrt(delta.size)
            assert got.se_delta == pytest.approx(se, rel=1e-9, abs=1e-12)
    assert (sweep.loss.query("condition == 'p=0.5'").delta_loss.abs() > 0).any()


def test_attention_by_position_matches_the_hosts_pattern(tiny_model):
    tokens = random_tokens(tiny_model, batch=2, pos=16)
    sweep = length_sweep(tiny_model, tokens)
    names = {f"blocks.{layer}.attn.hook_pattern" for layer in range(tiny_model.cfg.n_layers)}
    with torch.no_grad():
        _, cache = tiny_model.run_with_cache(tokens, names_filter=lambda n: n in names)
    buckets = bucket_of(16)
    for layer in range(tiny_model.cfg.n_layers):
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"].double().numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            entropy = -np.where(pattern > 0, pattern * np.log(pattern), 0).sum(-1)  # [b, h, q]
        rows = sweep.attention.query(f"layer == {layer}").set_index("position_lo")
        for b in np.unique(buckets):
            lo = int(distance_buckets(15)[b])
            chosen = buckets == b
            assert rows.loc[lo, "entropy"] == pytest.approx(entropy[..., chosen].mean(), rel=1e-5)
            first = pattern[..., 0][..., chosen].mean()
            assert rows.loc[lo, "first"] == pytest.approx(first, rel=1e-5)
    assert (sweep.attention.query("position_lo == 0").entropy.abs() < 1e-6).all()  # q=0: itself


def test_length_sweep_refuses_what_it_cannot_measure(tiny_model):
    tokens = random_tokens(tiny_model, batch=1, pos=8)
    with pytest.raises(RopeInterpError, match="pos ≥ 2"):
        length_sweep(tiny_model, tokens[:, :1])
    with pytest.raises(RopeInterpError, match="unique and not 'clean'"):
        length_sweep(tiny_model, tokens, [Condition("clean")])
    with pytest.raises(RopeInterpError, match="batch_size"):
        length_sweep(tiny_model, tokens, batch_size=0)
    n_ctx = tiny_model.cfg.n_ctx
    long = torch.randint(3, 50, (1, n_ctx + 1))
    with pytest.raises(RopeInterpError, match="longer than the model's context"):
        length_sweep(tiny_model, long)


def test_losses_are_the_same_whatever_the_chunk():
    from rope_interp.analysis.length_sweep import _token_losses

    logits = torch.randn(2, 9, 7, generator=torch.Generator().manual_seed(0))
    tokens = torch.randint(0, 7, (2, 9), generator=torch.Generator().manual_seed(1))
    whole = _token_losses(logits, tokens)
    assert whole.shape == (2, 8)
    torch.testing.assert_close(_token_losses(logits, tokens, chunk=3), whole, rtol=0, atol=0)
