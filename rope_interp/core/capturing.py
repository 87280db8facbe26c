"""Hook-point adapters: capture pre-rotation `q`/`k` and rotated `rot_q`/`rot_k` per layer.

Three ways in, mirroring TransformerLens:

    cap = RotaryCapture(model, layers=[0, 5])
    model.run_with_hooks(tokens, fwd_hooks=cap.hooks() + my_hooks)   # a hook list
    with RotaryCapture(model) as cap: model(tokens)                   # a context manager
    captured = from_cache(cache, layers=[0, 5])                       # an existing ActivationCache

Keys under grouped-query attention stay per KV head (`pairs.expand_kv_heads` maps them to query
heads). A requested hook that never fired raises `HooksDidNotFire` instead of returning nothing.

"q"/"k" are what enters the rotation: on QK-norm models (Qwen3, Gemma-3, OLMo-2) and models
that clip q/k, that is the model's norm/clamp applied to `hook_q`/`hook_k` (the model's backend,
`rope_interp.core.backends`, says where and how each kind is read; `from_cache` reads the same way).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from transformer_lens.hook_points import HookPoint

from rope_interp.core.backends import KINDS, backend_for, hook_name
from rope_interp.core.runner import Hook, run_batches
from rope_interp.core.spec import RotarySpec, spec_for
from rope_interp.errors import HooksDidNotFire, RopeInterpError
from rope_interp.host import HostModel

__all__ = ["KINDS", "Captured", "RotaryCapture", "capture", "from_cache", "hook_name"]


@dataclass
class Captured:
    """Captured tensors by `(kind, layer)`; kinds are "q", "k", "rot_q", "rot_k".

    Shapes: q/rot_q `[batch, pos, head, d_head]`; k/rot_k `[batch, pos, kv_head, d_head]`.
    """

    tensors: dict[tuple[str, int], Tensor] = field(default_factory=dict)

    def __getitem__(self, key: tuple[str, int]) -> Tensor:
        if key not in self.tensors:
            raise KeyError(f"{key} was not captured; captured: {sorted(self.tensors)}")
        return self.tensors[key]

    def layers(self) -> list[int]:
        return sorted({layer for _, layer in self.tensors})

    def q(self, layer: int) -> Tensor:
        return self[("q", layer)]

    def k(self, layer: int) -> Tensor:
        return self[("k", layer)]

    def rot_q(self, layer: int) -> Tensor:
        return self[("rot_q", layer)]

    def rot_k(self, layer: int) -> Tensor:
        return self[("rot_k", layer)]


class RotaryCapture:
    """Capture rotary inputs/outputs of attention for chosen layers.

    Args:
        model: a `HookedTransformer` with rotary attention.
        layers: layer indices (default all).
        kinds: which of "q", "k", "rot_q", "rot_k" to capture.
        on_capture: if given, called as `on_capture(kind, layer, tensor)` instead of storing
            (streaming use: nothing is kept).
        device: where stored tensors go (default: stay where they are).
        spec: the model's `RotarySpec`, bound once by the caller (default: read from `model`).

    Attributes:
        derived: kinds read at another hook and computed from it (a bridge whose rotated hooks
            do not fire: rot_q/rot_k are rotated from hook_q/hook_k at positions 0..n-1).
    """

    def __init__(
        self,
        model: HostModel,
        layers: int | Iterable[int] | None = None,
        kinds: Sequence[str] = KINDS,
        on_capture: Callable[[str, int, Tensor], None] | None = None,
        device: str | torch.device | None = None,
        *,
        spec: RotarySpec | None = None,
    ):
        self.model = model
        self.spec = spec_for(model, spec)
        self.layers = self.spec.resolve_layers(layers)
        for kind in kinds:
            hook_name(kind, 0)
        self.kinds = tuple(kinds)
        backend = self.spec.backend
        self._points = {
            (kind, layer): backend.read_point(kind, layer)
            for layer in self.layers
            for kind in self.kinds
        }
        self.derived = tuple(
            kind
            for kind in self.kinds
            if any(self._points[(kind, i)].hook != hook_name(kind, i) for i in self.layers)
        )
        self.on_capture = on_capture
        self.device = device
        self.captured = Captured()
        self._fired: set[tuple[str, int]] = set()
        self._context: Any = None

    def hooks(self) -> list[Hook]:
        """`(name, fn)` pairs for `run_with_hooks(fwd_hooks=...)` or `model.hooks(...)`."""
        return [
            (self._points[(kind, layer)].hook, self._make_hook(kind, layer))
            for layer in self.layers
            for kind in self.kinds
        ]

    def _make_hook(self, kind: str, layer: int):
        point = self._points[(kind, layer)]

        def hook(tensor: Tensor, hook: HookPoint) -> None:
            self._fired.add((kind, layer))
            tensor = point.read(tensor.detach())
            if self.on_capture is not None:
                self.on_capture(kind, layer, tensor.detach())
            else:
                stored = tensor.detach()
                self.captured.tensors[(kind, layer)] = (
                    stored.to(self.device) if self.device is not None else stored.clone()
                )

        return hook

    def reset(self) -> None:
        """Forget captured tensors and which hooks fired."""
        self.captured = Captured()
        self._fired.clear()

    def check_fired(self) -> None:
        """Raise `HooksDidNotFire` naming every requested hook that did not run."""
        missing = [
            hook_name(kind, layer)
            for layer in self.layers
            for kind in self.kinds
            if (kind, layer) not in self._fired
        ]
        if missing:
            raise HooksDidNotFire(
                f"{len(missing)} capture hook(s) never fired: {missing[:4]}"
                f"{' ...' if len(missing) > 4 else ''}. Did the forward pass stop early "
                "(stop_at_layer) or skip attention?"
            )

    def run(self, tokens: Tensor, **forward_kwargs) -> Captured:
        """One forward pass with the capture hooks; returns what was captured."""
        self.reset()
        run_batches(
            self.model,
            tokens,
            self.hooks(),
            progress=False,
            forward=lambda batch: self.model(batch, return_type=None, **forward_kwargs),
        )
        self.check_fired()
        return self.captured

    def __enter__(self) -> RotaryCapture:
        self.reset()
        self._context = self.model.hooks(fwd_hooks=self.hooks())
        self._context.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        context, self._context = self._context, None
        context.__exit__(exc_type, exc, tb)
        if exc_type is None:
            self.check_fired()


def capture(
    model: HostModel,
    tokens: Tensor,
    layers: int | Iterable[int] | None = None,
    kinds: Sequence[str] = KINDS,
    *,
    spec: RotarySpec | None = None,
    **forward_kwargs,
) -> Captured:
    """Run `model` on `tokens` once and return the chosen layers' q/k/rot_q/rot_k."""
    return RotaryCapture(model, layers, kinds, spec=spec).run(tokens, **forward_kwargs)


def from_cache(
    cache, layers: int | Iterable[int] | None = None, kinds: Sequence[str] = KINDS
) -> Captured:
    """Read q/k/rot_q/rot_k out of an existing `ActivationCache` (from `run_with_cache`)."""
    n_layers = cache.model.cfg.n_layers if getattr(cache, "model", None) else None
    if layers is None:
        if n_layers is None:
            raise RopeInterpError("Name the layers: this cache does not know its model.")
        layers = range(n_layers)
    elif isinstance(layers, int):
        layers = [layers]
    wanted = {(kind, layer): hook_name(kind, layer) for layer in layers for kind in kinds}
    missing = [name for name in wanted.values() if name not in cache]
    if missing:
        raise HooksDidNotFire(
            f"The cache lacks {len(missing)} hook(s): {missing[:4]}"
            f"{' ...' if len(missing) > 4 else ''}. Run run_with_cache with a names_filter that "
            "includes them (rope_interp.core.capturing.hook_name gives the names)."
        )
    model = getattr(cache, "model", None)
    if model is None:
        return Captured({key: cache[name] for key, name in wanted.items()})
    backend = backend_for(model)
    out = {}
    for kind, layer in wanted:
        point = backend.read_point(kind, layer)
        out[(kind, layer)] = point.read(cache[point.hook])
    return Captured(out)
