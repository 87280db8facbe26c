"""TransformerLens 4.x `TransformerBridge` backend: hook names and q/k read points.

The geometry comes from the wrapped model (`bridge_geometry`), which hooks fire from a probe
forward pass (`bridge_support`); this module puts them together as a `Backend`.

Capture: the bridge names `hook_q`/`hook_k`/`hook_rot_q`/`hook_rot_k` on every rotary
architecture, but in TL 4.3.0 the rotated ones fire only where the bridge reimplements
attention (Llama, Qwen2, Mistral, Gemma, ...), not on GPT-NeoX or GPT-J. A one-off probe
forward pass (4 tokens) finds out which hooks fire; where the rotated ones do not,
`BridgeRotaryCapture` computes `rot_q`/`rot_k` from the pre-rotation ones with the model's
cos/sin (`pairs.rotate`, positions 0..n-1: no left padding, no KV cache). Where the rotated
hooks do fire, the probe also checks that they equal `rotate(q)`, so a wrong spec cannot pass.

    spec = RotarySpec.from_model(bridge)           # asks backend_for(bridge).geometry()
    captured = capture(bridge, tokens, layers=[0]) # read points from BridgeBackend.read_point

Nothing here imports HookedTransformer, so the module loads under TransformerLens 4.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from torch import Tensor

from rope_interp.core.backends._geometry import pair_dims, rotate_by_tables
from rope_interp.core.backends.base import Backend, ReadPoint, Transform, hook_name
from rope_interp.core.backends.bridge_geometry import architecture, bridge_geometry
from rope_interp.core.backends.bridge_support import (
    BridgeSupport,
    bridge_support,
    probe_hook_name,
    to_tl_layout,
)
from rope_interp.errors import UnsupportedBridge

__all__ = ["BridgeBackend"]


class BridgeBackend(Backend):
    """Where rope-interp reads a bridge's q/k. Where `hook_rot_q`/`hook_rot_k` do not fire
    (GPT-NeoX, GPT-J in TL 4.3.0), `rot_q`/`rot_k` are read at `hook_q`/`hook_k` and rotated
    with the model's own cos/sin at positions 0..n-1 (such read points are read-only: hooks
    that edit rotated q/k need an architecture whose rotated hooks fire)."""

    name = "bridge"

    def __init__(self, model: Any):
        super().__init__(model)
        self._geometry: dict[str, Any] | None = None

    def architecture(self) -> str:
        return architecture(self.model)

    def geometry(self, check_config: bool = True) -> dict[str, Any]:
        """The fields of the bridge's `RotarySpec` (see `bridge_geometry`)."""
        if not check_config and self._geometry is not None:
            return self._geometry
        geometry = bridge_geometry(self.model, check_config=check_config)
        self._geometry = geometry
        return geometry

    def support(self) -> BridgeSupport:
        return bridge_support(self.model, SimpleNamespace(**self.geometry(check_config=False)))

    def read_point(self, kind: str, layer: int) -> ReadPoint:
        support = self.support()
        source = kind[4:] if kind.startswith("rot_") else kind
        if not support.fires(source, [layer]):
            raise UnsupportedBridge(
                f"{support.architecture}: the bridge's pre-rotation hooks (hook_q, hook_k) do "
                "not fire on this architecture in this TransformerLens version, so rope-interp "
                "cannot capture q/k here."
            )
        if kind != source and support.fires(kind, [layer]):
            return ReadPoint(hook_name(kind, layer))
        hook, to_tl = self._pre_rotation_point(source, layer)
        if kind == source:
            return ReadPoint(hook, to_tl)
        geometry = self.geometry(check_config=False)
        dims = pair_dims(geometry["rotary_dim"], geometry["layout"])
        cos, sin = geometry["cos"][layer], geometry["sin"][layer]

        def rotate(tensor: Tensor) -> Tensor:
            pre = tensor if to_tl is None else to_tl(tensor)
            return rotate_by_tables(pre, cos, sin, dims)

        return ReadPoint(hook, rotate)

    def _pre_rotation_point(self, kind: str, layer: int) -> tuple[str, Transform | None]:
        """(hook carrying what RoPE rotates, map from its tensor to [batch, pos, head, d])."""
        support = self.support()
        if not support.normed:
            return hook_name(kind, layer), None
        layout, d_head = support.normed_layout, self.geometry(check_config=False)["d_head"]

        def to_tl(tensor: Tensor) -> Tensor:
            return to_tl_layout(tensor, layout, d_head)

        return probe_hook_name(kind + "_normed", layer), None if layout == "tl" else to_tl

    def pre_rotation_is_hooked(self, layer: int) -> bool:
        """False on QK-norm bridges: `hook_q` carries q before the norm."""
        return not self.support().normed

    def rotated_hooks_fire(self, layers=None) -> bool:
        return self.support().rotated_hooks

    def soft_cap(self) -> float | None:
        cap = getattr(getattr(self.model, "cfg", None), "attn_scores_soft_cap", None)
        return float(cap) if cap is not None and cap > 0 else None
