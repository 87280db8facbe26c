"""Spectra: pure sinusoids with known peaks and bands, products of two frequencies whose
harmonics are known, and a planted constant pair whose rotated spectrum must peak at θ/2π."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rope_interp.analysis.spectral import (
    attention_spectra,
    band_energy,
    find_peaks,
    match_harmonics,
    mlp_spectra,
    pair_spectra,
    phase_alignment,
    power_spectrum,
)
from rope_interp.errors import RopeInterpError
from rope_interp.spec import RotarySpec
from tests.helpers import make_model, random_tokens
from tests.test_analysis_planting import plant_previous_token_head, set_constant_pair


@pytest.mark.parametrize(("f0", "band"), [(0.1, 0), (0.3, 1), (0.45, 2)])
def test_pure_sinusoid_peak_and_band(f0, band):
    p = torch.arange(200, dtype=torch.float64)
    x = torch.cos(2 * math.pi * f0 * p + 0.3)
    freqs, power = power_spectrum(x)
    assert len(freqs) == 512 // 2 + 1  # zero padded to the next power of two ≥ 2·200
    assert abs(float(freqs[power.argmax()]) - f0) <= 1 / 512
    energy = band_energy(freqs, power)
    assert float(energy[band]) > 0.95
    assert float(energy.sum()) == pytest.approx(1.0)


def test_band_energy_of_white_noise_follows_bandwidth():
    x = torch.randn(400, 256, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    freqs, power = power_spectrum(x)
    energy = band_energy(freqs, power.mean(0))
    np.testing.assert_allclose(energy.numpy(), [0.25, 0.5, 0.25], atol=0.02)


def test_product_of_two_rotations_gives_sum_and_difference_harmonics():
    thetas = torch.tensor([1.0, 0.6, 0.25], dtype=torch.float64)
    p = torch.arange(256, dtype=torch.float64)
    x = torch.cos(thetas[0] * p) * torch.cos(thetas[2] * p)  # ½cos(1.25p) + ½cos(0.75p)
    freqs, power = power_spectrum(x)
    peaks = find_peaks(freqs, power, n_peaks=2)
    expected = sorted([(1.25) / (2 * math.pi), (0.75) / (2 * math.pi)])
    np.testing.assert_allclose(sorted(peaks.freq), expected, atol=1 / 512)
    matched = match_harmonics(peaks, thetas, tolerance=1 / 256)
    assert matched.matched.all()
    assert set(matched.harmonic_kind) == {"sum", "difference"}
    assert set(zip(matched.i, matched.j, strict=True)) == {(0, 2)}
    assert 0 < matched.attrs["chance_rate"] < 1


def test_planted_constant_pair_peaks_at_its_frequency(tiny_model):
    spec = RotarySpec.from_model(tiny_model)
    set_constant_pair(tiny_model, 0, 0, 0, complex(5.0), complex(0.0, 5.0))
    n = 48
    table = pair_spectra(tiny_model, [random_tokens(tiny_model, pos=n)], layers=0, progress=False)
    row = table[(table.kind == "q") & (table["head"] == 0) & (table.pair == 0)].iloc[0]
    theta0 = float(spec.thetas[0, 0])
    assert row.expected_freq == pytest.approx(theta0 / (2 * math.pi))
    assert abs(row.peak_freq - theta0 / (2 * math.pi)) <= 1 / n
    assert row.matches and row.resolvable
    assert row.peak_share > 0.9
    k_row = table[(table.kind == "k") & (table["head"] == spec.kv_head(0)) & (table.pair == 0)]
    assert k_row.iloc[0].matches
    # The lowest pair does not complete two cycles in 48 tokens.
    assert not table[table.pair == spec.n_pairs - 1].resolvable.any()


def test_attention_spectra_entropies_of_planted_heads():
    model = make_model("half_full")
    # Over 40 tokens pair 0 (θ = 1) comes back near its peak at Δ = 20, 26 (cos ≈ 0.99): a
    # large norm keeps those keys negligible.
    plant_previous_token_head(model, layer=0, head=0, norm=60.0)
    set_constant_pair(model, 0, 1, 0, 0j, 0j)  # head 1: all scores 0 → uniform attention
    n, min_row = 40, 8
    table = attention_spectra(
        model, [random_tokens(model, pos=n)], layers=0, min_row=min_row, progress=False
    )
    rows = table.set_index("head")
    assert rows.loc[0, "attention_entropy"] < 0.05
    uniform = np.mean([math.log2(m + 1) for m in range(min_row - 1, n)])
    assert rows.loc[1, "attention_entropy"] == pytest.approx(uniform, rel=1e-6)
    # A uniform row minus its mean is zero: no power in any band.
    assert rows.loc[1, ["low", "mid", "high"]].sum() == pytest.approx(0.0, abs=1e-9)
    bands = rows.loc[0, ["low", "mid", "high"]]
    assert bands.sum() == pytest.approx(1.0)


def test_mlp_spectra_and_phase_alignment_run_and_are_bounded(tiny_model):
    tokens = random_tokens(tiny_model, pos=32)
    table = mlp_spectra(tiny_model, [tokens], n_peaks=3, progress=False)
    assert set(table.layer) == set(range(tiny_model.cfg.n_layers))
    np.testing.assert_allclose(table[["low", "mid", "high"]].sum(1), 1.0)
    assert ((table.chance_rate >= 0) & (table.chance_rate <= 1)).all()
    assert (table.freq > 0).all() and (table.freq <= 0.5).all()
    pa = phase_alignment(tiny_model, [tokens], progress=False)
    assert ((pa.spearman >= -1) & (pa.spearman <= 1)).all()
    assert ((pa.mean_alignment > 0) & (pa.mean_alignment <= 1)).all()


def test_phase_alignment_of_single_pair_queries_is_one():
    model = make_model("half_full")
    for head in range(model.cfg.n_heads):
        set_constant_pair(model, 0, head, head % 4, complex(1.0 + head), complex(1.0))
    pa = phase_alignment(model, [random_tokens(model, pos=16)], layers=0, progress=False)
    assert pa.mean_alignment.iloc[0] == pytest.approx(1.0)


def test_short_signals_are_refused():
    with pytest.raises(RopeInterpError, match="at least 2"):
        power_spectrum(torch.ones(1))
