"""The `rope-interp` command: the parser of its subcommands, the checks that run before any
model loads, and `main`.

One module per command (its options, its checked settings object, what it runs):
`report_command` (`ReportSettings`), `ablate_command` (`AblateSettings`), `summary_command`
(`SummarySettings`), `stats_commands` (`StatsSettings`, `MergeSettings`). Each parser stores
`func` (the command) and `settings` (the settings class's `from_args`): `main` parses, builds the
settings once (every check that needs no model), checks what it writes against what it reads,
and hands the settings whole to the command; no argparse `Namespace` goes further. Shared:
`options` (the parser class, the model and corpus options and `ModelSettings`), `outputs` (what
a command writes, checked against what it reads), `loading` (the model and corpus a
`ModelSettings` names) and `distributed` (torchrun)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rope_interp.cli.ablate_command import add_ablate_command
from rope_interp.cli.options import CommandParser
from rope_interp.cli.outputs import check_outputs
from rope_interp.cli.report_command import add_report_command
from rope_interp.cli.stats_commands import add_merge_command, add_stats_command
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


def validate_args(args: argparse.Namespace):
    """The command's checked settings, from its parsed arguments: every check that needs no
    model, before any work (one `RopeInterpError` naming the option, the value and what is
    accepted); last, every output against every input."""
    settings = args.settings(args)
    model = getattr(settings, "model", None)
    inputs = model.check_sources() if model is not None else settings.sources()
    check_outputs(settings.outputs(), inputs, overwrite=getattr(settings, "overwrite", False))
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; a mistake is one line on stderr and exit code 2 (a failure of the
    system, such as a full disk, one line and exit code 1), never a traceback."""
    try:
        args = build_parser().parse_args(argv)
        args.argv = list(argv) if argv is not None else sys.argv[1:]
        settings = validate_args(args)
        args.func(settings)
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
