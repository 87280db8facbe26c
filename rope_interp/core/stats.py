"""Streaming, mergeable per-(layer, head, pair) statistics of pre-rotation q and k.

One pass over a corpus through hooks, never storing activations: memory is
`O(layers × heads × pairs)` whatever the token count.

Per (layer, head, pair), for q (query heads) and k (KV heads):
    count, Σ|z|, Σ|z|², max |z|, Σz (complex: offset features live in the mean vector),
and the same restricted to position 0 (`first_*`: attention sinks live at the first key).
Plus Σ‖x_pass‖² per head for partial-rotary models.

Cost: each captured batch is reduced over (batch, pos) on the model's device
(`pair_reduction`: a few real-valued kernels, fused by `torch.compile` on CUDA), into a small
per-batch buffer; the buffer is folded into the float64
totals once per batch. The reduction runs in float64 on CPU (totals exact to ~1e-15) and in
float32 on accelerators (relative error ~1e-6 per batch, far below sampling noise);
`reduce_dtype` overrides the choice.

Saved files carry the spec's fingerprint (layers, heads, KV heads, d_head, rotary_dim, layout,
θ) and the model's; `load` and `merge` refuse statistics of another geometry or model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from rope_interp.core.capturing import RotaryCapture
from rope_interp.core.pair_reduction import N_FIELDS, compiled_reduce_pairs, reduce_pairs
from rope_interp.core.runner import run_batches
from rope_interp.core.spec import RotarySpec, spec_for
from rope_interp.errors import RopeInterpError
from rope_interp.host import HostModel
from rope_interp.utils.atomic import atomic_write
from rope_interp.utils.files import check_regular_file, refuse_overlap, refuse_repeated

# Summed fields, in the order of the accumulator's field axis (the first _N_REDUCED come from
# the per-batch reduction; the counts are added at the fold).
_SUMS = (
    "sum_re",
    "sum_im",
    "sum_norm",
    "sum_sq",
    "first_sum_re",
    "first_sum_im",
    "first_sum_norm",
    "count",
    "first_count",
)
_N_REDUCED = N_FIELDS
_FIELDS = (*_SUMS, "max_norm", "sum_pass_sq")
FORMAT = "rope-interp.pair-stats/2"
# θ from float32 cos/sin buffers agree to ~1e-7 relative across devices.
_THETA_RTOL = 1e-5


def spec_fingerprint(spec: RotarySpec) -> dict:
    """What must agree between statistics files for them to describe the same geometry."""
    return {
        "n_layers": spec.n_layers,
        "n_heads": spec.n_heads,
        "n_kv_heads": spec.n_kv_heads,
        "d_head": spec.d_head,
        "rotary_dim": spec.rotary_dim,
        "layout": spec.layout,
        "thetas": [[float(f"{t:.9g}") for t in row] for row in spec.thetas.tolist()],
    }


def model_identity(model: HostModel) -> str:
    """A cheap identity of a model: its name, shape and parameter count (no weight hashing)."""
    cfg = model.cfg
    n_params = sum(p.numel() for p in model.parameters())
    fields = ("model_name", "n_layers", "d_model", "n_heads", "d_head", "d_vocab")
    return " ".join(f"{f}={getattr(cfg, f, None)}" for f in fields) + f" n_params={n_params}"


def fingerprint_differences(saved: dict, current: dict) -> list[str]:
    """Human-readable differences between two `spec_fingerprint`s (empty when they agree)."""
    out = []
    for key in ("n_layers", "n_heads", "n_kv_heads", "d_head", "rotary_dim", "layout"):
        if saved.get(key) != current.get(key):
            note = " (pairs)" if key == "rotary_dim" else ""
            out.append(f"{key} {saved.get(key)} vs {current.get(key)}{note}")
    if not out:
        a = torch.tensor(saved.get("thetas", []), dtype=torch.float64, device="cpu")
        b = torch.tensor(current["thetas"], dtype=torch.float64, device="cpu")
        if a.shape != b.shape or not torch.allclose(a, b, rtol=_THETA_RTOL, atol=0):
            out.append("θ (rotary frequencies)")
    return out


class PairStats:
    """Accumulators for q and k. `update(kind, layer, x)` adds a `[batch, pos, head, d_head]`
    pre-rotation tensor; `merge` combines two runs; `to_frame` gives the tidy table.

    `acc[kind][field]` is a float64 `[layer, head, pair]` tensor (`sum_pass_sq`:
    `[layer, head]`) for each field of `_FIELDS`."""

    def __init__(
        self,
        spec: RotarySpec,
        layers: Iterable[int] | None = None,
        device="cpu",
        reduce_dtype: torch.dtype | None = None,
        model_id: str | None = None,
        reduce_compiled: bool | None = None,
    ):
        self.spec = spec
        self.layers = spec.resolve_layers(layers)
        self.device = torch.device(device)
        if reduce_dtype is None:
            reduce_dtype = torch.float64 if self.device.type == "cpu" else torch.float32
        if reduce_dtype not in (torch.float32, torch.float64):
            raise RopeInterpError(f"reduce_dtype must be float32 or float64, got {reduce_dtype}.")
        self.reduce_dtype = reduce_dtype
        # torch.compile fuses the reduction's ~10 kernel launches per hook (CUDA only).
        self.reduce_compiled = (
            self.device.type == "cuda" if reduce_compiled is None else reduce_compiled
        )
        self.model_id = model_id
        self.tokens_seen = 0
        self.sequences_seen = 0
        self._row = {layer: row for row, layer in enumerate(self.layers)}
        n_layers, n_pairs = len(self.layers), spec.n_pairs
        f64: dict[str, Any] = dict(dtype=torch.float64, device=self.device)
        low: dict[str, Any] = dict(dtype=reduce_dtype, device=self.device)
        self._sums: dict[str, Tensor] = {}
        self._max: dict[str, Tensor] = {}
        self._pass: dict[str, Tensor] = {}
        self._buf: dict[str, Tensor] = {}
        self._buf_max: dict[str, Tensor] = {}
        self._buf_pass: dict[str, Tensor] = {}
        # kind → row → (tokens, sequences) reduced but not yet folded
        self._pending: dict[str, dict[int, tuple[int, int]]] = {}
        for kind in ("q", "k"):
            heads = spec.n_heads if kind == "q" else spec.n_kv_heads
            self._sums[kind] = torch.zeros(n_layers, heads, len(_SUMS), n_pairs, **f64)
            self._max[kind] = torch.full((n_layers, heads, n_pairs), -math.inf, **f64)
            self._pass[kind] = torch.zeros(n_layers, heads, **f64)
            self._buf[kind] = torch.zeros(n_layers, heads, _N_REDUCED, n_pairs, **low)
            self._buf_max[kind] = torch.full((n_layers, heads, n_pairs), -math.inf, **low)
            self._buf_pass[kind] = torch.zeros(n_layers, heads, **low)
            self._pending[kind] = {}

    # ---- accumulation -------------------------------------------------------------------
    def update(self, kind: str, layer: int, x: Tensor) -> None:
        """Add one batch of pre-rotation `q` or `k` for `layer` (`[batch, pos, head, d_head]`)."""
        if kind not in self._sums:
            raise RopeInterpError(f"kind must be 'q' or 'k', got {kind!r}.")
        if layer not in self._row:
            raise RopeInterpError(f"layer {layer} is not among the accumulated {self.layers}.")
        row = self._row[layer]
        heads = self._sums[kind].shape[1]
        if x.ndim != 4 or x.shape[2] != heads or x.shape[3] != self.spec.d_head:
            raise RopeInterpError(
                f"Expected {kind} as [batch, pos, {heads}, {self.spec.d_head}], got "
                f"{tuple(x.shape)}."
            )
        if row in self._pending[kind]:
            self.flush()  # the same layer twice before a fold: keep both
        self._reduce(kind, row, x.to(self.device))
        self._pending[kind][row] = (x.shape[0] * x.shape[1], x.shape[0])

    def _reduce(self, kind: str, row: int, x: Tensor) -> None:
        """Sums, maxima and first-position sums of one batch over (batch, pos), into the
        per-batch buffer (`pair_reduction`)."""
        reduce = compiled_reduce_pairs if self.reduce_compiled else reduce_pairs
        spec = self.spec
        half = spec.layout == "half"
        sums, max_norm, pass_sq = reduce(x, spec.rotary_dim, spec.n_pairs, half, self.reduce_dtype)
        self._buf[kind][row].copy_(sums)
        self._buf_max[kind][row].copy_(max_norm)
        self._buf_pass[kind][row].copy_(pass_sq)

    def flush(self) -> None:
        """Fold the per-batch buffers into the float64 totals (once per batch)."""
        for kind, pending in self._pending.items():
            if not pending:
                continue
            sums = self._sums[kind]
            sums[:, :, :_N_REDUCED] += self._buf[kind]
            counts = torch.zeros(len(self.layers), 2, dtype=torch.float64, device="cpu")
            for row, (tokens, sequences) in pending.items():
                counts[row, 0], counts[row, 1] = tokens, sequences
            sums[:, :, _N_REDUCED:] += counts.to(self.device)[:, None, :, None]
            torch.maximum(self._max[kind], self._buf_max[kind], out=self._max[kind])
            self._pass[kind] += self._buf_pass[kind]
            self._buf[kind].zero_()
            self._buf_max[kind].fill_(-math.inf)
            self._buf_pass[kind].zero_()
            pending.clear()

    @property
    def acc(self) -> dict[str, dict[str, Tensor]]:
        """kind → field → float64 totals (views into the accumulator; folded first)."""
        self.flush()
        out = {}
        for kind, sums in self._sums.items():
            fields = {name: sums[:, :, i] for i, name in enumerate(_SUMS)}
            fields["max_norm"] = self._max[kind]
            fields["sum_pass_sq"] = self._pass[kind]
            out[kind] = fields
        return out

    def check_compatible(self, other: PairStats, what: str = "merge") -> None:
        """Raise unless `other` describes the same layers, geometry and model."""
        problems = fingerprint_differences(
            spec_fingerprint(other.spec), spec_fingerprint(self.spec)
        )
        if other.layers != self.layers:
            problems.append(f"layers {other.layers} vs {self.layers}")
        if other.model_id and self.model_id and other.model_id != self.model_id:
            problems.append(f"model {other.model_id!r} vs {self.model_id!r}")
        if problems:
            raise RopeInterpError(
                f"Cannot {what} statistics of different models or layers: {'; '.join(problems)}."
            )

    def merge(self, other: PairStats) -> PairStats:
        """A new `PairStats` equal to one pass over both inputs."""
        self.check_compatible(other)
        merged = PairStats(
            self.spec, self.layers, self.device, self.reduce_dtype, self.model_id or other.model_id
        )
        self.flush()
        other.flush()
        for kind in ("q", "k"):
            merged._sums[kind] += self._sums[kind] + other._sums[kind].to(self.device)
            merged._max[kind] = torch.maximum(self._max[kind], other._max[kind].to(self.device))
            merged._pass[kind] += self._pass[kind] + other._pass[kind].to(self.device)
        merged.tokens_seen = self.tokens_seen + other.tokens_seen
        merged.sequences_seen = self.sequences_seen + other.sequences_seen
        return merged

    # ---- persistence (safetensors, no pickle) -------------------------------------------
    def metadata(self) -> dict[str, str]:
        """What a saved file records besides the tensors."""
        meta = {
            "format": FORMAT,
            "layers": json.dumps(self.layers),
            "tokens_seen": str(self.tokens_seen),
            "sequences_seen": str(self.sequences_seen),
            "n_pairs": str(self.spec.n_pairs),
            "spec": json.dumps(spec_fingerprint(self.spec)),
        }
        if self.model_id:
            meta["model"] = self.model_id
        return meta

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        tensors = {
            f"{kind}.{name}": value.contiguous().cpu()
            for kind, fields in self.acc.items()
            for name, value in fields.items()
        }
        with atomic_write(path) as tmp:
            save_file(tensors, str(tmp), metadata=self.metadata())

    @classmethod
    def load(cls, path: str | Path, spec: RotarySpec, model: HostModel | None = None) -> PairStats:
        """Read a file written by `save`. Refuses a file of another geometry (and, with
        `model`, of another model) naming what differs."""
        tensors, meta = read_stats_file(path)
        problems = fingerprint_differences(json.loads(meta["spec"]), spec_fingerprint(spec))
        if problems:
            raise RopeInterpError(
                f"{path} holds statistics of another model: {'; '.join(problems)} "
                "(file vs model). Load it with the model that produced it."
            )
        model_id = meta.get("model")
        if model is not None:
            current = model_identity(model)
            if model_id and model_id != current:
                raise RopeInterpError(
                    f"{path} holds statistics of model {model_id!r}, not of {current!r}."
                )
            model_id = model_id or current
        stats = cls(spec, json.loads(meta["layers"]), model_id=model_id)
        fields = stats.acc
        for key, value in tensors.items():
            kind, name = key.split(".", 1)
            if kind not in fields or name not in fields[kind]:
                raise RopeInterpError(f"{path}: unexpected tensor {key!r}; is it a stats file?")
            target = fields[kind][name]
            if value.shape != target.shape:
                raise RopeInterpError(
                    f"{path}: {key} has shape {tuple(value.shape)}, expected "
                    f"{tuple(target.shape)}; the file is damaged or of another model."
                )
            target.copy_(value)
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
            cpu: dict[str, Any] = dict(device="cpu")  # index tables for the table, on the CPU
            index = torch.cartesian_prod(
                torch.tensor(self.layers, **cpu),
                torch.arange(n_heads, **cpu),
                torch.arange(n_pairs, **cpu),
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


def _existing_stats_file(path: str | Path) -> Path:
    """`path` if it is a regular file; else a `RopeInterpError` (missing, a folder, a FIFO)."""
    path = Path(path)
    if not path.exists():
        raise RopeInterpError(f"No statistics file at {str(path)!r}.")
    return check_regular_file(path, "Statistics file")


def read_stats_file(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The tensors and metadata of a `PairStats.save` file; a `RopeInterpError` for anything
    else (missing, not safetensors, no rope-interp metadata)."""
    from safetensors import SafetensorError, safe_open

    path = _existing_stats_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as error:
        raise RopeInterpError(
            f"{path} is not a readable statistics file ({error}); write one with "
            "`rope-interp stats --out FILE.safetensors`."
        ) from None
    required = ("spec", "layers", "tokens_seen", "sequences_seen")
    missing = [key for key in required if key not in meta]
    if missing:
        raise RopeInterpError(
            f"{path} lacks the metadata of a rope-interp statistics file ({', '.join(missing)}"
            " missing): it was not written by this version's PairStats.save; recompute it with "
            "`rope-interp stats`."
        )
    if problem := _stats_file_problem(tensors, meta):
        raise RopeInterpError(
            f"{path} is a damaged statistics file ({problem}); recompute it with "
            "`rope-interp stats`."
        )
    return tensors, meta


def _stats_file_problem(tensors: dict[str, Tensor], meta: dict[str, str]) -> str:
    """Why a statistics file's metadata and tensors do not fit each other ("" if they do)."""
    try:
        spec, layers = json.loads(meta["spec"]), json.loads(meta["layers"])
        counts = int(meta["tokens_seen"]), int(meta["sequences_seen"])
    except (ValueError, RecursionError):
        return "its metadata is not what PairStats.save writes"
    if not isinstance(spec, dict) or not isinstance(layers, list) or min(counts) < 0:
        return "its metadata is not what PairStats.save writes"
    if set(tensors) != {f"{kind}.{name}" for kind in ("q", "k") for name in _FIELDS}:
        return "its tensors are not those of PairStats.save"
    for key, value in tensors.items():
        if value.ndim < 2 or value.shape[0] != len(layers):
            return f"{key} has shape {tuple(value.shape)}, not one row per layer of {layers}"
        finite = value[value != -math.inf] if key.endswith("max_norm") else value
        if value.dtype != torch.float64 or not torch.isfinite(finite).all():
            return f"{key} is not float64 or holds NaN or infinite values"
    return ""


def collect_pair_stats(
    model: HostModel,
    batches: Iterable[Tensor],
    layers: Iterable[int] | None = None,
    progress: bool = True,
    stats: PairStats | None = None,
    reduce_dtype: torch.dtype | None = None,
    allow_empty: bool = False,
    *,
    spec: RotarySpec | None = None,
) -> PairStats:
    """One streaming pass: run `model` on each token batch and accumulate `PairStats`.

    Batches are pulled one at a time (a lazy iterator over a large corpus stays lazy).

    Args:
        batches: iterable of `Int[Tensor, "batch pos"]` (e.g. `corpus.batches(8)`).
        stats: an existing accumulator to continue (resume or merge in place).
        reduce_dtype: dtype of the per-batch reduction (default float64 on CPU, float32 else).
        allow_empty: return empty statistics instead of raising when there are no batches
            (a rank of a distributed run whose shard is empty).
        spec: the model's spec, bound once by the caller (default: read from `model`).
    """
    spec = spec_for(model, spec)
    if stats is None:
        stats = PairStats(
            spec,
            layers,
            device=model.cfg.device,
            reduce_dtype=reduce_dtype,
            model_id=model_identity(model),
        )
    cap = RotaryCapture(model, stats.layers, kinds=("q", "k"), on_capture=stats.update, spec=spec)

    def fold(tokens: Tensor, _) -> None:
        cap.check_fired()
        cap.reset()
        stats.flush()
        stats.tokens_seen += tokens.numel()
        stats.sequences_seen += tokens.shape[0]

    run_batches(
        model,
        batches,
        cap.hooks(),
        "pair statistics",
        progress,
        after_batch=fold,
        allow_empty=allow_empty,
    )
    return stats


def all_reduce_stats(stats: PairStats, group=None) -> PairStats:
    """Combine the accumulators of every rank of a `torch.distributed` group in place (sums
    added, maxima maxed, token counts added): afterwards every rank holds the statistics of
    all ranks' batches. Works with gloo (CPU) and NCCL (tensors on each rank's GPU)."""
    import torch.distributed as dist

    stats.flush()
    for kind in ("q", "k"):
        dist.all_reduce(stats._sums[kind], op=dist.ReduceOp.SUM, group=group)
        dist.all_reduce(stats._max[kind], op=dist.ReduceOp.MAX, group=group)
        dist.all_reduce(stats._pass[kind], op=dist.ReduceOp.SUM, group=group)
    seen = torch.tensor(
        [stats.tokens_seen, stats.sequences_seen], dtype=torch.float64, device=stats.device
    )
    dist.all_reduce(seen, op=dist.ReduceOp.SUM, group=group)
    stats.tokens_seen, stats.sequences_seen = (int(v) for v in seen.tolist())
    return stats


def merge_stats_files(out: str | Path, inputs: Iterable[str | Path]) -> dict[str, str]:
    """Combine `PairStats.save` files from independent jobs (e.g. shards of a job array) into
    `out`, without the model: sums added, maxima maxed. Refuses files of different geometry,
    layers or model, naming what differs. Returns the merged file's metadata."""
    inputs = [Path(p) for p in inputs]
    if len(inputs) < 2:
        raise RopeInterpError(f"merge needs at least two statistics files, got {len(inputs)}.")
    refuse_overlap([("the output", out)], [("input", p) for p in inputs])
    refuse_repeated(map(_existing_stats_file, inputs), "input")  # one shard twice: counted twice
    first_path, *rest = inputs
    tensors, meta = read_stats_file(first_path)
    tensors = {key: value.clone() for key, value in tensors.items()}
    reference = json.loads(meta["spec"])
    tokens, sequences = int(meta["tokens_seen"]), int(meta["sequences_seen"])
    for path in rest:
        theirs, their_meta = read_stats_file(path)
        problems = fingerprint_differences(json.loads(their_meta["spec"]), reference)
        if their_meta["layers"] != meta["layers"]:
            problems.append(f"layers {their_meta['layers']} vs {meta['layers']}")
        if their_meta.get("model", "") != meta.get("model", ""):
            problems.append(f"model {their_meta.get('model')!r} vs {meta.get('model')!r}")
        if set(theirs) != set(tensors):
            problems.append("different tensors")
        if problems:
            raise RopeInterpError(f"Cannot merge {path} into {first_path}: {'; '.join(problems)}.")
        for key, value in theirs.items():
            if value.shape != tensors[key].shape:
                raise RopeInterpError(f"Cannot merge {path}: {key} has another shape.")
            if key.endswith(".max_norm"):
                tensors[key] = torch.maximum(tensors[key], value)
            else:
                tensors[key] += value
        tokens += int(their_meta["tokens_seen"])
        sequences += int(their_meta["sequences_seen"])
    from safetensors.torch import save_file

    meta = {**meta, "tokens_seen": str(tokens), "sequences_seen": str(sequences)}
    with atomic_write(out) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return meta
