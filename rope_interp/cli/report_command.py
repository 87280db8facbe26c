"""`rope-interp report`: every analysis and the standard ablations in one HTML file."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rope_interp.cli import loading
from rope_interp.cli.options import HelpFormatter, add_model_options, progress_note, split_list
from rope_interp.cli.outputs import Output, add_overwrite_option
from rope_interp.errors import RopeInterpError


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
    report.set_defaults(func=cmd_report)


def validate_report(args: argparse.Namespace) -> list[Output]:
    """The checks of `report`'s own options; returns what it writes."""
    from rope_interp.report import resolve_sections

    resolve_sections(split_list(args.sections))  # a typo fails here, not after the model
    if Path(args.out).suffix.lower() not in (".html", ".htm"):
        raise RopeInterpError(f"--out must end in .html, got {args.out!r}.")
    if args.figures is not None:
        from rope_interp.plots.export import check_image_export

        check_image_export(args.format)
    return [Output("--out", args.out, "report")] + [
        Output(option, folder, "folder") for option, folder in report_folders(args)
    ]


def report_folders(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The folders `report` writes into besides --out's: `(option, folder)`."""
    named = (("--save-tables", args.save_tables), ("--figures", args.figures))
    return [(option, folder) for option, folder in named if folder is not None]


def cmd_report(args: argparse.Namespace) -> None:
    """Run the analyses and standard ablations and write one self-contained HTML report."""
    from rope_interp.loading.data import Corpus
    from rope_interp.report import Report, build_report, resolve_sections
    from rope_interp.utils.files import mark_folder

    sections = split_list(args.sections)
    out = Path(args.out)
    started = time.perf_counter()
    progress_note(args, f"loading model {args.model!r} ...")
    model, corpus = loading.load_model_and_corpus(args)
    # The first windows of the statistics corpus (the same seeded draw, fewer windows).
    ablation_windows = max(1, args.ablation_tokens // args.seq_len)
    ablation_corpus = Corpus(corpus.name, corpus.tokens[:ablation_windows], corpus.prepend_bos)
    analysis_windows = max(1, args.analysis_tokens // args.seq_len)
    analysis_corpus = Corpus(corpus.name, corpus.tokens[:analysis_windows], corpus.prepend_bos)
    progress_note(args, f"corpus: {corpus.describe()}")
    meta: dict[str, str] = {
        "model": f"{args.model} as a {type(model).__name__} ({model.cfg.n_layers} layers, "
        f"{model.cfg.n_heads} heads, d_model {model.cfg.d_model}) on {model.cfg.device}, "
        f"{args.dtype}",
        "corpus": corpus.describe(),
        "tokens": f"{corpus.n_tokens} for statistics (usage, outliers), "
        f"{analysis_corpus.n_tokens} for score decompositions (positional heads, sinks, "
        f"massive values, spectra), {ablation_corpus.n_tokens} for ablations",
        "seed": str(args.seed),
        "command": "rope-interp " + " ".join(getattr(args, "argv", None) or ["report"]),
    }
    total = len(resolve_sections(sections))
    # The HTML is rewritten after each section (open it while the ablations run); the final
    # write replaces it atomically.
    partial = Report("How this model uses its rotary frequencies (in progress)", dict(meta))

    def on_section(section) -> None:
        partial.add(section)
        done = len(partial.sections)
        state = "FAILED: " + section.error if section.error else f"{section.seconds:.1f} s"
        progress_note(args, f"[{done}/{total}] {section.title}: {state}")
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
        sections=sections,
        meta=meta,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=not args.quiet,
        n_bootstrap=args.bootstrap,
        on_section=on_section,
    )
    report.meta["run time"] = (
        f"{time.perf_counter() - started:.0f} s in all (model loading included)"
    )
    for _, folder in report_folders(args):
        mark_folder(folder)
    path = report.write(out, tables_dir=args.save_tables)
    if args.figures is not None:
        images = report.write_figures(args.figures, args.format)
        print(f"wrote {len(images)} {args.format.upper()} figures to {args.figures}")
    size = path.stat().st_size / 1e6
    failed = [s.title for s in report.sections if s.error]
    print(
        f"wrote {path} ({size:.1f} MB, {len(report.sections)} sections, "
        f"{report.n_figures} figures) in {time.perf_counter() - started:.0f} s"
    )
    if failed:
        print(f"sections not computed: {', '.join(failed)} (see the report)", file=sys.stderr)
