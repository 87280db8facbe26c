"""`rope-interp stats` (streaming per-pair statistics: token budgets, shards, torchrun) and
`rope-interp merge` (adding up the statistics files of shards)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from rope_interp.cli import loading
from rope_interp.cli.distributed import process_group
from rope_interp.cli.options import HelpFormatter, ModelSettings, add_model_options, progress_note
from rope_interp.cli.outputs import Output, add_overwrite_option
from rope_interp.errors import RopeInterpError
from rope_interp.utils.atomic import write_table


def add_stats_command(commands) -> None:
    stats = commands.add_parser(
        "stats",
        help="streaming per-pair q/k statistics to .safetensors/.csv/.parquet",
        description="One streaming pass over the corpus: per (layer, head, pair) norms, maxima "
        "and mean vectors of the pre-rotation q and k. .safetensors keeps the mergeable "
        "accumulators; .csv/.parquet the tidy table.",
        formatter_class=HelpFormatter,
        conflict_handler="resolve",
    )
    add_model_options(stats)
    # the corpus options of `stats`, replacing the shared `--tokens` (conflict_handler above)
    stats.add_argument(
        "--tokens",
        default="4096",
        help="token budget of the whole run (all shards): 4096, 50k, 100M, 1e6, or 'all' for "
        "the whole corpus; windows are taken in corpus order",
    )
    stats.add_argument(
        "--shard",
        default="0/1",
        metavar="I/N",
        help="take shard I of N (windows I, I+N, I+2N, ...): the N shards are disjoint and "
        "together equal the unsharded run; combine their files with `rope-interp merge`",
    )
    stats.add_argument(
        "--text-column", default="text", help="the text field of .jsonl/.parquet corpus files"
    )
    stats.add_argument("--out", required=True, help="output: .safetensors, .csv or .parquet")
    add_overwrite_option(stats)
    stats.set_defaults(func=cmd_stats, settings=StatsSettings.from_args)


def add_merge_command(commands) -> None:
    merge = commands.add_parser(
        "merge",
        help="combine .safetensors statistics files of independent jobs (shards) into one",
        description="Add the accumulators of statistics files written by `stats --out "
        "X.safetensors` (e.g. the shards of a job array), as one pass over all their tokens "
        "would. Files of different models, geometry or layers are refused.",
    )
    merge.add_argument("--out", help="the merged .safetensors file to write")
    merge.add_argument(
        "files",
        metavar="FILE",
        nargs="+",
        help="statistics files to combine (without --out: OUT IN... as before, the first is "
        "the file to write)",
    )
    add_overwrite_option(merge)
    merge.set_defaults(func=cmd_merge, settings=MergeSettings.from_args)


def token_budget(text: str) -> int | None:
    """`--tokens` of `stats`: a count such as 4096, 50k, 100M, 1e6, or `all` (None)."""
    from rope_interp.utils.numbers import parse_token_count

    return None if text.strip().lower() == "all" else parse_token_count(text)


@dataclass(frozen=True)
class StatsSettings:
    """`stats`'s options, checked when made (before any model loads): the shared model
    options with `--tokens` read as a budget (None: the whole corpus), the shard, the output."""

    model: ModelSettings
    shard: tuple[int, int]  # (index, count)
    out: Path
    overwrite: bool

    def __post_init__(self) -> None:
        if not self.out.name.endswith((".safetensors", ".parquet", ".csv")):
            raise RopeInterpError(
                f"--out must end in .safetensors, .csv or .parquet, got {str(self.out)!r}."
            )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> StatsSettings:
        from rope_interp.loading.data import parse_shard

        return cls(
            model=ModelSettings.from_args(args, tokens=token_budget(args.tokens)),
            shard=parse_shard(args.shard),
            out=Path(args.out),
            overwrite=args.overwrite,
        )

    @property
    def accumulators(self) -> bool:
        """Whether --out keeps the mergeable accumulators (.safetensors), not the table."""
        return self.out.name.endswith(".safetensors")

    def outputs(self) -> list[Output]:
        """What `stats` writes."""
        return [Output("--out", self.out, "stats" if self.accumulators else "stats-table")]


@dataclass(frozen=True)
class MergeSettings:
    """`merge`'s arguments (`--out OUT IN...`, or the older `OUT IN...`), checked when made."""

    out: Path
    inputs: tuple[Path, ...]
    overwrite: bool
    out_option: str = "--out"  # how OUT was given: "--out", or "OUT" (the older form)

    def __post_init__(self) -> None:
        if not self.inputs:
            raise RopeInterpError("merge needs statistics files to combine: merge --out OUT IN...")
        if not self.out.name.endswith(".safetensors"):
            raise RopeInterpError(
                f"merge writes .safetensors; got {self.out_option} {str(self.out)!r}."
            )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> MergeSettings:
        if args.out is None:  # OUT IN...
            out, inputs, option = args.files[0], args.files[1:], "OUT"
        else:
            out, inputs, option = args.out, args.files, "--out"
        return cls(Path(out), tuple(Path(p) for p in inputs), args.overwrite, option)

    def sources(self) -> list[tuple[str, Path]]:
        """The files `merge` reads, as (argument, path)."""
        return [("IN", path) for path in self.inputs]

    def outputs(self) -> list[Output]:
        """What `merge` writes."""
        return [Output(self.out_option, self.out, "stats")]


def cmd_stats(settings: StatsSettings) -> None:
    """Streaming pair statistics to a file (.safetensors keeps the accumulators; .csv/.parquet
    the tidy table). Under `torchrun`, every rank takes its shard and rank 0 writes."""
    from rope_interp.core.stats import all_reduce_stats, collect_pair_stats
    from rope_interp.loading.data import stream_corpus

    options, out = settings.model, settings.out
    shard_index, shard_count = settings.shard
    with process_group(options.device) as (rank, world, device):
        model = loading.load_model_from_settings(options, device)
        # Rank r of W takes every W-th window of shard I/N: the ranks together are shard I/N.
        stream = stream_corpus(
            model,
            options.corpus,
            options.seq_len,
            max_tokens=options.tokens,
            shard=(shard_index + rank * shard_count, shard_count * world),
            column=options.text_column,
        )
        if rank == 0:
            ranks = f" on {world} ranks" if world > 1 else ""
            progress_note(options.quiet, f"corpus: {stream.describe()}{ranks}")
        stats = collect_pair_stats(
            model,
            stream.batches(options.batch_size, progress=rank == 0 and not options.quiet),
            progress=False,
            allow_empty=world > 1,
        )
        if world > 1:
            all_reduce_stats(stats)
        if rank == 0 and stream.note():
            print(f"corpus: {stream.note()}", file=sys.stderr)
        if rank == 0:
            if stats.tokens_seen == 0:
                raise RopeInterpError(
                    f"The corpus {options.corpus!r} gave no window of {options.seq_len} tokens."
                )
            if settings.accumulators:
                stats.save(out)
            else:
                write_table(stats.to_frame(), out)
            print(f"wrote {out} ({stats.tokens_seen} tokens)")


def cmd_merge(settings: MergeSettings) -> None:
    """Combine statistics files of independent jobs (shards) into one."""
    from rope_interp.core.stats import merge_stats_files

    meta = merge_stats_files(settings.out, list(settings.inputs))
    print(f"wrote {settings.out} ({meta['tokens_seen']} tokens from {len(settings.inputs)} files)")
