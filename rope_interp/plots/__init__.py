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

import importlib
from typing import Any

_SUBMODULES = ("analysis", "ablation", "phase", "generic", "long_context")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    for sub in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{sub}")
        if not name.startswith("_") and hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    names = set(globals()) | set(_SUBMODULES)
    for sub in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{sub}")
        names |= {n for n in vars(module) if n.startswith(("plot_", "delta_", "head_"))}
    return sorted(names)
