"""Spectra: pure sinusoids with known peaks and bands, products of two frequencies whose
harmonics are known, and a planted constant pair whose rotated spectrum must peak at θ/2π."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from rope_interp.analysis.attention_spectra import (
    PAPER_DEFINITION,
    SpectralDefinition,
    attention_spectra,
    definition_grid,
    entropy_correlation_table,
    robustness_verdict,
    row_power,
    spectral_entropy_definitions,
)
from rope_interp.analysis.fourier import (
    band_energy,
    find_peaks,
    harmonic_candidates,
    harmonic_enrichment,
    match_harmonics,
    power_spectrum,
)
from rope_interp.analysis.spectral import mlp_spectra, pair_spectra, phase_alignment
from rope_interp.core.spec import RotarySpec
from rope_interp.errors import RopeInterpError
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
        model,
        [random_tokens(model, pos=n)],
        layers=0,
        min_row=min_row,
        definition=SpectralDefinition("none", remove_mean=True, include_dc=False),
        progress=False,
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


# ---- attention-row spectra: each definition against an independent numpy computation ------
def _np_window(n: int, window: str) -> np.ndarray:
    k = np.arange(n)
    if window == "none":
        return np.ones(n)
    if window == "hann_periodic":
        return 0.5 * (1 - np.cos(2 * np.pi * k / n))
    return np.hanning(n)  # symmetric


def _np_entropy(p: np.ndarray) -> float:
    p = p / p.sum()
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def _np_head_entropy(rows: list[np.ndarray], d: SpectralDefinition, n_fft: int) -> float:
    spectra = []
    for row in rows:
        x = row - row.mean() if d.remove_mean else row.copy()
        power = np.abs(np.fft.rfft(x * _np_window(len(row), d.window), n=n_fft)) ** 2
        spectra.append(power if d.include_dc else power[1:])
    if d.aggregation == "mean_power":
        return _np_entropy(np.sum(spectra, axis=0))
    return float(np.mean([_np_entropy(s) for s in spectra]))


def test_definition_grid_has_the_paper_default_first_and_no_duplicates():
    grid = definition_grid()
    assert grid[0] == PAPER_DEFINITION
    assert PAPER_DEFINITION.window == "hann_periodic" and not PAPER_DEFINITION.remove_mean
    assert PAPER_DEFINITION.include_dc and PAPER_DEFINITION.aggregation == "mean_power"
    assert len(grid) == len(set(grid)) == 22
    with pytest.raises(RopeInterpError, match="window"):
        SpectralDefinition(window="hamming")


def test_sink_row_has_no_power_under_hann_and_a_flat_spectrum_without_window():
    # A first-token sink row: all mass on key 0, where both Hann windows are 0.
    rows = torch.zeros(1, 1, 16, dtype=torch.float64)
    rows[..., 0] = 1.0
    rows_m = torch.tensor([15])
    for window in ("hann_periodic", "hann_symmetric"):
        assert row_power(rows, rows_m, window, False, 32).abs().max() == 0.0
    flat = row_power(rows, rows_m, "none", False, 32)
    assert torch.allclose(flat, torch.ones_like(flat))
    # The symmetric window is also 0 at the query's own key m; the periodic one is not.
    rows = torch.zeros(1, 1, 16, dtype=torch.float64)
    rows[..., 15] = 1.0
    assert row_power(rows, rows_m, "hann_symmetric", False, 32).abs().max() < 1e-30
    periodic = row_power(rows, rows_m, "hann_periodic", False, 32)
    assert periodic[..., 0].item() == pytest.approx(_np_window(16, "hann_periodic")[15] ** 2)


@pytest.mark.parametrize("window", ["none", "hann_periodic", "hann_symmetric"])
@pytest.mark.parametrize("remove_mean", [False, True])
def test_row_power_matches_numpy(window, remove_mean):
    rng = np.random.default_rng(3)
    n, n_fft = 12, 32
    rows_m = torch.tensor([3, 7, 11])
    raw = rng.random((2, 3, n))
    for r, m in enumerate(rows_m.tolist()):
        raw[:, r, m + 1 :] = 0.0
        raw[:, r, : m + 1] /= raw[:, r, : m + 1].sum(-1, keepdims=True)
    power = row_power(torch.tensor(raw), rows_m, window, remove_mean, n_fft)
    for h in range(2):
        for r, m in enumerate(rows_m.tolist()):
            x = raw[h, r, : m + 1]
            x = x - x.mean() if remove_mean else x
            expected = np.abs(np.fft.rfft(x * _np_window(m + 1, window), n=n_fft)) ** 2
            np.testing.assert_allclose(power[h, r].numpy(), expected, rtol=1e-10, atol=1e-14)


def test_entropy_definitions_match_numpy_on_a_model():
    model = make_model("half_full")
    tokens = random_tokens(model, batch=2, pos=24)
    min_row, step = 8, 3
    definitions = definition_grid()
    table = spectral_entropy_definitions(
        model, [tokens], definitions, layers=[0, 1], min_row=min_row, row_step=step, progress=False
    )
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    n_fft = 64  # next power of two ≥ 2·24
    rows_m = list(range(min_row - 1, 24, step))
    for d in definitions:
        part = table[table.definition == d.label].set_index(["layer", "head"])
        for layer in (0, 1):
            pattern = cache["pattern", layer].double().numpy()  # both sequences' rows
            for head in range(model.cfg.n_heads):
                rows = [pattern[b, head, m, : m + 1] for b in range(2) for m in rows_m]
                assert part.loc[(layer, head), "spectral_entropy"] == pytest.approx(
                    _np_head_entropy(rows, d, n_fft), rel=1e-9
                ), d.label
                attn = np.mean([_np_entropy(r) for r in rows])
                assert part.loc[(layer, head), "attention_entropy"] == pytest.approx(attn)
                bands = np.mean([_np_bands(r, d, n_fft) for r in rows], axis=0)
                got = part.loc[(layer, head), ["low", "mid", "high"]].to_numpy(float)
                np.testing.assert_allclose(got, bands, rtol=1e-9, err_msg=d.label)


def _np_bands(row: np.ndarray, d: SpectralDefinition, n_fft: int) -> np.ndarray:
    """Low / mid / high fractions (0.25 and 0.75 of Nyquist) of one row's power, DC excluded."""
    x = row - row.mean() if d.remove_mean else row.copy()
    power = np.abs(np.fft.rfft(x * _np_window(len(row), d.window), n=n_fft)) ** 2
    rel = np.fft.rfftfreq(n_fft) / 0.5
    parts = [power[(rel > 0) & (rel < 0.25)].sum(), power[(rel >= 0.25) & (rel < 0.75)].sum()]
    parts.append(power[rel >= 0.75].sum())
    return np.array(parts) / sum(parts)


def test_entropy_correlation_table_and_verdict():
    rng = np.random.default_rng(0)
    x = rng.random(40)
    frames = []
    for label, sign in (("a", -1), ("b", -1), ("c", 1)):
        frames.append(
            pd.DataFrame(
                {
                    "definition": label,
                    "window": "none",
                    "remove_mean": False,
                    "include_dc": True,
                    "aggregation": "mean_power",
                    "spectral_entropy": sign * x + 0.01 * rng.random(40),
                    "attention_entropy": x,
                }
            )
        )
    corr = entropy_correlation_table(pd.concat(frames), n_permutations=500)
    assert list(corr.definition) == ["a", "b", "c"]
    assert corr.spearman.iloc[0] < -0.9 and corr.spearman_p.iloc[0] < 0.01
    assert robustness_verdict(corr) == "depends on the definition"
    assert robustness_verdict(corr.iloc[:2]) == "holds"
    assert robustness_verdict(corr.iloc[2:]) == "fails"


def test_harmonic_enrichment_detects_planted_matches_and_not_random_ones():
    thetas = torch.tensor([[0.9, 0.35, 0.11]])
    cand = harmonic_candidates(thetas[0]).freq.to_numpy()
    on = pd.DataFrame({"layer": 0, "freq": cand[cand > 0.01][:6]})
    res = harmonic_enrichment(on, thetas, tolerance=1e-3, jitter=0.02, n_null=2000)
    assert res["observed"] == 1.0 and res["p_value"] < 0.01
    assert res["null_low"] <= res["null_mean"] <= res["null_high"] < 1.0
    rng = np.random.default_rng(1)
    off = pd.DataFrame({"layer": 0, "freq": rng.uniform(0.02, 0.5, 30)})
    res = harmonic_enrichment(off, thetas, tolerance=1e-3, jitter=0.02, n_null=2000)
    assert res["p_value"] > 0.05
    with pytest.raises(RopeInterpError, match="jitter"):
        harmonic_enrichment(on, thetas, tolerance=1e-3, jitter=0.0)
