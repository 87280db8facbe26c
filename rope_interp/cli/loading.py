"""Loading what the command line names, and writing the tables it asks for. Problems a user can
fix (no GPU, no network for a hub model or dataset, an unwritable cache) become
`RopeInterpError`s with a hint.

Commands call these through the module (`loading.load_model_and_corpus(args)`), so that tests
can put a tiny model in their place."""

from __future__ import annotations

import argparse

from rope_interp.cli.options import check_device_and_dtype
from rope_interp.errors import RopeInterpError


def load_model_and_corpus(args: argparse.Namespace):
    """The model and corpus named by `add_model_options`'s arguments (on `args.device`): the
    `--tokens // --seq-len` windows, read with the reader every command shares (the text field
    of .jsonl/.parquet files is `--text-column` where a command has it, else `text`)."""
    from rope_interp.loading.data import load_corpus

    model = load_model_from_args(args, args.device)
    n_windows = max(1, args.tokens // args.seq_len)
    column = getattr(args, "text_column", "text")
    try:
        corpus = load_corpus(
            model, args.corpus, args.seq_len, n_windows, seed=args.seed, column=column
        )
    except OSError as error:
        raise RopeInterpError(
            f"Could not read corpus {args.corpus!r}: {str(error).rstrip('.')}. Offline, use the "
            "embedded 'pydoc' "
            "corpus or local text files."
        ) from None
    return model, corpus


def load_model_from_args(args: argparse.Namespace, device: str | None):
    """The model named by `add_model_options`'s arguments, on `device`."""
    from rope_interp.loading.models import BUILTIN_MODEL, cache_dir, load_model

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
