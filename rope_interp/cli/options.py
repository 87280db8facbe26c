"""What every command shares on its command line: the parser class, the model and corpus
options, their checked settings (`ModelSettings`), and the checks of their values that need no
model (each a one-line `RopeInterpError` naming the option, the value and what is accepted)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rope_interp.errors import RopeInterpError, UsageError
from rope_interp.utils.numbers import parse_numbers

DTYPES = ("float32", "float64", "float16", "bfloat16")
DEVICE_TYPES = ("cpu", "cuda", "mps")


class CommandParser(argparse.ArgumentParser):
    """argparse with its errors raised (one line, exit code 2 in `main`), not printed with the
    whole usage text."""

    def error(self, message: str):
        raise UsageError(f"{message} (see `{self.prog} --help`)")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" only where there is a default worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if default is None or default is False or default == argparse.SUPPRESS:
            return text
        if "default" in text:
            return text
        return super()._get_help_string(action) or text


def add_model_options(parser: argparse.ArgumentParser, tokens: int = 4096) -> None:
    """Options shared by every subcommand that runs a model on a corpus."""
    parser.add_argument(
        "--model",
        default="smollm2-135m",
        help="built-in 'smollm2-135m' (offline), 'organism:NAME' (a shipped model organism: "
        "positional, content, sink, content-rope or content-prope), a .gguf path, a local "
        "Hugging Face checkpoint directory, or a TransformerLens model name",
    )
    parser.add_argument(
        "--corpus",
        default="pydoc",
        help="'pydoc' (embedded English prose), 'hf:NAME[:COLUMN]', or comma-separated file "
        "paths/globs: text, .jsonl, .parquet, also gzip/bzip2/xz (see docs/corpora.md)",
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
    parser.add_argument("--quiet", action="store_true", help="no progress output")


# (option, smallest, largest or None, meaning) of the integer options any command may have.
INTEGER_RANGES = {
    "--tokens": (1, None, "tokens to analyse"),
    "--seq-len": (2, None, "tokens per window"),
    "--batch-size": (1, None, "windows per forward pass"),
    "--seed": (0, 2**32 - 1, "a random seed"),
    "--bootstrap": (1, 1_000_000, "bootstrap resamples"),
    "--ablation-tokens": (1, None, "tokens for the ablations"),
    "--analysis-tokens": (1, None, "tokens for the score decompositions"),
    "--n-ctx": (2, None, "the context length to build the model with"),
    "--n-devices": (1, None, "devices to split the model over"),
}


def check_integer(option: str, value: int | None) -> None:
    """An integer option within its range (`INTEGER_RANGES`); None (not given) passes."""
    if value is None:
        return
    minimum, maximum, meaning = INTEGER_RANGES[option]
    if value < minimum or (maximum is not None and value > maximum):
        span = f"≥ {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise RopeInterpError(f"{option} must be an integer {span} ({meaning}); got {value}.")


@dataclass(frozen=True)
class ModelSettings:
    """The options every model-running command shares (`add_model_options`), checked when
    made: the integer ranges, `--seq-len` against `--n-ctx`, `--device` and `--dtype`, and the
    model options only some models take. `tokens` is None for the whole corpus (`stats
    --tokens all`). The model name and corpus files are checked by `check_sources`, which
    reads the files' first bytes. The defaults are the parser's (`add_model_options`)."""

    model: str
    corpus: str
    text_column: str
    tokens: int | None
    seq_len: int
    batch_size: int
    device: str | None
    dtype: str
    n_ctx: int | None
    n_devices: int
    seed: int
    quiet: bool

    def __post_init__(self) -> None:
        check_integer("--tokens", self.tokens)
        check_integer("--seq-len", self.seq_len)
        check_integer("--batch-size", self.batch_size)
        check_integer("--seed", self.seed)
        check_integer("--n-ctx", self.n_ctx)
        check_integer("--n-devices", self.n_devices)
        if self.n_ctx is not None and self.seq_len > self.n_ctx:
            raise RopeInterpError(
                f"--seq-len {self.seq_len} does not fit in --n-ctx {self.n_ctx}: windows must "
                "fit the model's context; lower --seq-len or raise --n-ctx."
            )
        check_device_and_dtype(self.device, self.dtype)
        check_model_layout(self.model, self.device, self.n_ctx, self.n_devices)

    @classmethod
    def from_args(cls, args: argparse.Namespace, **own: Any) -> ModelSettings:
        """From `add_model_options`'s arguments; `own` replaces a command's own reading of
        one (e.g. `stats`'s `--tokens` budget)."""
        fields = {
            "model": args.model,
            "corpus": args.corpus,
            "text_column": getattr(args, "text_column", "text"),
            "tokens": args.tokens,
            "seq_len": args.seq_len,
            "batch_size": args.batch_size,
            "device": args.device,
            "dtype": args.dtype,
            "n_ctx": args.n_ctx,
            "n_devices": args.n_devices,
            "seed": args.seed,
            "quiet": args.quiet,
        }
        return cls(**{**fields, **own})

    def check_sources(self) -> list[tuple[str, Path]]:
        """`--model` and `--corpus` checked without loading them (names known, files there and
        what their names say); returns the local files and folders they read."""
        check_model_name(self.model)
        corpus_files = check_corpus_source(self.corpus, self.text_column)
        inputs = [("--corpus", Path(p)) for p in corpus_files]
        if Path(self.model).expanduser().exists():
            inputs.append(("--model", Path(self.model).expanduser()))
        return inputs


def check_model_layout(model: str, device: str | None, n_ctx: int | None, n_devices: int) -> None:
    """`--n-ctx` and `--n-devices`: only for checkpoint folders and official names, and
    `--n-devices` only over GPUs that are there."""
    import torch

    from rope_interp.loading.models import BUILTIN_MODEL

    gguf = model.lower() == BUILTIN_MODEL or model.lower().endswith(".gguf")
    if gguf and (n_ctx is not None or n_devices != 1):
        raise RopeInterpError(
            "--n-ctx and --n-devices apply to checkpoint folders and official names; a GGUF "
            "model (the built-in one too) is built with its own context on one device."
        )
    if n_devices > 1:
        parsed = torch.device(device) if device else None
        if parsed is not None and parsed.type != "cuda":
            raise RopeInterpError(
                f"--n-devices {n_devices} splits a model over GPUs, not {parsed}."
            )
        if n_devices > torch.cuda.device_count():
            raise RopeInterpError(
                f"--n-devices {n_devices}: this machine has {torch.cuda.device_count()} CUDA "
                "device(s)."
            )


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
    from rope_interp.loading.models import check_model_name as check

    try:
        check(name)
    except RopeInterpError as error:
        raise RopeInterpError(f"--model: {error}") from None


def check_corpus_source(source: str, column: str = "text") -> list[str]:
    """`--corpus`: the embedded corpus, a HF dataset, or files that exist and look like what
    their names say (text, JSONL or Parquet with a text column `column`), checked from their
    first bytes; returns the files."""
    from rope_interp.loading.corpus_reader import CorpusReader

    try:
        reader = CorpusReader(source, column)
        reader.check()
    except RopeInterpError as error:
        raise RopeInterpError(f"--corpus: {error}") from None
    return [str(path) for path in reader.paths]


def floats(value: str | None, option: str) -> list[float]:
    """A comma-separated list of numbers (`pi/4` and the like allowed); [] when empty."""
    return parse_numbers(value, option) if value else []


def split_list(value: str | None) -> list[str] | None:
    """A comma-separated list of names; None when empty."""
    if not value:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


def progress_note(quiet: bool, message: str) -> None:
    """A progress line on stderr, unless `quiet` (`--quiet`)."""
    if not quiet:
        print(message, file=sys.stderr, flush=True)
