"""Analyses that test published claims about RoPE; one module per claim family.

- `usage`: frequency usage maps and band shares (Barbero et al.).
- `positional`: diagonal / previous-token / offset heads and the pairs that build them.
- `outliers`: rotary outliers and offset features, with the frequency and angle bounds
  (Jonasson; derivation in docs/theory.md).
- `sinks`: attention sinks (Gu et al.) and the pairs that make them.
- `spectral`: spectra of pair components and MLP activations, phase alignment (Ruscio et al.);
  `attention_spectra`: attention-row spectra and the spectral-entropy definitions; `fourier`:
  power spectra, bands, peaks, harmonics of θ_i and their null model.
- `massive`: massive q/k values (Jin et al.) mapped to pairs.
- `activations`: massive activations of the residual stream (Sun et al.).
- `decay`: score against distance: RoPE's own (all-ones vs Gaussian) and a trained model's.
- `phase`: a symmetric constant-phase sweep and where positional heads' attention goes.
- `long_context`: per-pair score terms by distance and weighted by attention, over query × key
  tiles (long windows); `angle_coverage`: angles reached in training vs at a longer length;
  `length_sweep`: loss and attention by position for the clean model and each condition.
- `statistics`: the one tie-aware Spearman, Pearson and permutation p-values.
"""

from rope_interp.analysis.activations import MassiveActivations, massive_activations
from rope_interp.analysis.angle_coverage import angle_coverage, cycle_boundaries
from rope_interp.analysis.attention_spectra import (
    SpectralDefinition,
    attention_spectra,
    entropy_correlation_table,
    robustness_verdict,
    spectral_entropy_definitions,
)
from rope_interp.analysis.decay import reference_decay, score_decay
from rope_interp.analysis.fourier import harmonic_enrichment
from rope_interp.analysis.length_sweep import LengthSweep, length_sweep
from rope_interp.analysis.long_context import LongContextStats, long_context_stats
from rope_interp.analysis.massive import massive_values
from rope_interp.analysis.outliers import bound_summary, offset_features
from rope_interp.analysis.phase import phase_sweep_attention, symmetric_phis
from rope_interp.analysis.positional import PositionalHeads, positional_heads
from rope_interp.analysis.sinks import AttentionSinks, attention_sinks
from rope_interp.analysis.spectral import mlp_spectra, pair_spectra, phase_alignment
from rope_interp.analysis.statistics import correlation_test, spearman
from rope_interp.analysis.usage import band_shares, frequency_usage, layer_usage

__all__ = [
    "AttentionSinks",
    "LengthSweep",
    "LongContextStats",
    "MassiveActivations",
    "PositionalHeads",
    "SpectralDefinition",
    "angle_coverage",
    "attention_sinks",
    "attention_spectra",
    "band_shares",
    "bound_summary",
    "correlation_test",
    "cycle_boundaries",
    "entropy_correlation_table",
    "frequency_usage",
    "harmonic_enrichment",
    "layer_usage",
    "length_sweep",
    "long_context_stats",
    "massive_activations",
    "massive_values",
    "mlp_spectra",
    "offset_features",
    "pair_spectra",
    "phase_alignment",
    "phase_sweep_attention",
    "positional_heads",
    "reference_decay",
    "robustness_verdict",
    "score_decay",
    "spearman",
    "spectral_entropy_definitions",
    "symmetric_phis",
]
