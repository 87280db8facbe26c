"""Shared plumbing for the analyses: the rotated-pairs pass over token batches, robust z-scores,
frequency bands and angle wrapping. Internal: the public surface is in the analysis modules."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor

from rope_interp.core.pairs import expand_kv_heads, to_pairs
from rope_interp.core.runner import run_batches
from rope_interp.core.spec import RotarySpec
from rope_interp.errors import RopeInterpError
from rope_interp.host import HostModel


def rotated_pass(
    model: HostModel,
    spec: RotarySpec,
    batches: Iterable[Tensor],
    layers,
    on_layer: Callable[[int, Tensor, Tensor, Tensor, Tensor, Tensor], None],
    desc: str,
    progress: bool = True,
) -> tuple[list[int], int]:
    """For every layer and batch call `on_layer(layer, pattern, zq, zk, q_pass, k_pass)` with
    the attention pattern `[batch, head, qpos, kpos]` (float64), the *rotated* complex pairs
    zq, zk `[batch, pos, head, pair]` (complex128, keys expanded to query heads, divided by
    √attn_scale each so that Re(zq[m]·conj(zk[n])) summed over pairs plus q_pass·k_pass is the
    score `hook_attn_scores`, before the soft-cap on soft-capped models such as Gemma-2), and
    the pass-through dims `[batch, pos, head, n_pass]`. q and k are what enters the rotation
    (after the QK-norm on QK-norm models), read where the model's backend (`spec.backend`,
    `spec` bound to `model`) says. Returns the chosen layers and the number of tokens.

    Per-pair score terms are then Re(zq[m]·conj(zk[n])), exactly the terms of
    `pairs.score_contributions` (the tests check this), but sums over keys can be taken with
    cumulative sums in O(pos) instead of materialising `[qpos, kpos, pair]`. The work happens
    inside the `hook_pattern` hook, so at most one layer's tensors are alive.
    """
    chosen = spec.resolve_layers(layers)
    root = math.sqrt(spec.attn_scale)
    backend = spec.backend

    store: dict = {}
    hooks = []
    for layer in chosen:

        def keep(tensor, hook, kind=None, layer=layer):
            store[(kind, layer)] = backend.read_point(kind, layer).read(tensor.detach())

        def pattern_hook(tensor, hook, layer=layer):
            q, k = store.pop(("q", layer)), store.pop(("k", layer))
            k = expand_kv_heads(k, q.shape[2])
            pos = torch.arange(q.shape[1], device=q.device)
            phasor = spec.phasors(layer, pos, torch.complex128)[None, :, None]
            zq, q_pass = to_pairs(q.double(), spec)
            zk, k_pass = to_pairs(k.double(), spec)
            on_layer(
                layer,
                tensor.detach().double(),
                zq.to(torch.complex128) * phasor / root,
                zk.to(torch.complex128) * phasor / root,
                q_pass.double() / root,
                k_pass.double() / root,
            )

        hooks.append((backend.read_point("q", layer).hook, _partial(keep, "q")))
        hooks.append((backend.read_point("k", layer).hook, _partial(keep, "k")))
        hooks.append((f"blocks.{layer}.attn.hook_pattern", pattern_hook))

    n_tokens = run_batches(model, batches, hooks, desc, progress)
    return chosen, n_tokens


def _partial(fn, kind):
    def hook(tensor, hook):
        return fn(tensor, hook, kind=kind)

    return hook


def bands(n_pairs: int, fraction: float) -> tuple[list[int], list[int]]:
    """(highest-frequency pairs, lowest-frequency pairs): the first / last
    `max(1, round(fraction·n_pairs))` pairs."""
    if not 0 < fraction <= 0.5:
        raise RopeInterpError(f"band fraction must lie in (0, 0.5], got {fraction}.")
    size = max(1, round(fraction * n_pairs))
    return list(range(size)), list(range(n_pairs - size, n_pairs))


def robust_z(x: Tensor, dim: int = -1) -> Tensor:
    """(x − median) / (1.4826·MAD) along `dim`; where MAD is 0 the mean absolute deviation
    (×1.2533) is used, and where that is 0 too the z-score is 0."""
    median = x.median(dim=dim, keepdim=True).values
    dev = (x - median).abs()
    mad = 1.4826 * dev.median(dim=dim, keepdim=True).values
    mean_dev = 1.2533 * dev.mean(dim=dim, keepdim=True)
    scale = torch.where(mad > 0, mad, mean_dev)
    return torch.where(scale > 0, (x - median) / scale.clamp(min=1e-300), torch.zeros_like(x))


def wrap(angle):
    """Wrap angles to (−π, π]."""
    return (
        math.pi - torch.remainder(math.pi - angle, 2 * math.pi)
        if isinstance(angle, Tensor)
        else math.pi - (math.pi - angle) % (2 * math.pi)
    )


def check_offsets(offsets: Sequence[int]) -> list[int]:
    out = sorted({int(o) for o in offsets})
    if not out or out[0] < 0:
        raise RopeInterpError(f"offsets must be non-negative integers (Δ = m − n), got {offsets}.")
    return out


def pair_margin_rows(spec: RotarySpec, layer: int, head: int, score, margin, abs_total, **key):
    """Rows (one per pair) of a head's per-pair score, margin and share of Σ|margin| — the
    pair tables of `positional` and `sinks`; `key` adds columns such as the offset."""
    return [
        {
            "layer": layer,
            "head": head,
            **key,
            "pair": i,
            "theta": float(spec.thetas[layer, i]),
            "score": float(score[head, i]),
            "margin": float(margin[head, i]),
            "margin_fraction": float(margin[head, i] / abs_total[head]),
        }
        for i in range(spec.n_pairs)
    ]
