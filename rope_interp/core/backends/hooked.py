"""TransformerLens 3.x `HookedTransformer`: rotary tables, hook names and the true
pre-rotation q/k.

TransformerLens fires `hook_q`/`hook_k` on the projections, before what it applies between them
and RoPE: a per-head RMS norm (`cfg.use_qk_norm`: Qwen3, Gemma-3), an RMS norm over the whole
projection (OLMo-2/OLMoE/OLMo-3) and a clamp (`cfg.clip_qkv`). On such models the vector that
gets rotated is read by applying the model's own norm modules and clamp to `hook_q`/`hook_k`'s
tensor, exactly as the attention layer does; `hook_rot_q`/`hook_rot_k` are what leaves the
rotation on every model.

Refused (`UnsupportedModel`), because Σ pairs + pass-through would not be the logit: learned
attention sinks (GPT-OSS), log-n query scaling after the rotation (Qwen-1 `use_logn_attn`),
tables rebuilt from the sequence length (`use_dynamic_ntk_rope`), non-rotary models.
"""

from __future__ import annotations

import einops
import torch
from torch import Tensor

from rope_interp.core.backends.base import Backend, ReadPoint, hook_name
from rope_interp.errors import RopeInterpError, UnsupportedModel

# Architectures whose q/k norm runs over the whole projection (before the head reshape).
_WHOLE_PROJECTION_NORM = ("OlmoeForCausalLM", "Olmo2ForCausalLM", "Olmo3ForCausalLM")


class HookedBackend(Backend):
    name = "hooked"

    def architecture(self) -> str:
        return str(getattr(self.model.cfg, "original_architecture", None) or "HookedTransformer")

    # ---- what can be decomposed ---------------------------------------------------------
    def check_decomposable(self) -> None:
        cfg, arch = self.model.cfg, self.architecture()
        kind = getattr(cfg, "positional_embedding_type", None)
        if kind != "rotary":
            raise UnsupportedModel(
                f"{arch} has no rotary attention (positional_embedding_type={kind!r}); "
                "rope-interp needs a model with rotary embeddings, e.g. Llama, Pythia, Gemma, "
                "Qwen or SmolLM2."
            )
        if getattr(cfg, "use_attention_sinks", False):
            raise UnsupportedModel(
                f"{arch}: learned attention sinks join the softmax next to the logits, so the "
                "attention is not a function of Σ pairs alone; rope-interp does not decompose it."
            )
        if getattr(cfg, "use_logn_attn", False):
            raise UnsupportedModel(
                f"{arch}: log-n query scaling (use_logn_attn) multiplies q after hook_rot_q "
                "past the training length, so the logits are not Σ pairs of the hooked vectors."
            )
        if getattr(cfg, "use_dynamic_ntk_rope", False):
            raise UnsupportedModel(
                f"{arch}: dynamic NTK RoPE rebuilds the cos/sin tables from the sequence length, "
                "so no single rotary geometry describes the model."
            )

    # ---- the rotary tables --------------------------------------------------------------
    def rotary_tables(self, layer: int) -> tuple[Tensor, Tensor]:
        """The layer's per-dim cos/sin `[n_ctx, rotary_dim]` for every position up to n_ctx
        (TransformerLens caches only the first rows and extends them lazily with the same
        function, which is called here)."""
        cfg = self.model.cfg
        attn = self.model.blocks[layer].attn
        cos, sin = attn.rotary_cos.detach(), attn.rotary_sin.detach()
        if cos.shape[0] < cfg.n_ctx:
            sin_full, cos_full = attn.calculate_sin_cos_rotary(
                int(cfg.rotary_dim), cfg.n_ctx, base=attn._rotary_base(), dtype=cos.dtype
            )
            cos_full, sin_full = cos_full.to(cos.device), sin_full.to(sin.device)
            if not (
                torch.equal(cos_full[: len(cos)], cos) and torch.equal(sin_full[: len(sin)], sin)
            ):
                raise RopeInterpError(
                    "The model's rotary_cos/rotary_sin buffers differ from what its own "
                    "calculate_sin_cos_rotary produces; were they edited in place?"
                )
            cos, sin = cos_full, sin_full
        return cos, sin

    # ---- reading q and k ----------------------------------------------------------------
    def pre_rotation_is_hooked(self, layer: int) -> bool:
        cfg = self.model.cfg
        return not (
            getattr(cfg, "use_qk_norm", False)
            or self.architecture() in _WHOLE_PROJECTION_NORM
            or getattr(cfg, "clip_qkv", None) is not None
        )

    def _pre_rotation(self, kind: str, layer: int, tensor: Tensor) -> Tensor:
        """What `AbstractAttention.forward` does between `hook_q`/`hook_k` and the rotation,
        with the layer's own modules (so the result is bit-identical to what gets rotated)."""
        if self.pre_rotation_is_hooked(layer):
            return tensor
        cfg = self.model.cfg
        attn = self.model.blocks[layer].attn
        norm = attn.q_norm if kind == "q" else attn.k_norm
        x = tensor
        if getattr(cfg, "use_qk_norm", False):
            x = attn._apply_qk_norm(x, norm)
        elif self.architecture() in _WHOLE_PROJECTION_NORM:
            x = einops.rearrange(
                norm(einops.rearrange(x, "b p h d -> b p (h d)")),
                "b p (h d) -> b p h d",
                h=x.shape[2],
            )
        if getattr(cfg, "clip_qkv", None) is not None:
            x = x.clamp(min=-cfg.clip_qkv, max=cfg.clip_qkv)
        return x

    def read_point(self, kind: str, layer: int) -> ReadPoint:
        if kind in ("q", "k") and not self.pre_rotation_is_hooked(layer):

            def transform(tensor: Tensor, kind: str = kind) -> Tensor:
                return self._pre_rotation(kind, layer, tensor)

            return ReadPoint(hook_name(kind, layer), transform)
        return ReadPoint(hook_name(kind, layer))

    def rotated_hooks_fire(self, layers=None) -> bool:
        return True

    def soft_cap(self) -> float | None:
        cap = getattr(self.model.cfg, "attn_scores_soft_cap", -1.0)
        return float(cap) if cap is not None and cap > 0 else None
