"""Which of a `TransformerBridge`'s q/k hooks fire, found by one probe forward pass.

In TL 4.3.0 the bridge names `hook_q`/`hook_k`/`hook_rot_q`/`hook_rot_k` on every rotary
architecture, but the rotated ones fire only where the bridge reimplements attention (Llama,
Qwen2, Mistral, Gemma, ...), not on GPT-NeoX or GPT-J. A one-off probe forward pass (4 tokens)
finds out which hooks fire; where the rotated ones do fire, it also checks that they equal the
rotation of the pre-rotation ones, so a wrong spec cannot pass.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor

from rope_interp.backends._geometry import pair_dims, rotate_by_tables
from rope_interp.backends.base import KINDS, hook_name
from rope_interp.backends.bridge_geometry import architecture, bridge_geometry, is_bridge
from rope_interp.errors import RopeInterpError, UnsupportedBridge

__all__ = ["BridgeSupport", "bridge_support", "rotated_hooks_fire"]


@dataclass(frozen=True)
class BridgeSupport:
    """What a probe forward pass found, per kind: the layers whose hook fired."""

    architecture: str
    fired: dict[str, tuple[int, ...]]
    n_layers: int

    def fires(self, kind: str, layers: Iterable[int] | None = None) -> bool:
        wanted = set(range(self.n_layers) if layers is None else layers)
        return wanted <= set(self.fired.get(kind, ()))

    @property
    def rotated_hooks(self) -> bool:
        return self.fires("rot_q") and self.fires("rot_k")

    @property
    def pre_rotation_hooks(self) -> bool:
        return self.fires("q") and self.fires("k")


_SUPPORT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def bridge_support(bridge: Any, spec: Any = None) -> BridgeSupport:
    """Run the bridge once on 4 tokens with hooks on every layer's q/k/rot_q/rot_k, record
    which fired, and check that fired rotated hooks equal the rotation of the pre-rotation
    ones under `spec` (a `RotarySpec`, or by default the bridge's own geometry; raises
    `RopeInterpError` if not). Cached per bridge."""
    cached = _SUPPORT.get(bridge)
    if cached is not None:
        return cached
    spec = spec or SimpleNamespace(**bridge_geometry(bridge, check_config=False))
    fired: dict[tuple[str, int], Tensor] = {}
    names = set(getattr(bridge, "hook_dict", {}))

    def make(kind: str, layer: int):
        def hook(tensor: Tensor, hook: Any) -> None:
            fired[(kind, layer)] = tensor.detach().clone()

        return hook

    hooks = [
        (hook_name(kind, layer), make(kind, layer))
        for layer in range(spec.n_layers)
        for kind in KINDS
        if hook_name(kind, layer) in names
    ]
    vocab = int(getattr(bridge.cfg, "d_vocab", 0) or 2)
    tokens = (torch.arange(1, 5) % vocab)[None].to(getattr(bridge.cfg, "device", None) or "cpu")
    with torch.no_grad():
        bridge.run_with_hooks(tokens, fwd_hooks=hooks, return_type=None)
    arch = architecture(bridge)
    for (kind, layer), rotated in fired.items():
        if kind not in ("rot_q", "rot_k") or (kind[4:], layer) not in fired:
            continue
        pre = fired[(kind[4:], layer)]
        dims = pair_dims(spec.rotary_dim, spec.layout)
        ours = rotate_by_tables(pre.float(), spec.cos[layer], spec.sin[layer], dims)
        err = (ours - rotated.float()).abs().max().item()
        # The host rotates in the model's dtype: in bf16 its cos/sin and products round to
        # 2^-8; a wrong layout or table differs by O(|q|), far above either tolerance.
        precision = max(1e-4, 16 * torch.finfo(rotated.dtype).eps)
        tol = precision * max(1.0, pre.float().abs().max().item())
        if err > tol:
            normed = f"blocks.{layer}.attn.hook_{kind[4:]}_normed"
            if normed in names:
                pre_name = hook_name(kind[4:], layer)
                raise UnsupportedBridge(
                    f"{arch}: this architecture normalises q/k between {pre_name} and RoPE "
                    f"(QK-norm: {normed}), so {pre_name} is not what gets rotated; QK-norm "
                    "models are not supported on bridges yet."
                )
            raise RopeInterpError(
                f"{arch}: the bridge's {hook_name(kind, layer)} differs from rope-interp's "
                f"rotation of {hook_name(kind[4:], layer)} (max |error| {err:.2e}); the "
                "spec does not describe this model's rotary embedding."
            )
    by_kind = {kind: tuple(sorted(layer for k, layer in fired if k == kind)) for kind in KINDS}
    support = BridgeSupport(architecture=arch, fired=by_kind, n_layers=spec.n_layers)
    _SUPPORT[bridge] = support
    return support


def rotated_hooks_fire(model: Any) -> bool:
    """False only for a bridge whose `hook_rot_q`/`hook_rot_k` never fire (GPT-NeoX, GPT-J,
    `boot_native` in TL 4.3.0): hooks that edit rotated q/k there would silently do nothing."""
    return not is_bridge(model) or bridge_support(model).rotated_hooks
