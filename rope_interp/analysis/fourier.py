"""Fourier tools for the spectral analyses: power spectra over positions, band energies, spectral
peaks, and the harmonics of θ_i with the null model that says how often a random peak would match.

Conventions. Frequencies are in cycles per token (Nyquist = 0.5); a pair with θ_i rad/token
oscillates at f_i = θ_i / 2π. Real signals: mean removed, Hann window, zero padded to `n_fft`
(default the next power of two ≥ 2·length), one-sided power |X(f)|². Bands are fractions of
Nyquist: low [0, 0.25), mid [0.25, 0.75), high [0.75, 1]; the DC bin is excluded (after mean
removal it only holds window leakage). Rotated pairs z_i(p)·e^{ipθ_i} are complex: their
two-sided spectrum peaks at +f_i when the pre-rotation z_i is roughly constant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Complex, Float
from torch import Tensor

from rope_interp.errors import RopeInterpError

BAND_EDGES = (0.25, 0.75)


def fft_size(length: int, n_fft: int | None) -> int:
    """The FFT length: `n_fft`, or the next power of two ≥ 2·length (zero padding)."""
    if n_fft is None:
        return 1 << max(1, math.ceil(math.log2(2 * length)))
    if n_fft < length:
        raise RopeInterpError(f"n_fft ({n_fft}) must be ≥ the signal length ({length}).")
    return n_fft


def power_spectrum(
    x: Float[Tensor, "*batch pos"], n_fft: int | None = None, detrend: bool = True
) -> tuple[Float[Tensor, "freq"], Float[Tensor, "*batch freq"]]:
    """One-sided power spectrum of real signals over the last axis (Hann window, zero padding).
    Returns (frequencies in cycles/token from 0 to 0.5, power)."""
    length = x.shape[-1]
    if length < 2:
        raise RopeInterpError(f"Need at least 2 positions for a spectrum, got {length}.")
    size = fft_size(length, n_fft)
    x = x.double()
    if detrend:
        x = x - x.mean(-1, keepdim=True)
    window = torch.hann_window(length, periodic=False, dtype=torch.float64, device=x.device)
    spectrum = torch.fft.rfft(x * window, n=size)
    return torch.fft.rfftfreq(size, dtype=torch.float64, device="cpu"), spectrum.abs().square()


def complex_spectrum(
    z: Complex[Tensor, "*batch pos"], n_fft: int | None = None
) -> tuple[Float[Tensor, "freq"], Float[Tensor, "*batch freq"]]:
    """Two-sided power spectrum of complex signals `[*batch, pos]` (Hann window, zero padding),
    frequencies in cycles/token in [−0.5, 0.5), sorted."""
    length = z.shape[-1]
    size = fft_size(length, n_fft)
    window = torch.hann_window(length, periodic=False, dtype=torch.float64, device=z.device)
    spectrum = torch.fft.fft(z.to(torch.complex128) * window, n=size)
    freqs = torch.fft.fftfreq(size, dtype=torch.float64, device="cpu")  # an axis: on the CPU
    order = freqs.argsort()
    return freqs[order], spectrum.abs().square()[..., order.to(spectrum.device)]


def band_energy(
    freqs: Float[Tensor, "freq"],
    power: Float[Tensor, "*batch freq"],
    edges: Sequence[float] = BAND_EDGES,
) -> Float[Tensor, "*batch 3"]:
    """Fractions of power (DC excluded) in low / mid / high bands; `edges` are fractions of
    Nyquist (0.5 cycles/token). Rows with no power give NaN."""
    rel = freqs.abs() / 0.5
    low = (rel > 0) & (rel < edges[0])
    mid = (rel >= edges[0]) & (rel < edges[1])
    high = rel >= edges[1]
    parts = torch.stack([power[..., m].sum(-1) for m in (low, mid, high)], dim=-1)
    total = parts.sum(-1, keepdim=True)
    return parts / torch.where(total > 0, total, torch.full_like(total, math.nan))


def find_peaks(
    freqs: Float[Tensor, "freq"],
    power: Float[Tensor, "freq"],
    n_peaks: int = 5,
    min_freq: float = 0.0,
) -> pd.DataFrame:
    """The `n_peaks` largest local maxima of a 1-D spectrum above `min_freq` (cycles/token).
    Columns: rank, freq, power, power_share (of the total power above min_freq)."""
    p, freqs = power.double().cpu(), freqs.cpu()  # a table comes out: on the CPU
    interior = (p[1:-1] > p[:-2]) & (p[1:-1] >= p[2:])
    idx = torch.nonzero(interior).flatten() + 1
    idx = idx[freqs[idx] > min_freq]
    total = p[freqs > min_freq].sum().clamp(min=1e-300)
    idx = idx[p[idx].argsort(descending=True, stable=True)][:n_peaks]
    return pd.DataFrame(
        {
            "rank": np.arange(len(idx)),
            "freq": freqs[idx].numpy(),
            "power": p[idx].numpy(),
            "power_share": (p[idx] / total).numpy(),
        }
    )


def harmonic_candidates(thetas: Float[Tensor, "pair"], max_order: int = 2) -> pd.DataFrame:
    """Frequencies (cycles/token, folded into [0, 0.5]) that RoPE and a quadratic
    nonlinearity can produce from the pair frequencies f_i = θ_i/2π: f_i, multiples n·f_i
    (n ≤ max_order), sums f_i + f_j and differences |f_i − f_j|. Columns: freq, kind, i, j."""
    f = (thetas.double() / (2 * math.pi)).tolist()
    rows = []
    for i, fi in enumerate(f):
        rows.append((fi, "fundamental", i, i))
        for n in range(2, max_order + 1):
            rows.append((n * fi, f"multiple x{n}", i, i))
        for j in range(i + 1, len(f)):
            rows.append((fi + f[j], "sum", i, j))
            rows.append((abs(fi - f[j]), "difference", i, j))
    frame = pd.DataFrame(rows, columns=["freq", "kind", "i", "j"])
    folded = np.abs(frame["freq"].to_numpy() - np.round(frame["freq"].to_numpy()))
    frame["freq"] = folded  # aliasing: a frequency f and 1 − f look the same when sampled
    return frame


def match_harmonics(
    peaks: pd.DataFrame, thetas: Float[Tensor, "pair"], tolerance: float, max_order: int = 2
) -> pd.DataFrame:
    """Attach to each peak the nearest harmonic candidate (`harmonic_kind`, `i`, `j`,
    `harmonic_freq`, `distance`) and `matched` (distance ≤ tolerance). `peaks.attrs
    ['chance_rate']` is the fraction of [min peak freq, 0.5] that lies within tolerance of
    some candidate: the match rate of random frequencies, the bar a real match must beat."""
    cand = harmonic_candidates(thetas, max_order)
    cf = cand["freq"].to_numpy()
    out = peaks.copy()
    kinds, ii, jj, hf, dist = [], [], [], [], []
    for f in out["freq"].to_numpy():
        k = int(np.argmin(np.abs(cf - f)))
        kinds.append(cand["kind"].iloc[k])
        ii.append(int(cand["i"].iloc[k]))
        jj.append(int(cand["j"].iloc[k]))
        hf.append(float(cf[k]))
        dist.append(float(abs(cf[k] - f)))
    out["harmonic_kind"], out["i"], out["j"] = kinds, ii, jj
    out["harmonic_freq"], out["distance"] = hf, dist
    out["matched"] = out["distance"] <= tolerance
    lo = float(out["freq"].min()) if len(out) else 0.0
    grid = np.linspace(lo, 0.5, 2001)
    covered = np.abs(grid[:, None] - cf[None, :]).min(1) <= tolerance
    out.attrs["chance_rate"] = float(covered.mean())
    return out


def harmonic_enrichment(
    peaks: pd.DataFrame,
    thetas: Float[Tensor, "layer pair"],
    tolerance: float,
    max_order: int = 2,
    jitter: float = 0.02,
    n_null: int = 10_000,
    seed: int = 0,
) -> dict[str, float]:
    """Do spectral peaks sit on harmonics of the θ_i more often than peaks at nearby random
    frequencies would?

    `peaks` has columns layer and freq (cycles/token), e.g. `mlp_spectra`'s table. Observed:
    the fraction of peaks within `tolerance` of a harmonic candidate of their layer
    (`harmonic_candidates`). Null (keeps the peaks' own distribution over the band): every
    peak moved by an independent uniform offset in [−jitter, +jitter] (reflected into
    [tolerance, 0.5]), `n_null` times. Returns observed, null_mean, null_low / null_high (2.5 /
    97.5 percentiles), p_value = (1 + #{null ≥ observed}) / (1 + n_null) (one-sided:
    enrichment), uniform_rate (the chance of a frequency uniform on [min peak, 0.5]), n_peaks,
    jitter, tolerance."""
    if jitter <= 0 or tolerance <= 0:
        raise RopeInterpError(f"jitter and tolerance must be > 0, got {jitter}, {tolerance}.")
    if n_null < 1:
        raise RopeInterpError(f"n_null must be ≥ 1, got {n_null}.")
    if peaks.empty:
        raise RopeInterpError("No peaks to test.")
    rng = np.random.default_rng(seed)
    observed, null, uniform = [], [], []
    for layer, group in peaks.groupby("layer"):
        cand = np.sort(harmonic_candidates(thetas[int(layer)], max_order)["freq"].to_numpy())
        f = group["freq"].to_numpy()
        observed.append(_near(cand, f, tolerance))
        moved = f[None, :] + rng.uniform(-jitter, jitter, (n_null, len(f)))
        moved = np.abs(moved - tolerance) + tolerance  # reflect at the lower edge
        moved = 0.5 - np.abs(0.5 - moved)  # and at Nyquist
        null.append(_near(cand, moved.ravel(), tolerance).reshape(n_null, len(f)))
        grid = np.linspace(f.min(), 0.5, 4001)
        uniform.append(np.full(len(f), _near(cand, grid, tolerance).mean()))
    hits = np.concatenate(observed)
    null_rate = np.concatenate(null, axis=1).mean(1)
    obs = float(hits.mean())
    return {
        "observed": obs,
        "null_mean": float(null_rate.mean()),
        "null_low": float(np.percentile(null_rate, 2.5)),
        "null_high": float(np.percentile(null_rate, 97.5)),
        "p_value": float((1 + (null_rate >= obs - 1e-12).sum()) / (1 + n_null)),
        "uniform_rate": float(np.concatenate(uniform).mean()),
        "n_peaks": int(len(hits)),
        "jitter": float(jitter),
        "tolerance": float(tolerance),
    }


def _near(sorted_cand: np.ndarray, f: np.ndarray, tolerance: float) -> np.ndarray:
    """Whether each frequency lies within `tolerance` of a sorted candidate."""
    idx = np.clip(np.searchsorted(sorted_cand, f), 1, len(sorted_cand) - 1)
    dist = np.minimum(np.abs(sorted_cand[idx] - f), np.abs(sorted_cand[idx - 1] - f))
    return dist <= tolerance
