"""Loading what the command line names. Problems a user can fix (no GPU, no network for a hub
model or dataset, an unwritable cache) become `RopeInterpError`s with a hint.

Both take a checked `ModelSettings` (its device and dtype were checked when it was made) and
the device to load on (a rank's own under torchrun, else the settings' `device`). Commands call
them through the module (`loading.load_model_and_corpus(settings, device)`), so that tests can
put a tiny model in their place."""

from __future__ import annotations

from rope_interp.cli.options import ModelSettings
from rope_interp.errors import RopeInterpError


def load_model_and_corpus(settings: ModelSettings, device: str | None):
    """The model and corpus `settings` name, the model on `device`: `tokens // seq_len`
    windows, read with the reader every command shares (from the `text_column` field of
    .jsonl/.parquet files)."""
    from rope_interp.loading.data import load_corpus

    if settings.tokens is None:
        raise RopeInterpError("A sampled corpus needs a token count (--tokens), not 'all'.")
    model = load_model_from_settings(settings, device)
    n_windows = max(1, settings.tokens // settings.seq_len)
    try:
        corpus = load_corpus(
            model,
            settings.corpus,
            settings.seq_len,
            n_windows,
            seed=settings.seed,
            column=settings.text_column,
        )
    except OSError as error:
        raise RopeInterpError(
            f"Could not read corpus {settings.corpus!r}: {str(error).rstrip('.')}. Offline, use "
            "the embedded 'pydoc' corpus or local text files."
        ) from None
    return model, corpus


def load_model_from_settings(settings: ModelSettings, device: str | None):
    """The model `settings` name, on `device`."""
    from rope_interp.loading.models import BUILTIN_MODEL, cache_dir, load_model

    try:
        model = load_model(
            settings.model,
            device=device,
            dtype=settings.dtype,
            n_ctx=settings.n_ctx,
            n_devices=settings.n_devices,
        )
    except OSError as error:
        name = settings.model.lower()
        local = name == BUILTIN_MODEL or name.endswith(".gguf")
        hint = (
            f"Check that the cache folder {cache_dir()} is writable and has space (or set "
            "ROPE_INTERP_CACHE to another folder)."
            if local
            else f"Offline, use the built-in {BUILTIN_MODEL!r} or a local .gguf file."
        )
        raise RopeInterpError(
            f"Could not load model {settings.model!r}: {str(error).rstrip('.')}. {hint}"
        ) from None
    return model
