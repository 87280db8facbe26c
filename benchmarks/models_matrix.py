"""Write docs/models.md: the supported-models matrix, from the same measurements as
tests/test_families.py (rope_interp.family_check) plus the refusals, run here.

    python benchmarks/models_matrix.py [--out docs/models.md]

Each exact row: a tiny random Hugging Face model of the family (2 layers, d_model 64) saved to a
temporary directory, loaded with `load_model(path)`, compared with the HF model itself. Each
refused row: the refusal rope-interp raises, quoted.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rope_interp.atomic import atomic_write_text  # noqa: E402
from rope_interp.checkpoints import hooked_config  # noqa: E402
from rope_interp.errors import RopeInterpError  # noqa: E402
from rope_interp.family_check import (  # noqa: E402
    build_checkpoint,
    edited_checkpoint,
    families,
    measure,
)
from rope_interp.spec import RotarySpec  # noqa: E402
from rope_interp.testing import make_model  # noqa: E402

warnings.filterwarnings("ignore")
BRIDGE = "not measured here (TransformerLens 3.9 env; see bridge.md)"


def _refusal(fn) -> str:
    try:
        fn()
    except RopeInterpError as error:
        return str(error)
    return "NOT REFUSED"


def _edited(directory: Path, root: Path, **changes) -> Path:
    return edited_checkpoint(directory, root / f"{directory.name}-edited", **changes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", default=str(Path(__file__).resolve().parents[1] / "docs/models.md")
    )
    args = parser.parse_args()
    tokens = torch.randint(3, 128, (2, 12), generator=torch.Generator().manual_seed(0))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dirs = {}
        for i, family in enumerate(families()):
            dirs[family.name] = build_checkpoint(family, root / f"family{i}")
            m = measure(dirs[family.name], tokens)
            worst = max(m["logits"], m["theta"], m["decomposition"], m["hf_logits"])
            status = (
                f"exact: logits {m['logits']:.0e}, θ {m['theta']:.0e}, "
                f"scores {m['decomposition']:.0e} (HF attention {m['hf_logits']:.0e})"
            )
            gqa = (
                f"yes ({m['n_heads']}/{m['n_kv_heads']})"
                if m["n_kv_heads"] < m["n_heads"]
                else "no"
            )
            partial = family.partial_rotary
            if m["rotary_dim"] < m["d_head"]:
                partial = f"{m['rotary_dim']} of {m['d_head']} dims"
            rows.append(
                [
                    family.name,
                    m["layout"],
                    partial,
                    gqa,
                    family.scaling,
                    family.qk_norm,
                    family.soft_cap,
                    family.local_global,
                    status,
                    f"{worst:.0e}",
                ]
            )
            print(family.name, status, flush=True)
        yarn = _refusal(
            lambda: hooked_config(
                _edited(
                    dirs["Qwen2 / Qwen2.5"],
                    root,
                    rope_parameters=dict(
                        rope_type="yarn",
                        factor=4.0,
                        rope_theta=10000.0,
                        original_max_position_embeddings=64,
                    ),
                )
            )
        )
        longrope = _refusal(
            lambda: hooked_config(
                _edited(
                    dirs["Phi-3"],
                    root,
                    rope_parameters=dict(
                        rope_type="longrope",
                        rope_theta=10000.0,
                        short_factor=[1.0] * 8,
                        long_factor=[2.0] * 8,
                        original_max_position_embeddings=64,
                    ),
                )
            )
        )
    refused = [
        ("Qwen2.5 / Llama with YaRN scaling", yarn),
        ("Phi-3 with LongRoPE (128k)", longrope),
        (
            "GPT-OSS (learned attention sinks)",
            _refusal(
                lambda: RotarySpec.from_model(make_model("half_full", use_attention_sinks=True))
            ),
        ),
        (
            "Qwen-1 (log-n attention)",
            _refusal(lambda: RotarySpec.from_model(make_model("half_full", use_logn_attn=True))),
        ),
        (
            "Qwen-1 (dynamic NTK)",
            _refusal(
                lambda: RotarySpec.from_model(make_model("half_full", use_dynamic_ntk_rope=True))
            ),
        ),
    ]
    header = [
        "family",
        "layout",
        "partial rotary",
        "GQA (q/kv heads)",
        "frequency scaling",
        "QK-norm",
        "soft-cap",
        "local / global",
        "status (HookedTransformer)",
        "worst",
    ]
    lines = [
        "# Supported models",
        "",
        "Generated by `python benchmarks/models_matrix.py` from the measurements of "
        "`tests/test_families.py` (`rope_interp.family_check`): each family is a tiny random "
        "Hugging Face model (2 layers, d_model 64) built from its transformers config class, "
        "saved to disk, loaded with `load_model(path)` and compared with the Hugging Face model "
        "itself. Numbers are maxima: logits = max |logit difference| (float32); θ = max "
        "relative difference of the spec's θ_i from the HF rotary module's `inv_freq` after "
        "scaling; scores = max |softcap(Σ pairs + pass-through) − hook_attn_scores| / max "
        "|score|; HF attention = the same decomposition against the HF model's own float64 "
        "attention (log-probabilities centred per query). `worst` is the largest of the four.",
        "",
        'QK-norm "(derived)": TransformerLens fires `hook_q`/`hook_k` before the norm; '
        "rope-interp applies the layer's own norm modules to them, so every consumer sees the "
        "vectors that enter the rotation. Soft-capped models: what is decomposed is the "
        "pre-cap logit; the score is `c·tanh(logit / c)`.",
        "",
        "TransformerBridge (TransformerLens 4): " + BRIDGE + ".",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    lines += [
        "",
        "## Refused, with the reason rope-interp gives",
        "",
        "| model | refusal |",
        "|---|---|",
    ]
    lines += [f"| {name} | {reason.replace('|', '/')} |" for name, reason in refused]
    lines.append("")
    atomic_write_text(Path(args.out), "\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
