"""`rope-interp report`: every analysis and the standard ablations in one HTML file."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from rope_interp.cli import loading
from rope_interp.cli.options import (
    HelpFormatter,
    ModelSettings,
    add_model_options,
    check_integer,
    progress_note,
    split_list,
)
from rope_interp.cli.outputs import Output, add_overwrite_option
from rope_interp.errors import RopeInterpError

if TYPE_CHECKING:
    from rope_interp.interventions.experiment import RunSettings


def add_report_command(commands) -> None:
    from rope_interp.report import section_names

    report = commands.add_parser(
        "report",
        help="run the analyses and ablations, write one HTML report (start here)",
        description=(
            "Run every analysis (frequency usage, positional heads, outliers and offset "
            "features, attention sinks, spectra, massive values) and a standard set of "
            "ablations (high vs low frequency bands with random controls, p-RoPE, phase "
            "shifts), then write ONE self-contained HTML file: interactive figures, sortable "
            "tables, and a line per section on how to read it. With the defaults the built-in "
            "model takes 10 to 25 minutes on 2 CPU cores, most of it the 41 ablation "
            "conditions (--ablation-tokens 1024 for a quicker look, --sections for a subset). "
            "The HTML file is rewritten after each section: open it while the rest runs."
        ),
        formatter_class=HelpFormatter,
    )
    add_model_options(report)
    report.add_argument("--out", default="out/report.html", help="the HTML file to write")
    report.add_argument(
        "--ablation-tokens",
        type=int,
        default=4096,
        help="tokens for the ablations (each condition is one pass over them; 16 windows of 256 "
        "decide the headline paired contrasts on SmolLM2, 8 do not: docs/findings.md)",
    )
    report.add_argument(
        "--analysis-tokens",
        type=int,
        default=2048,
        help="tokens for the analyses that decompose every attention score (positional "
        "heads, sinks, massive values, spectra): the slow ones",
    )
    report.add_argument(
        "--sections",
        default=None,
        help=f"comma-separated subset of: {', '.join(section_names())} (default: all)",
    )
    report.add_argument(
        "--bootstrap", type=int, default=1000, help="bootstrap resamples for confidence intervals"
    )
    report.add_argument(
        "--save-tables", default=None, metavar="DIR", help="also write every table as CSV here"
    )
    report.add_argument(
        "--figures",
        default=None,
        metavar="DIR",
        help="also write every figure as an image file here (for a paper; needs Chromium)",
    )
    report.add_argument(
        "--format", default="png", choices=("png", "svg", "pdf"), help="image format of --figures"
    )
    add_overwrite_option(report)
    report.set_defaults(func=cmd_report, settings=ReportSettings.from_args)


@dataclass(frozen=True)
class ReportSettings:
    """`report`'s options, checked when made (before any model loads). The defaults are the
    parser's (`add_report_command`)."""

    model: ModelSettings
    out: Path
    ablation_tokens: int
    analysis_tokens: int
    sections: tuple[str, ...] | None  # None: all
    bootstrap: int
    save_tables: Path | None
    figures: Path | None
    format: Literal["png", "svg", "pdf"]
    overwrite: bool
    argv: tuple[str, ...]  # the command line, stated in the report

    def __post_init__(self) -> None:
        from rope_interp.report import resolve_sections

        check_integer("--ablation-tokens", self.ablation_tokens)
        check_integer("--analysis-tokens", self.analysis_tokens)
        check_integer("--bootstrap", self.bootstrap)
        resolve_sections(self.sections)  # a typo fails here, not after the model
        if self.out.suffix.lower() not in (".html", ".htm"):
            raise RopeInterpError(f"--out must end in .html, got {str(self.out)!r}.")
        if self.figures is not None:
            from rope_interp.plots.export import check_image_export

            check_image_export(self.format)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ReportSettings:
        sections = split_list(args.sections)
        return cls(
            model=ModelSettings.from_args(args),
            out=Path(args.out),
            ablation_tokens=args.ablation_tokens,
            analysis_tokens=args.analysis_tokens,
            sections=tuple(sections) if sections else None,
            bootstrap=args.bootstrap,
            save_tables=_path(args.save_tables),
            figures=_path(args.figures),
            format=args.format,
            overwrite=args.overwrite,
            argv=tuple(getattr(args, "argv", None) or ["report"]),
        )

    def folders(self) -> list[tuple[str, Path]]:
        """The folders `report` writes into besides --out's: `(option, folder)`."""
        named = (("--save-tables", self.save_tables), ("--figures", self.figures))
        return [(option, folder) for option, folder in named if folder is not None]

    def outputs(self) -> list[Output]:
        """What `report` writes."""
        return [Output("--out", self.out, "report")] + [
            Output(option, folder, "folder") for option, folder in self.folders()
        ]

    def run_settings(self) -> RunSettings:
        """How the report's analyses and ablations run."""
        from rope_interp.interventions.experiment import RunSettings

        model = self.model
        return RunSettings(
            batch_size=model.batch_size,
            n_boot=self.bootstrap,
            seed=model.seed,
            progress=not model.quiet,
        )


def _path(value: str | None) -> Path | None:
    return None if value is None else Path(value)


def cmd_report(settings: ReportSettings) -> None:
    """Run the analyses and standard ablations and write one self-contained HTML report."""
    from rope_interp.loading.data import Corpus
    from rope_interp.report import Report, build_report, resolve_sections
    from rope_interp.report.build import model_line
    from rope_interp.utils.files import mark_folder

    options, quiet = settings.model, settings.model.quiet
    out = settings.out
    started = time.perf_counter()
    progress_note(quiet, f"loading model {options.model!r} ...")
    model, corpus = loading.load_model_and_corpus(options, options.device)
    # The first windows of the statistics corpus (the same seeded draw, fewer windows).
    ablation_windows = max(1, settings.ablation_tokens // options.seq_len)
    ablation_corpus = Corpus(corpus.name, corpus.tokens[:ablation_windows], corpus.prepend_bos)
    analysis_windows = max(1, settings.analysis_tokens // options.seq_len)
    analysis_corpus = Corpus(corpus.name, corpus.tokens[:analysis_windows], corpus.prepend_bos)
    progress_note(quiet, f"corpus: {corpus.describe()}")
    meta: dict[str, str] = {
        "corpus": corpus.describe(),
        "tokens": f"{corpus.n_tokens} for statistics (usage, outliers), "
        f"{analysis_corpus.n_tokens} for score decompositions (positional heads, sinks, "
        f"massive values, spectra), {ablation_corpus.n_tokens} for ablations",
        "seed": str(options.seed),
        "command": "rope-interp " + " ".join(settings.argv),
    }
    total = len(resolve_sections(settings.sections))
    # The HTML is rewritten after each section (open it while the ablations run); the final
    # write replaces it atomically. Its model line is the one `build_report` writes.
    partial = Report(
        "How this model uses its rotary frequencies (in progress)",
        {"model": model_line(model, options.model), **meta},
    )

    def on_section(section) -> None:
        partial.add(section)
        done = len(partial.sections)
        state = "FAILED: " + section.error if section.error else f"{section.seconds:.1f} s"
        progress_note(quiet, f"[{done}/{total}] {section.title}: {state}")
        partial.meta["status"] = (
            f"in progress: {done} of {total} sections after "
            f"{time.perf_counter() - started:.0f} s; this file is replaced when the run ends"
        )
        partial.write(out)

    report = build_report(
        model,
        corpus,
        ablation_corpus,
        analysis_corpus=analysis_corpus,
        sections=settings.sections,
        meta=meta,
        settings=settings.run_settings(),
        model_name=options.model,
        started=started,
        on_section=on_section,
    )
    for _, folder in settings.folders():
        mark_folder(folder)
    path = report.write(out, tables_dir=settings.save_tables)
    if settings.figures is not None:
        images = report.write_figures(settings.figures, settings.format)
        print(f"wrote {len(images)} {settings.format.upper()} figures to {settings.figures}")
    size = path.stat().st_size / 1e6
    failed = [s.title for s in report.sections if s.error]
    print(
        f"wrote {path} ({size:.1f} MB, {len(report.sections)} sections, "
        f"{report.n_figures} figures) in {time.perf_counter() - started:.0f} s"
    )
    if failed:
        print(f"sections not computed: {', '.join(failed)} (see the report)", file=sys.stderr)
