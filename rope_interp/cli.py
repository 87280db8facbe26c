"""The `rope-interp` command."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rope_interp.errors import RopeInterpError
from rope_interp.numbers import parse_numbers


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
        help="built-in 'smollm2-135m' (offline), a .gguf path, or a TransformerLens model name",
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
        "--seed", type=int, default=0, help="seed for window sampling and bootstrap"
    )


def load_model_and_corpus(args: argparse.Namespace):
    """The model and corpus named by `add_model_options`'s arguments. Problems a user can fix
    (no GPU, no network for a hub model or dataset) become `RopeInterpError`s."""
    import torch

    from rope_interp.data import load_corpus
    from rope_interp.models import load_model

    device = args.device
    if device and device.startswith("cuda") and not torch.cuda.is_available():
        raise RopeInterpError(
            f"--device {device}: no CUDA GPU is available here; use --device cpu."
        )
    try:
        model = load_model(args.model, device=device, dtype=args.dtype)
    except OSError as error:
        raise RopeInterpError(
            f"Could not load model {args.model!r}: {str(error).rstrip('.')}. Offline, use the "
            "built-in "
            "'smollm2-135m' or a local .gguf file."
        ) from None
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


def cmd_stats(args: argparse.Namespace) -> None:
    """Streaming pair statistics to a file (.safetensors keeps the accumulators; .csv/.parquet
    the tidy table)."""
    from rope_interp.stats import collect_pair_stats

    if not args.out.endswith((".safetensors", ".parquet", ".csv")):  # before loading the model
        raise RopeInterpError(
            f"--out must end in .safetensors, .csv or .parquet, got {args.out!r}."
        )
    model, corpus = load_model_and_corpus(args)
    print(f"corpus: {corpus.describe()}", file=sys.stderr)
    stats = collect_pair_stats(model, corpus.batches(args.batch_size))
    out = args.out
    if out.endswith(".safetensors"):
        stats.save(out)
    elif out.endswith(".parquet"):
        stats.to_frame().to_parquet(out)
    elif out.endswith(".csv"):
        stats.to_frame().to_csv(out, index=False)
    else:
        raise RopeInterpError(f"--out must end in .safetensors, .csv or .parquet, got {out!r}.")
    print(f"wrote {out} ({stats.tokens_seen} tokens)")


def cmd_report(args: argparse.Namespace) -> None:
    """Run the analyses and standard ablations and write one self-contained HTML report."""
    from rope_interp.data import Corpus
    from rope_interp.report import build_report, resolve_sections

    sections = _split(args.sections)
    resolve_sections(sections)  # fail on a typo before loading the model
    out = Path(args.out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise RopeInterpError(f"--out must end in .html, got {args.out!r}.")
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
    from rope_interp.conditions import ABLATION_GROUPS, standard_conditions
    from rope_interp.experiment import run_experiment
    from rope_interp.spec import RotarySpec

    out = Path(args.out)
    if out.suffix.lower() not in (".csv", ".parquet"):
        raise RopeInterpError(f"--out must end in .csv or .parquet, got {args.out!r}.")
    groups = _split(args.sweep) or []
    unknown = sorted(set(groups) - set(ABLATION_GROUPS))
    if unknown:  # before loading the model
        raise RopeInterpError(
            f"Unknown ablation group(s) {unknown} in --sweep; choose from "
            f"{', '.join(ABLATION_GROUPS)}."
        )
    p_values = _floats(args.p, "--p")
    phases = _floats(args.phi, "--phi")
    run_dir = Path(args.run_dir) if args.run_dir else out.with_name(out.stem + ".runs")
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
    heads_out = out.with_name(out.stem + "_heads" + out.suffix)
    out.parent.mkdir(parents=True, exist_ok=True)
    for frame, path in ((result.summary, out), (result.heads, heads_out)):
        if path.suffix.lower() == ".parquet":
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False)
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

    parser = argparse.ArgumentParser(
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
    )
    add_model_options(stats)
    stats.add_argument("--out", required=True, help="output: .safetensors, .csv or .parquet")
    stats.set_defaults(func=cmd_stats)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    try:
        args.func(args)
    except RopeInterpError as error:
        message = " ".join(str(error).split())  # one line, whatever the library wrote
        print(f"rope-interp: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rope-interp: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
