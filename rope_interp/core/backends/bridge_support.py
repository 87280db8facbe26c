"""Which of a `TransformerBridge`'s q/k hooks fire, found by one probe forward pass.

In TL 4.3.0 the bridge names `hook_q`/`hook_k`/`hook_rot_q`/`hook_rot_k` on every rotary
architecture, but the rotated ones fire only where the bridge reimplements attention (Llama,
Qwen2, Mistral, Gemma, ...), not on GPT-NeoX or GPT-J. A one-off probe forward pass (4 tokens)
finds out which hooks fire; where the rotated ones do fire, it also checks that they equal the
rotation of the pre-rotation ones, so a wrong spec cannot pass.

On QK-norm architectures (Qwen3, OLMo-2, Gemma 3) `hook_q`/`hook_k` fire before the norm, so
what RoPE rotates is `hook_q_normed`/`hook_k_normed`, which TL 4.3 fires in the transformers
layout: `[batch, head, pos, d_head]` for a per-head norm (Qwen3), `[batch, pos, head · d_head]`
for a whole-projection norm (OLMo-2). The probe finds the layout by shape (its length differs
from both head counts) and accepts the normed hooks only if their rotation equals the fired
rotated hooks.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor

from rope_interp.core.backends._geometry import pair_dims, rotate_by_tables
from rope_interp.core.backends.base import KINDS, hook_name
from rope_interp.core.backends.bridge_geometry import architecture, bridge_geometry, is_bridge
from rope_interp.errors import RopeInterpError, UnsupportedBridge

__all__ = ["BridgeSupport", "bridge_support", "rotated_hooks_fire"]


@dataclass(frozen=True)
class BridgeSupport:
    """What a probe forward pass found, per kind: the layers whose hook fired."""

    architecture: str
    fired: dict[str, tuple[int, ...]]
    n_layers: int
    # QK-norm: the pre-rotation q/k are read at hook_q_normed/hook_k_normed, whose tensors
    # are laid out as `normed_layout` says (see `to_tl_layout`).
    normed: bool = False
    normed_layout: str = "tl"

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
        (probe_hook_name(kind, layer), make(kind, layer))
        for layer in range(spec.n_layers)
        for kind in (*KINDS, *NORMED)
        if probe_hook_name(kind, layer) in names
    ]
    vocab = int(getattr(bridge.cfg, "d_vocab", 0) or 2)
    # A length unlike either head count, so that [batch, pos, head] and [batch, head, pos]
    # tensors cannot be mistaken for each other.
    length = next(n for n in range(5, 64) if n not in (spec.n_heads, spec.n_kv_heads))
    device = getattr(bridge.cfg, "device", None) or "cpu"
    tokens = (torch.arange(1, length + 1) % vocab)[None].to(device)
    with torch.no_grad(), _no_other_hooks(bridge):
        bridge.run_with_hooks(tokens, fwd_hooks=hooks, return_type=None)
    arch = architecture(bridge)
    normed = all(("q_normed", layer) in fired for layer in range(spec.n_layers))
    layout = normed_layout(fired[("q_normed", 0)], length) if normed else "tl"
    for (kind, layer), rotated in fired.items():
        if kind not in ("rot_q", "rot_k"):
            continue
        source = (kind[4:] + "_normed") if normed else kind[4:]
        if (source, layer) not in fired:
            continue
        pre = to_tl_layout(fired[(source, layer)], layout, spec.d_head)
        dims = pair_dims(spec.rotary_dim, spec.layout)
        ours = rotate_by_tables(pre.float(), spec.cos[layer], spec.sin[layer], dims)
        err = (ours - rotated.float()).abs().max().item() if ours.shape == rotated.shape else 1e9
        # The host rotates in the model's dtype: in bf16 its cos/sin and products round to
        # 2^-8; a wrong layout or table differs by O(|q|), far above either tolerance.
        precision = max(1e-4, 16 * torch.finfo(rotated.dtype).eps)
        tol = precision * max(1.0, pre.float().abs().max().item())
        if err > tol:
            normed_name = probe_hook_name(kind[4:] + "_normed", layer)
            if normed_name in names and not normed:
                raise UnsupportedBridge(
                    f"{arch}: this architecture normalises q/k between "
                    f"{hook_name(kind[4:], layer)} and RoPE (QK-norm: {normed_name}), but "
                    f"{normed_name} did not fire on every layer, so rope-interp cannot read "
                    "what gets rotated."
                )
            raise RopeInterpError(
                f"{arch}: the bridge's {hook_name(kind, layer)} differs from rope-interp's "
                f"rotation of {probe_hook_name(source, layer)} (max |error| {err:.2e}); the "
                "spec does not describe this model's rotary embedding."
            )
    by_kind = {kind: tuple(sorted(layer for k, layer in fired if k == kind)) for kind in KINDS}
    support = BridgeSupport(
        architecture=arch,
        fired=by_kind,
        n_layers=spec.n_layers,
        normed=normed,
        normed_layout=layout,
    )
    _SUPPORT[bridge] = support
    return support


@contextlib.contextmanager
def _no_other_hooks(bridge: Any) -> Iterator[None]:
    """Detach every forward hook already on the bridge for the probe pass, and put them back:
    the probe often runs from inside a caller's hooked pass (an intervention built within a
    batch loop), whose hooks must not see the probe's tokens."""
    saved = []
    for module in bridge.modules():
        for table in (module._forward_hooks, module._forward_pre_hooks):
            if table:
                saved.append((table, dict(table)))
                table.clear()
    try:
        yield
    finally:
        for table, entries in saved:
            table.clear()
            table.update(entries)


NORMED = ("q_normed", "k_normed")


def probe_hook_name(kind: str, layer: int) -> str:
    """The hook name of a kind, the QK-norm outputs ("q_normed", "k_normed") included."""
    if kind in NORMED:
        return f"blocks.{layer}.attn.hook_{kind}"
    return hook_name(kind, layer)


def normed_layout(normed: Tensor, length: int) -> str:
    """How a fired hook_q_normed is laid out: "tl" [batch, pos, head, d_head], "heads_first"
    [batch, head, pos, d_head] (transformers), or "flat" [batch, pos, head · d_head]. The
    probe's `length` differs from both head counts, so the position axis is the one of that
    length."""
    if normed.dim() == 3 and normed.shape[1] == length:
        return "flat"
    if normed.dim() == 4 and normed.shape[1] == length:
        return "tl"
    if normed.dim() == 4 and normed.shape[2] == length:
        return "heads_first"
    raise UnsupportedBridge(
        f"hook_q_normed carries a tensor of shape {tuple(normed.shape)} whose position axis "
        f"(length {length}) rope-interp cannot place."
    )


def to_tl_layout(tensor: Tensor, layout: str, d_head: int) -> Tensor:
    """A normed q/k in `layout` (see `normed_layout`) as [batch, pos, head, d_head]."""
    if layout == "heads_first":
        return tensor.transpose(1, 2)
    if layout == "flat":
        return tensor.unflatten(-1, (-1, d_head))
    return tensor


def rotated_hooks_fire(model: Any) -> bool:
    """False only for a bridge whose `hook_rot_q`/`hook_rot_k` never fire (GPT-NeoX, GPT-J,
    `boot_native` in TL 4.3.0): hooks that edit rotated q/k there would silently do nothing."""
    return not is_bridge(model) or bridge_support(model).rotated_hooks
