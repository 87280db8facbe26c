"""Spectra of attention rows and their entropy (claim set C, Ruscio & Silvestri): per head, the
spectral entropy of attention rows over key positions against the row's positional entropy, under
every reasonable definition of "spectral entropy" (window, mean removal, DC bin, aggregation), so
that a conclusion can be checked for robustness to the choice. Conventions: `analysis.fourier`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from rope_interp.analysis.fourier import band_energy, fft_size
from rope_interp.analysis.statistics import correlation_test
from rope_interp.core.runner import run_batches
from rope_interp.core.spec import RotarySpec, spec_for
from rope_interp.errors import RopeInterpError
from rope_interp.host import HostModel

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
    model: HostModel,
    batches: Iterable[Tensor],
    layers: int | Iterable[int] | None = None,
    min_row: int = 32,
    definition: SpectralDefinition = PAPER_DEFINITION,
    row_step: int = 1,
    n_fft: int | None = None,
    progress: bool = True,
    *,
    spec: RotarySpec | None = None,
) -> pd.DataFrame:
    """Spectra of attention rows over the key axis, one row per (layer, head).

    Rows m = min_row−1, min_row−1+row_step, … ≤ pos−1; each row's causal part 0..m is turned
    into a power spectrum as `definition` says (default `PAPER_DEFINITION`: raw row × periodic
    Hann window of length m+1, DC kept, one spectrum per head), zero padded to a common `n_fft`
    (default the next power of two ≥ 2·pos). Columns: low, mid, high (band energy fractions
    of each row's power, DC excluded, averaged over rows), spectral_entropy (in bits, as the
    definition's aggregation says), attention_entropy (mean over the same rows of each row's
    entropy, in bits: the "positional entropy"), n_rows. `spec`: the model's spec, bound once
    by the caller (default: read from `model`).
    """
    spec = spec_for(model, spec)
    table = _entropy_pass(
        model, spec, batches, layers, [definition], min_row, row_step, n_fft, progress, True
    )
    return table.drop(columns=["definition"])


def spectral_entropy_definitions(
    model: HostModel,
    batches: Iterable[Tensor],
    definitions: Sequence[SpectralDefinition] | None = None,
    layers: int | Iterable[int] | None = None,
    min_row: int = 32,
    row_step: int = 1,
    n_fft: int | None = None,
    progress: bool = True,
    *,
    spec: RotarySpec | None = None,
) -> pd.DataFrame:
    """Spectral and attention entropy per (definition, layer, head) in one pass over the
    corpus (default definitions: `definition_grid()`). Columns: definition (its label),
    window, remove_mean, include_dc, aggregation, layer, head, low, mid, high (band energy
    fractions as in `attention_spectra`, under the definition's window and mean removal; the
    DC bin is always excluded from them), spectral_entropy, attention_entropy, n_rows. `spec`:
    the model's spec, bound once by the caller (default: read from `model`)."""
    spec = spec_for(model, spec)
    definitions = list(definitions) if definitions is not None else definition_grid()
    if not definitions:
        raise RopeInterpError("Give at least one SpectralDefinition.")
    return _entropy_pass(
        model, spec, batches, layers, definitions, min_row, row_step, n_fft, progress
    )


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
    model: HostModel,
    spec: RotarySpec,
    batches,
    layers,
    definitions: Sequence[SpectralDefinition],
    min_row: int,
    row_step: int,
    n_fft: int | None,
    progress: bool,
    single: bool = False,
) -> pd.DataFrame:
    if row_step < 1:
        raise RopeInterpError(f"row_step must be ≥ 1, got {row_step}.")
    if min_row < 2:
        raise RopeInterpError(f"min_row must be ≥ 2 (a spectrum needs 2 keys), got {min_row}.")
    chosen = spec.resolve_layers(layers)
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
            size = fft_size(n_pos, n_fft)
            rows_m = torch.arange(min_row - 1, n_pos, row_step, device=pattern.device)
            freqs = torch.fft.rfftfreq(size, dtype=torch.float64, device=pattern.device)
            a = acc.setdefault(layer, {"rows": 0, "aent": 0, "bands": {}})
            for b in range(pattern.shape[0]):
                rows = pattern[b][:, rows_m]  # [head, M, k]; zero beyond the causal part
                a["aent"] = a["aent"] + _entropy_bits(rows).sum(1).cpu()
                a["rows"] += len(rows_m)
                for variant in variants:
                    power = row_power(rows, rows_m, variant[0], variant[1], size)
                    _accumulate(a, power, variant, definitions)
                    energy = band_energy(freqs, power).nan_to_num(0.0).sum(1).cpu()
                    a["bands"][variant] = a["bands"].get(variant, 0) + energy

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
                bands_ = a["bands"][(d.window, d.remove_mean)][h] / a["rows"]
                row.update(low=float(bands_[0]), mid=float(bands_[1]), high=float(bands_[2]))
                row.update(
                    spectral_entropy=float(sent[h]),
                    attention_entropy=float(a["aent"][h] / a["rows"]),
                    n_rows=int(a["rows"]),
                )
                rows.append(row)
    frame = pd.DataFrame(rows)
    if not single:
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
