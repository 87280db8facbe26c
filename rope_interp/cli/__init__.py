"""The `rope-interp` command."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rope_interp.errors import RopeInterpError
from rope_interp.numbers import parse_numbers


class _UsageError(RopeInterpError):
    """A command-line syntax error found by argparse (reported like every other mistake)."""


class _ArgumentParser(argparse.ArgumentParser):
    """argparse with its errors raised (one line, exit code 2 in `main`), not printed with the
    whole usage text."""

    def error(self, message: str):
        raise _UsageError(f"{message} (see `{self.prog} --help`)")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" only where there is a default worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if default is None or default is False or default == argparse.SUPPRESS:
            return text
        if "default" in text:
            return text
        return super()._get_help_string(action)


def add_model_options(parser: argparse.ArgumentParser, tokens: int = 4096) -> None:
    """Options shared by every subcommand that runs a model on a corpus."""
    parser.add_argument(
        "--model",
        default="smollm2-135m",
        help="built-in 'smollm2-135m' (offline), a .gguf path, a local Hugging Face checkpoint "
        "directory, or a TransformerLens model name",
    )
    parser.add_argument(
        "--corpus",
        default="pydoc",
        help="'pydoc' (embedded English prose), 'hf:NAME[:COLUMN]', or text file paths/globs",
    )
    parser.add_argument("--tokens", type=int, default=tokens, help="tokens to analyse")
    parser.add_argument("--seq-len", type=int, default=256, help="tokens per window")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if present)")
    parser.add_argument("--dtype", default="float32", help="model dtype: float32, bfloat16, ...")
    parser.add_argument(
        "--n-ctx", type=int, default=None, help="context length to build the model with"
    )
    parser.add_argument(
        "--n-devices", type=int, default=1, help="devices to split the model's layers over"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed for window sampling and bootstrap"
    )


DTYPES = ("float32", "float64", "float16", "bfloat16")
DEVICE_TYPES = ("cpu", "cuda", "mps")


def check_device_and_dtype(device: str | None, dtype: str) -> None:
    """`--device` and `--dtype` values a model can be loaded with (here, before any work)."""
    import torch

    if str(dtype).removeprefix("torch.") not in DTYPES:
        raise RopeInterpError(
            f"--dtype {dtype!r} is not supported; use one of {', '.join(DTYPES)}."
        )
    if device is None:
        return
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        parsed = None
    if parsed is None or parsed.type not in DEVICE_TYPES:
        raise RopeInterpError(
            f"--device {device!r} is not a device rope-interp can use; use cpu, cuda, cuda:N "
            "or mps."
        )
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise RopeInterpError(
            f"--device {device}: no CUDA GPU is available here; use --device cpu."
        )
    if parsed.type == "cuda" and (parsed.index or 0) >= torch.cuda.device_count():
        raise RopeInterpError(
            f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s), "
            f"numbered from 0."
        )
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise RopeInterpError(f"--device {device}: MPS is not available here; use --device cpu.")


def check_model_name(name: str) -> None:
    """`--model`: what `load_model` accepts (checked without reading weights)."""
    from rope_interp.models import check_model_name as check

    try:
        check(name)
    except RopeInterpError as error:
        raise RopeInterpError(f"--model: {error}") from None

def check_corpus_source(source: str) -> None:
    """`--corpus`: the embedded corpus, a HF dataset, or text files that exist."""
    from rope_interp.data import EMBEDDED_CORPUS, resolve_text_files

    if source == EMBEDDED_CORPUS or source.startswith("hf:"):
        return
    try:
        resolve_text_files(source.split(","))
    except RopeInterpError as error:
        raise RopeInterpError(f"--corpus: {error}") from None


def _at_least(args: argparse.Namespace, option: str, minimum: int, meaning: str) -> None:
    value = getattr(args, option.removeprefix("--").replace("-", "_"), None)
    if isinstance(value, int) and value < minimum:  # (`stats --tokens` is a budget like 50k)
        raise RopeInterpError(f"{option} must be an integer ≥ {minimum} ({meaning}); got {value}.")


def validate_args(args: argparse.Namespace) -> None:
    """Every check that needs no model, before any work: one `RopeInterpError` naming the
    option, the value and what is accepted."""
    from rope_interp.atomic import check_writable_dir, check_writable_file

    if args.command == "merge":
        if not args.out.endswith(".safetensors"):
            raise RopeInterpError(f"merge writes .safetensors; got OUT {args.out!r}.")
        check_writable_file(args.out, "OUT")
        return

    for option, minimum, meaning in (
        ("--tokens", 1, "tokens to analyse"),
        ("--seq-len", 2, "tokens per window"),
        ("--batch-size", 1, "windows per forward pass"),
        ("--seed", 0, "a random seed"),
        ("--bootstrap", 1, "bootstrap resamples"),
        ("--random-controls", 0, "random-pair controls"),
        ("--ablation-tokens", 1, "tokens for the ablations"),
        ("--analysis-tokens", 1, "tokens for the score decompositions"),
    ):
        _at_least(args, option, minimum, meaning)
    fraction = getattr(args, "fraction", None)
    if fraction is not None and not 0 < fraction <= 0.5:
        raise RopeInterpError(f"--fraction must lie in (0, 0.5]; got {fraction}.")
    check_device_and_dtype(args.device, args.dtype)
    command = args.command
    if command == "report":
        from rope_interp.report import resolve_sections

        resolve_sections(_split(args.sections))  # a typo fails here, not after the model
        if Path(args.out).suffix.lower() not in (".html", ".htm"):
            raise RopeInterpError(f"--out must end in .html, got {args.out!r}.")
        check_writable_file(args.out, "--out")
        if args.save_tables is not None:
            check_writable_dir(args.save_tables, "--save-tables")
        if args.figures is not None:
            from rope_interp.plots.export import check_image_export

            check_writable_dir(args.figures, "--figures")
            check_image_export(args.format)
    elif command == "stats":
        from rope_interp.data import parse_shard

        _token_budget(args.tokens)
        parse_shard(args.shard)
        if not args.out.endswith((".safetensors", ".parquet", ".csv")):
            raise RopeInterpError(
                f"--out must end in .safetensors, .csv or .parquet, got {args.out!r}."
            )
        check_writable_file(args.out, "--out")
    elif command == "ablate":
        _validate_ablate(args, check_writable_file, check_writable_dir)
    check_model_name(args.model)
    check_corpus_source(args.corpus)


def _validate_ablate(args: argparse.Namespace, check_file, check_dir) -> None:
    from rope_interp.conditions import ABLATION_GROUPS

    out = Path(args.out)
    if out.suffix.lower() not in (".csv", ".parquet"):
        raise RopeInterpError(f"--out must end in .csv or .parquet, got {args.out!r}.")
    groups = _split(args.sweep)
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
    p_values = _floats(args.p, "--p")
    outside = [p for p in p_values if not 0 <= p <= 1]
    if outside:
        raise RopeInterpError(f"--p values must lie in [0, 1]; got {args.p!r}.")
    _floats(args.phi, "--phi")
    check_file(out, "--out")
    check_file(_heads_path(out), "--out (its per-head table)")
    check_dir(_run_dir(args), "--run-dir")


def _heads_path(out: Path) -> Path:
    return out.with_name(out.stem + "_heads" + out.suffix)


def _run_dir(args: argparse.Namespace) -> Path:
    out = Path(args.out)
    return Path(args.run_dir) if args.run_dir else out.with_name(out.stem + ".runs")


def _write_table(frame, path: Path) -> None:
    """A tidy table as CSV or Parquet (by suffix), written atomically."""
    from rope_interp.atomic import atomic_write

    with atomic_write(path) as tmp:
        if path.suffix.lower() == ".parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False)


def load_model_and_corpus(args: argparse.Namespace):
    """The model and corpus named by `add_model_options`'s arguments. Problems a user can fix
    (no GPU, no network for a hub model or dataset) become `RopeInterpError`s."""
    from rope_interp.data import load_corpus

    model = load_model_from_args(args, args.device)
    n_windows = max(1, args.tokens // args.seq_len)
    try:
        corpus = load_corpus(model, args.corpus, args.seq_len, n_windows, seed=args.seed)
    except OSError as error:
        raise RopeInterpError(
            f"Could not read corpus {args.corpus!r}: {str(error).rstrip('.')}. Offline, use the "
            "embedded 'pydoc' "
            "corpus or local text files."
        ) from None
    return model, corpus


def load_model_from_args(args: argparse.Namespace, device: str | None):
    """The model named by `add_model_options`'s arguments, on `device`."""
    from rope_interp.models import BUILTIN_MODEL, cache_dir, load_model

    check_device_and_dtype(device, args.dtype)
    try:
        model = load_model(
            args.model,
            device=device,
            dtype=args.dtype,
            n_ctx=getattr(args, "n_ctx", None),
            n_devices=getattr(args, "n_devices", 1),
        )
    except OSError as error:
        local = args.model.lower() == BUILTIN_MODEL or args.model.lower().endswith(".gguf")
        hint = (
            f"Check that the cache folder {cache_dir()} is writable and has space (or set "
            "ROPE_INTERP_CACHE to another folder)."
            if local
            else f"Offline, use the built-in {BUILTIN_MODEL!r} or a local .gguf file."
        )
        raise RopeInterpError(
            f"Could not load model {args.model!r}: {str(error).rstrip('.')}. {hint}"
        ) from None
    return model


def cmd_summary(args: argparse.Namespace) -> None:
    """Per-layer rotary frequencies and pair norms."""
    from rope_interp.spec import RotarySpec
    from rope_interp.stats import collect_pair_stats

    start = time.perf_counter()
    model, corpus = load_model_and_corpus(args)
    spec = RotarySpec.from_model(model)
    print(f"model: {args.model}\n{spec.summary()}\ncorpus: {corpus.describe()}")
    stats = collect_pair_stats(model, corpus.batches(args.batch_size))
    frame = stats.to_frame()
    context = corpus.tokens.shape[1]
    n_pairs = spec.n_pairs
    third = max(1, n_pairs // 3)
    print(
        f"\nPer layer (pairs: high = 0..{third - 1}, low = {n_pairs - third}..{n_pairs - 1}; "
        f"partial-cycle pairs have θ·{context} < 2π):"
    )
    header = (
        f"{'layer':>5} {'θ_0':>7} {'θ_last':>9} {'partial':>7} "
        f"{'|q| high':>9} {'|q| low':>8} {'|k| high':>9} {'|k| low':>8} {'max |k|':>8}"
    )
    print(header)
    partial = spec.partial_cycle_mask(context).sum(1)
    for layer in stats.layers:
        rows = frame[frame.layer == layer]
        norms = {
            (kind, band): rows[(rows.kind == kind) & pairs].mean_norm.mean()
            for kind in ("q", "k")
            for band, pairs in (
                ("high", rows.pair < third),
                ("low", rows.pair >= n_pairs - third),
            )
        }
        print(
            f"{layer:>5} {spec.thetas[layer, 0]:>7.3f} {spec.thetas[layer, -1]:>9.2e} "
            f"{int(partial[layer]):>7} {norms['q', 'high']:>9.3f} {norms['q', 'low']:>8.3f} "
            f"{norms['k', 'high']:>9.3f} {norms['k', 'low']:>8.3f} "
            f"{rows[rows.kind == 'k'].max_norm.max():>8.2f}"
        )
    print(f"\n{stats.tokens_seen} tokens in {time.perf_counter() - start:.1f} s")


# ---- stats at scale: streamed corpora, shards, torch.distributed, merge ---------------------
def _token_budget(text: str) -> int | None:
    """`--tokens` of `stats`: a count such as 4096, 50k, 100M, 1e6, or `all`."""
    from rope_interp.data import parse_token_count

    return None if text.strip().lower() == "all" else parse_token_count(text)


def add_stats_scale_options(parser: argparse.ArgumentParser) -> None:
    """Corpus options of `stats` (replacing the shared `--tokens`; the parser must use
    conflict_handler="resolve")."""
    parser.add_argument(
        "--tokens",
        default="4096",
        help="token budget of the whole run (all shards): 4096, 50k, 100M, 1e6, or 'all' for "
        "the whole corpus; windows are taken in corpus order",
    )
    parser.add_argument(
        "--shard",
        default="0/1",
        metavar="I/N",
        help="take shard I of N (windows I, I+N, I+2N, ...): the N shards are disjoint and "
        "together equal the unsharded run; combine their files with `rope-interp merge`",
    )
    parser.add_argument(
        "--text-column", default="text", help="the text field of .jsonl/.parquet corpus files"
    )


def _distributed_rank() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) outside torchrun."""
    import os

    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def cmd_stats(args: argparse.Namespace) -> None:
    """Streaming pair statistics to a file (.safetensors keeps the accumulators; .csv/.parquet
    the tidy table). Under `torchrun`, every rank takes its shard and rank 0 writes."""
    import torch

    from rope_interp.data import parse_shard, stream_corpus
    from rope_interp.stats import all_reduce_stats, collect_pair_stats

    out = args.out  # checked by validate_args, before the model loads
    budget = _token_budget(args.tokens)
    shard_index, shard_count = parse_shard(args.shard)
    rank, world = _distributed_rank()
    device = args.device
    if world > 1:
        import torch.distributed as dist

        cuda = (device or "cuda").startswith("cuda") and torch.cuda.is_available()
        if cuda:
            import os

            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    try:
        model = load_model_from_args(args, device)
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
            print(f"corpus: {stream.describe()}{ranks}", file=sys.stderr)
        stats = collect_pair_stats(
            model,
            stream.batches(args.batch_size, progress=rank == 0),
            progress=False,
            allow_empty=world > 1,
        )
        if world > 1:
            all_reduce_stats(stats)
        if rank == 0:
            if stats.tokens_seen == 0:
                raise RopeInterpError(
                    f"The corpus {args.corpus!r} gave no window of {args.seq_len} tokens."
                )
            if out.endswith(".safetensors"):
                stats.save(out)
            else:
                _write_table(stats.to_frame(), Path(out))
            print(f"wrote {out} ({stats.tokens_seen} tokens)")
    finally:
        if world > 1:
            dist.destroy_process_group()


def cmd_merge(args: argparse.Namespace) -> None:
    """Combine statistics files of independent jobs (shards) into one."""
    from rope_interp.stats import merge_stats_files

    meta = merge_stats_files(args.out, args.inputs)
    print(f"wrote {args.out} ({meta['tokens_seen']} tokens from {len(args.inputs)} files)")


def add_merge_command(commands) -> None:
    merge = commands.add_parser(
        "merge",
        help="combine .safetensors statistics files of independent jobs (shards) into one",
        description="Add the accumulators of statistics files written by `stats --out "
        "X.safetensors` (e.g. the shards of a job array), as one pass over all their tokens "
        "would. Files of different models, geometry or layers are refused.",
    )
    merge.add_argument("out", metavar="OUT", help="the merged .safetensors file to write")
    merge.add_argument("inputs", metavar="IN", nargs="+", help="statistics files to combine")
    merge.set_defaults(func=cmd_merge)


def cmd_report(args: argparse.Namespace) -> None:
    """Run the analyses and standard ablations and write one self-contained HTML report."""
    from rope_interp.data import Corpus
    from rope_interp.report import build_report, resolve_sections

    sections = _split(args.sections)
    out = Path(args.out)
    started = time.perf_counter()
    _note(args, f"loading model {args.model!r} ...")
    model, corpus = load_model_and_corpus(args)
    # The first windows of the statistics corpus (the same seeded draw, fewer windows).
    ablation_windows = max(1, args.ablation_tokens // args.seq_len)
    ablation_corpus = Corpus(corpus.name, corpus.tokens[:ablation_windows], corpus.prepend_bos)
    analysis_windows = max(1, args.analysis_tokens // args.seq_len)
    analysis_corpus = Corpus(corpus.name, corpus.tokens[:analysis_windows], corpus.prepend_bos)
    _note(args, f"corpus: {corpus.describe()}")
    meta = {
        "model": f"{args.model} ({model.cfg.n_layers} layers, {model.cfg.n_heads} heads, "
        f"d_model {model.cfg.d_model}) on {model.cfg.device}, {args.dtype}",
        "corpus": corpus.describe(),
        "tokens": f"{corpus.n_tokens} for statistics (usage, outliers), "
        f"{analysis_corpus.n_tokens} for score decompositions (positional heads, sinks, "
        f"massive values, spectra), {ablation_corpus.n_tokens} for ablations",
        "seed": str(args.seed),
        "command": "rope-interp " + " ".join(getattr(args, "argv", None) or ["report"]),
    }
    total = len(resolve_sections(sections))
    done = [0]

    def on_section(section) -> None:
        done[0] += 1
        state = "FAILED: " + section.error if section.error else f"{section.seconds:.1f} s"
        _note(args, f"[{done[0]}/{total}] {section.title}: {state}")

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


def cmd_ablate(args: argparse.Namespace) -> None:
    """An ablation sweep → one row per condition (Δloss with a bootstrap CI) in a CSV/Parquet
    file, plus per-head attention effects next to it; resumable."""
    from rope_interp.conditions import standard_conditions
    from rope_interp.experiment import run_experiment
    from rope_interp.spec import RotarySpec

    out = Path(args.out)
    groups = _split(args.sweep) or []
    p_values = _floats(args.p, "--p")
    phases = _floats(args.phi, "--phi")
    run_dir = _run_dir(args)
    started = time.perf_counter()
    _note(args, f"loading model {args.model!r} ...")
    model, corpus = load_model_and_corpus(args)
    spec = RotarySpec.from_model(model)
    conditions = standard_conditions(
        model,
        spec,
        seed=args.seed,
        fraction=args.fraction,
        groups=groups,
        p_values=p_values,
        phases=phases,
        n_random=args.random_controls,
    )
    _note(
        args,
        f"corpus: {corpus.describe()}; {len(conditions)} conditions; partial results "
        f"in {run_dir} (re-run the same command to resume)",
    )
    result = run_experiment(
        model,
        conditions,
        corpus,
        out_dir=run_dir,
        batch_size=args.batch_size,
        n_boot=args.bootstrap,
        seed=args.seed,
        attention=not args.no_attention,
        progress=not args.quiet,
    )
    heads_out = _heads_path(out)
    for frame, path in ((result.summary, out), (result.heads, heads_out)):
        _write_table(frame, path)
    if result.skipped:
        _note(args, f"resumed: {len(result.skipped)} condition(s) reused from {run_dir}")
    columns = [c for c in ("condition", "delta_loss", "ci_low", "ci_high") if c in result.summary]
    if not args.quiet:
        print(result.summary[columns].to_string(index=False, float_format=lambda v: f"{v:+.4f}"))
    heads_note = f" and {heads_out}" if len(result.heads) else ""
    print(
        f"wrote {out}{heads_note} ({len(conditions)} conditions, {corpus.n_tokens} tokens) "
        f"in {time.perf_counter() - started:.0f} s"
    )


def _floats(value: str | None, option: str) -> list[float]:
    return parse_numbers(value, option) if value else []


def _split(value: str | None) -> list[str] | None:
    if not value:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


def _note(args: argparse.Namespace, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    from rope_interp.report import SECTION_BUILDERS

    parser = _ArgumentParser(
        prog="rope-interp",
        description=(
            "See and test how a rotary language model uses its RoPE frequencies. "
            "Every command runs offline on the built-in SmolLM2-135M and embedded corpus; "
            "start with `rope-interp report` and open the HTML file it writes."
        ),
        epilog="Run `rope-interp COMMAND --help` for a command's options.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    report = commands.add_parser(
        "report",
        help="run the analyses and ablations, write one HTML report (start here)",
        description=(
            "Run every analysis (frequency usage, positional heads, outliers and offset "
            "features, attention sinks, spectra, massive values) and a standard set of "
            "ablations (high vs low frequency bands with random controls, p-RoPE, phase "
            "shifts), then write ONE self-contained HTML file: interactive figures, sortable "
            "tables, and a line per section on how to read it. Defaults take a few minutes "
            "on 2 CPU cores."
        ),
        formatter_class=_HelpFormatter,
    )
    add_model_options(report)
    report.add_argument("--out", default="out/report.html", help="the HTML file to write")
    report.add_argument(
        "--ablation-tokens",
        type=int,
        default=2048,
        help="tokens for the ablations (each condition is one pass over them)",
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
        help=f"comma-separated subset of: {', '.join(SECTION_BUILDERS)} (default: all)",
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
    report.add_argument("--quiet", action="store_true", help="no progress output")
    report.set_defaults(func=cmd_report)

    ablate = commands.add_parser(
        "ablate",
        help="an ablation sweep (bands, p-RoPE, phase shifts) to CSV/Parquet, resumable",
        description=(
            "Run a sweep of interventions on the rotary pairs and measure each against the "
            "clean model: Δloss in nats/token with a bootstrap 95 % CI over sequences, and "
            "per-head attention changes (KL, self/previous/first-token attention, entropy). "
            "Results for each condition are saved as it finishes; re-running the same "
            "command skips finished conditions."
        ),
        formatter_class=_HelpFormatter,
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
        "--phi", default="pi/4,pi/2,pi", help="angles φ (radians) for the phase sweep"
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
    ablate.add_argument("--quiet", action="store_true", help="no progress output")
    ablate.set_defaults(func=cmd_ablate)

    summary = commands.add_parser(
        "summary",
        help="print per-layer rotary frequencies and pair norms (quick look)",
        description="Print the model's rotary geometry and, per layer, the mean q/k pair norms "
        "in the high- and low-frequency thirds of the pairs.",
        formatter_class=_HelpFormatter,
    )
    add_model_options(summary)
    summary.set_defaults(func=cmd_summary)

    stats = commands.add_parser(
        "stats",
        help="streaming per-pair q/k statistics to .safetensors/.csv/.parquet",
        description="One streaming pass over the corpus: per (layer, head, pair) norms, maxima "
        "and mean vectors of the pre-rotation q and k. .safetensors keeps the mergeable "
        "accumulators; .csv/.parquet the tidy table.",
        formatter_class=_HelpFormatter,
        conflict_handler="resolve",
    )
    add_model_options(stats)
    add_stats_scale_options(stats)
    stats.add_argument("--out", required=True, help="output: .safetensors, .csv or .parquet")
    stats.set_defaults(func=cmd_stats)
    add_merge_command(commands)
    return parser


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


if __name__ == "__main__":
    sys.exit(main())
