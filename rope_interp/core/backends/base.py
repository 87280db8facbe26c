"""What every backend answers: where a model's true pre-/post-rotation q and k can be read, how
to turn what a hook carries into them, whether edits at a hook act on them, and whether the
model can be decomposed exactly at all."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor
from transformer_lens.utilities import get_act_name

from rope_interp.errors import RopeInterpError

KINDS = ("q", "k", "rot_q", "rot_k")
Transform = Callable[[Tensor], Tensor]


def hook_name(kind: str, layer: int) -> str:
    """TransformerLens hook name for a kind ("q", "k", "rot_q", "rot_k") at a layer."""
    if kind not in KINDS:
        raise RopeInterpError(f"kind must be one of {KINDS}, got {kind!r}.")
    return get_act_name(kind, layer)


@dataclass(frozen=True)
class ReadPoint:
    """Where one kind of vector is read: the hook that fires, and the exact map from the hook's
    tensor to the vector (None: the hook carries it as is)."""

    hook: str
    transform: Transform | None = None

    def read(self, tensor: Tensor) -> Tensor:
        return tensor if self.transform is None else self.transform(tensor)


class Backend:
    """How one kind of model (HookedTransformer, TransformerBridge) exposes its rotary q/k."""

    name = "abstract"

    def __init__(self, model: Any):
        self.model = model

    def architecture(self) -> str:
        """A readable name of the model's architecture, for messages."""
        raise NotImplementedError

    def check_decomposable(self) -> None:
        """Raise `UnsupportedModel` (one line, with the reason) if the attention logits of this
        model are not exactly Σ pairs + pass-through (before any soft-cap)."""

    def read_point(self, kind: str, layer: int) -> ReadPoint:
        """Where the true `kind` vectors ("q", "k": what enters the rotation; "rot_q", "rot_k":
        what leaves it) of `layer` are read."""
        raise NotImplementedError

    def pre_rotation_is_hooked(self, layer: int) -> bool:
        """True when `hook_q`/`hook_k` carry exactly what enters the rotation (so edits there
        act on it); False when a QK-norm or clip sits between them and the rotation."""
        raise NotImplementedError

    def rotated_hooks_fire(self, layers=None) -> bool:
        """Whether edits at `hook_rot_q`/`hook_rot_k` reach the model."""
        raise NotImplementedError

    def soft_cap(self) -> float | None:
        """The tanh soft-cap c of the attention logits (score = c·tanh(logit/c)), or None."""
        return None
