"""Write docs/models.md: the supported-models matrix on both TransformerLens hosts, from the same
measurements as tests/test_families.py (rope_interp.testing.family_check) plus the refusals.

    python benchmarks/models_matrix.py [--out docs/models.md]   # in .venv, with .venv-tl3 built
    python benchmarks/models_matrix.py --host-json OUT.json     # this host's column only

Each row: a tiny random Hugging Face model of the family (2 layers, d_model 64) saved to a
temporary directory, loaded with `load_model(path)` (a HookedTransformer under TransformerLens
3.x, a TransformerBridge under 4.x) and compared with the HF model itself; or the refusal
rope-interp raises, quoted. The default mode runs `--host-json` in .venv (TL 4) and .venv-tl3
(TL 3.9) and writes one table with a status column per host.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rope_interp.core.spec import RotarySpec  # noqa: E402
from rope_interp.errors import RopeInterpError  # noqa: E402
from rope_interp.testing import HOST, YARN_SCALING, make_model  # noqa: E402
from rope_interp.testing.family_check import (  # noqa: E402
    LONGROPE_SCALING,
    build_checkpoint,
    edited_checkpoint,
    families,
    measure,
)
from rope_interp.utils.atomic import atomic_write_text  # noqa: E402

warnings.filterwarnings("ignore")
HOSTS = {
    "hooked": (".venv-tl3", "HookedTransformer, TL 3.9"),
    "bridge": (".venv", "bridge, TL 4.3"),
}
# Checkpoint variants measured on both hosts: (row name, family to edit, config changes).
VARIANTS = [
    (
        "Qwen2.5 / Llama with YaRN scaling",
        "Qwen2 / Qwen2.5",
        dict(rope_parameters=dict(YARN_SCALING)),
    ),
    (
        "Phi-3 with LongRoPE (128k)",
        "Phi-3",
        dict(original_max_position_embeddings=64, rope_parameters=dict(LONGROPE_SCALING)),
    ),
]
# HookedTransformer options with no TransformerLens 4 counterpart: (row name, config overrides).
HOOKED_OPTIONS = [
    ("GPT-OSS (learned attention sinks)", dict(use_attention_sinks=True)),
    ("Qwen-1 (log-n attention)", dict(use_logn_attn=True)),
    ("Qwen-1 (dynamic NTK)", dict(use_dynamic_ntk_rope=True)),
]


def _status(path: Path, tokens: torch.Tensor) -> tuple[str, dict]:
    """("exact: ..." or "refused: ...", the measured numbers)."""
    try:
        m = measure(path, tokens)
    except RopeInterpError as error:
        return "refused: " + str(error).replace("|", "/"), {}
    scores = (
        "no host scores¹"
        if m["decomposition"] != m["decomposition"]
        else (f"{m['decomposition']:.0e}")
    )
    worst = max(v for k, v in m.items() if k in ("logits", "theta", "hf_logits"))
    status = (
        f"exact: logits {m['logits']:.0e}, θ {m['theta']:.0e}, scores {scores} "
        f"(HF attention {m['hf_logits']:.0e})"
    )
    bad = worst > 1e-4 or (scores[0].isdigit() and m["decomposition"] > 1e-5)
    return ("NOT EXACT: " if bad else "") + status, m


def host_column(out: Path) -> None:
    """Measure every family and variant on the installed host; write them as JSON."""
    tokens = torch.randint(3, 128, (2, 12), generator=torch.Generator().manual_seed(0))
    column: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dirs = {}
        for i, family in enumerate(families()):
            dirs[family.name] = build_checkpoint(family, root / f"family{i}")
            status, m = _status(dirs[family.name], tokens)
            column[family.name] = dict(status=status, measured=m)
            print(HOST, family.name, status, flush=True)
        for name, base, changes in VARIANTS:
            path = edited_checkpoint(dirs[base], root / f"{len(column)}-variant", **changes)
            status, m = _status(path, tokens)
            column[name] = dict(status=status, measured=m)
            print(HOST, name, status, flush=True)
    for name, overrides in HOOKED_OPTIONS:
        if HOST == "hooked":
            try:
                RotarySpec.from_model(make_model("half_full", **overrides))
                status = "NOT REFUSED"
            except RopeInterpError as error:
                status = "refused: " + str(error).replace("|", "/")
        else:
            status = "no such option in TransformerLens 4"
        column[name] = dict(status=status, measured={})
    atomic_write_text(out, json.dumps(column, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs/models.md")
    parser.add_argument("--host-json", type=Path, help="measure this host only, into this file")
    args = parser.parse_args()
    if args.host_json:
        host_column(args.host_json)
        return
    columns = {}
    with tempfile.TemporaryDirectory() as tmp:
        for host, (venv, _) in HOSTS.items():
            python = ROOT / venv / "bin" / "python"
            if not python.is_file():
                sys.exit(f"{python} is missing: build both environments (bash scripts/test.sh).")
            out = Path(tmp) / f"{host}.json"
            subprocess.run([str(python), __file__, "--host-json", str(out)], check=True)
            columns[host] = json.loads(out.read_text())
    atomic_write_text(args.out, _markdown(columns))
    print(f"wrote {args.out}")


def _markdown(columns: dict[str, dict]) -> str:
    header = ["family", "layout", "partial rotary", "GQA (q/kv heads)", "frequency scaling"]
    header += ["QK-norm", "soft-cap", "local / global"]
    header += [f"status ({label})" for _, label in HOSTS.values()]
    rows = []
    for family in families():
        m = columns["hooked"][family.name]["measured"] or columns["bridge"][family.name]["measured"]
        partial = family.partial_rotary
        if m and m["rotary_dim"] < m["d_head"]:
            partial = f"{m['rotary_dim']} of {m['d_head']} dims"
        gqa = "no"
        if m and m["n_kv_heads"] < m["n_heads"]:
            gqa = f"yes ({m['n_heads']}/{m['n_kv_heads']})"
        rows.append(
            [family.name, m.get("layout", family.layout), partial, gqa, family.scaling]
            + [family.qk_norm, family.soft_cap, family.local_global]
            + [columns[host][family.name]["status"] for host in HOSTS]
        )
    lines = [
        "# Supported models",
        "",
        "Generated by `python benchmarks/models_matrix.py` (in `.venv`, with `.venv-tl3` built) "
        "from the measurements of `tests/test_families.py` (`testing.family_check`), on "
        "both TransformerLens hosts: each family is a tiny random Hugging Face model (2 layers, "
        "d_model 64) built from its transformers config class, saved to disk, loaded with "
        "`load_model(path)` (a `HookedTransformer` under TransformerLens 3.9, a "
        "`TransformerBridge` under 4.3) and compared with the Hugging Face model itself. "
        "Numbers are maxima: logits = max |logit difference| (float32); θ = max relative "
        "difference of the spec's θ_i from the HF rotary module's `inv_freq` after scaling; "
        "scores = max |softcap(Σ pairs + pass-through) − the host's own scores| / max |score|; "
        "HF attention = the same decomposition against the HF model's own float64 attention "
        "(log-probabilities centred per query).",
        "",
        'QK-norm "(derived)": TransformerLens 3.9 fires `hook_q`/`hook_k` before the norm; '
        "rope-interp applies the layer's own norm modules to them. On bridges it reads "
        "`hook_q_normed`/`hook_k_normed`, checked against the fired rotated hooks. Either way "
        "every consumer sees the vectors that enter the rotation. Soft-capped models: what is "
        "decomposed is the pre-cap logit; the score is `c·tanh(logit / c)`.",
        "",
        "¹ TransformerLens 4.3's GPT-J bridge fires the softmaxed pattern at both "
        "`hook_attn_scores` and `hook_pattern`, so no host hook carries the scores; the "
        "decomposition is checked against the HF model's attention alone.",
        "",
        "LongRoPE (and dynamic NTK) switch frequencies with the sequence length: on bridges "
        "rope-interp's tables stop at the original context "
        "(`original_max_position_embeddings`), so longer sequences are refused, not decomposed "
        "with the wrong frequencies.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    lines += [
        "",
        "## Variants: exact or refused, with the reason rope-interp gives",
        "",
        "| model | " + " | ".join(label for _, label in HOSTS.values()) + " |",
        "|---|---|---|",
    ]
    for name in [n for n, _, _ in VARIANTS] + [n for n, _ in HOOKED_OPTIONS]:
        lines.append(f"| {name} | " + " | ".join(columns[h][name]["status"] for h in HOSTS) + " |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
