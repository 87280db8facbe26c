"""The one loop that runs a model over token batches with hooks attached.

    n_tokens = run_batches(model, corpus.batches(8), hooks, "pair statistics")

Batches are pulled one at a time (a lazy iterator over a large corpus stays lazy), moved to the
model's device and run under `torch.no_grad()` with the hooks attached; the hooks are removed
on every way out (the end, an exception, an interrupt). The progress bar counts tokens. The
runner does no arithmetic of its own: what a pass measures lives in its hooks and callbacks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from rope_interp.errors import RopeInterpError
from rope_interp.host import HostModel

__all__ = ["Hook", "run_batches"]
Hook = tuple[str, Callable[..., Any]]


def _forward_only(model: HostModel) -> Callable[[Tensor], None]:
    def forward(tokens: Tensor) -> None:
        return model(tokens, return_type=None)

    return forward


def run_batches(
    model: HostModel,
    batches: Iterable[Tensor] | Tensor,
    hooks: Sequence[Hook] = (),
    desc: str = "forward passes",
    progress: bool = True,
    *,
    forward: Callable[[Tensor], Any] | None = None,
    after_batch: Callable[[Tensor, Any], None] | None = None,
    allow_empty: bool = False,
) -> int:
    """Run `model` over every batch with `hooks` attached; return the number of tokens run.

    Args:
        batches: `Int[Tensor, "batch pos"]` batches, pulled one at a time (a single tensor is
            one batch; a 1-D tensor one sequence).
        hooks: `(hook name, fn)` pairs, attached for the whole run and removed on every exit.
        desc: the progress bar's label; `progress=False` hides the bar.
        forward: what one batch runs, called as `forward(tokens)` with the tokens on the
            model's device (default `model(tokens, return_type=None)`); its result goes to
            `after_batch`.
        after_batch: called as `after_batch(tokens, result)` after each batch, still under
            no_grad and with the hooks attached (fold per-batch sums, check hooks fired).
        allow_empty: return 0 instead of raising when there are no batches.

    Raises:
        RopeInterpError: no batches (unless `allow_empty`), or a batch that is not `[batch, pos]`.
    """
    if isinstance(batches, Tensor):
        batches = [batches if batches.ndim == 2 else batches[None]]
    total = sum(b.numel() for b in batches) if isinstance(batches, (list, tuple)) else None
    run = _forward_only(model) if forward is None else forward
    device = model.cfg.device
    n_tokens, seen = 0, False
    with (
        tqdm(total=total, desc=desc, unit="tok", unit_scale=True, disable=not progress) as bar,
        torch.no_grad(),
        model.hooks(fwd_hooks=list(hooks)),
    ):
        for tokens in batches:
            if tokens.ndim != 2:
                raise RopeInterpError(
                    "Each batch must be an Int tensor [batch, pos]; got shape "
                    f"{tuple(tokens.shape)}."
                )
            tokens = tokens.to(device)
            result = run(tokens)
            if after_batch is not None:
                after_batch(tokens, result)
            n_tokens += tokens.numel()
            seen = True
            bar.update(tokens.numel())
    if not seen and not allow_empty:
        raise RopeInterpError("No token batches were given: the corpus is empty.")
    return n_tokens
