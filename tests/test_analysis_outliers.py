"""Outliers / rotary offset features: the bounds checked by brute force over Δ, and a planted
offset pair found, measured and classified."""

from __future__ import annotations

import cmath
import math

import numpy as np
import pytest
import torch

from rope_interp.analysis.outliers import (
    angle_interval,
    bound_summary,
    frequency_bound,
    offset_features,
    sweep_sign,
)
from rope_interp.core.spec import RotarySpec
from rope_interp.core.stats import collect_pair_stats
from rope_interp.errors import RopeInterpError
from tests.helpers import make_model, random_tokens
from tests.test_analysis_planting import k_params


def brute_sign(alpha: float, theta: float, context: int) -> int:
    values = np.cos(alpha + np.arange(context) * theta)
    if (values >= -1e-12).all():
        return 1
    if (values <= 1e-12).all():
        return -1
    return 0


def test_sweep_sign_matches_brute_force():
    gen = torch.Generator().manual_seed(0)
    context = 50
    alpha = (torch.rand(4000, generator=gen, dtype=torch.float64) * 4 - 2) * math.pi
    theta = torch.rand(4000, generator=gen, dtype=torch.float64) * 2.5 * math.pi / (context - 1)
    got = sweep_sign(alpha, theta, context)
    expected = torch.tensor(
        [brute_sign(float(a), float(t), context) for a, t in zip(alpha, theta, strict=True)],
        dtype=torch.float64,
    )
    assert (got == expected).float().mean() > 0.999  # float edge cases on the boundaries only
    assert (expected != 0).sum() > 500 and (expected == 0).sum() > 500


def test_frequency_bound_is_tight():
    context = 40
    bound = frequency_bound(context)
    alphas = np.linspace(-math.pi, math.pi, 20001)
    below = [brute_sign(a, 0.999 * bound, context) for a in alphas]
    above = [brute_sign(a, 1.01 * bound, context) for a in alphas]
    assert any(s != 0 for s in below)
    assert all(s == 0 for s in above)


@pytest.mark.parametrize("sign", ["positive", "negative"])
def test_angle_interval_edges(sign):
    context, theta = 30, 0.05
    lo, hi = angle_interval(theta, context, sign)
    expected = 1 if sign == "positive" else -1
    for a in np.linspace(lo, hi, 50):
        assert brute_sign(a, theta, context) == expected
    assert brute_sign(lo - 0.01, theta, context) == 0
    assert brute_sign(hi + 0.01, theta, context) == 0
    assert hi - lo == pytest.approx(math.pi - theta * (context - 1))


def plant_offset(model, layer, head, pair, norm, alpha, phase=0.4):
    """Add a large constant to q of `head` and k of its KV head in `pair`, with offset angle α
    (the random weights stay: the planted bias dominates)."""
    spec = RotarySpec.from_model(model)
    a, b = (int(d) for d in spec.dims[pair])
    attn = model.blocks[layer].attn
    _, b_k = k_params(attn)
    zq = norm * cmath.exp(1j * (phase + alpha))
    zk = norm * cmath.exp(1j * phase)
    with torch.no_grad():
        attn.b_Q[head, a] += zq.real
        attn.b_Q[head, b] += zq.imag
        b_k[spec.kv_head(head), a] += zk.real
        b_k[spec.kv_head(head), b] += zk.imag


@pytest.mark.parametrize("name", ["half_full", "interleaved_partial", "gqa", "ntk_by_parts"])
@pytest.mark.parametrize("alpha", [2.5, 0.3, -1.2])
def test_planted_offset_pair_is_flagged_and_classified(name, alpha):
    # Six pairs at least so that the robust z-score over a head's pairs means something.
    overrides = {"d_head": 12, "rotary_dim": 12} if name in ("half_full", "gqa") else {}
    model = make_model(name, **overrides)
    spec = RotarySpec.from_model(model)
    pair = spec.n_pairs - 1
    plant_offset(model, layer=1, head=1, pair=pair, norm=60.0, alpha=alpha)
    context = 16
    stats = collect_pair_stats(model, [random_tokens(model, batch=4, pos=context)], progress=False)
    table = offset_features(stats, threshold=3.5)
    assert table.attrs["context"] == context
    rows = table.set_index(["layer", "head", "pair"])
    row = rows.loc[(1, 1, pair)]
    assert row.flagged and row.q_outlier and row.k_outlier
    assert row.kv_head == spec.kv_head(1)
    assert row.q_conc > 0.95 and row.k_conc > 0.95
    assert row.alpha == pytest.approx(alpha, abs=0.05)
    theta = float(spec.thetas[1, pair])
    assert row.sweep_end - row.sweep_start == pytest.approx(theta * (context - 1))
    assert row.partial_cycle == (theta * context < 2 * math.pi)
    assert row.frequency_bound == (theta * (context - 1) < math.pi)
    assert row.sweep_sign == brute_sign(float(row.alpha), theta, context)
    expected_sign = {2.5: -1, 0.3: 1, -1.2: 1}[alpha]
    assert row.sweep_sign == expected_sign
    # No other pair of layer 1 head 1 is flagged, and the random layer 0 has no outliers.
    assert rows.loc[(1, 1)].flagged.sum() == 1
    assert not table[table.layer == 0].flagged.any()

    summary = bound_summary(table).set_index("scope")
    n_flagged = int(table.flagged.sum())
    assert summary.loc["flagged", "n_pairs"] == n_flagged
    assert summary.loc["all", "n_pairs"] == len(table)


def test_offset_angle_maps_query_heads_to_their_kv_head():
    model = make_model("gqa", d_head=12, rotary_dim=12)
    spec = RotarySpec.from_model(model)
    pair = spec.n_pairs - 1
    plant_offset(model, layer=0, head=3, pair=pair, norm=25.0, alpha=1.0)
    stats = collect_pair_stats(model, [random_tokens(model, batch=4, pos=12)], progress=False)
    table = offset_features(stats, threshold=3.5, require="either")
    rows = table.set_index(["layer", "head", "pair"])
    # Head 2 shares KV head 1 with head 3: its k is the planted one, its q is not.
    assert rows.loc[(0, 2, pair)].kv_head == rows.loc[(0, 3, pair)].kv_head == 1
    assert rows.loc[(0, 2, pair)].k_outlier and not rows.loc[(0, 2, pair)].q_outlier
    assert rows.loc[(0, 2, pair)].flagged  # require="either"
    assert rows.loc[(0, 2, pair)].k_angle == pytest.approx(rows.loc[(0, 3, pair)].k_angle)


def test_bad_arguments_are_refused(tiny_model):
    stats = collect_pair_stats(tiny_model, [random_tokens(tiny_model)], progress=False)
    with pytest.raises(RopeInterpError, match="require"):
        offset_features(stats, require="all")
    with pytest.raises(RopeInterpError, match="context"):
        frequency_bound(1)
    with pytest.raises(RopeInterpError, match="sign"):
        angle_interval(0.1, 10, "zero")


def test_reference_rule_uses_one_global_threshold():
    model = make_model("gqa", d_head=12, rotary_dim=12)
    spec = RotarySpec.from_model(model)
    pair = spec.n_pairs - 1
    plant_offset(model, layer=1, head=1, pair=pair, norm=60.0, alpha=2.5)
    stats = collect_pair_stats(model, [random_tokens(model, batch=4, pos=16)], progress=False)
    table = offset_features(stats, rule="reference", reference_factor=4.0)
    assert table.attrs["rule"] == "reference"
    kv = torch.arange(spec.n_heads) // spec.group_size
    for kind in ("q", "k"):
        max_norm = stats.acc[kind]["max_norm"].cpu()
        expected = max_norm > 4.0 * max_norm.flatten().median()  # per kind, over everything
        if kind == "k":
            expected = expected[:, kv]
        assert (table[f"{kind}_outlier"].to_numpy() == expected.reshape(-1).numpy()).all()
    rows = table.set_index(["layer", "head", "pair"])
    assert rows.loc[(1, 1, pair)].flagged
    # A huge factor flags nothing; the project rule is unchanged by the new arguments.
    assert not offset_features(stats, rule="reference", reference_factor=1e6).flagged.any()
    assert offset_features(stats).equals(offset_features(stats, reference_factor=9.0))
    with pytest.raises(RopeInterpError, match="rule"):
        offset_features(stats, rule="global")
