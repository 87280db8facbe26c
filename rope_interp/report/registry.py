"""Which sections a report can have: their names (as `--sections` takes them), titles and order.

`STANDARD_SECTIONS` lists the built-in sections without importing them, so that the command
line can offer and check names in a second (the builders import torch and every analysis).
`section(name)` registers a builder in `SECTION_BUILDERS`; `rope_interp.report.sections` holds
the standard ones, and a user's own section is one more decorated function.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from rope_interp.errors import RopeInterpError

if TYPE_CHECKING:  # for the annotations only: the context imports the statistics (torch)
    from rope_interp.report.context import ReportContext
    from rope_interp.report.document import Section

SectionBuilder = Callable[["ReportContext"], "Section | list[Section]"]

#: The built-in sections, name → title, in report order (builders in `report.sections`).
STANDARD_SECTIONS: dict[str, str] = {
    "geometry": "Rotary geometry",
    "usage": "Frequency usage",
    "positional": "Positional heads",
    "outliers": "Rotary outliers and offset features",
    "sinks": "Attention sinks",
    "massive": "Massive values",
    "spectra": "Spectra and phase",
    "ablation_bands": "Ablation: high vs low frequencies",
    "ablation_prope": "Ablation: p-RoPE sweep",
    "ablation_phase": "Ablation: phase shifts",
}

#: name → (title, builder), in report order: the standard sections first, in the order above,
#: then any others in the order they were registered.
SECTION_BUILDERS: dict[str, tuple[str, SectionBuilder]] = {}


def section(name: str, title: str | None = None):
    """Register a section builder under `name` (usable in `--sections`); a standard section's
    title defaults to its entry in `STANDARD_SECTIONS`."""
    if title is None:
        title = STANDARD_SECTIONS[name]

    def register(builder: SectionBuilder) -> SectionBuilder:
        SECTION_BUILDERS[name] = (title, builder)
        ordered = sorted(SECTION_BUILDERS.items(), key=lambda item: _rank(item[0]))
        SECTION_BUILDERS.clear()
        SECTION_BUILDERS.update(ordered)
        return builder

    return register


def _rank(name: str) -> int:
    standard = list(STANDARD_SECTIONS)
    return standard.index(name) if name in standard else len(standard)  # stable sort


def section_names() -> list[str]:
    """Every section name in report order: the standard ones, then any others registered."""
    return [*STANDARD_SECTIONS, *(n for n in SECTION_BUILDERS if n not in STANDARD_SECTIONS)]


def resolve_sections(names: Sequence[str] | None) -> list[str]:
    """Validate section names (`None`: all, in report order)."""
    known = section_names()
    if not names:
        return known
    unknown = [n for n in names if n not in known]
    if unknown:
        raise RopeInterpError(
            f"Unknown report section(s) {unknown}; choose from {', '.join(known)}."
        )
    return [n for n in known if n in names]
