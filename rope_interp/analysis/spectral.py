"""Spectra over positions (claim set C, Ruscio & Silvestri): of rotated q/k pair components, of
attention rows and of MLP activations; band energies, harmonic peaks, and phase alignment vs MLP
activation magnitude.

Conventions. Frequencies are in cycles per token (Nyquist = 0.5); a pair with θ_i rad/token
oscillates at f_i = θ_i / 2π. Real signals: mean removed, Hann window, zero padded to `n_fft`
(default the next power of two ≥ 2·length), one-sided power |X(f)|². Bands are fractions of
Nyquist: low [0, 0.25), mid [0.25, 0.75), high [0.75, 1]; the DC bin is excluded (after mean
removal it only holds window leakage). Rotated pairs z_i(p)·e^{ipθ_i} are complex: their
two-sided spectrum peaks at +f_i when the pre-rotation z_i is roughly constant.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Complex, Float
from torch import Tensor

from rope_interp.analysis._common import batch_list, run_hooks, spec_of
from rope_interp.capture import hook_name, resolve_layers
from rope_interp.errors import RopeInterpError
from rope_interp.pairs import to_pairs

BAND_EDGES = (0.25, 0.75)


def _n_fft(length: int, n_fft: int | None) -> int:
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
    size = _n_fft(length, n_fft)
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
    size = _n_fft(length, n_fft)
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


# ---- model passes -----------------------------------------------------------------------------
def pair_spectra(
    model,
    batches: Iterable[Tensor],
    layers: int | Iterable[int] | None = None,
    kinds: Sequence[str] = ("q", "k"),
    progress: bool = True,
) -> pd.DataFrame:
    """Spectrum over positions of each rotated pair z_i(p)·e^{ipθ_i} (from `hook_q`/`hook_k`
    and the model's phasors), averaged over sequences. One row per (kind, layer, head, pair)
    (head a KV head for k): theta, expected_freq (θ/2π), peak_freq (two-sided, signed),
    peak_share (power within ±1/pos of the expected frequency / total), matches (|peak −
    expected| ≤ 1/pos), resolvable (expected_freq ≥ 2/pos: two cycles fit in the window)."""
    spec = spec_of(model)
    chosen = resolve_layers(spec, layers)
    acc: dict[tuple[str, int], Tensor] = {}
    freqs_ref: list[Tensor] = []

    def hooks_for():
        hooks = []
        for layer in chosen:
            for kind in kinds:

                def fn(tensor, hook, kind=kind, layer=layer):
                    z = to_pairs(tensor.detach().double(), spec)[0]  # [b, pos, head, pair]
                    pos = torch.arange(z.shape[1], device=z.device)
                    z = z * spec.phasors(layer, pos, torch.complex128)[None, :, None]
                    freqs, power = complex_spectrum(z.permute(0, 2, 3, 1))
                    if not freqs_ref:
                        freqs_ref.append(freqs)
                    total = power.sum(0).cpu()
                    acc[(kind, layer)] = acc.get((kind, layer), 0) + total

                hooks.append((hook_name(kind, layer), fn))
        return hooks

    batches = batch_list(batches)
    lengths = {int(b.shape[1]) for b in batches}
    if len(lengths) > 1:
        raise RopeInterpError(f"All batches must have one sequence length; got {sorted(lengths)}.")
    n_pos = lengths.pop()
    run_hooks(model, batches, hooks_for, "pair spectra", progress)
    freqs = freqs_ref[0]
    rows = []
    for (kind, layer), power in acc.items():
        expected = spec.thetas[layer].double() / (2 * math.pi)  # [pair]
        peak = freqs[power.argmax(-1)]  # [head, pair]
        near = (freqs[None, :] - expected[:, None]).abs() <= 1.0 / n_pos  # [pair, freq]
        share = (power * near[None]).sum(-1) / power.sum(-1).clamp(min=1e-300)
        for h in range(power.shape[0]):
            for i in range(spec.n_pairs):
                rows.append(
                    {
                        "kind": kind,
                        "layer": layer,
                        "head": h,
                        "pair": i,
                        "theta": float(spec.thetas[layer, i]),
                        "expected_freq": float(expected[i]),
                        "peak_freq": float(peak[h, i]),
                        "peak_share": float(share[h, i]),
                        "matches": bool(abs(peak[h, i] - expected[i]) <= 1.0 / n_pos),
                        "resolvable": bool(expected[i] >= 2.0 / n_pos),
                    }
                )
    return pd.DataFrame(rows).sort_values(["kind", "layer", "head", "pair"], ignore_index=True)


def attention_spectra(
    model,
    batches: Iterable[Tensor],
    layers: int | Iterable[int] | None = None,
    min_row: int = 32,
    progress: bool = True,
) -> pd.DataFrame:
    """Spectra of attention rows over the key axis (rows m ≥ min_row−1, each row's causal part
    0..m: mean removed, Hann window, zero padded to a common n_fft). One row per (layer, head):
    low, mid, high (band energy fractions), spectral_entropy (of the normalised mean power,
    DC excluded, in bits), attention_entropy (mean entropy of the attention rows, in bits)."""
    spec = spec_of(model)
    chosen = resolve_layers(spec, layers)
    acc: dict[int, dict[str, Tensor]] = {}

    def hooks_for():
        hooks = []
        for layer in chosen:

            def fn(tensor, hook, layer=layer):
                pattern = tensor.detach().double()  # [batch, head, q, k]
                n_pos = pattern.shape[-1]
                if n_pos < min_row:
                    raise RopeInterpError(
                        f"Sequences have {n_pos} tokens, fewer than min_row={min_row}."
                    )
                size = _n_fft(n_pos, None)
                rows_m, window = _row_windows(min_row, n_pos, pattern.device)
                n_keys = (rows_m + 1).double()
                freqs = torch.fft.rfftfreq(size, dtype=torch.float64, device=pattern.device)
                a = acc.setdefault(layer, {"bands": 0, "sent": 0, "aent": 0, "rows": 0})
                for b in range(pattern.shape[0]):
                    rows = pattern[b][:, rows_m]  # [head, M, k]; zero beyond the causal part
                    mean = rows.sum(-1, keepdim=True) / n_keys[:, None]
                    x = (rows - mean) * window
                    power = torch.fft.rfft(x, n=size).abs().square()  # [head, M, freq]
                    energy = band_energy(freqs, power).nan_to_num(0.0)
                    p = power[..., 1:] / power[..., 1:].sum(-1, keepdim=True).clamp(min=1e-300)
                    sent = -(p * p.clamp(min=1e-300).log2()).sum(-1)
                    aent = -(rows * rows.clamp(min=1e-300).log2()).sum(-1)
                    a["bands"] = a["bands"] + energy.sum(1).cpu()
                    a["sent"] = a["sent"] + sent.sum(1).cpu()
                    a["aent"] = a["aent"] + aent.sum(1).cpu()
                    a["rows"] += len(rows_m)

            hooks.append((f"blocks.{layer}.attn.hook_pattern", fn))
        return hooks

    run_hooks(model, batches, hooks_for, "attention spectra", progress)
    rows = []
    for layer in chosen:
        a = acc[layer]
        for h in range(spec.n_heads):
            bands_ = a["bands"][h] / a["rows"]
            rows.append(
                {
                    "layer": layer,
                    "head": h,
                    "low": float(bands_[0]),
                    "mid": float(bands_[1]),
                    "high": float(bands_[2]),
                    "spectral_entropy": float(a["sent"][h] / a["rows"]),
                    "attention_entropy": float(a["aent"][h] / a["rows"]),
                }
            )
    return pd.DataFrame(rows)


def _row_windows(min_row: int, n_pos: int, device) -> tuple[Tensor, Tensor]:
    """Query rows m = min_row−1..n_pos−1 and `[M, n_pos]` Hann windows of length m+1 each
    (zero beyond key m)."""
    rows_m = torch.arange(min_row - 1, n_pos, device=device)
    window = torch.zeros(len(rows_m), n_pos, dtype=torch.float64, device=device)
    for r, m in enumerate(rows_m.tolist()):
        window[r, : m + 1] = torch.hann_window(
            m + 1, periodic=False, dtype=torch.float64, device=device
        )
    return rows_m, window


def mlp_spectra(
    model,
    batches: Iterable[Tensor],
    layers: int | Iterable[int] | None = None,
    n_peaks: int = 5,
    max_order: int = 2,
    progress: bool = True,
) -> pd.DataFrame:
    """Spectra over positions of MLP activations (`mlp.hook_post`; each neuron's sequence:
    mean removed, Hann, zero padded), averaged over neurons and sequences, per layer. One row per
    (layer, peak rank): low, mid, high (layer band energies), freq, power_share, the nearest
    harmonic of the layer's θ_i (`match_harmonics`, tolerance 1/pos), matched and chance_rate
    (the match rate a random frequency would get)."""
    spec = spec_of(model)
    chosen = resolve_layers(spec, layers)
    acc: dict[int, Tensor] = {}
    meta: dict[str, object] = {}

    def hooks_for():
        hooks = []
        for layer in chosen:

            def fn(tensor, hook, layer=layer):
                x = tensor.detach().double().transpose(1, 2)  # [b, neuron, pos]
                freqs, power = power_spectrum(x)
                meta["freqs"], meta["n_pos"] = freqs.cpu(), x.shape[-1]
                acc[layer] = acc.get(layer, 0) + power.mean(1).sum(0).cpu()

            hooks.append((f"blocks.{layer}.mlp.hook_post", fn))
        return hooks

    run_hooks(model, batches, hooks_for, "MLP spectra", progress)
    freqs, n_pos = meta["freqs"], int(meta["n_pos"])
    frames = []
    for layer in chosen:
        power = acc[layer]
        energy = band_energy(freqs, power)
        peaks = find_peaks(freqs, power, n_peaks, min_freq=1.0 / n_pos)
        peaks = match_harmonics(peaks, spec.thetas[layer], 1.0 / n_pos, max_order)
        peaks.insert(0, "layer", layer)
        peaks["low"], peaks["mid"], peaks["high"] = (float(e) for e in energy)
        peaks["chance_rate"] = peaks.attrs["chance_rate"]
        frames.append(peaks)
    return pd.concat(frames, ignore_index=True)


def phase_alignment(
    model,
    batches: Iterable[Tensor],
    layers: int | Iterable[int] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Phase alignment vs MLP activation magnitude, per layer.

    Alignment of the rotated query at position p (one operationalisation of Ruscio &
    Silvestri's "phase alignment"): R(p) = |Σ_i w_i e^{iφ_i(p)}| / Σ_i w_i over the pairs of each
    head (φ_i the rotated angle, w_i = |z_i|), averaged over heads — 1 when all pairs point the
    same way. Magnitude: mean |mlp.hook_post| at p in the same layer. One row per layer: the
    Spearman correlation over all tokens (`spearman`), the mean alignment, and the mean MLP
    magnitude in the top and bottom alignment quartiles (`mlp_top_quartile`,
    `mlp_bottom_quartile`)."""
    spec = spec_of(model)
    chosen = resolve_layers(spec, layers)
    align: dict[int, list[Tensor]] = {layer: [] for layer in chosen}
    mag: dict[int, list[Tensor]] = {layer: [] for layer in chosen}

    def hooks_for():
        hooks = []
        for layer in chosen:

            def q_fn(tensor, hook, layer=layer):
                z = to_pairs(tensor.detach().double(), spec)[0]
                pos = torch.arange(z.shape[1], device=z.device)
                z = z * spec.phasors(layer, pos, torch.complex128)[None, :, None]
                r = z.sum(-1).abs() / z.abs().sum(-1).clamp(min=1e-300)  # [b, pos, head]
                align[layer].append(r.mean(-1).flatten().cpu())

            def mlp_fn(tensor, hook, layer=layer):
                mag[layer].append(tensor.detach().double().abs().mean(-1).flatten().cpu())

            hooks.append((hook_name("q", layer), q_fn))
            hooks.append((f"blocks.{layer}.mlp.hook_post", mlp_fn))
        return hooks

    run_hooks(model, batches, hooks_for, "phase alignment", progress)
    rows = []
    for layer in chosen:
        a, m = torch.cat(align[layer]), torch.cat(mag[layer])
        ra, rm = _ranks(a), _ranks(m)
        rho = float(torch.corrcoef(torch.stack([ra, rm]))[0, 1])
        q1, q3 = torch.quantile(a, 0.25), torch.quantile(a, 0.75)
        rows.append(
            {
                "layer": layer,
                "spearman": rho,
                "mean_alignment": float(a.mean()),
                "mlp_top_quartile": float(m[a >= q3].mean()),
                "mlp_bottom_quartile": float(m[a <= q1].mean()),
                "n_tokens": int(a.numel()),
            }
        )
    return pd.DataFrame(rows)


def _ranks(x: Tensor) -> Tensor:
    ranks = torch.empty_like(x)
    ranks[x.argsort()] = torch.arange(len(x), dtype=x.dtype)
    return ranks
