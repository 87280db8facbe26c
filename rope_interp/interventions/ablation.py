"""Reversible interventions on rotary pairs: zero, mean, NoPE, phase shift, position shift,
and inference-time p-RoPE.

Two steps: choose *which* pairs (a `PairSelection` from `selection`, a boolean
`[layer, head, pair]` mask over query heads), then *what* to do to them (an `Intervention`,
here). An intervention is a hook list (composable with your own hooks in `run_with_hooks`) and
a context manager that removes its hooks on exit, also after an exception:

    sel = select_band(spec, "high", k=4)                     # the 4 highest-frequency pairs
    with Intervention(model, sel, mode="zero", side="both"):
        loss = model(tokens, return_type="loss")
    model.run_with_hooks(tokens, fwd_hooks=p_rope(model, 0.75).hooks() + my_hooks)

Where each mode acts (TransformerLens hook points of the attention layer):
- "zero", "mean": on the pre-rotation q/k (`hook_q`, `hook_k`): the selected pair is set to 0
  or to its corpus mean vector μ (from `PairStats.mean_vectors`); the model then rotates it.
  On models with a QK-norm or clip between `hook_q`/`hook_k` and the rotation (Qwen3, Gemma-3,
  OLMo-2), an edit there would pass through the norm, so the same edit is made to the vector
  that enters the rotation instead, at `hook_rot_q`/`hook_rot_k`: zero sets the rotated pair
  to 0, mean sets it to μ rotated by the model's phasor at positions 0..n-1.
- "nope": on the rotated q/k (`hook_rot_q`, `hook_rot_k`): the selected pair is replaced by its
  pre-rotation value (stashed exactly at `hook_q`/`hook_k` and mapped through the model's
  QK-norm/clip where it has one), i.e. angle 0 at every position.
  Use side="both": NoPE on one side only leaves the other side's rotation in the score.
- "phase": the rotated pair is multiplied by e^{iφ} (on q: α_i → α_i + φ; on both sides the
  shifts cancel in the score).
- "shift": the pair is rotated as if at position p + Δ instead of p (from the pre-rotation
  value and the model's own phasor table); on both sides the scores do not change.

Grouped-query attention: k hooks carry KV heads, shared by `group_size` query heads. A k-side
intervention acts on a KV head, so a selection must name every query head of a group or none
of them (per layer and pair); anything else raises `RopeInterpError` (use side="q" to act on
a single query head).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import Tensor
from transformer_lens.hook_points import HookPoint

from rope_interp.core.backends.base import ReadPoint
from rope_interp.core.capturing import Hook, hook_name
from rope_interp.core.pairs import from_pairs, to_pairs
from rope_interp.core.spec import RotarySpec, spec_for
from rope_interp.errors import RopeInterpError
from rope_interp.host import HostModel
from rope_interp.interventions.selection import PairSelection, band_size, select_band, select_pairs

if TYPE_CHECKING:
    from rope_interp.core.stats import PairStats

Mode = Literal["zero", "mean", "nope", "phase", "shift"]
Side = Literal["q", "k", "both"]
MODES = ("zero", "mean", "nope", "phase", "shift")
SIDES = ("q", "k", "both")


class Intervention:
    """A reversible intervention on the selected rotary pairs.

    Args:
        model: a `HookedTransformer` with rotary attention.
        selection: which (layer, query head, pair) to act on.
        mode: "zero", "mean", "nope", "phase" or "shift" (see the module docstring).
        side: "q", "k" or "both".
        phi: the angle in radians for mode="phase".
        delta: the position offset Δ (tokens, may be negative if positions stay ≥ 0) for
            mode="shift".
        stats: `PairStats` with the means, for mode="mean" (must cover the selected layers).
        spec: the `RotarySpec` of `model`, bound once by the caller (default: read from
            `model`); its backend says where the model's q/k are read.
    """

    def __init__(
        self,
        model: HostModel,
        selection: PairSelection,
        mode: str = "zero",  # a Mode; str so that a wrong value raises RopeInterpError
        side: str = "both",  # a Side
        phi: float | int = 0.0,
        delta: int = 0,
        stats: PairStats | None = None,
        spec: RotarySpec | None = None,
    ):
        if mode not in MODES:
            raise RopeInterpError(f"mode must be one of {MODES}, got {mode!r}.")
        if side not in SIDES:
            raise RopeInterpError(f"side must be one of {SIDES}, got {side!r}.")
        self.model = model
        self.spec = spec_for(model, spec)
        expected = (self.spec.n_layers, self.spec.n_heads, self.spec.n_pairs)
        if tuple(selection.mask.shape) != expected:
            raise RopeInterpError(
                f"The selection's mask has shape {tuple(selection.mask.shape)}; this model needs "
                f"[layer, head, pair] = {list(expected)}. Build it with this model's spec."
            )
        try:
            finite_phi = math.isfinite(float(phi))
        except (TypeError, ValueError):
            finite_phi = False
        if not finite_phi:
            raise RopeInterpError(f"phi must be a finite angle in radians, got {phi!r}.")
        if mode == "shift" and not isinstance(delta, int | np.integer):
            raise RopeInterpError(f"delta must be an integer number of positions, got {delta!r}.")
        self.backend = self.spec.backend
        self.selection = selection
        self._dim_masks: dict = {}  # (id(mask), device) → (mask, [head, d_head] dims)
        # Where hook_rot_q/k never fire (GPT-NeoX, GPT-J, boot_native bridges), the rotations
        # nope/phase/shift are applied before RoPE instead; that needs the rotated input hooked.
        self._before_rope = mode in ("nope", "phase", "shift") and (
            not self.backend.rotated_hooks_fire()
        )
        unhooked = [
            layer for layer in self.layers if not self.backend.pre_rotation_is_hooked(layer)
        ]
        if self._before_rope and unhooked:
            raise RopeInterpError(
                f"mode={mode!r} edits the rotated q/k, but this TransformerBridge "
                f"({self.backend.architecture()}) never fires hook_rot_q/hook_rot_k, and at "
                f"layers {unhooked} no hook carries what RoPE rotates, so the intervention "
                "cannot be applied before RoPE either. Use zero or mean."
            )
        self.mode: Mode = mode  # type: ignore[assignment]  # checked against MODES above
        self.side: Side = side  # type: ignore[assignment]
        self.phi = float(phi)
        self.delta = int(delta)
        self.sides = ("q", "k") if side == "both" else (side,)
        self._means = self._mean_table(stats) if mode == "mean" else None
        self._kv_masks = (
            {layer: self._kv_mask(layer) for layer in self.layers} if ("k" in self.sides) else {}
        )
        self._stash: dict[tuple[str, int], Tensor] = {}
        self._contexts: list = []

    # ---- description ----------------------------------------------------------------------
    @property
    def layers(self) -> list[int]:
        return self.selection.layers()

    @property
    def first_layer(self) -> int:
        """The earliest layer this intervention touches (n_layers when it touches none)."""
        layers = self.layers
        return layers[0] if layers else self.spec.n_layers

    def params(self) -> dict[str, Any]:
        """JSON-friendly description (for experiment tables)."""
        out: dict[str, Any] = {
            "mode": self.mode,
            "side": self.side,
            "selection": self.selection.label,
            "n_selected": self.selection.n_selected,
        }
        if self.mode == "phase":
            out["phi"] = self.phi
        if self.mode == "shift":
            out["delta"] = self.delta
        return out

    def __repr__(self) -> str:
        extra = {"phase": f", phi={self.phi:g}", "shift": f", delta={self.delta}"}.get(
            self.mode, ""
        )
        return (
            f"Intervention({self.mode}, side={self.side}, {self.selection.label}, "
            f"{self.selection.n_selected} (layer, head, pair) triples{extra})"
        )

    # ---- masks and tables -----------------------------------------------------------------
    def _kv_mask(self, layer: int) -> Tensor:
        """`[kv_head, pair]` mask; raises if a KV group is only partly selected."""
        spec = self.spec
        grouped = self.selection.mask[layer].view(spec.n_kv_heads, spec.group_size, spec.n_pairs)
        anyof, allof = grouped.any(1), grouped.all(1)
        if not torch.equal(anyof, allof):
            group, pair = (anyof & ~allof).nonzero()[0].tolist()
            heads = list(range(group * spec.group_size, (group + 1) * spec.group_size))
            raise RopeInterpError(
                f"Layer {layer}, pair {pair}: the selection names some but not all of query "
                f"heads {heads}, which share KV head {group}. A k-side intervention acts on the "
                "shared key, so it would hit all of them: select the whole group, or use side='q'."
            )
        return anyof

    def _dim_mask(self, mask: Tensor, device) -> Tensor:
        """`[head, pair]` → `[head, d_head]` mask of the dims of the selected pairs."""
        dims = self.spec.dims.to(mask.device)
        out = torch.zeros(mask.shape[0], self.spec.d_head, dtype=torch.bool, device=mask.device)
        out[:, dims[:, 0]] = mask
        out[:, dims[:, 1]] = mask
        return out.to(device)

    def _mean_tables(self) -> dict[tuple[str, int], Tensor]:
        """The corpus means of mode='mean' (built in the constructor)."""
        if self._means is None:
            raise RopeInterpError(f"mode={self.mode!r} has no corpus means.")
        return self._means

    def _mean_table(self, stats) -> dict[tuple[str, int], Tensor]:
        if stats is None:
            raise RopeInterpError(
                "mode='mean' needs the corpus means: pass stats=collect_pair_stats(model, ...)."
            )
        tables = {}
        for kind in self.sides:
            means = stats.mean_vectors(kind)
            for layer in self.layers:
                if layer not in stats.layers:
                    raise RopeInterpError(
                        f"The statistics cover layers {stats.layers}, not layer {layer}; collect "
                        "them for every layer you ablate."
                    )
                z = means[stats.layers.index(layer)]
                x_pass = torch.zeros(
                    *z.shape[:-1], self.spec.n_pass, dtype=torch.float64, device=z.device
                )
                tables[(kind, layer)] = from_pairs(z.to(torch.complex128), x_pass, self.spec)
        return tables

    # ---- hooks ----------------------------------------------------------------------------
    def hooks(self) -> list[Hook]:
        """`(name, fn)` pairs for `run_with_hooks(fwd_hooks=...)` or `model.hooks(...)`."""
        out: list[Hook] = []
        for layer in self.layers:
            for kind in self.sides:
                mask = self.selection.mask[layer] if kind == "q" else self._kv_masks[layer]
                if not mask.any():
                    continue
                if self.mode in ("zero", "mean") and self.backend.pre_rotation_is_hooked(layer):
                    out.append((hook_name(kind, layer), self._pre_hook(kind, layer, mask)))
                elif self._before_rope:
                    out.append((hook_name(kind, layer), self._before_rope_hook(layer, mask)))
                else:
                    if self.mode in ("nope", "shift"):
                        point = self.backend.read_point(kind, layer)
                        out.append((point.hook, self._stash_hook(kind, layer, point)))
                    out.append((hook_name("rot_" + kind, layer), self._rot_hook(kind, layer, mask)))
        return out

    def _dims_once(self, mask: Tensor) -> Callable[[torch.device], Tensor]:
        """`dims(device)`: `_dim_mask(mask, device)`, built once per intervention, mask and
        device (hooks are rebuilt for every batch; a mask copied to a GPU on every batch would
        wait for the GPU each time)."""
        cache = self._dim_masks

        def dims(device) -> Tensor:
            key = (id(mask), torch.device(device))
            if key not in cache:
                cache[key] = (mask, self._dim_mask(mask, device))
            return cache[key][1]

        return dims

    def _pre_hook(self, kind: str, layer: int, mask: Tensor) -> Callable:
        dims_on = self._dims_once(mask)

        def hook(x: Tensor, hook: HookPoint) -> Tensor:
            dims = dims_on(x.device)
            if self.mode == "zero":
                return x.masked_fill(dims, 0.0)
            means = self._mean_tables()
            return torch.where(dims, means[(kind, layer)].to(x.device, x.dtype), x)

        return hook

    def _before_rope_hook(self, layer: int, mask: Tensor) -> Callable:
        """nope/phase/shift as a rotation of each selected pair before RoPE, which RoPE's own
        rotation by phasor(p) then completes (rotations of one pair commute): phase φ → e^{iφ};
        NoPE → 1 / phasor(p); shift Δ → phasor(p + Δ) / phasor(p). The phasors are the model's
        own cos/sin (attention scaling included), so NoPE leaves each pair exactly unrotated."""
        dims_on = self._dims_once(mask)

        def hook(x: Tensor, hook: HookPoint) -> Tensor:
            dims = dims_on(x.device)
            z, x_pass = to_pairs(x.double(), self.spec)
            if self.mode == "phase":
                one = torch.ones((), dtype=torch.float64, device=x.device)
                rotor = torch.polar(one, one * self.phi)
            else:
                positions = torch.arange(x.shape[1], device=x.device)
                here = self.spec.phasors(layer, positions, torch.complex128).to(x.device)
                there = (
                    self.spec.phasors(layer, positions + self.delta, torch.complex128).to(x.device)
                    if self.mode == "shift"
                    else torch.ones_like(here)
                )
                rotor = (there / here)[None, :, None, :]
            new = from_pairs(z * rotor, x_pass, self.spec)
            return torch.where(dims, new.to(x.dtype), x)

        return hook

    def _stash_hook(self, kind: str, layer: int, point: ReadPoint) -> Callable:
        def hook(x: Tensor, hook: HookPoint) -> None:
            self._stash[(kind, layer)] = point.read(x)

        return hook

    def _rot_hook(self, kind: str, layer: int, mask: Tensor) -> Callable:
        dims_on = self._dims_once(mask)

        def hook(x: Tensor, hook: HookPoint) -> Tensor:
            dims = dims_on(x.device)
            if self.mode == "zero":  # the rotation of a zero pair is zero
                return x.masked_fill(dims, 0.0)
            if self.mode == "mean":
                positions = torch.arange(x.shape[1], device=x.device)
                mean = self._mean_tables()[(kind, layer)].to(x.device)  # [head, d_head] float64
                z, x_pass = to_pairs(mean, self.spec)
                phasor = self.spec.phasors(layer, positions, torch.complex128).to(x.device)
                x_pass = x_pass[None].expand(len(positions), *x_pass.shape)
                rotated = from_pairs(z[None] * phasor[:, None, :], x_pass, self.spec)
                return torch.where(dims, rotated[None].to(x.dtype), x)
            if self.mode == "phase":
                z, x_pass = to_pairs(x, self.spec)
                one = torch.ones((), dtype=torch.float64, device=x.device)
                rotor = torch.polar(one, one * self.phi)  # float64: exact for any model dtype
                new = from_pairs(z * rotor.to(z.dtype), x_pass, self.spec)
                return torch.where(dims, new.to(x.dtype), x)
            pre = self._stash.pop((kind, layer), None)
            if pre is None or pre.shape != x.shape:
                raise RopeInterpError(
                    f"mode={self.mode!r} found no matching pre-rotation {kind} at layer {layer} "
                    "(generation with a KV cache is not supported; run full sequences)."
                )
            if self.mode == "nope":
                return torch.where(dims, pre.to(x.dtype), x)
            positions = torch.arange(x.shape[1], device=x.device) + self.delta
            z, x_pass = to_pairs(pre, self.spec)
            phasor = self.spec.phasors(layer, positions, z.dtype)
            new = from_pairs(z * phasor[None, :, None, :], x_pass, self.spec)
            return torch.where(dims, new.to(x.dtype), x)

        return hook

    # ---- context manager ------------------------------------------------------------------
    def __enter__(self) -> Intervention:
        context = self.model.hooks(fwd_hooks=self.hooks())
        context.__enter__()
        self._contexts.append(context)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        context = self._contexts.pop()
        self._stash.clear()
        context.__exit__(exc_type, exc, tb)


# ---- convenience constructors -----------------------------------------------------------
def p_rope(
    model: HostModel,
    p: float,
    reverse: bool = False,
    layers: int | Iterable[int] | None = None,
    heads: int | Iterable[int] | None = None,
    spec: RotarySpec | None = None,
) -> Intervention:
    """Inference-time p-RoPE: keep the highest fraction `p` of frequencies (floor(p·n_pairs)
    pairs, with their original θ_i) and make the rest NoPE on q and k. `reverse=True` keeps the
    *lowest* fraction p instead (drops the highest 1 − p)."""
    spec = spec_for(model, spec)
    if not 0.0 <= p <= 1.0:
        raise RopeInterpError(f"p must lie in [0, 1], got {p}.")
    kept = band_size(spec.n_pairs, None, p)
    dropped = spec.n_pairs - kept
    end: Literal["high", "low"] = "high" if reverse else "low"
    selection = select_band(spec, end, k=dropped, layers=layers, heads=heads)
    label = f"{'reversed ' if reverse else ''}p-RoPE p={p:g} ({kept} of {spec.n_pairs} rotate)"
    return Intervention(model, PairSelection(selection.mask, label), "nope", "both", spec=spec)


def position_shift(
    model: HostModel,
    delta: int,
    layers: int | Iterable[int] | None = None,
    side: str = "both",
    spec: RotarySpec | None = None,
) -> Intervention:
    """Rotate every pair as if every position were p + Δ (side="both" leaves scores unchanged)."""
    spec = spec_for(model, spec)
    selection = select_pairs(spec, range(spec.n_pairs), layers=layers)
    label = f"all pairs, positions + {delta}"
    return Intervention(
        model, PairSelection(selection.mask, label), "shift", side, delta=delta, spec=spec
    )


def hook_layers(hooks: Sequence[Hook], n_layers: int) -> int:
    """The earliest block a hook list touches (0 if any hook is outside the blocks)."""
    first = n_layers
    for name, _ in hooks:
        match = re.match(r"blocks\.(\d+)\.", name) if isinstance(name, str) else None
        if match is None:
            return 0
        first = min(first, int(match.group(1)))
    return first


def attached_hooks(model: HostModel) -> list[str]:
    """Names of hook points that still carry forward or backward hooks (for leak checks)."""
    return [
        name
        for name, point in model.hook_dict.items()
        if getattr(point, "fwd_hooks", None) or getattr(point, "bwd_hooks", None)
    ]
