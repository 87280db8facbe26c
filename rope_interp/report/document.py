"""The report as data: a `Report` is a titled list of `Section`s (prose, figures, `Table`s,
`Claim`s) plus key/value metadata. Nothing here computes results; `render` turns a report into
HTML."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from rope_interp.errors import RopeInterpError
from rope_interp.plots.export import write_images
from rope_interp.report.render import render_html, render_notebook, slug
from rope_interp.utils.atomic import atomic_write_text, write_table

#: Tables longer than this show their first rows only (the full table goes to `tables_dir`).
MAX_TABLE_ROWS = 300

#: The verdicts a `Claim` may carry. "no evidence": the test found no effect (e.g. p ≥ 0.05),
#: which is weaker than "does not hold" (an effect against the claim, or none where the claim
#: needs one); "inconclusive": the interval contains both outcomes.
VERDICTS = (
    "holds",
    "partly",
    "does not hold",
    "depends on the definition",
    "no evidence",
    "inconclusive",
    "not tested here",
)

#: The columns of `Report.claims` (and of claims.csv).
CLAIM_COLUMNS = ["section", "claim", "number", "test", "uncertainty", "verdict"]


@dataclass
class Claim:
    """One claim of the literature as this report tests it (a row of the "Claims" table).

    Args:
        claim: the claim in one line, with its source (e.g. "B. Barbero et al.: ...").
        number: the measured value(s), formatted.
        test: what was computed and the rule that turns it into the verdict.
        uncertainty: the interval or p-value behind the verdict ("none: one corpus" if none).
        verdict: one of `VERDICTS`, computed by the rule in `test`.
    """

    claim: str
    number: str
    test: str
    uncertainty: str
    verdict: str

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise RopeInterpError(
                f"Unknown verdict {self.verdict!r} for claim {self.claim!r}; choose from "
                f"{', '.join(VERDICTS)}."
            )


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
        claims: the claims this section tests, each with its number, test, uncertainty and
            verdict; the report collects them into one "Claims" table near the top.
        error: set when the section could not be computed; shown instead of results.
        seconds: how long the section took (filled by `build_report`).
    """

    title: str
    how_to_read: str = ""
    prose: str = ""
    figures: list[Any] = field(default_factory=list)
    tables: list[Table | tuple[str, pd.DataFrame]] = field(default_factory=list)
    key_result: str = ""
    claims: list[Claim] = field(default_factory=list)
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

    @property
    def claims(self) -> pd.DataFrame:
        """Every section's claims, in report order: section, claim, number, test,
        uncertainty, verdict."""
        rows = [
            {"section": section.title, **asdict(claim)}
            for section in self.sections
            for claim in section.claims
        ]
        return pd.DataFrame(rows, columns=CLAIM_COLUMNS)

    def to_html(self) -> str:
        return render_html(self)

    def _repr_html_(self) -> str:
        """In a notebook: the title, metadata and each section's headline (not the figures;
        `write()` the report and open the file for those)."""
        return render_notebook(self)

    def named_figures(self) -> list[tuple[str, object]]:
        """`(name, figure)` for every figure, named `<section>-<n>` in reading order."""
        return [
            (f"{slug(section.title)}-{n + 1}", figure)
            for section in self.sections
            for n, figure in enumerate(section.figures)
        ]

    def write_figures(
        self, directory: str | Path, fmt: Literal["png", "svg", "pdf"] = "png"
    ) -> list[Path]:
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
    """Every table of `report` as `<section>-<caption>.csv` in `directory`, and the claims of
    all sections as `claims.csv` (when there are any)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    claims = report.claims
    if len(claims):
        written.append(write_table(claims, directory / "claims.csv"))
    for section in report.sections:
        for table in section.iter_tables():
            name = f"{slug(section.title)}-{slug(table.caption)}.csv"
            written.append(write_table(table.frame, directory / name))
    return written
