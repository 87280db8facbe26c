"""Long-context statistics: the tiled reduction against the dense decomposition and the host's
attention pattern on every fixture, a float64 brute force, tile edge cases, angle coverage
against hand computations, and the errors."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import rope_interp
from rope_interp.analysis import long_context
from rope_interp.analysis.angle_coverage import angle_coverage, cycle_boundaries
from rope_interp.analysis.long_context import long_context_stats, sliding_window
from rope_interp.core.capturing import capture
from rope_interp.core.pairs import bucket_index, distance_buckets, score_contributions
from rope_interp.core.spec import RotarySpec, first_partial_pair
from rope_interp.core.tiled import tiled_pattern, tiled_sums
from rope_interp.errors import RopeInterpError, UnsupportedModel
from rope_interp.plots import long_context as plots
from tests.helpers import HOST, bridge_only, hooked_only, make_model, random_tokens


def _close(got, expected, rtol=1e-6):
    """Equal to `rtol` relative to the largest magnitude of `expected` (means of signed terms
    can cancel to ~0, where a per-entry relative test means nothing)."""
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    scale = max(np.abs(expected).max(), 1e-30)
    np.testing.assert_allclose(got, expected, rtol=0, atol=rtol * scale)


def _grid(frame, *index, value):
    """A table column as an array indexed by the sorted `index` columns."""
    frame = frame.sort_values(list(index))
    shape = [frame[c].nunique() for c in index]
    return frame[value].to_numpy().reshape(shape)


def _dense_reference(model, tokens, layer):
    """Means from the materialised float32 decomposition and the host's own pattern."""
    spec = RotarySpec.from_model(model)
    cap = capture(model, tokens, layers=layer, kinds=("q", "k"))
    terms, passed = score_contributions(cap.q(layer), cap.k(layer), spec, layer)
    _, cache = model.run_with_cache(tokens, names_filter=f"blocks.{layer}.attn.hook_pattern")
    pattern = cache[f"blocks.{layer}.attn.hook_pattern"]  # [batch, head, q, k]
    # float32 terms and pattern, reduced in float64 (so that the reference's own rounding in
    # long sums does not count against the tiles)
    terms, passed, pattern = terms.double(), passed.double(), pattern.double()
    n = tokens.shape[1]
    delta = torch.arange(n)[:, None] - torch.arange(n)[None]
    bucket = bucket_index(delta.clamp(min=0), distance_buckets(n - 1))
    buckets = []
    for b in range(int(bucket.max()) + 1):
        mask = (delta >= 0) & (bucket == b)
        buckets.append((terms[:, :, mask].mean((0, 2)), terms[:, :, mask].abs().mean((0, 2))))
    causal = delta >= 0
    score = terms.sum(-1) + passed
    return {
        "bucket_mean": torch.stack([m for m, _ in buckets], 1),  # [head, bucket, pair]
        "bucket_abs": torch.stack([a for _, a in buckets], 1),
        "attn": torch.einsum("bhqk,bhqkp->hp", pattern, terms) / (n * tokens.shape[0]),
        "attn_abs": torch.einsum("bhqk,bhqkp->hp", pattern, terms.abs()) / (n * tokens.shape[0]),
        "attn_score": torch.einsum("bhqk,bhqk->h", pattern, score) / (n * tokens.shape[0]),
        "mean_score": score[:, :, causal].mean((0, 2)),
        "mean": terms[:, :, causal].mean((0, 2)),
    }


@pytest.mark.parametrize("tile_size", [5, 16])
def test_tiled_equals_dense_decomposition_and_host_pattern(tiny_model, tile_size):
    """Every fixture (both layouts, partial rotary, GQA, scaled frequencies), tiles that do
    not divide L = 37: bucket means, attention-weighted terms (A = the host's hook_pattern)
    and head totals equal the dense float32 computation to 1e-6 relative."""
    tokens = random_tokens(tiny_model, batch=2, pos=37)
    result = long_context_stats(tiny_model, tokens, tile_size=tile_size)
    for layer in range(tiny_model.cfg.n_layers):
        ref = _dense_reference(tiny_model, tokens, layer)
        dist = result.distance[result.distance.layer == layer]
        _close(_grid(dist, "head", "bucket", "pair", value="mean_contribution"), ref["bucket_mean"])
        _close(
            _grid(dist, "head", "bucket", "pair", value="mean_abs_contribution"), ref["bucket_abs"]
        )
        pairs = result.pairs[result.pairs.layer == layer]
        _close(_grid(pairs, "head", "pair", value="attn_contribution"), ref["attn"])
        _close(_grid(pairs, "head", "pair", value="attn_abs_contribution"), ref["attn_abs"])
        _close(_grid(pairs, "head", "pair", value="mean_contribution"), ref["mean"])
        heads = result.heads[result.heads.layer == layer].sort_values("head")
        _close(heads.attn_score, ref["attn_score"])
        _close(heads.mean_score, ref["mean_score"])
        # the head totals are the pair terms plus the pass-through term
        attn_sum = _grid(pairs, "head", "pair", value="attn_contribution").sum(1)
        _close(attn_sum + heads.attn_pass.to_numpy(), heads.attn_score, rtol=1e-12)


def test_tiled_pattern_is_the_hosts_pattern(tiny_model):
    tokens = random_tokens(tiny_model, batch=2, pos=23)
    spec = RotarySpec.from_model(tiny_model)
    cap = capture(tiny_model, tokens, kinds=("rot_q", "rot_k"))
    _, cache = tiny_model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    for layer in range(spec.n_layers):
        host = cache[f"blocks.{layer}.attn.hook_pattern"]
        ours = tiled_pattern(cap.rot_q(layer), cap.rot_k(layer), spec, tile_size=6)
        torch.testing.assert_close(ours, host, rtol=0, atol=1e-6)
        np.testing.assert_allclose(ours.sum(-1).numpy(), 1.0, atol=1e-6)


@hooked_only
def test_pattern_follows_the_soft_cap():
    model = make_model("soft_cap")
    tokens = random_tokens(model, batch=1, pos=19)
    spec = RotarySpec.from_model(model)
    cap = capture(model, tokens, layers=0, kinds=("rot_q", "rot_k"))
    _, cache = model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_pattern")
    ours = tiled_pattern(cap.rot_q(0), cap.rot_k(0), spec, tile_size=4, soft_cap=2.0)
    torch.testing.assert_close(ours, cache["blocks.0.attn.hook_pattern"], rtol=0, atol=1e-6)
    uncapped = tiled_pattern(cap.rot_q(0), cap.rot_k(0), spec, tile_size=4)
    assert (uncapped - ours).abs().max() > 1e-3  # the cap bites on this model


def _brute_force(rot_q, rot_k, spec):
    """Float64 loops over every (batch, head, query ≤ key, pair): pair dims from the layout
    definition, buckets Δ = 0 | ⌊log2 Δ⌋ + 1, softmax by hand."""
    q, k = rot_q.double().numpy(), rot_k.double().numpy()
    n_batch, n, n_heads, _ = q.shape
    half = spec.rotary_dim // 2
    dims = [
        (2 * i, 2 * i + 1) if spec.layout == "interleaved" else (i, i + half) for i in range(half)
    ]
    group = n_heads // k.shape[2]
    n_buckets = (0 if n == 1 else int(math.floor(math.log2(n - 1))) + 1) + 1
    bsum = np.zeros((n_heads, n_buckets, half))
    babs = np.zeros_like(bsum)
    count = np.zeros(n_buckets)
    attn = np.zeros((n_heads, half))
    attn_abs = np.zeros_like(attn)
    for b in range(n_batch):
        for h in range(n_heads):
            kh = h // group
            for m in range(n):
                logits = (
                    np.array([q[b, m, h] @ k[b, j, kh] for j in range(m + 1)]) / spec.attn_scale
                )
                weights = np.exp(logits - logits.max())
                weights /= weights.sum()
                for j in range(m + 1):
                    delta = m - j
                    bucket = 0 if delta == 0 else int(math.floor(math.log2(delta))) + 1
                    if h == 0:
                        count[bucket] += 1
                    for i, (a, c) in enumerate(dims):
                        term = q[b, m, h, a] * k[b, j, kh, a] + q[b, m, h, c] * k[b, j, kh, c]
                        term /= spec.attn_scale
                        bsum[h, bucket, i] += term
                        babs[h, bucket, i] += abs(term)
                        attn[h, i] += weights[j] * term
                        attn_abs[h, i] += weights[j] * abs(term)
    n_queries = n_batch * n
    return (
        bsum / count[None, :, None],
        babs / count[None, :, None],
        attn / n_queries,
        attn_abs / n_queries,
    )


@pytest.mark.parametrize("name", ["interleaved_partial", "gqa"])
def test_float64_brute_force(name):
    model = make_model(name)
    tokens = random_tokens(model, batch=2, pos=11)
    result = long_context_stats(model, tokens, layers=1, tile_size=3, dtype=torch.float64)
    spec = RotarySpec.from_model(model)
    cap = capture(model, tokens, layers=1, kinds=("rot_q", "rot_k"))
    mean, mean_abs, attn, attn_abs = _brute_force(cap.rot_q(1), cap.rot_k(1), spec)
    d, p = result.distance, result.pairs
    _close(_grid(d, "head", "bucket", "pair", value="mean_contribution"), mean, rtol=1e-12)
    _close(_grid(d, "head", "bucket", "pair", value="mean_abs_contribution"), mean_abs, rtol=1e-12)
    _close(_grid(p, "head", "pair", value="attn_contribution"), attn, rtol=1e-12)
    _close(_grid(p, "head", "pair", value="attn_abs_contribution"), attn_abs, rtol=1e-12)
    counts = d.drop_duplicates("bucket").sort_values("bucket")
    assert counts.n_scores.tolist() == [2 * 11, 2 * 10, 2 * (9 + 8), 2 * (7 + 6 + 5 + 4), 2 * 6]
    assert counts.distance_lo.tolist() == [0, 1, 2, 4, 8]
    assert counts.distance_hi.tolist() == [0, 1, 3, 7, 15]


def test_tile_size_does_not_change_the_sums():
    model = make_model("gqa")
    spec = RotarySpec.from_model(model)
    cap = capture(model, random_tokens(model, batch=2, pos=21), layers=0, kinds=("rot_q", "rot_k"))
    edges = distance_buckets(20, per_octave=2)
    runs = [
        tiled_sums(cap.rot_q(0), cap.rot_k(0), spec, edges, tile, dtype=torch.float64)
        for tile in (1, 4, 7, 21, 64)
    ]
    for other in runs[1:]:
        for field in dataclasses.fields(other):
            torch.testing.assert_close(
                getattr(other, field.name), getattr(runs[0], field.name), rtol=1e-12, atol=1e-12
            )
    assert runs[0].count.sum() == 2 * 21 * 22 / 2


def test_single_token():
    model = make_model("half_full")
    tokens = random_tokens(model, batch=3, pos=1)
    result = long_context_stats(model, tokens, layers=0, tile_size=4)
    spec = RotarySpec.from_model(model)
    cap = capture(model, tokens, layers=0, kinds=("q", "k"))
    terms, _ = score_contributions(cap.q(0), cap.k(0), spec, 0)  # [batch, head, 1, 1, pair]
    expected = terms[:, :, 0, 0].mean(0)  # A[0, 0] = 1: weighted = unweighted
    assert result.distance.bucket.unique().tolist() == [0]
    assert set(result.distance.n_scores) == {3}
    _close(_grid(result.pairs, "head", "pair", value="attn_contribution"), expected)
    _close(
        _grid(result.distance, "head", "bucket", "pair", value="mean_contribution")[:, 0], expected
    )
    assert set(result.heads.n_queries) == {3}


def test_batches_of_different_lengths_pool():
    model = make_model("half_full")
    short, long = random_tokens(model, 2, 9, seed=3), random_tokens(model, 1, 20, seed=4)
    both = long_context_stats(model, [short, long], layers=0, tile_size=4, dtype=torch.float64)
    one = long_context_stats(model, short, layers=0, tile_size=4, dtype=torch.float64)
    two = long_context_stats(model, long, layers=0, tile_size=4, dtype=torch.float64)
    key = ["head", "bucket", "pair"]
    merged = one.distance.merge(two.distance, on=key, how="right", suffixes=("_1", "_2"))
    n1, n2 = merged.n_scores_1.fillna(0), merged.n_scores_2
    pooled = (merged.mean_contribution_1.fillna(0) * n1 + merged.mean_contribution_2 * n2) / (
        n1 + n2
    )
    got = both.distance.sort_values(key)
    _close(got.mean_contribution, pooled[np.argsort(merged.set_index(key).index)], rtol=1e-12)
    assert both.heads.n_queries.iloc[0] == 2 * 9 + 20
    assert both.distance.attrs["lengths"] == [9, 20]


# ---- angle coverage ------------------------------------------------------------------------


def test_angle_coverage_by_hand():
    """half_full: base 100, rotary_dim 8, θ_i = 100^(−i/4), n_ctx 64."""
    spec = RotarySpec.from_model(make_model("half_full"))
    table = angle_coverage(spec, length=256, layers=0).set_index("pair")
    for i in range(4):
        theta = 100 ** (-i / 4)
        row = table.loc[i]
        assert row.theta == pytest.approx(theta, rel=1e-6)
        assert row.train_max_angle == pytest.approx(63 * theta, rel=1e-6)
        assert row.max_angle == pytest.approx(255 * theta, rel=1e-6)
        assert row.train_partial_cycle == (64 * theta < 2 * math.pi)
    # 63·θ: 63, 19.9, 6.30 (just over 2π = 6.283), 1.99: only pair 3 never turned in training
    assert table.coverage.tolist() == ["full", "full", "full", "beyond"]
    assert table.loc[3].unseen_angle == pytest.approx(2 * math.pi - 63 * 100**-0.75, rel=1e-6)
    assert table.loc[3].new_angles and not table.loc[2].new_angles
    inside = angle_coverage(spec, length=40, layers=0).set_index("pair")
    assert inside.loc[3].coverage == "within" and inside.loc[3].unseen_angle == 0
    assert (
        angle_coverage(spec, 256, train_context=1000, layers=0).coverage == "full"
    ).tolist() == [
        True,
        True,
        True,
        True,
    ]


def _synthetic_spec(rotary_dim, base, n_ctx):
    """A spec with θ_i = base^(−2i/rotary_dim) and context n_ctx (geometry only)."""
    spec = RotarySpec.from_model(make_model("half_full"))
    half = rotary_dim // 2
    thetas = base ** (-2 * torch.arange(half, dtype=torch.float64) / rotary_dim)
    return dataclasses.replace(
        spec, n_layers=1, d_head=rotary_dim, rotary_dim=rotary_dim, n_ctx=n_ctx, thetas=thetas[None]
    )


@pytest.mark.parametrize(
    ("rotary_dim", "base", "length", "first", "n_partial", "half"),
    [  # the table of docs/science.md (first pair θL < 2π, partial pairs, first pair θL < π)
        (256, 1e4, 8192, 100, 28, 110),
        (128, 1e4, 4096, 46, 18, 50),
        (128, 5e5, 8192, 35, 29, 39),
        (128, 1e4, 8192, 50, 14, 55),
        (32, 1e4, 2048, 11, 5, 12),
    ],
)
def test_cycle_boundaries_reproduce_the_reference_table(
    rotary_dim, base, length, first, n_partial, half
):
    spec = _synthetic_spec(rotary_dim, base, length)
    row = cycle_boundaries(spec, [length]).iloc[0]
    assert (row.first_partial_pair, row.n_partial_pairs, row.first_half_pair) == (
        first,
        n_partial,
        half,
    )
    assert row.critical_dimension == 2 * first
    assert row.first_partial_pair == first_partial_pair(rotary_dim, base, length)


def test_cycle_boundaries_grow_with_length(tiny_model):
    spec = RotarySpec.from_model(tiny_model)
    table = cycle_boundaries(spec)
    assert spec.n_ctx in set(table.length)
    for _, rows in table.groupby("layer"):
        rows = rows.sort_values("length")
        assert rows.first_partial_pair.is_monotonic_increasing  # longer: more full turns
        assert (rows.first_half_pair >= rows.first_partial_pair).all()  # θL < π is stricter
        assert (rows.beyond_context == (rows.length > spec.n_ctx)).all()


# ---- errors and refusals -------------------------------------------------------------------


@pytest.mark.parametrize("tile_size", [0, -3, True])
def test_bad_tile_size(tile_size):
    model = make_model("half_full")
    with pytest.raises(RopeInterpError, match="tile_size must be a positive integer"):
        long_context_stats(model, random_tokens(model), tile_size=tile_size)


def test_bad_arguments():
    model = make_model("half_full")
    tokens = random_tokens(model)
    with pytest.raises(RopeInterpError, match="layer 2 is out of range"):
        long_context_stats(model, tokens, layers=[0, 2])
    with pytest.raises(RopeInterpError, match="per_octave"):
        long_context_stats(model, tokens, per_octave=0)
    with pytest.raises(RopeInterpError, match="dtype"):
        long_context_stats(model, tokens, dtype=torch.float16)
    with pytest.raises(RopeInterpError, match="pos ≥ 1"):
        long_context_stats(model, tokens[:, :0])
    with pytest.raises(RopeInterpError, match="length must be a positive"):
        angle_coverage(model, 0)
    with pytest.raises(RopeInterpError, match="train_context must be a positive"):
        angle_coverage(model, 10, train_context=-1)
    with pytest.raises(RopeInterpError, match="lengths is empty"):
        cycle_boundaries(model, [])


def test_longer_than_context_needs_permission():
    model = make_model("half_full")
    tokens = random_tokens(model, batch=1, pos=model.cfg.n_ctx + 5)
    with pytest.raises(RopeInterpError, match="allow_beyond_context=True"):
        long_context_stats(model, tokens)


@hooked_only
def test_beyond_context_is_refused_where_the_host_cannot_rotate():
    model = make_model("half_full")
    tokens = random_tokens(model, batch=1, pos=model.cfg.n_ctx + 5)
    with pytest.raises(RopeInterpError, match="cannot rotate beyond its 64-token context"):
        long_context_stats(model, tokens, allow_beyond_context=True)


@bridge_only
def test_beyond_context_on_a_bridge_matches_tiled_sums_of_its_rotated_qk():
    model = make_model("half_full")
    tokens = random_tokens(model, batch=1, pos=model.cfg.n_ctx + 6)
    result = long_context_stats(model, tokens, layers=0, allow_beyond_context=True, tile_size=16)
    spec = RotarySpec.from_model(model)
    cap = capture(model, tokens, layers=0, kinds=("rot_q", "rot_k"))
    _, cache = model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_pattern")
    host = cache["blocks.0.attn.hook_pattern"]
    torch.testing.assert_close(
        tiled_pattern(cap.rot_q(0), cap.rot_k(0), spec), host, rtol=0, atol=1e-6
    )
    assert result.distance.distance_hi.max() == 127  # Δ up to 69 lies in bucket [64, 127]
    assert result.heads.n_queries.iloc[0] == model.cfg.n_ctx + 6
    gptj = make_model("interleaved_partial")  # rotated hooks do not fire: rotated by tables
    tokens = random_tokens(gptj, batch=1, pos=gptj.cfg.n_ctx + 1)
    with pytest.raises(RopeInterpError, match="cannot rotate beyond"):
        long_context_stats(gptj, tokens, allow_beyond_context=True)


def test_sliding_window_layers_are_refused(monkeypatch):
    hooked = SimpleNamespace(
        cfg=SimpleNamespace(use_local_attn=True, attn_types=["global", "local"], window_size=4)
    )
    assert sliding_window(hooked, 0) is None and sliding_window(hooked, 1) == 4
    config = SimpleNamespace(sliding_window=8, layer_types=["sliding_attention", "full_attention"])
    bridge = SimpleNamespace(cfg=SimpleNamespace(), original_model=SimpleNamespace(config=config))
    assert sliding_window(bridge, 0) == 8 and sliding_window(bridge, 1) is None
    mistral = SimpleNamespace(sliding_window=4096)
    assert (
        sliding_window(SimpleNamespace(cfg=None, original_model=SimpleNamespace(config=mistral)), 3)
        == 4096
    )
    model = make_model("half_full")
    monkeypatch.setattr(long_context, "sliding_window", lambda model, layer: 6)
    with pytest.raises(UnsupportedModel, match="sliding window of 6 tokens"):
        long_context_stats(model, random_tokens(model, pos=7))
    long_context_stats(model, random_tokens(model, pos=6))  # a window that never bites


def test_distance_buckets():
    assert distance_buckets(8191).tolist() == [0, 1] + [2**j for j in range(1, 14)]
    assert distance_buckets(0).tolist() == [0, 1]
    assert distance_buckets(10, per_octave=2).tolist() == [0, 1, 2, 3, 4, 6, 8, 11]
    delta = torch.tensor([0, 1, 2, 3, 4, 7, 8, 100])
    assert bucket_index(delta, distance_buckets(100)).tolist() == [0, 1, 2, 2, 3, 3, 4, 7]
    with pytest.raises(RopeInterpError, match="per_octave"):
        distance_buckets(10, per_octave=0)


# ---- public names and figures --------------------------------------------------------------


def test_public_names_and_figures():
    assert rope_interp.long_context_stats is long_context_stats
    assert rope_interp.angle_coverage is angle_coverage
    model = make_model("gqa")
    result = rope_interp.long_context_stats(model, random_tokens(model, pos=20), tile_size=8)
    assert result.pairs.attrs["tile_size"] == 8
    for fig in (
        plots.plot_distance_profile(result.distance, layer=1),
        plots.plot_distance_profile(result.distance, layer=0, head=2, value="mean_contribution"),
        plots.plot_attention_contributions(result.pairs),
        plots.plot_attention_contributions(result.pairs, layer=1, value="attn_share"),
        plots.plot_angle_coverage(angle_coverage(model, 256)),
        plots.plot_cycle_boundaries(cycle_boundaries(model)),
    ):
        assert fig.data and all(
            len(trace.x if trace.x is not None else trace.z) for trace in fig.data
        )
    heat = plots.plot_distance_profile(result.distance, layer=1)
    assert list(heat.data[0].x) == ["0–0", "1–1", "2–3", "4–7", "8–15", "16–31"]
    assert len(heat.data[0].y) == 4  # pairs
    with pytest.raises(RopeInterpError, match="no rows for layer 5"):
        plots.plot_distance_profile(result.distance, layer=5)
    with pytest.raises(RopeInterpError, match="missing"):
        plots.plot_angle_coverage(result.pairs)
    assert HOST in ("hooked", "bridge")
