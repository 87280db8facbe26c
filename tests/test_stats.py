import math

import pytest
import torch

from rope_interp.core.capturing import capture
from rope_interp.core.pairs import to_pairs
from rope_interp.core.spec import RotarySpec
from rope_interp.core.stats import PairStats, collect_pair_stats
from rope_interp.errors import RopeInterpError
from tests.helpers import make_model, random_tokens


def _batches(model, n=3):
    return [random_tokens(model, batch=2, pos=16, seed=seed) for seed in range(n)]


def test_streaming_stats_equal_a_direct_float64_computation(tiny_model):
    spec = RotarySpec.from_model(tiny_model)
    batches = _batches(tiny_model)
    stats = collect_pair_stats(tiny_model, batches, progress=False)
    frame = stats.to_frame().set_index(["kind", "layer", "head", "pair"])
    assert stats.tokens_seen == 3 * 2 * 16
    for kind in ("q", "k"):
        for layer in range(spec.n_layers):
            x = torch.cat([capture(tiny_model, b, layer, (kind,))[(kind, layer)] for b in batches])
            z = to_pairs(x.double(), spec)[0].to(torch.complex128)
            z_flat = z.flatten(0, 1)  # [tokens, head, pair]
            head, pair = z.shape[2] - 1, spec.n_pairs - 1
            row = frame.loc[(kind, layer, head, pair)]
            column = z_flat[:, head, pair]
            assert row["count"] == column.numel()
            assert row["mean_norm"] == pytest.approx(column.abs().mean().item(), rel=1e-9)
            assert row["max_norm"] == pytest.approx(column.abs().max().item(), rel=1e-12)
            assert row["mean_re"] == pytest.approx(column.real.mean().item(), rel=1e-9, abs=1e-12)
            assert row["mean_angle"] == pytest.approx(column.mean().angle().item(), abs=1e-9)
            assert row["rms_norm"] == pytest.approx(column.abs().square().mean().sqrt().item())
            first = z[:, 0, head, pair]
            assert row["first_mean_norm"] == pytest.approx(first.abs().mean().item(), rel=1e-9)
            assert row["theta"] == pytest.approx(spec.thetas[layer, pair].item())
    assert frame["concentration"].between(0, 1 + 1e-9).all()
    assert len(frame.loc["k"]) == spec.n_layers * spec.n_kv_heads * spec.n_pairs


def test_two_halves_merged_equal_one_pass():
    model = make_model("gqa")
    batches = _batches(model, 4)
    whole = collect_pair_stats(model, batches, progress=False)
    first = collect_pair_stats(model, batches[:2], progress=False)
    second = collect_pair_stats(model, batches[2:], progress=False)
    merged = first.merge(second)
    assert merged.tokens_seen == whole.tokens_seen
    for kind in ("q", "k"):
        for name, value in whole.acc[kind].items():
            torch.testing.assert_close(merged.acc[kind][name], value, rtol=1e-12, atol=1e-12)


def test_memory_does_not_grow_with_tokens():
    model = make_model("half_full")
    small = collect_pair_stats(model, _batches(model, 1), progress=False)
    large = collect_pair_stats(model, _batches(model, 5), progress=False)
    for kind in ("q", "k"):
        for name in small.acc[kind]:
            assert small.acc[kind][name].shape == large.acc[kind][name].shape


def test_save_and_load_round_trip(tmp_path):
    model = make_model("interleaved_partial")
    spec = RotarySpec.from_model(model)
    stats = collect_pair_stats(model, _batches(model, 2), layers=[1], progress=False)
    path = tmp_path / "stats.safetensors"
    stats.save(path)
    loaded = PairStats.load(path, spec)
    assert loaded.layers == [1] and loaded.tokens_seen == stats.tokens_seen
    assert stats.to_frame().equals(loaded.to_frame())
    assert stats.acc["q"]["sum_pass_sq"].min() > 0  # pass-through dims are tracked
    other = RotarySpec.from_model(make_model("ntk_by_parts"))
    with pytest.raises(RopeInterpError, match="pairs"):
        PairStats.load(path, other)


def test_planted_offset_is_recovered():
    """A constant q bias in one pair makes that pair's mean vector point at the bias."""
    model = make_model("half_full")
    spec = RotarySpec.from_model(model)
    a, b = spec.dims[3].tolist()
    with torch.no_grad():
        model.blocks[0].attn.W_Q[:, :, [a, b]] = 0
        model.blocks[0].attn.b_Q[:, [a, b]] = torch.tensor([0.0, 2.0])
    frame = collect_pair_stats(model, _batches(model), layers=[0], progress=False).to_frame()
    row = frame.set_index(["kind", "layer", "head", "pair"]).loc[("q", 0, 1, 3)]
    assert row["concentration"] == pytest.approx(1.0)
    assert row["mean_angle"] == pytest.approx(math.pi / 2)
    assert row["mean_norm"] == pytest.approx(2.0)


def test_empty_corpus_is_an_error():
    model = make_model("half_full")
    with pytest.raises(RopeInterpError, match="empty"):
        collect_pair_stats(model, [], progress=False)
    with pytest.raises(RopeInterpError, match="No tokens"):
        PairStats(RotarySpec.from_model(model)).to_frame()
