"""Plotly figures drawn from rope-interp's tidy tables (figures are returned, never shown).

- `rope_interp.plots.analysis`: usage maps, positional heads, offset features, sinks, spectra,
  massive values (one function per analysis table);
- `rope_interp.plots.ablation`: Δloss bars and curves with confidence intervals, per-head
  attention changes (from `run_experiment`'s tables);
- `rope_interp.plots.phase`: the symmetric phase sweep (Δloss and attention destinations);
- `rope_interp.plots.long_context`: per-pair terms by distance and under attention, angle
  coverage and the partial-cycle boundary;
- `rope_interp.plots.generic`: a heatmap, bars with intervals and a scatter from any table;
- `rope_interp.plots.export`: figures as PNG/SVG/PDF files.

Every function is also reachable from here (`from rope_interp.plots import plot_usage_map`);
the submodules are imported on first use. `rope_interp.report` assembles the figures into one
self-contained HTML file.
"""

from __future__ import annotations

from rope_interp.utils.lazy import lazy_exports

# public name -> module that defines it
_EXPORTS = {
    "plot_usage_map": "rope_interp.plots.analysis",
    "plot_band_shares": "rope_interp.plots.analysis",
    "plot_positional_heads": "rope_interp.plots.analysis",
    "plot_pair_margins": "rope_interp.plots.analysis",
    "plot_offset_features": "rope_interp.plots.analysis",
    "plot_sinks": "rope_interp.plots.analysis",
    "plot_band_energy": "rope_interp.plots.analysis",
    "plot_spectrum": "rope_interp.plots.analysis",
    "plot_massive": "rope_interp.plots.analysis",
    "plot_wavelengths": "rope_interp.plots.analysis",
    "plot_pair_maxima": "rope_interp.plots.analysis",
    "delta_loss_bars": "rope_interp.plots.ablation",
    "delta_loss_curves": "rope_interp.plots.ablation",
    "head_metric_heatmap": "rope_interp.plots.ablation",
    "phase_sweep_curves": "rope_interp.plots.ablation",
    "random_control_strip": "rope_interp.plots.ablation",
    "prope_sweep_curves": "rope_interp.plots.ablation",
    "plot_phase_attention": "rope_interp.plots.phase",
    "plot_heatmap": "rope_interp.plots.generic",
    "plot_bars": "rope_interp.plots.generic",
    "plot_scatter": "rope_interp.plots.generic",
    "plot_distance_profile": "rope_interp.plots.long_context",
    "plot_attention_contributions": "rope_interp.plots.long_context",
    "plot_angle_coverage": "rope_interp.plots.long_context",
    "plot_cycle_boundaries": "rope_interp.plots.long_context",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
