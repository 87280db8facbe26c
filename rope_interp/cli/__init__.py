"""The `rope-interp` command: the parser of its subcommands, the checks that run before any
model loads, and `main`.

One module per command (its options, its checks, what it runs): `report_command`,
`ablate_command`, `summary_command`, `stats_commands` (`stats` and `merge`). Shared: `options`
(the parser class, model and corpus options and their checks), `outputs` (what a command writes,
checked against what it reads), `loading` (the model and corpus an invocation names, table
files) and `distributed` (torchrun)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rope_interp.cli.ablate_command import add_ablate_command, validate_ablate
from rope_interp.cli.options import (
    CommandParser,
    check_corpus_source,
    check_model_name,
    check_model_options,
)
from rope_interp.cli.outputs import check_outputs, model_inputs
from rope_interp.cli.report_command import add_report_command, validate_report
from rope_interp.cli.stats_commands import (
    add_merge_command,
    add_stats_command,
    validate_merge,
    validate_stats,
)
from rope_interp.cli.summary_command import add_summary_command
from rope_interp.errors import RopeInterpError


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="rope-interp",
        description=(
            "See and test how a rotary language model uses its RoPE frequencies. "
            "Every command runs offline on the built-in SmolLM2-135M and embedded corpus; "
            "start with `rope-interp report` and open the HTML file it writes."
        ),
        epilog="Run `rope-interp COMMAND --help` for a command's options.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_report_command(commands)
    add_ablate_command(commands)
    add_summary_command(commands)
    add_stats_command(commands)
    add_merge_command(commands)
    return parser


# The checks of each model-running command's own options; each returns what it would write.
VALIDATORS = {
    "report": validate_report,
    "ablate": validate_ablate,
    "stats": validate_stats,
    "summary": lambda args: [],
}


def validate_args(args: argparse.Namespace) -> None:
    """Every check that needs no model, before any work: one `RopeInterpError` naming the
    option, the value and what is accepted; last, every output against every input."""
    if args.command == "merge":
        outputs = validate_merge(args)
        inputs = [("IN", Path(p)) for p in args.inputs]
    else:
        check_model_options(args)
        outputs = VALIDATORS[args.command](args)
        check_model_name(args.model)
        corpus_files = check_corpus_source(args.corpus, getattr(args, "text_column", "text"))
        inputs = model_inputs(args.model, corpus_files)
    check_outputs(outputs, inputs, overwrite=getattr(args, "overwrite", False))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; a mistake is one line on stderr and exit code 2 (a failure of the
    system, such as a full disk, one line and exit code 1), never a traceback."""
    try:
        args = build_parser().parse_args(argv)
        args.argv = list(argv) if argv is not None else sys.argv[1:]
        validate_args(args)
        args.func(args)
    except RopeInterpError as error:
        _error(str(error))
        return 2
    except OSError as error:
        where = f" ({error.filename})" if error.filename else ""
        _error(f"{error.strerror or error}{where}.")
        return 1
    except KeyboardInterrupt:
        print("rope-interp: interrupted", file=sys.stderr)
        return 130
    return 0


def _error(message: str) -> None:
    message = " ".join(message.split())  # one line, whatever the library wrote
    print(f"rope-interp: error: {message}", file=sys.stderr)
