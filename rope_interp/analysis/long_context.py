"""Per-pair score statistics at long context, without the `[query, key, pair]` tensor.

`long_context_stats` runs the model with capture hooks on the chosen layers' rotated q and k
(`hook_rot_q`/`hook_rot_k`, read through the model's backend); when both of a layer have fired,
the layer is reduced over query × key tiles (`rope_interp.core.tiled`) and its q/k dropped, so
rope-interp holds one layer's q/k and one tile's terms at a time: O(pos + tile² · pair), not
O(pos² · pair). (The host's own eager attention still builds each layer's `[head, pos, pos]`
scores and pattern: that part is O(pos²) per layer whatever rope-interp does.) The forward
stops after the last chosen layer.

For pair i of a query head, c_i[m, n] = Re(z^q_i[m]·conj(z^k_i[n])) / attn_scale is its term
of the score of query m and key n (Σ_i c_i + pass-through = `hook_attn_scores`, before any
soft-cap), and A the host's causal attention pattern, recomputed tile by tile from the scores.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from rope_interp.core.capturing import RotaryCapture
from rope_interp.core.pairs import distance_buckets
from rope_interp.core.runner import run_batches
from rope_interp.core.spec import RotarySpec, spec_for
from rope_interp.core.tiled import TileSums, check_tile_size, tiled_sums
from rope_interp.errors import RopeInterpError, UnsupportedModel
from rope_interp.host import HostModel

__all__ = ["LongContextStats", "long_context_stats"]

# Bucket edges are fixed up to this distance (so batches of any length share them); buckets no
# token pair reached are dropped from the tables.
_MAX_DISTANCE = 1 << 40


@dataclass(frozen=True)
class LongContextStats:
    """Tables of `long_context_stats` (columns in its docstring); `attrs` of each table hold
    the tile size, dtype, token count and sequence lengths."""

    distance: pd.DataFrame
    pairs: pd.DataFrame
    heads: pd.DataFrame


def long_context_stats(
    model: HostModel,
    batches: Iterable[Tensor] | Tensor,
    layers: int | Iterable[int] | None = None,
    tile_size: int = 32,
    per_octave: int = 1,
    allow_beyond_context: bool = False,
    dtype: torch.dtype = torch.float32,
    progress: bool = False,
    *,
    spec: RotarySpec | None = None,
) -> LongContextStats:
    """Mean per-pair score terms by relative distance and weighted by attention, per (layer,
    head, pair), reduced over query × key tiles.

    Args:
        batches: token batches `Int[Tensor, "batch pos"]` (a tensor is one batch).
        layers: layer indices (default all).
        tile_size: queries and keys per tile; memory ≈ 4 · batch · head · tile² · pair numbers.
        per_octave: distance buckets per doubling (`pairs.distance_buckets`): 1 gives Δ = 0,
            1, 2–3, 4–7, …
        allow_beyond_context: run sequences longer than the model's context (n_ctx); only a
            host that can rotate beyond it (a bridge whose rotated hooks fire) can.
        dtype: float32 or float64 for the tile arithmetic (sums are float64).
        spec: the model's spec, bound once by the caller (default: read from `model`).

    Returns `LongContextStats`:
        distance: layer, head, kv_head, bucket, distance_lo, distance_hi (the bucket's Δ range,
            inclusive), n_scores (causal (sequence, query, key) triples in it), pair, theta,
            wavelength, mean_contribution (mean c_i over them), mean_abs_contribution (mean
            |c_i|).
        pairs: layer, head, kv_head, pair, theta, wavelength, mean_contribution and
            mean_abs_contribution (over every causal (query, key)), attn_contribution (mean
            over queries m of Σ_n A[m, n]·c_i[m, n]: how far pair i moves the score where the
            head attends), attn_abs_contribution (mean of Σ_n A[m, n]·|c_i[m, n]|),
            attn_share (attn_abs_contribution / its sum over the head's pairs).
        heads: layer, head, kv_head, n_queries, n_scores, mean_score and mean_pass (mean
            score and pass-through term over causal (query, key)), attn_score (mean over
            queries of Σ_n A·score = Σ_i attn_contribution + attn_pass), attn_pass.
    """
    spec = spec_for(model, spec)
    chosen = spec.resolve_layers(layers)
    tile = check_tile_size(tile_size)
    edges = distance_buckets(_MAX_DISTANCE, per_octave)
    if dtype not in (torch.float32, torch.float64):
        raise RopeInterpError(f"dtype must be torch.float32 or torch.float64, got {dtype}.")
    soft_cap = spec.backend.soft_cap()
    if isinstance(batches, Tensor):
        batches = [batches if batches.ndim == 2 else batches[None]]
    if isinstance(batches, (list, tuple)):
        for batch in batches:
            _check_length(model, spec, chosen, batch, allow_beyond_context)

    sums: dict[int, TileSums] = {}
    pending: dict[tuple[str, int], Tensor] = {}
    lengths: set[int] = set()

    def fold(kind: str, layer: int, tensor: Tensor) -> None:
        pending[(kind, layer)] = tensor
        if ("rot_q", layer) in pending and ("rot_k", layer) in pending:
            rot_q, rot_k = pending.pop(("rot_q", layer)), pending.pop(("rot_k", layer))
            part = tiled_sums(rot_q, rot_k, spec, edges, tile, soft_cap, dtype).cpu()
            if layer in sums:
                sums[layer] += part
            else:
                sums[layer] = part

    cap = RotaryCapture(model, chosen, kinds=("rot_q", "rot_k"), on_capture=fold, spec=spec)
    stop = chosen[-1] + 1
    extra = {"stop_at_layer": stop} if stop < spec.n_layers else {}

    def forward(tokens: Tensor) -> None:
        _check_length(model, spec, chosen, tokens, allow_beyond_context)
        lengths.add(int(tokens.shape[1]))
        cap.reset()
        pending.clear()
        model(tokens, return_type=None, **extra)
        cap.check_fired()

    n_tokens = run_batches(
        model, batches, cap.hooks(), "long-context statistics", progress, forward=forward
    )
    result = _tables(spec, chosen, sums, edges)
    for frame in (result.distance, result.pairs, result.heads):
        frame.attrs.update(
            tile_size=tile,
            per_octave=per_octave,
            dtype=str(dtype).replace("torch.", ""),
            n_tokens=n_tokens,
            lengths=sorted(lengths),
            n_ctx=spec.n_ctx,
        )
    return result


def sliding_window(model: HostModel, layer: int) -> int | None:
    """The layer's sliding attention window in tokens, or None under full causal attention
    (TransformerLens's `use_local_attn`/`attn_types`, or a bridge's transformers config)."""
    cfg = model.cfg
    if getattr(cfg, "use_local_attn", False):
        types = getattr(cfg, "attn_types", None)
        if types is None or types[layer] == "local":
            return int(cfg.window_size)
        return None
    config = getattr(getattr(model, "original_model", None), "config", None)
    if config is None:
        return None
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    window = getattr(config, "sliding_window", None)
    if not window:
        return None
    types = getattr(config, "layer_types", None)
    if types is not None:
        return int(window) if types[layer] == "sliding_attention" else None
    return int(window) if getattr(config, "use_sliding_window", True) else None


def check_context_length(
    model: HostModel, spec: RotarySpec, layers, length: int, allow: bool
) -> None:
    """Refuse `length` tokens beyond the model's context unless `allow`, and then wherever the
    host cannot rotate beyond it (its rotary tables stop at n_ctx)."""
    if length <= spec.n_ctx:
        return
    if not allow:
        raise RopeInterpError(
            f"Sequences of {length} tokens are longer than the model's context "
            f"(n_ctx={spec.n_ctx}); pass allow_beyond_context=True to measure beyond it."
        )
    backend = spec.backend
    if backend.name != "bridge" or not backend.rotated_hooks_fire(layers):
        raise RopeInterpError(
            f"This model cannot rotate beyond its {spec.n_ctx}-token context here (its "
            f"rotary tables stop there); build it with a larger n_ctx to measure {length} tokens."
        )


def _check_length(model: HostModel, spec: RotarySpec, layers, tokens: Tensor, allow: bool) -> None:
    if tokens.ndim != 2 or tokens.shape[1] < 1:
        raise RopeInterpError(
            "Each batch must be an Int tensor [batch, pos] with pos ≥ 1; got shape "
            f"{tuple(tokens.shape)}."
        )
    length = int(tokens.shape[1])
    check_context_length(model, spec, layers, length, allow)
    for layer in layers:
        window = sliding_window(model, layer)
        if window is not None and window < length:
            raise UnsupportedModel(
                f"Layer {layer} attends within a sliding window of {window} tokens, which "
                f"long_context_stats does not model; use sequences of at most {window} tokens "
                "or full-attention layers."
            )


def _tables(spec: RotarySpec, layers: list[int], sums: dict[int, TileSums], edges: Tensor):
    kv = np.arange(spec.n_heads) // spec.group_size
    n_heads, n_pairs = spec.n_heads, spec.n_pairs
    distance, pairs, heads = [], [], []
    for layer in layers:
        s = sums[layer]
        theta = spec.thetas[layer].cpu().numpy()
        used = torch.nonzero(s.count > 0).reshape(-1)
        count = s.count[used]
        grid = np.meshgrid(
            np.arange(n_heads), used.cpu().numpy(), np.arange(n_pairs), indexing="ij"
        )
        head, bucket, pair = (g.reshape(-1) for g in grid)
        distance.append(
            pd.DataFrame(
                {
                    "layer": layer,
                    "head": head,
                    "kv_head": kv[head],
                    "bucket": bucket,
                    "distance_lo": edges.cpu().numpy()[bucket],
                    "distance_hi": edges.cpu().numpy()[bucket + 1] - 1,
                    "n_scores": s.count.cpu().numpy()[bucket].astype(np.int64),
                    "pair": pair,
                    "theta": theta[pair],
                    "wavelength": 2 * math.pi / theta[pair],
                    "mean_contribution": _flat(s.sum[:, used] / count[:, None]),
                    "mean_abs_contribution": _flat(s.abs_sum[:, used] / count[:, None]),
                }
            )
        )
        n_scores = float(count.sum())
        n_queries = float(s.n_queries)
        attn_abs = (s.attn_abs / n_queries).cpu().numpy()
        head, pair = (
            g.reshape(-1) for g in np.meshgrid(range(n_heads), range(n_pairs), indexing="ij")
        )
        pairs.append(
            pd.DataFrame(
                {
                    "layer": layer,
                    "head": head,
                    "kv_head": kv[head],
                    "pair": pair,
                    "theta": theta[pair],
                    "wavelength": 2 * math.pi / theta[pair],
                    "mean_contribution": _flat(s.sum.sum(1) / n_scores),
                    "mean_abs_contribution": _flat(s.abs_sum.sum(1) / n_scores),
                    "attn_contribution": (s.attn / n_queries).reshape(-1).cpu().numpy(),
                    "attn_abs_contribution": attn_abs.reshape(-1),
                    "attn_share": (
                        attn_abs / np.maximum(attn_abs.sum(-1, keepdims=True), 1e-300)
                    ).reshape(-1),
                }
            )
        )
        mean_pass = s.pass_sum.sum(1).cpu().numpy() / n_scores
        attn_pass = s.attn_pass.cpu().numpy() / n_queries
        heads.append(
            pd.DataFrame(
                {
                    "layer": layer,
                    "head": np.arange(n_heads),
                    "kv_head": kv,
                    "n_queries": int(n_queries),
                    "n_scores": int(n_scores),
                    "mean_score": s.sum.sum((1, 2)).cpu().numpy() / n_scores + mean_pass,
                    "mean_pass": mean_pass,
                    "attn_score": s.attn.sum(1).cpu().numpy() / n_queries + attn_pass,
                    "attn_pass": attn_pass,
                }
            )
        )
    return LongContextStats(
        distance=pd.concat(distance, ignore_index=True),
        pairs=pd.concat(pairs, ignore_index=True),
        heads=pd.concat(heads, ignore_index=True),
    )


def _flat(values: Tensor) -> np.ndarray:
    """A tensor (any device) as a flat numpy array: a table column."""
    return values.reshape(-1).cpu().numpy()
