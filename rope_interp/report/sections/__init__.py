"""The standard section builders, registered in `SECTION_BUILDERS` when imported.

Each is a function `builder(ctx: ReportContext) -> Section | list[Section]` that runs its
analysis (imported directly from `rope_interp.analysis`, the runner or the contrasts) and draws
its figures (from `rope_interp.plots`); the report order is `STANDARD_SECTIONS`' order.
"""

from __future__ import annotations

from rope_interp.report.sections.ablations import (
    band_ablation_section,
    phase_section,
    prope_section,
)
from rope_interp.report.sections.geometry import geometry_section
from rope_interp.report.sections.heads import massive_section, positional_section, sinks_section
from rope_interp.report.sections.outliers import outliers_section
from rope_interp.report.sections.spectra import spectra_section
from rope_interp.report.sections.usage import usage_section

__all__ = [
    "band_ablation_section",
    "geometry_section",
    "massive_section",
    "outliers_section",
    "phase_section",
    "positional_section",
    "prope_section",
    "sinks_section",
    "spectra_section",
    "usage_section",
]
