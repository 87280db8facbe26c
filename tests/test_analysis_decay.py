import math

import pytest
import torch

from rope_interp.analysis.decay import reference_decay, score_decay
from rope_interp.core.capturing import capture
from rope_interp.core.pairs import score_contributions
from rope_interp.core.spec import RotarySpec
from rope_interp.errors import RopeInterpError
from tests.helpers import make_model, random_tokens


def test_all_ones_decays_and_gaussian_does_not(tiny_model):
    spec = RotarySpec.from_model(tiny_model)
    table = reference_decay(spec, layer=0, max_distance=40, n_samples=20_000)
    expected = [
        sum(2 * math.cos(d * t) for t in spec.thetas[0].tolist()) + spec.n_pass for d in range(41)
    ]
    assert table["ones"].tolist() == pytest.approx(expected, rel=1e-5, abs=1e-5)
    assert table["ones"].iloc[0] == spec.d_head  # ones · ones
    assert table["ones"].iloc[10:].abs().mean() < 0.8 * spec.d_head  # the RoFormer "decay"
    # Independent Gaussian q, k: zero expectation at every distance (within 5 standard errors).
    assert (table["gaussian_mean"].abs() < 5 * table["gaussian_se"]).all()


def test_measured_curve_equals_the_mean_of_the_exact_decomposition():
    model = make_model("interleaved_partial")
    tokens = random_tokens(model, batch=3, pos=10)
    curves, heads = score_decay(model, [tokens[:2], tokens[2:]], layers=1, progress=False)
    spec = RotarySpec.from_model(model)
    # Capture the same two batches: a float32 forward of 3 sequences at once differs from 2 + 1
    # in the last bits (the GEMM blocking depends on the batch size), ~1e-6 of the score.
    scores = []
    for batch in (tokens[:2], tokens[2:]):
        cap = capture(model, batch, layers=1)
        per_pair, pass_through = score_contributions(
            cap.q(1), cap.k(1), spec, 1, dtype=torch.float64
        )
        scores.append(per_pair.sum(-1) + pass_through)  # [batch, head, q, k]
    scores = torch.cat(scores)
    for distance in (0, 3, 9):
        expected = torch.diagonal(scores, offset=-distance, dim1=-2, dim2=-1).mean((0, -1))
        got = curves[curves.distance == distance].sort_values("head")["mean_score"]
        assert got.tolist() == pytest.approx(expected.tolist(), rel=1e-12, abs=1e-15)
    assert set(heads.columns) >= {"layer", "head", "near", "far", "spearman"}
    assert len(heads) == spec.n_heads and heads["spearman"].between(-1, 1).all()


def test_bad_distance_is_a_clear_error():
    spec = RotarySpec.from_model(make_model("half_full"))
    with pytest.raises(RopeInterpError, match="max_distance"):
        reference_decay(spec, max_distance=64)
