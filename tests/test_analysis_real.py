"""Every analysis on the built-in SmolLM2-135M with a small corpus (2 windows × 128 tokens):
the numbers behind docs/findings.md, in miniature. Plus: no analysis leaves a hook behind."""

from __future__ import annotations

import pytest
import torch

from rope_interp.analysis import (
    attention_sinks,
    attention_spectra,
    band_shares,
    bound_summary,
    massive_values,
    mlp_spectra,
    offset_features,
    pair_spectra,
    phase_alignment,
    positional_heads,
)
from rope_interp.core.stats import collect_pair_stats
from rope_interp.loading.data import load_corpus
from tests.helpers import random_tokens


def _all_analyses(model, batches, layers):
    stats = collect_pair_stats(model, batches(), layers=layers, progress=False)
    return {
        "shares": band_shares(stats),
        "offsets": offset_features(stats),
        "positional": positional_heads(model, batches(), layers=layers, progress=False),
        "sinks": attention_sinks(model, batches(), layers=layers, progress=False),
        "pair_spectra": pair_spectra(model, batches(), layers=layers, progress=False),
        "attention": attention_spectra(model, batches(), layers=layers, progress=False),
        "mlp": mlp_spectra(model, batches(), layers=layers, progress=False),
        "phase": phase_alignment(model, batches(), layers=layers, progress=False),
        "massive": massive_values(model, batches(), layers=layers, progress=False),
    }


def test_analyses_leave_no_hooks_behind(tiny_model):
    tokens = random_tokens(tiny_model, pos=40)
    before = tiny_model(tokens)
    _all_analyses(tiny_model, lambda: [tokens], None)
    assert torch.equal(tiny_model(tokens), before)
    assert not any(hp._forward_hooks for hp in tiny_model.hook_dict.values())


@pytest.mark.real_model
def test_all_analyses_on_the_real_model(real_model):
    corpus = load_corpus(real_model, "pydoc", seq_len=128, n_windows=2, seed=0)
    before = real_model(corpus.tokens[:1, :16])
    out = _all_analyses(real_model, lambda: corpus.batches(2), [1, 2, 25])

    # B: low frequencies carry more q·k norm than high ones.
    qk = out["shares"][out["shares"].kind == "qk"]
    assert qk.low_share.mean() > 2 * qk.high_share.mean()
    # B: a previous-token head in layers 1-2, built by the highest-frequency pairs.
    prev = out["positional"].heads.query("offset == 1 and layer in [1, 2]")
    best = prev.loc[prev.attn.idxmax()]
    assert best.attn > 0.5
    assert best.top_pair < 8
    # A: outliers exist and all sit in partial-cycle pairs.
    summary = bound_summary(out["offsets"]).set_index("scope")
    assert summary.loc["flagged", "n_pairs"] >= 3
    assert summary.loc["flagged", "partial_cycle"] == 1.0
    # Sinks in a late layer, made by low-frequency pairs.
    sinks = out["sinks"].heads.query("layer == 25")
    assert sinks.is_sink.sum() >= 5
    assert (sinks[sinks.is_sink].top_pair >= 24).mean() > 0.8
    # C: rotated pairs oscillate at θ_i/2π.
    spectra = out["pair_spectra"]
    assert spectra[spectra.resolvable].matches.mean() > 0.9
    assert out["attention"][["low", "mid", "high"]].sum(1).sub(1).abs().max() < 1e-9
    assert out["mlp"].freq.between(0, 0.5).all()
    assert out["phase"].spearman.between(-1, 1).all()
    # Massive values: the largest q/k dims sit in the low-frequency half.
    massive = out["massive"]
    qk_dims = massive[massive.kind.isin(["q", "k"])]
    assert (qk_dims.pair_position >= 0.5).mean() > 0.6
    # Nothing left attached.
    assert torch.equal(real_model(corpus.tokens[:1, :16]), before)
