"""`rope-interp stats` (streaming per-pair statistics: token budgets, shards, torchrun) and
`rope-interp merge` (adding up the statistics files of shards)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rope_interp.cli import loading
from rope_interp.cli.distributed import process_group
from rope_interp.cli.options import HelpFormatter, add_model_options, progress_note
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
    stats.set_defaults(func=cmd_stats)


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
    merge.set_defaults(func=cmd_merge)


def token_budget(text: str) -> int | None:
    """`--tokens` of `stats`: a count such as 4096, 50k, 100M, 1e6, or `all` (None)."""
    from rope_interp.utils.numbers import parse_token_count

    return None if text.strip().lower() == "all" else parse_token_count(text)


def validate_stats(args: argparse.Namespace) -> list[Output]:
    """The checks of `stats`'s own options; returns what it writes."""
    from rope_interp.loading.data import parse_shard

    token_budget(args.tokens)
    parse_shard(args.shard)
    if not args.out.endswith((".safetensors", ".parquet", ".csv")):
        raise RopeInterpError(
            f"--out must end in .safetensors, .csv or .parquet, got {args.out!r}."
        )
    kind = "stats" if args.out.endswith(".safetensors") else "stats-table"
    return [Output("--out", args.out, kind)]


def validate_merge(args: argparse.Namespace) -> list[Output]:
    """The checks of `merge`'s own arguments (`--out OUT IN...`, or the older `OUT IN...`);
    sets `args.out` and `args.inputs`; returns what it writes."""
    option = "--out"
    if args.out is None:
        option, args.out, args.files = "OUT", args.files[0], args.files[1:]
    args.inputs = args.files
    if not args.inputs:
        raise RopeInterpError("merge needs statistics files to combine: merge --out OUT IN...")
    if not args.out.endswith(".safetensors"):
        raise RopeInterpError(f"merge writes .safetensors; got {option} {args.out!r}.")
    return [Output(option, args.out, "stats")]


def cmd_stats(args: argparse.Namespace) -> None:
    """Streaming pair statistics to a file (.safetensors keeps the accumulators; .csv/.parquet
    the tidy table). Under `torchrun`, every rank takes its shard and rank 0 writes."""
    from rope_interp.core.stats import all_reduce_stats, collect_pair_stats
    from rope_interp.loading.data import parse_shard, stream_corpus

    out = args.out  # checked by validate_args, before the model loads
    budget = token_budget(args.tokens)
    shard_index, shard_count = parse_shard(args.shard)
    with process_group(args.device) as (rank, world, device):
        model = loading.load_model_from_args(args, device)
        # Rank r of W takes every W-th window of shard I/N: the ranks together are shard I/N.
        stream = stream_corpus(
            model,
            args.corpus,
            args.seq_len,
            max_tokens=budget,
            shard=(shard_index + rank * shard_count, shard_count * world),
            column=args.text_column,
        )
        if rank == 0:
            ranks = f" on {world} ranks" if world > 1 else ""
            progress_note(args, f"corpus: {stream.describe()}{ranks}")
        stats = collect_pair_stats(
            model,
            stream.batches(args.batch_size, progress=rank == 0 and not args.quiet),
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
                    f"The corpus {args.corpus!r} gave no window of {args.seq_len} tokens."
                )
            if out.endswith(".safetensors"):
                stats.save(out)
            else:
                write_table(stats.to_frame(), Path(out))
            print(f"wrote {out} ({stats.tokens_seen} tokens)")


def cmd_merge(args: argparse.Namespace) -> None:
    """Combine statistics files of independent jobs (shards) into one."""
    from rope_interp.core.stats import merge_stats_files

    meta = merge_stats_files(args.out, args.inputs)
    print(f"wrote {args.out} ({meta['tokens_seen']} tokens from {len(args.inputs)} files)")
