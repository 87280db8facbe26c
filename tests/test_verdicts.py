"""The verdict rules against their nulls, on inputs built so that the verdict must flip: the
unmatched base rate says "holds" where the matched one (or the complementary heads) does not,
and a definition sweep names the family that changes the verdict."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from rope_interp.analysis.statistics import fisher_exact, matched_base_rate
from rope_interp.errors import RopeInterpError
from rope_interp.report.sections.heads import massive_activations_claim, sink_claims
from rope_interp.report.sections.outliers import outlier_claims
from rope_interp.report.sections.spectra import band_energy_claim, entropy_claim
from rope_interp.report.sections.usage import usage_claim
from rope_interp.report.verdicts import (
    definition_verdict,
    pvalue_text,
    share_verdict,
    two_share_verdict,
)


def _hypergeometric(k1, n1, k2, n2):
    """P(X = x) for every x, by exact integer arithmetic (independent of `fisher_exact`)."""
    hits, total = k1 + k2, n1 + n2
    return {
        x: math.comb(n1, x) * math.comb(n2, hits - x) / math.comb(total, hits)
        for x in range(max(0, hits - n2), min(hits, n1) + 1)
    }


@pytest.mark.parametrize("table", [(3, 4, 1, 4), (142, 144, 79, 124), (0, 5, 5, 5), (2, 9, 7, 11)])
def test_fisher_exact_matches_exact_enumeration(table):
    k1, n1, k2, n2 = table
    prob = _hypergeometric(*table)
    greater = sum(p for x, p in prob.items() if x >= k1)
    less = sum(p for x, p in prob.items() if x <= k1)
    two = sum(p for p in prob.values() if p <= prob[k1] * (1 + 1e-7))
    assert fisher_exact(*table, "greater") == pytest.approx(greater, rel=1e-9, abs=1e-300)
    assert fisher_exact(*table, "less") == pytest.approx(less, rel=1e-9, abs=1e-300)
    assert fisher_exact(*table, "two-sided") == pytest.approx(min(1.0, two), rel=1e-9)


def test_fisher_exact_reference_values_and_bad_input():
    # Fisher's tea-tasting table [[3, 1], [1, 3]]: one-sided 17/70, two-sided 34/70.
    assert fisher_exact(3, 4, 1, 4) == pytest.approx(17 / 70)
    assert fisher_exact(3, 4, 1, 4, "two-sided") == pytest.approx(34 / 70)
    assert math.isnan(fisher_exact(0, 0, 1, 4))
    with pytest.raises(RopeInterpError, match="successes"):
        fisher_exact(5, 4, 1, 4)
    with pytest.raises(RopeInterpError, match="alternative"):
        fisher_exact(1, 4, 1, 4, "both")


def test_matched_base_rate_weights_strata_by_the_selected_entries():
    # Stratum a: 2 selected, unselected rate 3/4; stratum b: 1 selected, unselected rate 0/2.
    condition = [1, 1, 1, 1, 1, 0, 0, 0, 1]
    stratum = ["a", "a", "a", "a", "a", "a", "b", "b", "b"]
    selected = [1, 1, 0, 0, 0, 0, 0, 0, 1]
    assert matched_base_rate(condition, stratum, selected) == pytest.approx((2 * 0.75 + 0) / 3)
    assert math.isnan(matched_base_rate([1, 0], [0, 0], [0, 0]))
    with pytest.raises(RopeInterpError, match="one length"):
        matched_base_rate([1, 0], [0], [1, 0])


def _angle_table(flagged_ok: int) -> pd.DataFrame:
    """20 flagged low-frequency entries (`flagged_ok` keep their sign); 100 unflagged
    low-frequency entries of which 95 do; 300 high-frequency entries of which 30 do."""
    rows = []
    rows += [(True, 0.001, i < flagged_ok) for i in range(20)]
    rows += [(False, 0.001, i < 95) for i in range(100)]
    rows += [(False, 1.0, i < 30) for i in range(300)]
    frame = pd.DataFrame(rows, columns=["flagged", "theta", "angle_bound"])
    frame["partial_cycle"] = frame.theta < 0.01
    frame["frequency_bound"] = frame.partial_cycle
    return frame


def test_angle_bound_unmatched_holds_but_frequency_matched_does_not():
    table = _angle_table(19)
    unmatched = table.angle_bound.mean()
    assert share_verdict(19, 20, unmatched) == "holds"  # 34 % base: the old verdict
    claims = outlier_claims({3.5: table}, context=256)
    angle = claims[2]
    assert "keep the sign" in angle.claim
    assert angle.verdict == "inconclusive"  # 19/20 [76.4, 99.1] % against the matched 95 %
    assert "frequency-matched base rate 95.0 %" in angle.number
    assert "Null: the frequency-matched base rate" in angle.test
    # The frequency claims keep the unmatched null (the claim is about frequency itself).
    assert claims[0].verdict == "holds" and "base rate over all 420 entries" in claims[0].number
    # Far above its own frequencies it holds again.
    table = _angle_table(20)
    table.loc[~table.flagged & (table.theta < 0.01), "angle_bound"] = [True] * 40 + [False] * 60
    assert outlier_claims({3.5: table}, context=256)[2].verdict == "holds"


def test_outlier_claims_across_thresholds_name_the_threshold():
    strict = _angle_table(20)
    strict.loc[~strict.flagged & (strict.theta < 0.01), "angle_bound"] = [True] * 40 + [False] * 60
    loose = _angle_table(19)  # a looser threshold flags entries like the rest: inconclusive
    claim = outlier_claims({3.5: strict, 2.5: loose}, context=256)[2]
    assert claim.verdict == "depends on the definition"
    assert "outlier threshold" in claim.uncertainty and "z > 2.5" in claim.uncertainty


def _heads(sink_low: int, n_sink: int, other_low: int, n_other: int) -> pd.DataFrame:
    """Heads with importance 0.9 (sink) or 0.05, top margin pair 31 (lowest band of 32) or 0."""
    rows = [(0.9, 31 if i < sink_low else 0) for i in range(n_sink)]
    rows += [(0.05, 31 if i < other_low else 0) for i in range(n_other)]
    frame = pd.DataFrame(rows, columns=["importance", "top_pair"])
    frame["is_sink"] = frame.importance > 0.3
    frame["high_band_margin"] = 0.0
    frame["low_band_margin"] = 1.0
    return frame


def test_sink_claim_against_the_other_heads_not_the_uniform_rate():
    # Both groups have their top pair in the lowest 8 of 32: the uniform 25 % says "holds",
    # the heads without a sink say there is nothing special about the sinks.
    same = _heads(29, 30, 28, 30)
    assert share_verdict(29, 30, 0.25) == "holds"
    low = sink_claims(same, 32)[1]
    assert low.verdict == "no evidence"
    assert "29 of 30 sink heads" in low.number and "28 of 30 heads without a sink" in low.number
    assert "Null: the heads without a sink" in low.test
    assert sink_claims(_heads(30, 30, 5, 30), 32)[1].verdict == "holds"
    assert sink_claims(_heads(2, 30, 28, 30), 32)[1].verdict == "does not hold"


def test_sink_claims_sweep_the_importance_threshold():
    heads = _heads(30, 30, 5, 30)
    heads.loc[:29, "importance"] = 0.35  # sinks at ε = 0.3 only; none above 0.4
    most, low = sink_claims(heads, 32)
    assert low.verdict == "depends on the definition"
    assert "sink threshold" in low.uncertainty
    assert most.verdict == "depends on the definition"  # 50 % at 0.3 and 0.2, 0 % above


def test_two_share_verdict_flips():
    assert two_share_verdict(20, 20, 5, 20) == "holds"
    assert two_share_verdict(5, 20, 20, 20) == "does not hold"
    assert two_share_verdict(12, 20, 10, 20) == "no evidence"
    assert two_share_verdict(1, 1, 0, 0) == "not tested here"


def test_definition_verdict_names_the_family_that_changes_it():
    grid = [
        (w, m, dc)
        for w in ("hann_periodic", "none", "hann_symmetric")
        for m in (False, True)
        for dc in (True, False)
    ]
    frame = pd.DataFrame(grid, columns=["window", "remove_mean", "include_dc"])
    frame["verdict"] = np.where(
        frame.window.str.startswith("hann") & frame.remove_mean, "does not hold", "holds"
    )
    families = {"window": {"hann_periodic": "Hann", "hann_symmetric": "Hann"}}
    verdict, text = definition_verdict(frame, ["window", "remove_mean", "include_dc"], families)
    assert verdict == "depends on the definition"
    assert "window × remove_mean family" in text
    assert "window Hann × remove_mean True: does not hold" in text
    assert "window hann_periodic" not in text  # near-identical windows are one family
    same, text = definition_verdict(frame.assign(verdict="holds"), ["window"])
    assert same == "holds" and "all 12 definitions" in text
    # No one factor or pair decides: said so.
    frame["verdict"] = ["holds", "no evidence"] * 6
    frame.loc[0, "verdict"] = "no evidence"
    verdict, text = definition_verdict(frame, ["window", "remove_mean", "include_dc"])
    assert verdict == "depends on the definition" and "no single family" in text
    assert definition_verdict(frame.iloc[:0], ["window"])[0] == "not tested here"


def test_permutation_p_at_its_floor_reads_as_a_bound():
    assert pvalue_text(1 / 2001, 2000).startswith("p ≤ 1/2001")
    assert pvalue_text(0.0123, 2000) == "p = 0.012"
    assert pvalue_text(float("nan"), 10) == "p = NaN"


def _robust(rhos, ps):
    rows = [
        ("hann_periodic", False, True, "mean_power"),
        ("none", False, True, "mean_power"),
        ("hann_periodic", True, True, "mean_power"),
        ("hann_symmetric", True, True, "mean_power"),
        ("none", True, False, "mean_power"),
    ]
    frame = pd.DataFrame(rows, columns=["window", "remove_mean", "include_dc", "aggregation"])
    return frame.assign(spearman=rhos, spearman_p=ps)


def test_entropy_claim_names_mean_removal_with_a_hann_window():
    claim = entropy_claim(_robust([-0.4, -0.7, 0.3, 0.3, -0.5], [1 / 2001] * 5))
    assert claim.verdict == "depends on the definition"
    assert "window × remove_mean family" in claim.uncertainty
    assert "p ≤ 1/2001" in claim.uncertainty
    assert entropy_claim(_robust([-0.4, -0.7, -0.3, -0.3, -0.5], [1e-3] * 5)).verdict == "holds"
    weak = entropy_claim(_robust([-0.4, -0.7, -0.3, -0.3, -0.5], [0.2] * 5))
    assert weak.verdict == "no evidence"


def test_band_energy_claim_depends_on_mean_removal():
    paper = pd.Series({"low": 0.46, "mid": 0.37, "high": 0.17})  # no band in range
    definitions = pd.DataFrame(
        [
            ("hann_periodic", False, 0.0, 0.0, 0.0),  # replaced by `paper`
            ("hann_periodic", True, 0.67, 0.22, 0.11),  # all three in range
            ("hann_symmetric", True, 0.66, 0.23, 0.11),
            ("none", False, 0.34, 0.45, 0.21),
            ("none", True, 0.50, 0.35, 0.15),
        ],
        columns=["window", "remove_mean", "low", "mid", "high"],
    )
    claim = band_energy_claim(paper, definitions)
    assert claim.verdict == "depends on the definition"
    assert "window × remove_mean" in claim.uncertainty
    assert band_energy_claim(paper).verdict == "does not hold"  # the paper's pipeline alone


def test_massive_activations_claim_sweeps_the_ratio():
    layers = pd.DataFrame(
        {
            "layer": [0, 1],
            "max_abs": [400.0, 50.0],
            "median_abs": [1.0, 1.0],
            "ratio": [400.0, 50.0],
            "n_massive": [0, 0],
            "first_position_share": [float("nan")] * 2,
            "dims": ["", ""],
        }
    )
    claim = massive_activations_claim(layers, 100.0, 1000.0)
    assert claim.verdict == "depends on the definition"  # none at 1000×, layer 0 at 100×
    assert "100×: 1" in claim.uncertainty and "1000×: 0" in claim.uncertainty


def test_usage_claim_sweeps_the_band_size():
    def qk(low_wins: int) -> pd.DataFrame:
        return pd.DataFrame(
            {"low_share": [0.5] * low_wins + [0.1] * (40 - low_wins), "high_share": [0.2] * 40}
        )

    claim = usage_claim({0.25: qk(38), 0.125: qk(38), 0.5: qk(20)})
    assert claim.verdict == "depends on the definition" and "band size" in claim.uncertainty
    assert usage_claim({0.25: qk(38), 0.5: qk(39)}).verdict == "holds"
