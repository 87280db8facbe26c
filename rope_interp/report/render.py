"""The report as HTML, through the Jinja2 templates in `templates/` (autoescaped).

`render_html(report)` is the whole self-contained page: the CSS and the table-sorting script
inlined from `templates/report.css` and `templates/sort.js`, plotly.js inlined once (only if
there are figures), each figure drawn by plotly into its own `<div>`. `render_notebook(report)`
is the short summary a notebook shows. Both list every section's claims in one "Claims" table,
each row linking to (or naming) its section. Python prepares what the templates show (figure HTML,
table cells, paragraphs); the templates lay it out and escape every piece of text.
"""

from __future__ import annotations

import importlib.metadata
import platform
import re
from typing import Any

import pandas as pd
from jinja2 import Environment, PackageLoader
from markupsafe import Markup, escape
from plotly.offline import get_plotlyjs

from rope_interp.utils.numbers import format_number

_LIBRARIES = ("rope-interp", "torch", "transformer-lens", "transformers", "plotly", "pandas")


def inline(text: str) -> Markup:
    """Escape `text`, then render `code` spans (backticks) as `<code>`."""
    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", str(escape(text))))


def raw_number(value: Any) -> str:
    """A numeric cell's exact value for sorting (`data-v`): `repr(float(value))`."""
    try:
        return repr(float(value))
    except (TypeError, ValueError):
        return str(value)


def slug(text: str) -> str:
    """`text` as a lower-case file and anchor name (at most 60 characters)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "table"


def anchor(index: int, title: str) -> str:
    """The HTML id of section number `index` (from 0)."""
    return f"s{index + 1}-{slug(title)}"


def version(package: str) -> str:
    """The installed version of `package`, or "not installed"."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def library_versions() -> str:
    """'rope-interp 0.1.0, torch 2.13.0, ...' plus Python."""
    versions = ", ".join(f"{name} {version(name)}" for name in _LIBRARIES)
    return f"{versions}, Python {platform.python_version()}"


_ENV = Environment(
    loader=PackageLoader("rope_interp.report", "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters.update(inline=inline, raw_number=raw_number, format_number=format_number)


def render_html(report) -> str:
    """The `Report` as one HTML document (plotly.js inlined once, only if there are figures)."""
    views, n_figures = [], 0
    for index, section in enumerate(report.sections):
        figures = []
        for figure in section.figures:
            n_figures += 1
            figures.append(Markup(_figure_html(figure, f"figure-{n_figures}")))
        prose = section.prose.strip() if section.prose else ""
        views.append(
            {
                "section": section,
                "anchor": anchor(index, section.title),
                "paragraphs": [" ".join(p.split()) for p in re.split(r"\n\s*\n", prose)]
                if prose
                else [],
                "figures": figures,
                "tables": [_table_view(table) for table in section.iter_tables()],
            }
        )
    claims = [
        {"claim": claim, "anchor": view["anchor"], "title": view["section"].title}
        for view in views
        for claim in view["section"].claims
    ]
    return _ENV.get_template("report.html.j2").render(
        report=report,
        sections=views,
        claims=claims,
        version=version("rope-interp"),
        plotly_js=Markup(get_plotlyjs()) if report.n_figures else None,
    )


def render_notebook(report) -> str:
    """The `Report` in a notebook cell: title, metadata and each section's headline."""
    return _ENV.get_template("notebook.html.j2").render(report=report)


def _figure_html(figure, div_id: str) -> str:
    height = figure.layout.height
    return figure.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        default_height=f"{height}px" if height else "460px",
        config={"displaylogo": False, "responsive": True},
    )


def _table_view(table) -> dict[str, Any]:
    """A `Table`'s first `max_rows` rows as (value, is-numeric) cells, and the note under it."""
    frame = table.frame
    shown = frame.head(table.max_rows)
    numeric = [pd.api.types.is_numeric_dtype(shown[c]) for c in shown.columns]
    note = f"{len(frame)} rows"
    if len(frame) > len(shown):
        note = f"first {len(shown)} of {len(frame)} rows (all rows: --save-tables)"
    return {
        "caption": table.caption,
        "columns": [(str(c), n) for c, n in zip(shown.columns, numeric, strict=True)],
        "rows": [list(zip(row, numeric, strict=True)) for row in shown.itertuples(index=False)],
        "note": note,
    }
