"""One batch of q or k reduced to per-(head, pair) sums: the kernel behind `PairStats`.

Pure tensor maths (no model, no hooks). `reduce_pairs` is the eager form, written as a few
elementwise squares and column reductions over (batch, pos), which are fast on the CPU.
On CUDA the eager form launches about ten kernels per hook and reads the batch about nine
times; `compiled_reduce_pairs` is the same function through `torch.compile`, which fuses the
conversion, squares, roots and every reduction into a few kernels that read the batch once
or twice (benchmarks/bench_stats.py measures both against a minimal hook).
"""

from __future__ import annotations

import functools
import inspect

import torch
from torch import Tensor

from rope_interp.utils.logs import note

# Fields of the first output's axis 1, in order (see `stats._SUMS`).
N_FIELDS = 7


def reduce_pairs(
    x: Tensor, rotary_dim: int, n_pairs: int, half: bool, dtype: torch.dtype
) -> tuple[Tensor, Tensor, Tensor]:
    """Sums over (batch, pos) of one `[batch, pos, head, d_head]` batch, in `dtype`.

    Returns `(sums [head, 7, pair], max_norm [head, pair], pass_sq [head])`, where the 7
    fields are Σre, Σim, Σ|z|, Σ|z|², and Σre, Σim, Σ|z| at position 0; `half` selects the
    pair layout (pair i = dims (i, i + n_pairs)) over the interleaved one ((2i, 2i + 1)).
    """
    batch, pos, heads, d_head = x.shape
    flat = x.to(dtype, memory_format=torch.contiguous_format).reshape(batch * pos, heads, d_head)
    rot = flat[..., :rotary_dim]
    sq = rot.square()
    # half: pair i = (dim i, dim i + n_pairs); interleaved: pair i = (dim 2i, dim 2i + 1)
    re_sq, im_sq = (sq[..., :n_pairs], sq[..., n_pairs:]) if half else (sq[..., ::2], sq[..., 1::2])
    norm_sq = re_sq + im_sq
    norm = norm_sq.sqrt()  # [batch·pos, head, pair]
    first = slice(None, None, pos)  # the rows of position 0
    # [head, rotary_dim] in the model's layout → [head, 2, pair] (re, im); written inline, as
    # a call to another function of the package would not trace under the tests' shape checks.
    rot_sums = torch.stack((rot.sum(0), rot[first].sum(0)))
    if half:
        re_im = rot_sums.unflatten(-1, (2, n_pairs))
    else:
        re_im = rot_sums.unflatten(-1, (n_pairs, 2)).transpose(-1, -2)
    sums = torch.cat(
        (
            re_im[0],
            norm.sum(0)[:, None],
            norm_sq.sum(0)[:, None],
            re_im[1],
            norm[first].sum(0)[:, None],
        ),
        dim=1,
    )
    pass_sq = flat[..., rotary_dim:].square().sum(dim=(0, 2))
    return sums, norm.amax(0), pass_sq


@functools.cache
def _compiled():
    # Unwrapped: the shape checkers that tests wrap around every function do not trace.
    return torch.compile(inspect.unwrap(reduce_pairs), dynamic=True)


def compiled_reduce_pairs(
    x: Tensor, rotary_dim: int, n_pairs: int, half: bool, dtype: torch.dtype
) -> tuple[Tensor, Tensor, Tensor]:
    """`reduce_pairs` through `torch.compile` (for CUDA); falls back to the eager form, with
    one warning, where compilation fails (no Triton, no C compiler)."""
    global COMPILE_ERROR
    if COMPILE_ERROR is None:
        try:
            return _compiled()(x, rotary_dim, n_pairs, half, dtype)
        except Exception as error:  # noqa: BLE001 - any compiler failure: use the eager form
            COMPILE_ERROR = f"{type(error).__name__}: {error}"
            note(f"torch.compile of the pair reduction failed ({error}); using eager.")
    return reduce_pairs(x, rotary_dim, n_pairs, half, dtype)


COMPILE_ERROR: str | None = None  # why compilation failed in this process, if it did
