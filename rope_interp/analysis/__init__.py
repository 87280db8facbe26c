"""Analyses that test published claims about RoPE; one module per claim family.

- `usage`: frequency usage maps and band shares (Barbero et al.).
- `positional`: diagonal / previous-token / offset heads and the pairs that build them.
- `outliers`: rotary outliers and offset features, with the frequency and angle bounds
  (Jonasson; derivation in docs/theory.md).
- `sinks`: attention sinks (Gu et al.) and the pairs that make them.
- `spectral`: spectra of pair components, attention rows and MLP activations (Ruscio et al.).
- `massive`: massive q/k values (Jin et al.) mapped to pairs.
- `decay`: score against distance: RoPE's own (all-ones vs Gaussian) and a trained model's.
"""

from rope_interp.analysis.decay import reference_decay, score_decay
from rope_interp.analysis.massive import massive_values
from rope_interp.analysis.outliers import bound_summary, offset_features
from rope_interp.analysis.positional import PositionalHeads, positional_heads
from rope_interp.analysis.sinks import AttentionSinks, attention_sinks
from rope_interp.analysis.spectral import (
    attention_spectra,
    mlp_spectra,
    pair_spectra,
    phase_alignment,
)
from rope_interp.analysis.usage import band_shares, frequency_usage, layer_usage

__all__ = [
    "AttentionSinks",
    "PositionalHeads",
    "attention_sinks",
    "attention_spectra",
    "band_shares",
    "bound_summary",
    "frequency_usage",
    "layer_usage",
    "massive_values",
    "mlp_spectra",
    "offset_features",
    "pair_spectra",
    "phase_alignment",
    "positional_heads",
    "reference_decay",
    "score_decay",
]
