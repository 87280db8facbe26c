"""Streaming, mergeable per-(layer, head, pair) statistics of pre-rotation q and k.

One pass over a corpus through hooks, never storing activations: memory is
`O(layers × heads × pairs)` whatever the token count. Accumulated in float64.

Per (layer, head, pair), for q (query heads) and k (KV heads):
    count, Σ|z|, Σ|z|², max |z|, Σz (complex: offset features live in the mean vector),
and the same restricted to position 0 (`first_*`: attention sinks live at the first key).
Plus Σ‖x_pass‖² per head for partial-rotary models.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from rope_interp.atomic import atomic_write
from rope_interp.capture import RotaryCapture, resolve_layers
from rope_interp.errors import RopeInterpError
from rope_interp.pairs import to_pairs
from rope_interp.spec import RotarySpec

_FIELDS = ("count", "sum_norm", "sum_sq", "max_norm", "sum_re", "sum_im", "sum_pass_sq")
_FIRST_FIELDS = ("first_count", "first_sum_norm", "first_sum_re", "first_sum_im")


class PairStats:
    """Accumulators for q and k. `update(kind, layer, x)` adds a `[batch, pos, head, d_head]`
    pre-rotation tensor; `merge` combines two runs; `to_frame` gives the tidy table."""

    def __init__(self, spec: RotarySpec, layers: Iterable[int] | None = None, device="cpu"):
        self.spec = spec
        self.layers = resolve_layers(spec, layers)
        self.device = torch.device(device)
        self.tokens_seen = 0
        self.sequences_seen = 0
        self.acc: dict[str, dict[str, Tensor]] = {
            kind: self._zeros(spec.n_heads if kind == "q" else spec.n_kv_heads)
            for kind in ("q", "k")
        }

    def _zeros(self, n_heads: int) -> dict[str, Tensor]:
        shape = (len(self.layers), n_heads, self.spec.n_pairs)
        fields = {
            name: torch.zeros(shape, dtype=torch.float64, device=self.device)
            for name in _FIELDS + _FIRST_FIELDS
        }
        fields["sum_pass_sq"] = torch.zeros(shape[:2], dtype=torch.float64, device=self.device)
        fields["max_norm"] = torch.full(shape, -math.inf, dtype=torch.float64, device=self.device)
        return fields

    def update(self, kind: str, layer: int, x: Tensor) -> None:
        """Add one batch of pre-rotation `q` or `k` for `layer`."""
        if kind not in self.acc:
            raise RopeInterpError(f"kind must be 'q' or 'k', got {kind!r}.")
        row = self.layers.index(layer)
        acc = self.acc[kind]
        z, x_pass = to_pairs(x.to(self.device), self.spec)
        z = z.to(torch.complex128)
        norm = z.abs()
        flat_norm = norm.flatten(0, 1)
        acc["count"][row] += flat_norm.shape[0]
        acc["sum_norm"][row] += flat_norm.sum(0)
        acc["sum_sq"][row] += flat_norm.square().sum(0)
        acc["max_norm"][row] = torch.maximum(acc["max_norm"][row], flat_norm.amax(0))
        total = z.sum((0, 1))
        acc["sum_re"][row] += total.real
        acc["sum_im"][row] += total.imag
        if x_pass.shape[-1]:
            acc["sum_pass_sq"][row] += x_pass.double().square().sum((0, 1, 3))
        first = z[:, 0]
        acc["first_count"][row] += first.shape[0]
        acc["first_sum_norm"][row] += first.abs().sum(0)
        acc["first_sum_re"][row] += first.real.sum(0)
        acc["first_sum_im"][row] += first.imag.sum(0)

    def merge(self, other: PairStats) -> PairStats:
        """A new `PairStats` equal to one pass over both inputs."""
        if other.layers != self.layers or other.spec.n_pairs != self.spec.n_pairs:
            raise RopeInterpError("Cannot merge statistics over different layers or models.")
        merged = PairStats(self.spec, self.layers, self.device)
        for kind in ("q", "k"):
            for name, value in self.acc[kind].items():
                theirs = other.acc[kind][name].to(self.device)
                merged.acc[kind][name] = (
                    torch.maximum(value, theirs) if name == "max_norm" else value + theirs
                )
        merged.tokens_seen = self.tokens_seen + other.tokens_seen
        merged.sequences_seen = self.sequences_seen + other.sequences_seen
        return merged

    # ---- persistence (safetensors, no pickle) -------------------------------------------
    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        tensors = {f"{k}.{n}": v.cpu() for k, d in self.acc.items() for n, v in d.items()}
        meta = {
            "layers": json.dumps(self.layers),
            "tokens_seen": str(self.tokens_seen),
            "sequences_seen": str(self.sequences_seen),
            "n_pairs": str(self.spec.n_pairs),
        }
        with atomic_write(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)

    @classmethod
    def load(cls, path: str | Path, spec: RotarySpec) -> PairStats:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
            if int(meta["n_pairs"]) != spec.n_pairs:
                raise RopeInterpError(
                    f"{path} holds statistics for {meta['n_pairs']} pairs; the model has "
                    f"{spec.n_pairs}. Load it with the model that produced it."
                )
            stats = cls(spec, json.loads(meta["layers"]))
            for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                kind, name = key.split(".", 1)
                stats.acc[kind][name] = f.get_tensor(key)
        stats.tokens_seen = int(meta["tokens_seen"])
        stats.sequences_seen = int(meta["sequences_seen"])
        return stats

    # ---- results ------------------------------------------------------------------------
    def mean_vectors(self, kind: str) -> Tensor:
        """Complex `[layer, head, pair]` mean of pre-rotation z (μ_q or μ_k)."""
        acc = self.acc[kind]
        return torch.complex(acc["sum_re"], acc["sum_im"]) / acc["count"].clamp(min=1)

    def to_frame(self) -> pd.DataFrame:
        """One row per (kind, layer, head, pair). `head` is a KV head for k.

        Columns: count, mean_norm, rms_norm, std_norm, max_norm, mean_re, mean_im,
        mean_vec_norm (‖mean z‖), concentration (‖mean z‖ / mean ‖z‖, the mean resultant
        length), mean_angle, first_mean_norm, first_mean_re, first_mean_im, theta, wavelength.
        """
        if self.tokens_seen == 0:
            raise RopeInterpError("No tokens were accumulated; run collect_pair_stats first.")
        frames = []
        thetas = self.spec.thetas[self.layers]
        for kind, acc in self.acc.items():
            count = acc["count"].clamp(min=1)
            first_count = acc["first_count"].clamp(min=1)
            mean_norm = acc["sum_norm"] / count
            mean_sq = acc["sum_sq"] / count
            mean = self.mean_vectors(kind)
            n_layers, n_heads, n_pairs = mean.shape
            index = torch.cartesian_prod(
                torch.tensor(self.layers), torch.arange(n_heads), torch.arange(n_pairs)
            )
            columns = {
                "count": acc["count"],
                "mean_norm": mean_norm,
                "rms_norm": mean_sq.sqrt(),
                "std_norm": (mean_sq - mean_norm.square()).clamp(min=0).sqrt(),
                "max_norm": acc["max_norm"],
                "mean_re": mean.real,
                "mean_im": mean.imag,
                "mean_vec_norm": mean.abs(),
                "concentration": mean.abs() / mean_norm.clamp(min=1e-30),
                "mean_angle": mean.angle(),
                "first_mean_norm": acc["first_sum_norm"] / first_count,
                "first_mean_re": acc["first_sum_re"] / first_count,
                "first_mean_im": acc["first_sum_im"] / first_count,
                "theta": thetas[:, None, :].expand(n_layers, n_heads, n_pairs),
            }
            frame = pd.DataFrame(
                {"kind": kind, "layer": index[:, 0], "head": index[:, 1], "pair": index[:, 2]}
            )
            for name, value in columns.items():
                frame[name] = value.reshape(-1).cpu().numpy()
            frame["wavelength"] = 2 * math.pi / frame["theta"]
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)


def collect_pair_stats(
    model,
    batches: Iterable[Tensor],
    layers: Iterable[int] | None = None,
    progress: bool = True,
    stats: PairStats | None = None,
) -> PairStats:
    """One streaming pass: run `model` on each token batch and accumulate `PairStats`.

    Args:
        batches: iterable of `Int[Tensor, "batch pos"]` (e.g. `corpus.batches(8)`).
        stats: an existing accumulator to continue (resume or merge in place).
    """
    spec = RotarySpec.from_model(model, check_config=False)
    stats = stats or PairStats(spec, layers, device=model.cfg.device)
    cap = RotaryCapture(model, stats.layers, kinds=("q", "k"), on_capture=stats.update)
    seen_any = False
    for tokens in tqdm(list(batches), desc="pair statistics", disable=not progress):
        with torch.no_grad(), cap:
            model(tokens, return_type=None)
        stats.tokens_seen += tokens.numel()
        stats.sequences_seen += tokens.shape[0]
        seen_any = True
    if not seen_any:
        raise RopeInterpError("No token batches were given: the corpus is empty.")
    return stats
