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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rope_interp.cli import loading
from rope_interp.cli.distributed import process_group
from rope_interp.cli.options import (
    HelpFormatter,
    ModelSettings,
    add_model_options,
    check_integer,
    floats,
    progress_note,
    split_list,
)
from rope_interp.cli.outputs import Output, add_overwrite_option
from rope_interp.errors import RopeInterpError
from rope_interp.utils.atomic import write_table

if TYPE_CHECKING:
    from rope_interp.interventions.experiment import RunSettings


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
    ablate.set_defaults(func=cmd_ablate, settings=AblateSettings.from_args)


@dataclass(frozen=True)
class AblateSettings:
    """`ablate`'s options, checked when made (before any model loads); the ablation groups,
    `--fraction` and `--random-controls` by `standard_conditions`'s own check. The defaults
    are the parser's (`add_ablate_command`)."""

    model: ModelSettings
    out: Path
    groups: tuple[str, ...]
    fraction: float
    random_controls: int
    p_values: tuple[float, ...]
    phases: tuple[float, ...]
    bootstrap: int
    attention: bool
    run_dir: Path | None  # None: OUT's name + .runs
    overwrite: bool

    def __post_init__(self) -> None:
        from rope_interp.interventions.conditions import ABLATION_GROUPS, check_standard_options

        if self.out.suffix.lower() not in (".csv", ".parquet"):
            raise RopeInterpError(f"--out must end in .csv or .parquet, got {str(self.out)!r}.")
        if not self.groups:
            raise RopeInterpError(
                f"--sweep {','.join(self.groups)!r} names no group; give one or more of "
                f"{', '.join(ABLATION_GROUPS)}, comma-separated."
            )
        check_standard_options(
            self.groups, self.fraction, self.random_controls,
            names=("--sweep", "--fraction", "--random-controls"),
        )  # fmt: skip
        if any(not 0 <= p <= 1 for p in self.p_values):
            values = ",".join(f"{p:g}" for p in self.p_values)
            raise RopeInterpError(f"--p values must lie in [0, 1]; got {values!r}.")
        check_integer("--bootstrap", self.bootstrap)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> AblateSettings:
        return cls(
            model=ModelSettings.from_args(args),
            out=Path(args.out),
            groups=tuple(split_list(args.sweep) or ()),
            fraction=args.fraction,
            random_controls=args.random_controls,
            p_values=tuple(floats(args.p, "--p")),
            phases=tuple(floats(args.phi, "--phi")),
            bootstrap=args.bootstrap,
            attention=not args.no_attention,
            run_dir=None if args.run_dir is None else Path(args.run_dir),
            overwrite=args.overwrite,
        )

    @property
    def heads_out(self) -> Path:
        """Where the per-head table goes: OUT_heads next to OUT."""
        return heads_path(self.out)

    @property
    def runs(self) -> Path:
        """Where the partial results go: `--run-dir`, or OUT's name + .runs."""
        return self.run_dir or self.out.with_name(self.out.stem + ".runs")

    def outputs(self) -> list[Output]:
        """What `ablate` writes."""
        return [
            Output("--out", self.out, "ablation-table"),
            Output("--out (its per-head table)", self.heads_out, "heads-table"),
            Output("--run-dir", self.runs, "folder"),
        ]

    def run_settings(self, progress: bool) -> RunSettings:
        """How the sweep runs (`progress`: this process shows a bar)."""
        from rope_interp.interventions.experiment import RunSettings

        return RunSettings(
            batch_size=self.model.batch_size,
            n_boot=self.bootstrap,
            seed=self.model.seed,
            attention=self.attention,
            progress=progress,
        )


def heads_path(out: Path) -> Path:
    """Where the per-head table of summary table `out` goes."""
    return out.with_name(out.stem + "_heads" + out.suffix)


def rank_windows(n_windows: int, rank: int, world: int) -> slice:
    """The contiguous block of windows rank `rank` of `world` takes (blocks differ by at most
    one window; in rank order they are the windows in order)."""
    if n_windows < world:
        raise RopeInterpError(
            f"ablate on {world} ranks needs at least {world} windows (one per rank); the corpus "
            f"gave {n_windows}: raise --tokens or use fewer ranks."
        )
    return slice(n_windows * rank // world, n_windows * (rank + 1) // world)


def cmd_ablate(settings: AblateSettings) -> None:
    """An ablation sweep → one row per condition (Δloss with a bootstrap CI) in a CSV/Parquet
    file, plus per-head attention effects next to it; resumable."""
    from rope_interp.core.spec import RotarySpec
    from rope_interp.interventions.conditions import standard_conditions
    from rope_interp.interventions.experiment import run_experiment
    from rope_interp.interventions.results import merge_results
    from rope_interp.loading.data import Corpus
    from rope_interp.utils.files import mark_folder

    options, out, runs = settings.model, settings.out, settings.runs
    started = time.perf_counter()
    with process_group(options.device) as (rank, world, device):
        quiet = options.quiet or rank > 0  # only rank 0 reports progress
        progress_note(quiet, f"loading model {options.model!r} ...")
        model, corpus = loading.load_model_and_corpus(options, device)
        conditions = standard_conditions(
            model,
            RotarySpec.from_model(model),
            seed=options.seed,
            fraction=settings.fraction,
            groups=settings.groups,
            p_values=settings.p_values,
            phases=settings.phases,
            n_random=settings.random_controls,
            seq_len=options.seq_len,
        )
        mark_folder(runs)
        rank_dirs = [runs / f"rank-{r}-of-{world}" for r in range(world)] if world > 1 else [runs]
        shard = corpus.tokens[rank_windows(len(corpus.tokens), rank, world)]
        on_ranks = f", split over {world} ranks" if world > 1 else ""
        progress_note(
            quiet,
            f"corpus: {corpus.describe()}; {len(conditions)} conditions{on_ranks}; partial "
            f"results in {runs} (re-run the same command to resume)",
        )
        result = run_experiment(
            model,
            conditions,
            Corpus(corpus.name, shard, corpus.prepend_bos),
            out_dir=rank_dirs[rank],
            settings=settings.run_settings(progress=not quiet),
        )
        skipped = result.skipped
        if world > 1:
            import torch.distributed as dist

            dist.barrier()  # every rank's conditions are on disk
            if rank == 0:
                result = merge_results(rank_dirs, conditions=[c.name for c in conditions])
        if rank > 0:
            return
    heads_out = settings.heads_out
    for frame, path in ((result.summary, out), (result.heads, heads_out)):
        write_table(frame, path)
    if skipped:
        progress_note(options.quiet, f"resumed: {len(skipped)} condition(s) reused from {runs}")
    columns = [c for c in ("condition", "delta_loss", "ci_low", "ci_high") if c in result.summary]
    if not options.quiet:
        print(result.summary[columns].to_string(index=False, float_format=lambda v: f"{v:+.4f}"))
    heads_note = f" and {heads_out}" if len(result.heads) else ""
    print(
        f"wrote {out}{heads_note} ({len(conditions)} conditions, {corpus.n_tokens} tokens) "
        f"in {time.perf_counter() - started:.0f} s"
    )
