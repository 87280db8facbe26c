"""`rope-interp ablate`: a resumable sweep of interventions → a summary table (Δloss with a
bootstrap CI per condition) and a per-head table next to it.

Under `torchrun` the windows are split across the ranks: rank r of W takes the r-th of W
contiguous blocks of windows, runs every condition on it into `RUN_DIR/rank-r-of-W/`, and
after a barrier rank 0 merges the ranks' run directories (`merge_results`) and writes the
tables. Contiguous blocks keep the windows in their one-process order, so the merged result is
the one-process result: the same per-sequence losses, Δloss and bootstrap intervals."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rope_interp.cli import loading
from rope_interp.cli.distributed import process_group
from rope_interp.cli.options import (
    HelpFormatter,
    add_model_options,
    floats,
    progress_note,
    split_list,
)
from rope_interp.cli.outputs import Output, add_overwrite_option
from rope_interp.errors import RopeInterpError
from rope_interp.utils.atomic import write_table


def add_ablate_command(commands) -> None:
    ablate = commands.add_parser(
        "ablate",
        help="an ablation sweep (bands, p-RoPE, phase shifts) to CSV/Parquet, resumable",
        description=(
            "Run a sweep of interventions on the rotary pairs and measure each against the "
            "clean model: Δloss in nats/token with a bootstrap 95 % CI over sequences, and "
            "per-head attention changes (KL, self/previous/first-token attention, entropy). "
            "Results for each condition are saved as it finishes; re-running the same "
            "command skips finished conditions. Under torchrun the ranks split the windows."
        ),
        formatter_class=HelpFormatter,
    )
    add_model_options(ablate, tokens=2048)
    ablate.add_argument(
        "--out",
        required=True,
        help="summary table (.csv or .parquet); per-head effects go to "
        "OUT_heads.csv/.parquet next to it",
    )
    ablate.add_argument(
        "--sweep",
        default="band,p-rope,phase,sanity",
        help="comma-separated groups: band (zero high vs low vs random pairs), p-rope, "
        "phase (rotate q pairs by φ), sanity (position shift: Δloss must be 0)",
    )
    ablate.add_argument(
        "--fraction", type=float, default=0.25, help="band size as a fraction of the pairs"
    )
    ablate.add_argument(
        "--random-controls",
        type=int,
        default=20,
        help="seeded random-pair controls of the band size (their distribution places the bands)",
    )
    ablate.add_argument("--p", default="1,0.75,0.5,0.25,0", help="p values for the p-RoPE sweep")
    ablate.add_argument(
        "--phi",
        default="-pi/2,-pi/4,pi/4,pi/2,pi",
        help="angles φ (radians) for the phase sweep; φ = 0 is the clean model (negative "
        "values need the = form: --phi=-pi/4,pi/4)",
    )
    ablate.add_argument(
        "--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs"
    )
    ablate.add_argument(
        "--no-attention", action="store_true", help="measure the loss only (faster, less memory)"
    )
    ablate.add_argument(
        "--run-dir", default=None, help="where partial results go (default: OUT's name + .runs)"
    )
    add_overwrite_option(ablate)
    ablate.set_defaults(func=cmd_ablate)


def validate_ablate(args: argparse.Namespace) -> list[Output]:
    """The checks of `ablate`'s own options; returns what it writes."""
    from rope_interp.interventions.conditions import ABLATION_GROUPS

    out = Path(args.out)
    if out.suffix.lower() not in (".csv", ".parquet"):
        raise RopeInterpError(f"--out must end in .csv or .parquet, got {args.out!r}.")
    groups = split_list(args.sweep)
    if not groups:
        raise RopeInterpError(
            f"--sweep {args.sweep!r} names no group; give one or more of "
            f"{', '.join(ABLATION_GROUPS)}, comma-separated."
        )
    unknown = sorted(set(groups) - set(ABLATION_GROUPS))
    if unknown:
        raise RopeInterpError(
            f"Unknown ablation group(s) {unknown} in --sweep; choose from "
            f"{', '.join(ABLATION_GROUPS)}."
        )
    p_values = floats(args.p, "--p")
    outside = [p for p in p_values if not 0 <= p <= 1]
    if outside:
        raise RopeInterpError(f"--p values must lie in [0, 1]; got {args.p!r}.")
    floats(args.phi, "--phi")
    return [
        Output("--out", out, "ablation-table"),
        Output("--out (its per-head table)", heads_path(out), "heads-table"),
        Output("--run-dir", run_dir(args), "folder"),
    ]


def heads_path(out: Path) -> Path:
    """Where the per-head table of summary table `out` goes."""
    return out.with_name(out.stem + "_heads" + out.suffix)


def run_dir(args: argparse.Namespace) -> Path:
    """Where the partial results go: `--run-dir`, or OUT's name + .runs."""
    out = Path(args.out)
    return Path(args.run_dir) if args.run_dir else out.with_name(out.stem + ".runs")


def rank_windows(n_windows: int, rank: int, world: int) -> slice:
    """The contiguous block of windows rank `rank` of `world` takes (blocks differ by at most
    one window; in rank order they are the windows in order)."""
    if n_windows < world:
        raise RopeInterpError(
            f"ablate on {world} ranks needs at least {world} windows (one per rank); the corpus "
            f"gave {n_windows}: raise --tokens or use fewer ranks."
        )
    return slice(n_windows * rank // world, n_windows * (rank + 1) // world)


def cmd_ablate(args: argparse.Namespace) -> None:
    """An ablation sweep → one row per condition (Δloss with a bootstrap CI) in a CSV/Parquet
    file, plus per-head attention effects next to it; resumable."""
    from rope_interp.core.spec import RotarySpec
    from rope_interp.interventions.conditions import standard_conditions
    from rope_interp.interventions.experiment import run_experiment
    from rope_interp.interventions.results import merge_results
    from rope_interp.loading.data import Corpus
    from rope_interp.utils.files import mark_folder

    out = Path(args.out)
    runs = run_dir(args)
    started = time.perf_counter()
    with process_group(args.device) as (rank, world, device):
        # this rank's view of the options: its device; only rank 0 reports progress
        quiet = args.quiet or rank > 0
        mine = argparse.Namespace(**{**vars(args), "device": device, "quiet": quiet})
        progress_note(mine, f"loading model {args.model!r} ...")
        model, corpus = loading.load_model_and_corpus(mine)
        conditions = standard_conditions(
            model,
            RotarySpec.from_model(model),
            seed=args.seed,
            fraction=args.fraction,
            groups=split_list(args.sweep) or [],
            p_values=floats(args.p, "--p"),
            phases=floats(args.phi, "--phi"),
            n_random=args.random_controls,
        )
        mark_folder(runs)
        rank_dirs = [runs / f"rank-{r}-of-{world}" for r in range(world)] if world > 1 else [runs]
        shard = corpus.tokens[rank_windows(len(corpus.tokens), rank, world)]
        on_ranks = f", split over {world} ranks" if world > 1 else ""
        progress_note(
            mine,
            f"corpus: {corpus.describe()}; {len(conditions)} conditions{on_ranks}; partial "
            f"results in {runs} (re-run the same command to resume)",
        )
        result = run_experiment(
            model,
            conditions,
            Corpus(corpus.name, shard, corpus.prepend_bos),
            out_dir=rank_dirs[rank],
            batch_size=args.batch_size,
            n_boot=args.bootstrap,
            seed=args.seed,
            attention=not args.no_attention,
            progress=not quiet,
        )
        skipped = result.skipped
        if world > 1:
            import torch.distributed as dist

            dist.barrier()  # every rank's conditions are on disk
            if rank == 0:
                result = merge_results(rank_dirs, conditions=[c.name for c in conditions])
        if rank > 0:
            return
    heads_out = heads_path(out)
    for frame, path in ((result.summary, out), (result.heads, heads_out)):
        write_table(frame, path)
    if skipped:
        progress_note(args, f"resumed: {len(skipped)} condition(s) reused from {runs}")
    columns = [c for c in ("condition", "delta_loss", "ci_low", "ci_high") if c in result.summary]
    if not args.quiet:
        print(result.summary[columns].to_string(index=False, float_format=lambda v: f"{v:+.4f}"))
    heads_note = f" and {heads_out}" if len(result.heads) else ""
    print(
        f"wrote {out}{heads_note} ({len(conditions)} conditions, {corpus.n_tokens} tokens) "
        f"in {time.perf_counter() - started:.0f} s"
    )
