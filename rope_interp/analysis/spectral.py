"""Spectra over positions (claim set C, Ruscio & Silvestri) measured on a model: of rotated q/k
pair components and of MLP activations, and phase alignment vs MLP activation magnitude.

The Fourier tools (power spectra, band energies, peaks, harmonics and their null model) are in
`analysis.fourier`; the attention-row spectra and the spectral-entropy definitions in
`analysis.attention_spectra`. Their public names are importable from here as well.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from rope_interp.analysis.attention_spectra import (
    SpectralDefinition,
    attention_spectra,
    entropy_correlation_table,
    robustness_verdict,
    spectral_entropy_definitions,
)
from rope_interp.analysis.fourier import (
    band_energy,
    complex_spectrum,
    find_peaks,
    harmonic_enrichment,
    match_harmonics,
    power_spectrum,
)
from rope_interp.analysis.statistics import spearman
from rope_interp.core.pairs import to_pairs
from rope_interp.core.runner import run_batches
from rope_interp.core.spec import RotarySpec, spec_for
from rope_interp.errors import RopeInterpError
from rope_interp.host import HostModel

__all__ = [
    "SpectralDefinition",
    "attention_spectra",
    "entropy_correlation_table",
    "harmonic_enrichment",
    "mlp_spectra",
    "pair_spectra",
    "phase_alignment",
    "power_spectrum",
    "robustness_verdict",
    "spectral_entropy_definitions",
]


def pair_spectra(
    model: HostModel,
    batches: Iterable[Tensor],
    layers: int | Iterable[int] | None = None,
    kinds: Sequence[str] = ("q", "k"),
    progress: bool = True,
    *,
    spec: RotarySpec | None = None,
) -> pd.DataFrame:
    """Spectrum over positions of each rotated pair z_i(p)·e^{ipθ_i} (from `hook_q`/`hook_k`
    and the model's phasors), averaged over sequences. One row per (kind, layer, head, pair)
    (head a KV head for k): theta, expected_freq (θ/2π), peak_freq (two-sided, signed),
    peak_share (power within ±1/pos of the expected frequency / total), matches (|peak −
    expected| ≤ 1/pos), resolvable (expected_freq ≥ 2/pos: two cycles fit in the window).
    `spec`: the model's spec, bound once by the caller (default: read from `model`)."""
    spec = spec_for(model, spec)
    chosen = spec.resolve_layers(layers)
    acc: dict[tuple[str, int], Tensor] = {}
    freqs_ref: list[Tensor] = []

    hooks = []
    for layer in chosen:
        for kind in kinds:
            point = spec.backend.read_point(kind, layer)  # after any QK-norm

            def fn(tensor, hook, kind=kind, layer=layer, point=point):
                z = to_pairs(point.read(tensor.detach()).double(), spec)[0]  # [b,pos,h,pair]
                pos = torch.arange(z.shape[1], device=z.device)
                z = z * spec.phasors(layer, pos, torch.complex128)[None, :, None]
                freqs, power = complex_spectrum(z.permute(0, 2, 3, 1))
                if not freqs_ref:
                    freqs_ref.append(freqs)
                total = power.sum(0).cpu()
                acc[(kind, layer)] = acc.get((kind, layer), 0) + total

            hooks.append((point.hook, fn))

    lengths: set[int] = set()

    def one_length(tokens: Tensor, _) -> None:
        lengths.add(int(tokens.shape[1]))
        if len(lengths) > 1:
            raise RopeInterpError(
                f"All batches must have one sequence length; got {sorted(lengths)}."
            )

    run_batches(model, batches, hooks, "pair spectra", progress, after_batch=one_length)
    n_pos = lengths.pop()
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


def mlp_spectra(
    model: HostModel,
    batches: Iterable[Tensor],
    layers: int | Iterable[int] | None = None,
    n_peaks: int = 5,
    max_order: int = 2,
    progress: bool = True,
    *,
    spec: RotarySpec | None = None,
) -> pd.DataFrame:
    """Spectra over positions of MLP activations (`mlp.hook_post`; each neuron's sequence:
    mean removed, Hann, zero padded), averaged over neurons and sequences, per layer. One row per
    (layer, peak rank): low, mid, high (layer band energies), freq, power_share, the nearest
    harmonic of the layer's θ_i (`match_harmonics`, tolerance 1/pos), matched and chance_rate
    (the match rate a random frequency would get). `spec`: the model's spec, bound once by
    the caller (default: read from `model`)."""
    spec = spec_for(model, spec)
    chosen = spec.resolve_layers(layers)
    acc: dict[int, Tensor] = {}
    meta: dict[str, Any] = {}

    hooks = []
    for layer in chosen:

        def fn(tensor, hook, layer=layer):
            x = tensor.detach().double().transpose(1, 2)  # [b, neuron, pos]
            freqs, power = power_spectrum(x)
            meta["freqs"], meta["n_pos"] = freqs.cpu(), x.shape[-1]
            acc[layer] = acc.get(layer, 0) + power.mean(1).sum(0).cpu()

        hooks.append((f"blocks.{layer}.mlp.hook_post", fn))

    run_batches(model, batches, hooks, "MLP spectra", progress)
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
    model: HostModel,
    batches: Iterable[Tensor],
    layers: int | Iterable[int] | None = None,
    progress: bool = True,
    *,
    spec: RotarySpec | None = None,
) -> pd.DataFrame:
    """Phase alignment vs MLP activation magnitude, per layer.

    Alignment of the rotated query at position p (one operationalisation of Ruscio &
    Silvestri's "phase alignment"): R(p) = |Σ_i w_i e^{iφ_i(p)}| / Σ_i w_i over the pairs of each
    head (φ_i the rotated angle, w_i = |z_i|), averaged over heads — 1 when all pairs point the
    same way. Magnitude: mean |mlp.hook_post| at p in the same layer. One row per layer: the
    Spearman correlation over all tokens (`spearman`), the mean alignment, and the mean MLP
    magnitude in the top and bottom alignment quartiles (`mlp_top_quartile`,
    `mlp_bottom_quartile`). `spec`: the model's spec, bound once by the caller (default: read
    from `model`)."""
    spec = spec_for(model, spec)
    chosen = spec.resolve_layers(layers)
    align: dict[int, list[Tensor]] = {layer: [] for layer in chosen}
    mag: dict[int, list[Tensor]] = {layer: [] for layer in chosen}

    hooks: list[tuple[str, Any]] = []
    for layer in chosen:
        point = spec.backend.read_point("q", layer)  # after any QK-norm

        def q_fn(tensor, hook, layer=layer, point=point):
            z = to_pairs(point.read(tensor.detach()).double(), spec)[0]
            pos = torch.arange(z.shape[1], device=z.device)
            z = z * spec.phasors(layer, pos, torch.complex128)[None, :, None]
            r = z.sum(-1).abs() / z.abs().sum(-1).clamp(min=1e-300)  # [b, pos, head]
            align[layer].append(r.mean(-1).flatten().cpu())

        def mlp_fn(tensor, hook, layer=layer):
            mag[layer].append(tensor.detach().double().abs().mean(-1).flatten().cpu())

        hooks.append((point.hook, q_fn))
        hooks.append((f"blocks.{layer}.mlp.hook_post", mlp_fn))

    run_batches(model, batches, hooks, "phase alignment", progress)
    rows = []
    for layer in chosen:
        a, m = torch.cat(align[layer]), torch.cat(mag[layer])
        rho = spearman(a.numpy(), m.numpy())
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
