"""One self-contained HTML report: sections of prose, interactive plotly figures and tables.

A report is a list of `Section`s (title, a one-line "how to read this", prose, figures,
DataFrames) plus run metadata; `Report.to_html()` turns it into a single file with plotly.js
inlined once, figures interactive and tables sortable (click a column header). Nothing is fetched
from the network when the file is opened. In a notebook a `Report` shows its headlines.

    report = Report("RoPE usage", meta={"model": "smollm2-135m"})
    report.add(Section("Frequency usage", how_to_read="Bright cells: pairs with large norm.",
                       figures=[fig], tables=[("per pair", frame)]))
    report.write("out/report.html")

`build_report` runs the standard analyses and ablations on a model and corpus; each one is a
*section builder*, a function `builder(ctx) -> Section | list[Section]` listed in
`SECTION_BUILDERS`. A builder that fails becomes a section stating the error, so one broken
analysis never costs the rest of the report.

The package, from the bottom up:

- `render`: the Jinja2 templates (`templates/*.html.j2`, the CSS and script) → HTML text;
- `document`: `Report`, `Section`, `Table`, `Claim` (the report as data) and writing it to files;
- `registry`: the section names, titles and order (`STANDARD_SECTIONS`, `SECTION_BUILDERS`);
- `context`: `ReportContext`, what the builders of one report share;
- `verdicts`: the rules that turn a section's numbers into its claims' verdicts;
- `sections/`: the standard builders, one module per section family;
- `build`: `build_report`, which runs them.

`build_report`, `ReportContext`, `SECTION_BUILDERS` and `meta_json` are loaded on first use
(PEP 562): the builders import torch and every analysis, which the command line does not need
to offer and check section names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rope_interp.report.document import (
    MAX_TABLE_ROWS,
    VERDICTS,
    Claim,
    Report,
    Section,
    Table,
    write_tables,
)
from rope_interp.report.registry import (
    STANDARD_SECTIONS,
    SectionBuilder,
    resolve_sections,
    section,
    section_names,
)
from rope_interp.report.render import library_versions, render_html
from rope_interp.utils.lazy import lazy_exports

# Loaded on first use; SECTION_BUILDERS through `build`, whose import fills it.
_EXPORTS = {
    "build_report": "rope_interp.report.build",
    "meta_json": "rope_interp.report.build",
    "SECTION_BUILDERS": "rope_interp.report.build",
    "ReportContext": "rope_interp.report.context",
}

__all__ = [
    "MAX_TABLE_ROWS",
    "VERDICTS",
    "Claim",
    "Report",
    "ReportContext",
    "SECTION_BUILDERS",
    "STANDARD_SECTIONS",
    "Section",
    "SectionBuilder",
    "Table",
    "build_report",
    "library_versions",
    "meta_json",
    "render_html",
    "resolve_sections",
    "section",
    "section_names",
    "write_tables",
]


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from rope_interp.report.build import build_report, meta_json
    from rope_interp.report.context import ReportContext
    from rope_interp.report.registry import SECTION_BUILDERS
