"""One self-contained HTML report: sections of prose, interactive plotly figures and tables.

A report is a list of `Section`s (title, a one-line "how to read this", prose, figures,
DataFrames) plus run metadata; `Report.to_html()` turns it into a single file with plotly.js
inlined once, figures interactive and tables sortable (click a column header). Nothing is fetched
from the network when the file is opened.

    report = Report("RoPE usage", meta={"model": "smollm2-135m"})
    report.add(Section("Frequency usage", how_to_read="Bright cells: pairs with large norm.",
                       figures=[fig], tables=[("per pair", frame)]))
    report.write("out/report.html")

`build_report` runs the standard analyses and ablations on a model and corpus; each one is a
*section builder*, a function `builder(ctx) -> Section | list[Section]` listed in
`SECTION_BUILDERS`. A builder that fails becomes a section stating the error, so one broken
analysis never costs the rest of the report.
"""

from __future__ import annotations

import datetime as _dt
import html
import importlib.metadata
import json
import math
import platform
import re
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rope_interp.atomic import atomic_write, atomic_write_text
from rope_interp.errors import RopeInterpError, SectionUnavailable
from rope_interp.plots.export import write_images

#: Tables longer than this show their first rows only (the full table goes to `tables_dir`).
MAX_TABLE_ROWS = 300
_LIBRARIES = ("rope-interp", "torch", "transformer-lens", "transformers", "plotly", "pandas")


# ---- the document model -----------------------------------------------------------------
@dataclass
class Table:
    """A DataFrame shown as a sortable HTML table."""

    caption: str
    frame: pd.DataFrame
    max_rows: int = MAX_TABLE_ROWS


@dataclass
class Section:
    """One part of the report.

    Args:
        title: heading (also the anchor in the table of contents).
        how_to_read: one line telling a reader what the figures/tables show and what to look for.
        prose: paragraphs of plain text (blank lines separate paragraphs; `code` in backticks).
        figures: plotly `Figure`s, drawn interactive.
        tables: `Table`s or `(caption, DataFrame)` pairs.
        key_result: the section's headline numbers in one line, listed at the top of the
            report ("At a glance").
        error: set when the section could not be computed; shown instead of results.
        seconds: how long the section took (filled by `build_report`).
    """

    title: str
    how_to_read: str = ""
    prose: str = ""
    figures: list[Any] = field(default_factory=list)
    tables: list[Table | tuple[str, pd.DataFrame]] = field(default_factory=list)
    key_result: str = ""
    error: str | None = None
    details: str | None = None
    seconds: float | None = None

    def add_table(self, caption: str, frame: pd.DataFrame, max_rows: int = MAX_TABLE_ROWS):
        self.tables.append(Table(caption, frame, max_rows))
        return self

    def iter_tables(self) -> Iterable[Table]:
        for table in self.tables:
            yield table if isinstance(table, Table) else Table(*table)


@dataclass
class Report:
    """A titled list of sections plus key/value metadata shown at the top."""

    title: str = "rope-interp report"
    meta: dict[str, str] = field(default_factory=dict)
    sections: list[Section] = field(default_factory=list)

    def add(self, section: Section | Sequence[Section]) -> Report:
        if isinstance(section, Section):
            self.sections.append(section)
        else:
            self.sections.extend(section)
        return self

    @property
    def n_figures(self) -> int:
        return sum(len(s.figures) for s in self.sections)

    def to_html(self) -> str:
        return render_html(self)

    def _repr_html_(self) -> str:
        """In a notebook: the title, metadata and each section's headline (not the figures;
        `write()` the report and open the file for those)."""
        rows = "".join(
            f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in self.meta.items()
        )
        rows += "".join(
            f"<tr><th>{_esc(s.title)}</th><td>{_esc(s.error or s.key_result)}</td></tr>"
            for s in self.sections
        )
        return f"<b>{_esc(self.title)}</b> ({self.n_figures} figures)<table>{rows}</table>"

    def named_figures(self) -> list[tuple[str, object]]:
        """`(name, figure)` for every figure, named `<section>-<n>` in reading order."""
        return [
            (f"{_slug(section.title)}-{n + 1}", figure)
            for section in self.sections
            for n, figure in enumerate(section.figures)
        ]

    def write_figures(self, directory: str | Path, fmt: str = "png") -> list[Path]:
        """Every figure as an image file (png, svg or pdf) in `directory`; returns the paths."""
        return write_images(self.named_figures(), directory, fmt)

    def write(self, path: str | Path, tables_dir: str | Path | None = None) -> Path:
        """Write the HTML file (parent folders created); optionally every table as CSV."""
        path = Path(path)
        if path.suffix.lower() not in (".html", ".htm"):
            raise RopeInterpError(
                f"The report is an HTML file: --out must end in .html, got {path}"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        if tables_dir is not None:
            write_tables(self, tables_dir)
        return atomic_write_text(path, self.to_html())


def write_tables(report: Report, directory: str | Path) -> list[Path]:
    """Every table of `report` as `<section>-<caption>.csv` in `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for section in report.sections:
        for table in section.iter_tables():
            name = f"{_slug(section.title)}-{_slug(table.caption)}.csv"
            with atomic_write(directory / name) as tmp:
                table.frame.to_csv(tmp, index=False)
            written.append(directory / name)
    return written


# ---- rendering ---------------------------------------------------------------------------
_CSS = """
:root { --fg:#1d2330; --muted:#5b6475; --line:#dfe3ea; --accent:#3b5bdb; --bad:#c92a2a; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       margin: 0; background: #f6f7f9; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 80px; background: #fff;
       min-height: 100vh; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 40px 0 6px; padding-top: 12px; border-top: 1px solid var(--line); }
h3 { font-size: 15px; margin: 18px 0 6px; color: var(--muted); }
code { background: #f1f3f5; padding: 0 3px; border-radius: 3px; font-size: 13px; }
.subtitle { color: var(--muted); margin: 0 0 16px; }
.meta { border-collapse: collapse; font-size: 13.5px; margin: 8px 0 16px; }
.meta th { text-align: left; padding: 2px 16px 2px 0; color: var(--muted); font-weight: 600;
           vertical-align: top; white-space: nowrap; }
.meta td { padding: 2px 0; }
.glance { border-collapse: collapse; font-size: 14px; margin: 4px 0 0; }
.glance td { padding: 3px 12px 3px 0; vertical-align: top; border-bottom: 1px solid #f0f2f5; }
.glance td:nth-child(2) { white-space: nowrap; }
.bad { color: var(--bad); }
.howto { background: #edf2ff; border-left: 4px solid var(--accent); padding: 6px 12px;
         margin: 8px 0 12px; font-size: 14px; }
.howto b { color: var(--accent); }
.timing { color: var(--muted); font-size: 12px; font-weight: normal; margin-left: 8px; }
.error { background: #fff5f5; border-left: 4px solid var(--bad); padding: 6px 12px; }
.figure { margin: 10px 0 18px; border: 1px solid var(--line); border-radius: 4px; }
.tablewrap { max-height: 420px; overflow: auto; border: 1px solid var(--line);
             border-radius: 4px; margin: 4px 0 6px; }
table.data { border-collapse: collapse; font-size: 12.5px; width: 100%;
             font-variant-numeric: tabular-nums; }
table.data th, table.data td { padding: 3px 8px; border-bottom: 1px solid #eef0f3;
                               text-align: right; white-space: nowrap; }
table.data th { position: sticky; top: 0; background: #f8f9fb; cursor: pointer;
                user-select: none; border-bottom: 1px solid var(--line); }
table.data th:hover { background: #e7ebf3; }
table.data th.asc::after { content: " \\25B2"; font-size: 10px; }
table.data th.desc::after { content: " \\25BC"; font-size: 10px; }
table.data td.text, table.data th.text { text-align: left; }
table.data tbody tr:hover { background: #f8f9ff; }
.note { color: var(--muted); font-size: 12.5px; margin: 0 0 12px; }
details { margin: 6px 0; } summary { cursor: pointer; color: var(--muted); }
pre { font-size: 12px; overflow: auto; background: #f8f9fa; padding: 8px; }
footer { color: var(--muted); font-size: 12px; margin-top: 48px; }
"""

_SORT_JS = """
document.querySelectorAll("table.data").forEach(function (table) {
  table.querySelectorAll("thead th").forEach(function (th, col) {
    th.title = "click to sort";
    th.addEventListener("click", function () {
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var asc = !th.classList.contains("asc");
      table.querySelectorAll("thead th").forEach(function (h) {
        h.classList.remove("asc", "desc");
      });
      th.classList.add(asc ? "asc" : "desc");
      function key(row) {
        var text = row.cells[col].getAttribute("data-v") || row.cells[col].textContent;
        var num = parseFloat(text);
        return isNaN(num) ? text : num;
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (typeof x === typeof y) { return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1); }
        return (typeof x === "number" ? -1 : 1) * (asc ? 1 : -1);
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def render_html(report: Report) -> str:
    """The report as one HTML document (plotly.js inlined once, only if there are figures)."""
    from plotly.offline import get_plotlyjs

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta name="generator" content="rope-interp {_version("rope-interp")}">',
        f"<title>{_esc(report.title)}</title>",
        f"<style>{_CSS}</style>",
    ]
    if report.n_figures:
        parts.append(f'<script type="text/javascript">{get_plotlyjs()}</script>')
    parts.append("</head><body><main>")
    parts.append(f"<h1>{_esc(report.title)}</h1>")
    if report.meta:
        rows = "".join(
            f"<tr><th>{_esc(k)}</th><td>{_inline(str(v))}</td></tr>" for k, v in report.meta.items()
        )
        parts.append(f'<table class="meta">{rows}</table>')
    if report.sections:
        rows = "".join(
            f'<tr><td>{i + 1}.</td><td><a href="#{_anchor(i, s.title)}">{_esc(s.title)}</a></td>'
            f"<td>{_glance(s)}</td></tr>"
            for i, s in enumerate(report.sections)
        )
        parts.append(f'<h3>At a glance</h3><table class="glance">{rows}</table>')
    figure_index = 0
    for i, section in enumerate(report.sections):
        html_section, figure_index = _render_section(i, section, figure_index)
        parts.append(html_section)
    parts.append(
        f"<footer>Generated by rope-interp {_esc(_version('rope-interp'))}. Figures are "
        "interactive (hover, zoom, double-click to reset); click a table header to sort.</footer>"
    )
    parts.append(f"</main><script>{_SORT_JS}</script></body></html>")
    return "\n".join(parts)


def _glance(section: Section) -> str:
    if section.error:
        return f'<span class="bad">not computed: {_esc(section.error)}</span>'
    return _inline(section.key_result)


def _render_section(index: int, section: Section, figure_index: int) -> tuple[str, int]:
    timing = (
        f'<span class="timing">{section.seconds:.1f} s</span>'
        if section.seconds is not None
        else ""
    )
    out = [
        f'<section id="{_anchor(index, section.title)}">',
        f"<h2>{_esc(section.title)}{timing}</h2>",
    ]
    if section.how_to_read:
        out.append(f'<p class="howto"><b>How to read this:</b> {_inline(section.how_to_read)}</p>')
    if section.error:
        out.append(f'<p class="error"><b>Not computed:</b> {_esc(section.error)}</p>')
    if section.details:
        out.append(
            f"<details><summary>details</summary><pre>{_esc(section.details)}</pre></details>"
        )
    for paragraph in re.split(r"\n\s*\n", section.prose.strip()) if section.prose else []:
        out.append(f"<p>{_inline(' '.join(paragraph.split()))}</p>")
    for figure in section.figures:
        figure_index += 1
        out.append(f'<div class="figure">{_figure_html(figure, f"figure-{figure_index}")}</div>')
    for table in section.iter_tables():
        out.append(_table_html(table))
    out.append("</section>")
    return "\n".join(out), figure_index


def _figure_html(figure, div_id: str) -> str:
    height = figure.layout.height
    return figure.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        default_height=f"{height}px" if height else "460px",
        config={"displaylogo": False, "responsive": True},
    )


def _table_html(table: Table) -> str:
    frame = table.frame
    shown = frame.head(table.max_rows)
    heads = []
    for column in shown.columns:
        kind = "" if pd.api.types.is_numeric_dtype(shown[column]) else ' class="text"'
        heads.append(f"<th{kind}>{_esc(str(column))}</th>")
    body = []
    numeric = [pd.api.types.is_numeric_dtype(shown[c]) for c in shown.columns]
    for row in shown.itertuples(index=False):
        cells = []
        for value, is_num in zip(row, numeric, strict=True):
            if is_num:
                cells.append(f'<td data-v="{_raw(value)}">{_fmt(value)}</td>')
            else:
                cells.append(f'<td class="text">{_esc(_fmt(value))}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    note = f"{len(frame)} rows"
    if len(frame) > len(shown):
        note = f"first {len(shown)} of {len(frame)} rows (all rows: --save-tables)"
    return (
        f"<h3>{_esc(table.caption)}</h3>"
        f'<div class="tablewrap"><table class="data"><thead><tr>{"".join(heads)}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
        f'<p class="note">{note}</p>'
    )


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int) or (hasattr(value, "is_integer") and _is_int_like(value)):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if value == 0:
            return "0"
        magnitude = abs(value)
        if value.is_integer() and magnitude < 1e9:
            return str(int(value))
        if magnitude >= 1e5 or magnitude < 1e-3:
            return f"{value:.3e}"
        return f"{value:.4g}"
    return str(value)


def _is_int_like(value: Any) -> bool:
    import numpy as np

    return isinstance(value, np.integer)


def _raw(value: Any) -> str:
    try:
        return repr(float(value))
    except (TypeError, ValueError):
        return _esc(str(value))


def _esc(text: str) -> str:
    return html.escape(str(text), quote=True)


def _inline(text: str) -> str:
    """Escape, then render `code` spans."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", _esc(text))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "table"


def _anchor(index: int, title: str) -> str:
    return f"s{index + 1}-{_slug(title)}"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def library_versions() -> str:
    """'rope-interp 0.1.0, torch 2.13.0, ...' plus Python."""
    versions = ", ".join(f"{name} {_version(name)}" for name in _LIBRARIES)
    return f"{versions}, Python {platform.python_version()}"


# ---- building the standard report --------------------------------------------------------
@dataclass
class ReportContext:
    """What section builders share: the model, its spec, corpora and cached results.

    Attributes:
        corpus: windows for the streaming statistics (usage, outliers); `analysis_corpus`
            fewer windows for the analyses that decompose every attention score (positional
            heads, sinks, spectra, massive values); `ablation_corpus` the windows for the
            interventions (each condition costs a forward pass over them).
        cache: results shared between builders (e.g. the pair statistics), by name.
    """

    model: Any
    spec: Any
    corpus: Any
    ablation_corpus: Any
    analysis_corpus: Any = None
    batch_size: int = 8
    seed: int = 0
    progress: bool = True
    n_bootstrap: int = 1000
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def context(self) -> int:
        return int(self.corpus.tokens.shape[1])

    def pair_stats(self):
        """Streaming per-pair statistics over `corpus` (computed once)."""
        if "pair_stats" not in self.cache:
            from rope_interp.stats import collect_pair_stats

            self.cache["pair_stats"] = collect_pair_stats(
                self.model, self.corpus.batches(self.batch_size), progress=self.progress
            )
        return self.cache["pair_stats"]


SectionBuilder = Callable[[ReportContext], "Section | list[Section]"]


def build_report(
    model,
    corpus,
    ablation_corpus=None,
    *,
    analysis_corpus=None,
    sections: Sequence[str] | None = None,
    meta: dict[str, str] | None = None,
    title: str = "How this model uses its rotary frequencies",
    batch_size: int = 8,
    seed: int = 0,
    progress: bool = True,
    n_bootstrap: int = 1000,
    on_section: Callable[[Section], None] | None = None,
) -> Report:
    """Run the section builders on `model` and `corpus` and return the `Report`.

    Args:
        ablation_corpus: windows used by the ablation sections (default: `corpus`).
        analysis_corpus: windows for the attention-pattern analyses (default:
            `ablation_corpus`).
        sections: names from `SECTION_BUILDERS` to run (default all, in order).
        meta: extra key/value lines for the top of the report (model name, seed, ...).
        on_section: called after each section is built (e.g. to print progress).
    """
    from rope_interp.spec import RotarySpec

    chosen = resolve_sections(sections)
    started = time.perf_counter()
    spec = RotarySpec.from_model(model)
    ctx = ReportContext(
        model=model,
        spec=spec,
        corpus=corpus,
        ablation_corpus=ablation_corpus if ablation_corpus is not None else corpus,
        analysis_corpus=analysis_corpus,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
        n_bootstrap=n_bootstrap,
    )
    if ctx.analysis_corpus is None:
        ctx.analysis_corpus = ctx.ablation_corpus
    report = Report(title=title)
    report.meta.update(meta or {})
    cfg = model.cfg
    report.meta.setdefault(
        "model",
        f"{getattr(cfg, 'model_name', 'model')} ({cfg.n_layers} layers, {cfg.n_heads} heads, "
        f"d_model {cfg.d_model}) on {cfg.device}, {str(cfg.dtype).removeprefix('torch.')}",
    )
    report.meta.setdefault("rotary", spec.summary())
    report.meta.setdefault("corpus", corpus.describe())
    report.meta.setdefault("seed", str(seed))
    report.meta.setdefault("libraries", library_versions())
    for name in chosen:
        builder = SECTION_BUILDERS[name][1]
        t0 = time.perf_counter()
        try:
            result = builder(ctx)
        except Exception as error:  # one failed analysis must not cost the whole report
            result = Section(
                title=SECTION_BUILDERS[name][0],
                error=f"{type(error).__name__}: {error}",
                details=traceback.format_exc(limit=8),
            )
        for section in [result] if isinstance(result, Section) else list(result):
            section.seconds = (
                time.perf_counter() - t0 if section.seconds is None else section.seconds
            )
            report.add(section)
            if on_section is not None:
                on_section(section)
    elapsed = time.perf_counter() - started
    report.meta["generated"] = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    report.meta["run time"] = f"{elapsed:.0f} s (analyses and ablations, model loading excluded)"
    return report


def meta_json(report: Report) -> str:
    """The metadata as JSON (handy for tests and scripts)."""
    return json.dumps(report.meta, indent=1)


# ---- the standard sections ----------------------------------------------------------------
#: name → (title, builder). Order is report order. Add a section with `@section(name, title)`.
SECTION_BUILDERS: dict[str, tuple[str, SectionBuilder]] = {}


def section(name: str, title: str):
    """Register a section builder under `name` (usable in `--sections`)."""

    def register(builder: SectionBuilder) -> SectionBuilder:
        SECTION_BUILDERS[name] = (title, builder)
        return builder

    return register


def resolve_sections(names: Sequence[str] | None) -> list[str]:
    """Validate section names (`None`: all, in report order)."""
    if not names:
        return list(SECTION_BUILDERS)
    unknown = [n for n in names if n not in SECTION_BUILDERS]
    if unknown:
        raise RopeInterpError(
            f"Unknown report section(s) {unknown}; choose from {', '.join(SECTION_BUILDERS)}."
        )
    return [n for n in SECTION_BUILDERS if n in names]


def _module(name: str):
    import importlib

    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name and name.startswith(error.name):
            raise SectionUnavailable(f"{name} is not available in this version.") from None
        raise


@section("geometry", "Rotary geometry")
def geometry_section(ctx: ReportContext) -> Section:
    import plotly.graph_objects as go

    spec, length = ctx.spec, ctx.context
    thetas = spec.thetas.cpu()
    partial = spec.partial_cycle_mask(length).sum(1)
    half = spec.partial_cycle_mask(length, math.pi).sum(1)
    frame = pd.DataFrame(
        {
            "layer": range(spec.n_layers),
            "base": list(spec.bases) or [float("nan")] * spec.n_layers,
            "theta_0": thetas[:, 0].numpy(),
            "theta_last": thetas[:, -1].numpy(),
            "wavelength_max": (2 * math.pi / thetas[:, -1]).numpy(),
            "partial_cycle_pairs": partial.numpy(),
            "half_cycle_pairs": half.numpy(),
            "first_partial_pair": [
                spec.first_partial_pair(length, layer) for layer in range(spec.n_layers)
            ],
        }
    )
    figure = go.Figure()
    seen: set[tuple[float, ...]] = set()
    for layer in range(spec.n_layers):
        key = tuple(round(float(t), 12) for t in thetas[layer])
        if key in seen:
            continue
        seen.add(key)
        figure.add_scatter(
            x=list(range(spec.n_pairs)),
            y=(2 * math.pi / thetas[layer]).numpy(),
            mode="lines+markers",
            name=f"layer {layer}" + (" (and all layers with the same θ)" if layer == 0 else ""),
        )
    # A trace, not add_hline: shapes on log axes take log10 coordinates.
    figure.add_scatter(
        x=[0, spec.n_pairs - 1],
        y=[length, length],
        mode="lines",
        line={"dash": "dash", "color": "gray"},
        name=f"context L = {length}",
    )
    figure.update_layout(
        title="Wavelength 2π/θ_i of each rotary pair",
        xaxis_title="pair i (0 = highest frequency)",
        yaxis_title="wavelength (tokens)",
        yaxis_type="log",
        height=380,
    )
    collapsed = frame.drop(columns="layer").drop_duplicates()
    table = frame if len(collapsed) > 1 else frame.head(1).assign(layer="all")
    first = int(frame.first_partial_pair.iloc[0])
    return Section(
        "Rotary geometry",
        how_to_read=(
            "pairs above the dashed line turn less than one full cycle within the context "
            "(partial-cycle pairs): the candidates for outlier and offset features."
        ),
        prose=(
            f"{spec.summary()}. With windows of L = {length} tokens, pairs {first}.."
            f"{spec.n_pairs - 1} complete less than one turn (θ_i·L < 2π); the frequencies were "
            "read from the model's own cos/sin buffers and checked against its config."
        ),
        figures=[figure],
        tables=[("Frequencies per layer", table)],
        key_result=(
            f"{spec.n_pairs - first} of {spec.n_pairs} pairs turn less than once in "
            f"L = {length} tokens (pairs {first}..{spec.n_pairs - 1})"
        ),
    )


@section("usage", "Frequency usage")
def usage_section(ctx: ReportContext) -> Section:
    usage = _module("rope_interp.analysis.usage")
    stats = ctx.pair_stats()
    layer_map = usage.layer_usage(stats)
    shares = usage.band_shares(stats)
    plots = _module("rope_interp.plots.analysis")
    figures = [
        plots.plot_usage_map(layer_map, kind="q"),
        plots.plot_usage_map(layer_map, kind="k"),
        plots.plot_band_shares(shares, kind="qk", band="high"),
    ]
    qk = _descending(shares[shares.kind == "qk"], "high_share")
    return Section(
        "Frequency usage",
        how_to_read=(
            "each row of a map sums to 1: where a layer puts its q/k norm across frequencies "
            "(pair 0 = highest). Barbero et al. find most norm in the lowest frequencies, with a "
            "few high-frequency heads."
        ),
        figures=figures,
        tables=[("Band shares per head (q·k; high = top 25 % of frequencies)", qk)],
        key_result=(
            f"q·k usage in the highest 25 % of frequencies: {qk.high_share.mean():.2f}, in the "
            f"lowest 25 %: {qk.low_share.mean():.2f} (uniform: {qk.band_fraction.iloc[0]:.2f}); "
            f"most high-frequency head L{int(qk.iloc[0]['layer'])}H{int(qk.iloc[0]['head'])} "
            f"({qk.iloc[0]['high_share']:.2f})"
        ),
    )


def _heatmap(frame: pd.DataFrame, x: str, y: str, value: str, title: str, aggfunc: str = "mean"):
    import plotly.graph_objects as go

    grid = frame.pivot_table(index=y, columns=x, values=value, aggfunc=aggfunc)
    figure = go.Figure(
        go.Heatmap(
            z=grid.to_numpy(), x=list(grid.columns), y=list(grid.index), colorscale="Viridis"
        )
    )
    figure.update_layout(title=title, xaxis_title=x, yaxis_title=y, height=420)
    if len(grid.index) <= 16:
        figure.update_yaxes(dtick=1)
    return figure


def _bar(
    frame: pd.DataFrame,
    x: str,
    y: str,
    title: str,
    low: str | None = None,
    high: str | None = None,
    color: str | None = None,
    height: int = 420,
):
    """Bars with optional confidence intervals (columns `low`/`high`)."""
    import plotly.graph_objects as go

    figure = go.Figure()
    groups = [(None, frame)] if color is None else list(frame.groupby(color, sort=False))
    for name, part in groups:
        error = None
        if low is not None and high is not None:
            error = {
                "type": "data",
                "symmetric": False,
                "array": (part[high] - part[y]).to_numpy(),
                "arrayminus": (part[y] - part[low]).to_numpy(),
            }
        figure.add_bar(
            x=part[x].astype(str),
            y=part[y],
            error_y=error,
            name=str(name) if name is not None else y,
        )
    figure.update_layout(title=title, yaxis_title=y, height=height, showlegend=color is not None)
    return figure


def _scatter(
    frame: pd.DataFrame,
    x: str,
    y: str,
    title: str,
    hover: Sequence[str] = (),
    color: str | None = None,
    height: int = 420,
):
    import plotly.graph_objects as go

    figure = go.Figure()
    groups = [(None, frame)] if color is None else list(frame.groupby(color, sort=True))
    for name, part in groups:
        text = (
            [
                ", ".join(f"{h}={_fmt(v)}" for h, v in zip(hover, row, strict=True))
                for row in part[list(hover)].itertuples(index=False)
            ]
            if hover
            else None
        )
        figure.add_scatter(
            x=part[x], y=part[y], mode="markers", text=text, name=f"{color} {name}" if color else y
        )
    figure.update_layout(
        title=title, xaxis_title=x, yaxis_title=y, height=height, showlegend=color is not None
    )
    return figure


# Columns that name a row, used to break ties when sorting by a measured value.
_ROW_KEYS = ("kind", "layer", "head", "offset", "pair", "rank", "dim")


def _descending(frame: pd.DataFrame, column: str, digits: int = 6) -> pd.DataFrame:
    """`frame` sorted by `column` (largest first) rounded to `digits` significant digits, ties
    broken by the row's own keys: the same order on every device, although CPU and CUDA sums
    differ in the last bits."""
    values = frame[column].astype(float)
    scale = 10.0 ** (digits - 1 - np.floor(np.log10(values.abs().where(values != 0, 1.0))))
    rounded = ((values * scale).round() / scale).where(np.isfinite(values), values)
    keys = [name for name in _ROW_KEYS if name in frame.columns]
    order = pd.DataFrame({"_value": -rounded, **{k: frame[k] for k in keys}}, index=frame.index)
    return frame.loc[order.sort_values(["_value", *keys], kind="stable").index]


def _analysis_batches(ctx: ReportContext) -> list:
    """Windows for the analyses that decompose attention scores (fewer: they are costly)."""
    return list(ctx.analysis_corpus.batches(max(1, ctx.batch_size // 2)))


@section("positional", "Positional heads")
def positional_section(ctx: ReportContext) -> Section:
    positional = _module("rope_interp.analysis.positional")
    result = positional.positional_heads(
        ctx.model, _analysis_batches(ctx), offsets=(0, 1), progress=ctx.progress
    )
    heads = result.heads
    figures = []
    for offset, name in ((0, "diagonal (self)"), (1, "previous token")):
        part = heads[heads.offset == offset]
        figures.append(
            _heatmap(
                part, "head", "layer", "attn", f"Attention on the {name}: mean A[m, m−{offset}]"
            )
        )
    plots = _module("rope_interp.plots.analysis")
    figures.append(plots.plot_positional_heads(heads, offset=1))
    best = _descending(heads[heads.offset == 1], "attn").iloc[0]
    figures.append(
        plots.plot_pair_margins(result.pairs, int(best["layer"]), int(best["head"]), offset=1)
    )
    top = _descending(heads, "attn")
    keep = [
        "layer",
        "head",
        "offset",
        "attn",
        "margin",
        "top_pair",
        "top_pair_margin",
        "high_band_margin",
        "low_band_margin",
        "high_margin_fraction",
        "qk_high_share",
    ]
    return Section(
        "Positional heads",
        how_to_read=(
            "heads with high attention on themselves (offset 0) or the previous token (offset 1) "
            "are positional heads; Barbero et al. predict they use the highest frequencies: "
            "look for large `high_margin_fraction` (the share of the score margin built by the "
            "top 25 % of frequencies) and `qk_high_share` among the top rows."
        ),
        figures=figures,
        tables=[("Heads by attention at the offset", top[[c for c in keep if c in top]])],
        key_result=_positional_key(heads, best),
    )


def _positional_key(heads: pd.DataFrame, best) -> str:
    prev = heads[heads.offset == 1]
    corr = _module("rope_interp.analysis.statistics").spearman(prev["attn"], prev["qk_high_share"])
    return (
        f"strongest previous-token head L{int(best['layer'])}H{int(best['head'])} "
        f"(attention {best['attn']:.2f}, {best['high_margin_fraction']:.0%} of its margin from the "
        f"high band); Spearman ρ(previous-token attention, high-frequency share) = {corr:.2f}"
    )


@section("outliers", "Rotary outliers and offset features")
def outliers_section(ctx: ReportContext) -> Section:
    outliers = _module("rope_interp.analysis.outliers")
    stats = ctx.pair_stats()
    table = outliers.offset_features(stats, context=ctx.context)
    summary = outliers.bound_summary(table)
    reference = outliers.bound_summary(
        outliers.offset_features(stats, context=ctx.context, rule="reference")
    )
    reference.insert(0, "rule", "reference (max > 4 × global median)")
    both_rules = pd.concat(
        [summary.assign(rule="project"), reference[reference.scope == "flagged"]],
        ignore_index=True,
    )
    per_pair = table.groupby("pair", as_index=False).agg(
        q_max=("q_max", "max"),
        k_max=("k_max", "max"),
        flagged=("flagged", "sum"),
        cycles=("cycles", "first"),
    )
    import plotly.graph_objects as go

    profile = go.Figure()
    profile.add_bar(x=per_pair.pair, y=per_pair.q_max, name="max |z| of q")
    profile.add_bar(x=per_pair.pair, y=per_pair.k_max, name="max |z| of k")
    first = ctx.spec.first_partial_pair(ctx.context)
    if first < ctx.spec.n_pairs:
        profile.add_vrect(
            x0=first - 0.5,
            x1=ctx.spec.n_pairs - 0.5,
            fillcolor="orange",
            opacity=0.12,
            line_width=0,
            annotation_text="partial cycle",
        )
    profile.update_layout(
        title="Largest pair norm over all layers and heads, per pair",
        xaxis_title="pair (0 = highest frequency)",
        yaxis_title="max |z|",
        barmode="group",
        height=400,
    )
    flagged = table[table.flagged]
    figures = [
        profile,
        _heatmap(
            table,
            "pair",
            "layer",
            "q_z",
            "Outlier score of q (robust z of log max |z|), max over heads",
            aggfunc="max",
        ),
        _module("rope_interp.plots.analysis").plot_offset_features(table),
    ]
    cols = [
        "layer",
        "head",
        "pair",
        "cycles",
        "q_max",
        "k_max",
        "q_z",
        "k_z",
        "q_conc",
        "k_conc",
        "alpha",
        "sweep_end",
        "partial_cycle",
        "frequency_bound",
        "angle_bound",
    ]
    shown = flagged if len(flagged) else _descending(table, "q_z").head(50)
    return Section(
        "Rotary outliers and offset features",
        how_to_read=(
            f"a pair is flagged when both its q and k maxima are outliers among the head's pairs "
            f"(robust z > {table.attrs.get('threshold', 3.5)}); Jonasson's claim holds if flagged "
            "pairs sit in the partial-cycle band and satisfy the bounds more often than "
            "all pairs do (compare the rows of the first table). The last row uses Jonasson's "
            "reference rule instead: one global threshold, max |z| > 4 × the median over all "
            "layers, heads and pairs."
        ),
        prose=(
            f"{int(table.flagged.sum())} of {len(table)} (layer, head, pair) entries are flagged "
            f"at context L = {ctx.context}."
        ),
        key_result=_outliers_key(table, summary),
        figures=figures,
        tables=[
            ("Bounds: flagged pairs vs all pairs", both_rules),
            (
                "Flagged pairs" if len(flagged) else "Top 50 by q outlier score (none flagged)",
                shown[[c for c in cols if c in shown]],
            ),
        ],
    )


def _outliers_key(table: pd.DataFrame, summary: pd.DataFrame) -> str:
    n = int(table.flagged.sum())
    if not n:
        return f"no (layer, head, pair) flagged of {len(table)}"
    rows = summary.set_index("scope")
    return (
        f"{n} of {len(table)} (layer, head, pair) flagged; partial-cycle "
        f"{rows.loc['flagged', 'partial_cycle']:.0%} (all pairs "
        f"{rows.loc['all', 'partial_cycle']:.0%}), angle bound "
        f"{rows.loc['flagged', 'angle_bound']:.0%} (all {rows.loc['all', 'angle_bound']:.0%})"
    )


@section("sinks", "Attention sinks")
def sinks_section(ctx: ReportContext) -> Section:
    sinks = _module("rope_interp.analysis.sinks")
    result = sinks.attention_sinks(ctx.model, _analysis_batches(ctx), progress=ctx.progress)
    heads = result.heads
    plots = _module("rope_interp.plots.analysis")
    strongest = _descending(heads, "first_mass").iloc[0]
    figures = [
        plots.plot_sinks(heads, "importance"),
        plots.plot_pair_margins(result.pairs, int(strongest["layer"]), int(strongest["head"])),
        _scatter(
            heads,
            "first_mass",
            "low_margin_fraction",
            "First-token mass vs the share of its margin built by the lowest frequencies",
            hover=("layer", "head", "top_pair"),
        ),
    ]
    n_sinks = int(heads.is_sink.sum())
    return Section(
        "Attention sinks",
        how_to_read=(
            "a head has a sink when the first token's importance exceeds 0.3 (Gu et al.); "
            "`low_margin_fraction` near 1 means the lowest-frequency pairs make the first key win "
            "(Jonasson's offset features)."
        ),
        prose=f"{n_sinks} of {len(heads)} heads have a sink on the first token.",
        key_result=(
            f"{n_sinks} of {len(heads)} heads have a first-token sink; in them the lowest "
            f"25 % of frequencies build a median "
            f"{heads[heads.is_sink].low_margin_fraction.median():.0%} of the first-token margin"
            if n_sinks
            else f"no sink among {len(heads)} heads"
        ),
        figures=figures,
        tables=[
            ("Heads by first-token attention", _descending(heads, "first_mass"))
        ],
    )


@section("massive", "Massive values")
def massive_section(ctx: ReportContext) -> Section:
    massive = _module("rope_interp.analysis.massive")
    table = massive.massive_values(ctx.model, _analysis_batches(ctx), progress=ctx.progress)
    figure = _module("rope_interp.plots.analysis").plot_massive(table)
    by_kind = table.groupby("kind", as_index=False).agg(
        mean_pair_position=("pair_position", "mean"),
        mean_ratio=("ratio", "mean"),
        max_ratio=("ratio", "max"),
    )
    return Section(
        "Massive values",
        how_to_read=(
            "Jin et al. find each head's largest q/k dimensions in low-frequency pairs "
            "(`pair_position` near 1) and not in v: compare the kinds in the first table."
        ),
        figures=[figure],
        tables=[
            ("Per kind (top dimensions of every head)", by_kind),
            ("Top dimensions per head", _descending(table, "ratio")),
        ],
        key_result=", ".join(
            f"{row.kind}: mean pair position {row.mean_pair_position:.2f}"
            for row in by_kind.itertuples()
            if row.kind in ("q", "k")
        )
        + " (0 = highest, 1 = lowest frequency)",
    )


@section("spectra", "Spectra and phase")
def spectra_section(ctx: ReportContext) -> Section:
    spectral = _module("rope_interp.analysis.spectral")
    batches = _analysis_batches(ctx)
    attn = spectral.attention_spectra(
        ctx.model, batches, min_row=min(32, ctx.context), progress=ctx.progress
    )
    mlp = spectral.mlp_spectra(ctx.model, batches, progress=ctx.progress)
    align = spectral.phase_alignment(ctx.model, batches, progress=ctx.progress)
    # The entropy claim under every reasonable definition, each with a permutation p-value.
    robust = spectral.entropy_correlation_table(
        spectral.spectral_entropy_definitions(
            ctx.model, batches, min_row=min(32, ctx.context), row_step=4, progress=ctx.progress
        ),
        n_permutations=2000,
    )
    verdict = spectral.robustness_verdict(robust)
    paper = robust.iloc[0]  # PAPER_DEFINITION comes first
    corr = paper["spearman"]
    context = int(batches[0].shape[1]) if batches else ctx.context
    if mlp.empty:
        harmonic_line = "no MLP spectral peaks to test for harmonics"
    else:
        harmonics = spectral.harmonic_enrichment(
            mlp, spectral.spec_of(ctx.model).thetas, tolerance=1.0 / context, n_null=2000
        )
        harmonic_line = (
            f"MLP peaks on a harmonic {harmonics['observed']:.0%} vs jitter null "
            f"{harmonics['null_mean']:.0%} [{harmonics['null_low']:.0%}, "
            f"{harmonics['null_high']:.0%}], p = {harmonics['p_value']:.2g}"
        )
    bands = attn[["low", "mid", "high"]].mean()
    figures = [
        _module("rope_interp.plots.analysis").plot_band_energy(attn),
        _scatter(
            attn,
            "attention_entropy",
            "spectral_entropy",
            f"Attention rows: spectral vs positional entropy (Spearman {corr:.2f}, paper's "
            "definition)",
            hover=("layer", "head", "low", "high"),
        ),
    ]
    if "spearman" in align:
        figures.append(
            _bar(
                align,
                "layer",
                "spearman",
                "Phase alignment vs MLP activation magnitude (Spearman, per layer)",
            )
        )
    return Section(
        "Spectra and phase",
        how_to_read=(
            "Ruscio & Silvestri report most attention-row energy in the low band and a "
            "negative correlation between spectral and positional entropy. The spectra follow "
            "their pipeline (raw attention row × periodic Hann window, zero padded, one "
            "spectrum per head); the robustness table repeats the correlation under every "
            "combination of window, mean removal, DC bin and aggregation, each with a "
            "permutation p-value: the claim holds if it is negative under all of them. MLP "
            "peaks count as harmonics only if they match sums/multiples of θ_i more often than "
            "the same peaks moved at random by ±0.02 cycles/token (the jitter null)."
        ),
        prose=(
            f"Mean attention-row energy: low {bands['low']:.0%}, mid {bands['mid']:.0%}, high "
            f"{bands['high']:.0%}. Spearman correlation of spectral and positional entropy "
            f"over heads, paper's definition: {corr:.2f} (permutation p "
            f"{paper['spearman_p']:.2g}); over {len(robust)} definitions it ranges "
            f"{robust['spearman'].min():.2f} to {robust['spearman'].max():.2f}: "
            f"**{verdict}**. {harmonic_line[0].upper()}{harmonic_line[1:]}."
        ),
        figures=figures,
        tables=[
            ("Attention spectra per head", attn),
            ("Spectral vs positional entropy under each definition", robust),
            ("MLP spectral peaks", mlp),
            ("Phase alignment per layer", align),
        ],
        key_result=(
            f"attention-row energy low/mid/high {bands['low']:.0%}/{bands['mid']:.0%}/"
            f"{bands['high']:.0%}; Spearman(spectral, positional entropy) = {corr:.2f} "
            f"(paper's definition), {verdict} over {len(robust)} definitions; {harmonic_line}"
        ),
    )


# ---- ablations: one experiment run shared by three sections ----------------------------------
def _ablations(ctx: ReportContext):
    """The shared experiment result (run once for the three ablation sections)."""
    if "ablations" not in ctx.cache:
        experiment = _module("rope_interp.experiment")
        conditions = _module("rope_interp.conditions").standard_conditions(
            ctx.model, ctx.spec, ctx.seed
        )
        ctx.cache["ablations"] = experiment.run_experiment(
            ctx.model,
            conditions,
            ctx.ablation_corpus,
            batch_size=ctx.batch_size,
            n_boot=ctx.n_bootstrap,
            seed=ctx.seed,
            progress=ctx.progress,
        )
    return ctx.cache["ablations"]


def _summary_cols(frame: pd.DataFrame) -> pd.DataFrame:
    keep = [
        "condition",
        "selection",
        "n_selected",
        "mode",
        "side",
        "delta_loss",
        "ci_low",
        "ci_high",
        "loss_base",
        "loss",
        "n_sequences",
        "n_tokens",
    ]
    return frame[[c for c in keep if c in frame]]


def _head_effects(heads: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """Per condition: mean KL and the change of diag / prev / first attention, averaged over
    heads, plus the change on the clean model's top previous-token heads."""
    rows = []
    for name in names:
        part = heads[heads.condition == name]
        if part.empty:
            continue
        top_prev = part.nlargest(max(1, len(part) // 20), "prev_base")
        rows.append(
            {
                "condition": name,
                "kl": part.kl.mean(),
                "d_diag": (part.diag - part.diag_base).mean(),
                "d_prev": (part.prev - part.prev_base).mean(),
                "d_prev_top_heads": (top_prev.prev - top_prev.prev_base).mean(),
                "d_first": (part["first"] - part.first_base).mean(),
                "d_entropy": (part.entropy - part.entropy_base).mean(),
                "d_max_weight": (part.max_weight - part.max_weight_base).mean(),
            }
        )
    return pd.DataFrame(rows)


@section("ablation_bands", "Ablation: high vs low frequencies")
def band_ablation_section(ctx: ReportContext) -> Section:
    result = _ablations(ctx)
    summary = result.summary
    part = summary[summary.get("group", pd.Series(dtype=str)) == "band"]
    effects = _head_effects(result.heads, list(part.condition))
    table = _summary_cols(part).merge(effects, on="condition", how="left")
    plots = _module("rope_interp.plots.ablation")
    contrasts = _module("rope_interp.contrasts")
    paired = contrasts.band_contrasts(result, n_boot=ctx.n_bootstrap, seed=ctx.seed)
    places = contrasts.control_distribution(result)
    figures = [plots.delta_loss_bars(part, "Δloss (nats/token) with 95 % bootstrap CI")]
    if len(places):
        figures.append(plots.random_control_strip(part, places))
    high = part[part.get("band", pd.Series(dtype=str)) == "high"]
    if len(high) and len(result.heads):
        figures.append(
            plots.head_metric_heatmap(result.heads, high.condition.iloc[0], "prev", change=True)
        )
    if not effects.empty:
        figures.append(
            _bar(
                effects,
                "condition",
                "d_prev_top_heads",
                "Change of previous-token attention in the top 5 % previous-token heads",
            )
        )
    tables = [("Paired contrasts", paired)] if len(paired) else []
    if len(places):
        tables.append(("Where the bands fall among the random controls", places))
    tables.append(("Conditions", table))
    return Section(
        "Ablation: high vs low frequencies",
        how_to_read=(
            "each bar zeroes a quarter of the rotary pairs in q and k of every head; seeded "
            "random selections of the same number of pairs per head are the control, shown as "
            "a distribution with the percentile where each band falls. Contrasts are paired: "
            "A − B per sequence, with a bootstrap over sequences (the random draws held fixed). "
            "Barbero et al. predict that removing the highest frequencies breaks positional "
            "heads (negative `d_prev_top_heads`) and costs more loss than removing the lowest; "
            "a band is only special if it falls outside the random draws."
        ),
        prose=(
            f"The three ablation sections share one experiment run: {len(summary)} conditions "
            f"over {ctx.ablation_corpus.describe()}, each measured against the clean model "
            f"(its time is counted here). Δloss is the mean over sequences of ablated − clean "
            f"next-token loss; the interval is a percentile bootstrap over sequences "
            f"({ctx.n_bootstrap} resamples). Attention changes average over query rows ≥ 1."
        ),
        figures=figures,
        tables=tables,
        key_result=_bands_key(table, paired, places),
    )


_SHARED_RUN = "Measured in the ablation run of the high vs low section (its time is counted there)."


def _ci(row) -> str:
    return f"{row['delta_loss']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]"


def _bands_key(table: pd.DataFrame, paired: pd.DataFrame, places: pd.DataFrame) -> str:
    if table.empty:
        return ""
    rows = table.set_index("condition")
    named = [n for n in rows.index if not n.startswith("zero random")]
    parts = [f"Δloss {name}: {_ci(rows.loc[name])}" for name in named]
    if len(paired):
        first = paired.iloc[0]
        decided = "separable" if first.ci_low > 0 or first.ci_high < 0 else "not separable"
        parts.append(
            f"paired {first.contrast}: {first.delta:+.3f} [{first.ci_low:+.3f}, "
            f"{first.ci_high:+.3f}] ({decided} at n = {first.n_sequences})"
        )
    for place in places.itertuples():
        parts.append(
            f"{place.band} band at the {place.percentile:.0f}th percentile of "
            f"{place.n_controls} random controls ({place.controls_min:+.3f} to "
            f"{place.controls_max:+.3f})"
        )
    if "d_prev_top_heads" in rows and len(named):
        parts.append(
            "previous-token attention of the top heads "
            + ", ".join(f"{n.split()[1]} {rows.loc[n, 'd_prev_top_heads']:+.2f}" for n in named)
        )
    return "; ".join(parts)


@section("ablation_prope", "Ablation: p-RoPE sweep")
def prope_section(ctx: ReportContext) -> Section:
    import plotly.graph_objects as go

    result = _ablations(ctx)
    summary = result.summary
    part = summary[summary.get("group", pd.Series(dtype=str)) == "p-rope"].copy()
    figure = go.Figure()
    for reverse, label in (
        (False, "p-RoPE: lowest 1−p become NoPE"),
        (True, "reversed: highest 1−p become NoPE"),
    ):
        line = part[part.reverse == reverse] if "reverse" in part else part
        if reverse:
            ends = part[(part.reverse == False) & part.p.isin([0.0, 1.0])]  # noqa: E712
            line = pd.concat([line, ends])
        line = line.sort_values("p")
        figure.add_scatter(
            x=line.p,
            y=line.delta_loss,
            mode="lines+markers",
            name=label,
            error_y={
                "type": "data",
                "symmetric": False,
                "array": (line.ci_high - line.delta_loss).to_numpy(),
                "arrayminus": (line.delta_loss - line.ci_low).to_numpy(),
            },
        )
    figure.update_layout(
        title="Δloss vs the fraction p of frequencies that keep rotating",
        xaxis_title="p",
        yaxis_title="Δloss (nats/token)",
        height=420,
    )
    table = _summary_cols(part).merge(
        _head_effects(result.heads, list(part.condition)), on="condition", how="left"
    )
    return Section(
        "Ablation: p-RoPE sweep",
        how_to_read=(
            "inference-time p-RoPE (no retraining) keeps the highest fraction p of frequencies "
            "rotating; Barbero et al. find that dropping the lowest ~25 % costs little, and less "
            "than dropping the highest (compare the two curves at the same p)."
        ),
        prose=_SHARED_RUN,
        figures=[figure],
        tables=[("Conditions", table)],
        key_result="; ".join(
            f"{row.condition}: {_ci(row._asdict())}"
            for row in table.itertuples()
            if row.condition.endswith("p=0.75")
        ),
    )


@section("ablation_phase", "Ablation: phase shifts")
def phase_section(ctx: ReportContext) -> Section:
    from rope_interp.plots.ablation import phase_sweep_curves

    result = _ablations(ctx)
    summary = result.summary
    group = summary.get("group", pd.Series(dtype=str))
    part = summary[group == "phase"]
    effects = _head_effects(result.heads, list(part.condition))
    merged = part.merge(effects, on="condition", how="left")
    figure = phase_sweep_curves(
        merged, title="Rotating a quarter of the pairs of q by a constant angle φ"
    )
    sanity = summary[group == "sanity"]
    prose = _SHARED_RUN
    if len(sanity):
        row = sanity.iloc[0]
        prose = (
            f"{_SHARED_RUN} Sanity check of relative encoding: shifting every position by "
            f"{int(row['delta'])} on q and k changed the loss by {row.delta_loss:+.2e} "
            "nats/token (expected ≈ 0)."
        )
    table = _summary_cols(pd.concat([part, sanity])).merge(effects, on="condition", how="left")
    return Section(
        "Ablation: phase shifts",
        how_to_read=(
            "a phase shift changes the angle α between q and k pairs; Ruscio & Silvestri "
            "predict misalignment flattens attention (entropy up, max weight down) and raises "
            "the loss, most for the bands the model relies on."
        ),
        prose=prose,
        figures=[figure],
        tables=[("Conditions", table)],
        key_result=_phase_key(merged, sanity),
    )


def _phase_key(merged: pd.DataFrame, sanity: pd.DataFrame) -> str:
    parts = []
    for end in ("high", "low"):
        line = merged[merged.band == end]
        if len(line):
            worst = line.loc[line.delta_loss.idxmax()]
            parts.append(
                f"{end} band: largest Δloss {worst.delta_loss:+.2f} at φ = {worst.phi:.2f}"
            )
    if len(sanity):
        parts.append(f"position shift (sanity): Δloss {sanity.iloc[0].delta_loss:+.1e}")
    return "; ".join(parts)
