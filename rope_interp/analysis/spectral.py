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
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Complex, Float
from torch import Tensor

from rope_interp.analysis._common import spec_of
from rope_interp.analysis.statistics import correlation_test, spearman
from rope_interp.backends import backend_for
from rope_interp.capturing import resolve_layers
from rope_interp.errors import RopeInterpError
from rope_interp.pairs import to_pairs
from rope_interp.runner import run_batches

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

    hooks = []
    for layer in chosen:
        for kind in kinds:
            point = backend_for(model).read_point(kind, layer)  # after any QK-norm

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


WINDOWS = ("none", "hann_periodic", "hann_symmetric")
AGGREGATIONS = ("mean_power", "row_entropy")


@dataclass(frozen=True)
class SpectralDefinition:
    """How an attention row becomes a spectrum and a head's spectral entropy.

    - window: "none" (rectangular over the row's causal keys 0..m), "hann_periodic"
      (w[n] = ½(1 − cos 2πn/N), N = m+1: zero at key 0 only) or "hann_symmetric"
      (w[n] = ½(1 − cos 2πn/(N−1)): zero at key 0 *and* at key m, the query itself).
    - remove_mean: subtract the mean over the causal keys (1/(m+1)) before windowing.
    - include_dc: keep the 0-frequency bin in the entropy.
    - aggregation: "mean_power" = entropy of the head's power spectrum summed over rows and
      sequences (normalised to a distribution); "row_entropy" = mean over rows of each row's
      spectral entropy.

    The default is the pipeline Ruscio et al. (v4) describe — DFT of each head's attention
    distribution with a Hann window and zero padding, nothing else — with the two choices
    they leave open made explicit: the periodic Hann window (scipy's `get_window("hann")`,
    torch's default) and one spectrum per head (the mean power).
    """

    window: str = "hann_periodic"
    remove_mean: bool = False
    include_dc: bool = True
    aggregation: str = "mean_power"

    def __post_init__(self):
        if self.window not in WINDOWS:
            raise RopeInterpError(f"window must be one of {WINDOWS}, got {self.window!r}.")
        if self.aggregation not in AGGREGATIONS:
            raise RopeInterpError(
                f"aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}."
            )

    @property
    def label(self) -> str:
        return (
            f"{self.window}, {'mean removed' if self.remove_mean else 'raw'}, "
            f"DC {'kept' if self.include_dc else 'excluded'}, {self.aggregation}"
        )


PAPER_DEFINITION = SpectralDefinition()


def definition_grid() -> list[SpectralDefinition]:
    """Every combination of window × mean removal × DC bin × aggregation, less the duplicates
    (no window and mean removed: the DC bin is exactly 0, so keeping it changes nothing). The
    paper's default comes first."""
    out = [PAPER_DEFINITION]
    for window in WINDOWS:
        for remove_mean in (False, True):
            for include_dc in (True, False):
                if window == "none" and remove_mean and include_dc:
                    continue
                for aggregation in AGGREGATIONS:
                    d = SpectralDefinition(window, remove_mean, include_dc, aggregation)
                    if d not in out:
                        out.append(d)
    return out


def row_window(length: int, window: str) -> Float[Tensor, "length"]:
    """The window of one attention row with `length` = m+1 causal keys (float64)."""
    if window == "none":
        return torch.ones(length, dtype=torch.float64)
    if window == "hann_periodic":
        return torch.hann_window(length, periodic=True, dtype=torch.float64)
    if window == "hann_symmetric":
        return torch.hann_window(length, periodic=False, dtype=torch.float64)
    raise RopeInterpError(f"window must be one of {WINDOWS}, got {window!r}.")


def row_power(
    rows: Float[Tensor, "*batch M key"],
    rows_m: Tensor,
    window: str,
    remove_mean: bool,
    n_fft: int,
) -> Float[Tensor, "*batch M freq"]:
    """One-sided power |rfft|² of attention rows: row r keeps keys 0..rows_m[r] (its causal
    part), optionally minus their mean, times the row's window, zero padded to n_fft."""
    windows = _row_windows(rows_m, rows.shape[-1], window).to(rows.device)
    x = rows
    if remove_mean:
        causal = (windows.new_ones(windows.shape).cumsum(-1) <= (rows_m[:, None] + 1)).to(x.dtype)
        mean = (rows * causal).sum(-1, keepdim=True) / (rows_m[:, None] + 1).to(x.dtype)
        x = (rows - mean) * causal
    return torch.fft.rfft(x * windows, n=n_fft).abs().square()


def _entropy_bits(power: Tensor) -> Tensor:
    p = power / power.sum(-1, keepdim=True).clamp(min=1e-300)
    return -(p * p.clamp(min=1e-300).log2()).sum(-1)


def attention_spectra(
    model,
    batches: Iterable[Tensor],
    layers: int | Iterable[int] | None = None,
    min_row: int = 32,
    definition: SpectralDefinition = PAPER_DEFINITION,
    row_step: int = 1,
    n_fft: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Spectra of attention rows over the key axis, one row per (layer, head).

    Rows m = min_row−1, min_row−1+row_step, … ≤ pos−1; each row's causal part 0..m is turned
    into a power spectrum as `definition` says (default `PAPER_DEFINITION`: raw row × periodic
    Hann window of length m+1, DC kept, one spectrum per head), zero padded to a common `n_fft`
    (default the next power of two ≥ 2·pos). Columns: low, mid, high (band energy fractions
    of each row's power, DC excluded, averaged over rows), spectral_entropy (in bits, as the
    definition's aggregation says), attention_entropy (mean over the same rows of each row's
    entropy, in bits: the "positional entropy"), n_rows.
    """
    table = _entropy_pass(
        model, batches, layers, [definition], min_row, row_step, n_fft, progress, bands_for=0
    )
    return table.drop(columns=["definition"])


def spectral_entropy_definitions(
    model,
    batches: Iterable[Tensor],
    definitions: Sequence[SpectralDefinition] | None = None,
    layers: int | Iterable[int] | None = None,
    min_row: int = 32,
    row_step: int = 1,
    n_fft: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Spectral and attention entropy per (definition, layer, head) in one pass over the
    corpus (default definitions: `definition_grid()`). Columns: definition (its label),
    window, remove_mean, include_dc, aggregation, layer, head, spectral_entropy,
    attention_entropy, n_rows."""
    definitions = list(definitions) if definitions is not None else definition_grid()
    if not definitions:
        raise RopeInterpError("Give at least one SpectralDefinition.")
    return _entropy_pass(model, batches, layers, definitions, min_row, row_step, n_fft, progress)


def entropy_correlation_table(
    table: pd.DataFrame, n_permutations: int = 10_000, seed: int = 0
) -> pd.DataFrame:
    """Correlation over heads between spectral and attention entropy, per definition (rows of
    `spectral_entropy_definitions`): spearman, spearman_p, pearson, pearson_p (two-sided
    permutation p-values), n. The claim (Ruscio et al. v4) is a negative correlation."""
    rows = []
    for label, part in table.groupby("definition", sort=False):
        test = correlation_test(
            part["spectral_entropy"], part["attention_entropy"], n_permutations, seed
        )
        first = part.iloc[0]
        rows.append(
            {
                "definition": label,
                "window": first["window"],
                "remove_mean": bool(first["remove_mean"]),
                "include_dc": bool(first["include_dc"]),
                "aggregation": first["aggregation"],
                **test,
            }
        )
    return pd.DataFrame(rows)


def robustness_verdict(correlations: pd.DataFrame, alpha: float = 0.05) -> str:
    """Verdict over definitions: "holds" when Spearman ρ is negative with permutation
    p < alpha under every definition, "fails" when it is under none, "depends on the
    definition" otherwise."""
    negative = (correlations["spearman"] < 0) & (correlations["spearman_p"] < alpha)
    if negative.all():
        return "holds"
    if not negative.any():
        return "fails"
    return "depends on the definition"


def _entropy_pass(
    model,
    batches,
    layers,
    definitions: Sequence[SpectralDefinition],
    min_row: int,
    row_step: int,
    n_fft: int | None,
    progress: bool,
    bands_for: int | None = None,
) -> pd.DataFrame:
    if row_step < 1:
        raise RopeInterpError(f"row_step must be ≥ 1, got {row_step}.")
    if min_row < 2:
        raise RopeInterpError(f"min_row must be ≥ 2 (a spectrum needs 2 keys), got {min_row}.")
    spec = spec_of(model)
    chosen = resolve_layers(spec, layers)
    variants = sorted({(d.window, d.remove_mean) for d in definitions})
    acc: dict[int, dict] = {}

    hooks = []
    for layer in chosen:

        def fn(tensor, hook, layer=layer):
            pattern = tensor.detach().double()  # [batch, head, q, k]
            n_pos = pattern.shape[-1]
            if n_pos < min_row:
                raise RopeInterpError(
                    f"Sequences have {n_pos} tokens, fewer than min_row={min_row}."
                )
            size = _n_fft(n_pos, n_fft)
            rows_m = torch.arange(min_row - 1, n_pos, row_step, device=pattern.device)
            freqs = torch.fft.rfftfreq(size, dtype=torch.float64, device=pattern.device)
            a = acc.setdefault(layer, {"rows": 0, "aent": 0, "bands": 0})
            for b in range(pattern.shape[0]):
                rows = pattern[b][:, rows_m]  # [head, M, k]; zero beyond the causal part
                a["aent"] = a["aent"] + _entropy_bits(rows).sum(1).cpu()
                a["rows"] += len(rows_m)
                for variant in variants:
                    power = row_power(rows, rows_m, variant[0], variant[1], size)
                    _accumulate(a, power, variant, definitions)
                    if bands_for is not None and variant == (
                        definitions[bands_for].window,
                        definitions[bands_for].remove_mean,
                    ):
                        energy = band_energy(freqs, power).nan_to_num(0.0)
                        a["bands"] = a["bands"] + energy.sum(1).cpu()

        hooks.append((f"blocks.{layer}.attn.hook_pattern", fn))

    run_batches(model, batches, hooks, "attention spectra", progress)
    rows = []
    for d in definitions:
        key = (d.include_dc, d.window, d.remove_mean)
        for layer in chosen:
            a = acc[layer]
            if d.aggregation == "mean_power":
                sent = _entropy_bits(a["sum_power"][key])
            else:
                sent = a["sum_row_entropy"][key] / a["rows"]
            for h in range(spec.n_heads):
                row = {
                    "definition": d.label,
                    "window": d.window,
                    "remove_mean": d.remove_mean,
                    "include_dc": d.include_dc,
                    "aggregation": d.aggregation,
                    "layer": layer,
                    "head": h,
                }
                if bands_for is not None:
                    bands_ = a["bands"][h] / a["rows"]
                    row.update(low=float(bands_[0]), mid=float(bands_[1]), high=float(bands_[2]))
                row.update(
                    spectral_entropy=float(sent[h]),
                    attention_entropy=float(a["aent"][h] / a["rows"]),
                    n_rows=int(a["rows"]),
                )
                rows.append(row)
    frame = pd.DataFrame(rows)
    if bands_for is None:
        return frame
    return frame.drop(columns=["window", "remove_mean", "include_dc", "aggregation"])


def _accumulate(a: dict, power: Tensor, variant: tuple, definitions) -> None:
    """Add one sequence's row spectra `[head, M, freq]` of one (window, mean) variant to the
    sums each definition needs: summed power (mean_power) or summed row entropies."""
    for include_dc in {d.include_dc for d in definitions if (d.window, d.remove_mean) == variant}:
        part = power if include_dc else power[..., 1:]
        key = (include_dc,) + variant
        aggs = {
            d.aggregation
            for d in definitions
            if (d.window, d.remove_mean, d.include_dc) == variant + (include_dc,)
        }
        if "mean_power" in aggs:
            sums = a.setdefault("sum_power", {})
            sums[key] = sums.get(key, 0) + part.sum(1).cpu()
        if "row_entropy" in aggs:
            sums = a.setdefault("sum_row_entropy", {})
            sums[key] = sums.get(key, 0) + _entropy_bits(part).sum(1).cpu()


def _row_windows(rows_m: Tensor, n_pos: int, window: str) -> Tensor:
    """`[M, n_pos]` windows, row r of length N = rows_m[r]+1 (zero beyond key rows_m[r]);
    the same values as `row_window(N, window)`, built at once."""
    n = torch.arange(n_pos, dtype=torch.float64, device="cpu")[None, :]
    length = (rows_m.cpu().double() + 1)[:, None]
    causal = (n < length).double()
    if window == "none":
        return causal
    if window not in WINDOWS:
        raise RopeInterpError(f"window must be one of {WINDOWS}, got {window!r}.")
    period = length if window == "hann_periodic" else length - 1
    return 0.5 * (1 - torch.cos(2 * math.pi * n / period)) * causal


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

    hooks = []
    for layer in chosen:
        point = backend_for(model).read_point("q", layer)  # after any QK-norm

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
