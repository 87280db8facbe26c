"""Measure what rope-interp can do on TransformerLens 4 `TransformerBridge`s, per architecture.

    bash scripts/setup.sh
    .venv/bin/python benchmarks/bridge_compat.py [--no-real] [--json out.json]

Tiny random transformers models (tests/bridge/helpers.py) plus a TL-native bridge and, unless
--no-real, the built-in SmolLM2-135M wrapped with `boot_transformers`. For each:
  spec        `RotarySpec.from_model(bridge)`: layout, rotary_dim/d_head, base, and which of
              the bridge config's own rotary fields are wrong (rope-interp ignores them);
  q/k hooks   whether `hook_q`/`hook_k` fire; rot hooks: whether `hook_rot_q`/`hook_rot_k` fire;
  capture     max |captured rot_q, rot_k − the HF model's own rotated q/k| (recorded at its
              attention function, an untouched copy of the model); derived = computed by
              rope-interp from hook_q/hook_k because the rotated hooks do not fire;
  scores      max |Σ per-pair score_contributions + pass-through − hook_attn_scores| over the
              causal triangle (or, where hook_attn_scores carries the softmaxed pattern, the
              error after softmax, flagged);
  hook_q edit max |logits with pair 0 of head 0 zeroed at hook_q − logits of the HF copy with
              the same q_proj rows zeroed| (an exact, independent check that pre-rotation
              edits reach the model); rot edit: whether an edit at hook_rot_q changes the logits;
  ablation    which `rope_interp.interventions.ablation.Intervention` modes change the logits.
Prints a Markdown table (docs/bridge.md holds the last run).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rope_interp.core.backends.bridge_geometry import architecture  # noqa: E402
from rope_interp.core.backends.bridge_support import bridge_support  # noqa: E402
from rope_interp.core.capturing import capture, hook_name  # noqa: E402
from rope_interp.core.pairs import score_contributions  # noqa: E402
from rope_interp.core.spec import RotarySpec  # noqa: E402
from tests.bridge import helpers  # noqa: E402

warnings.filterwarnings("ignore")


def _fmt(err: float) -> str:
    return "0" if err == 0 else f"{err:.0e}"


def bridge_cfg_errors(bridge, spec: RotarySpec) -> list[str]:
    cfg = bridge.cfg
    wrong = []
    base = float(spec.bases[0])
    if (
        getattr(cfg, "rotary_base", None) is not None
        and abs(float(cfg.rotary_base) - base) > 1e-6 * base
    ):
        wrong.append(f"rotary_base {cfg.rotary_base:g} (uses {base:g})")
    if getattr(cfg, "rotary_dim", None) != spec.rotary_dim:
        wrong.append(f"rotary_dim {getattr(cfg, 'rotary_dim', None)} (uses {spec.rotary_dim})")
    adjacent = bool(getattr(cfg, "rotary_adjacent_pairs", False))
    if adjacent != (spec.layout == "interleaved"):
        wrong.append(f"rotary_adjacent_pairs {adjacent} (layout {spec.layout})")
    return wrong


def score_check(bridge, spec, tokens, captured) -> str:
    seen = {}

    def keep(x, hook):
        seen[hook.name] = x.detach().clone()

    names = ["blocks.0.attn.hook_attn_scores", "blocks.0.attn.hook_pattern"]
    names = [n for n in names if n in bridge.hook_dict]
    bridge.run_with_hooks(tokens, fwd_hooks=[(n, keep) for n in names], return_type=None)
    scores = seen.get("blocks.0.attn.hook_attn_scores")
    if scores is None:
        return "hook_attn_scores does not fire"
    parts, passthrough = score_contributions(captured.q(0), captured.k(0), spec, 0)
    total = parts.sum(-1) + passthrough
    n = tokens.shape[1]
    causal = torch.tril(torch.ones(n, n, dtype=torch.bool))
    err = (total - scores)[..., causal].abs().max().item()
    if err < 1e-4:
        return f"exact ({_fmt(err)})"
    pattern = torch.softmax(total.masked_fill(~causal, float("-inf")), dim=-1)
    err_pattern = (pattern - scores).abs().max().item()
    if err_pattern < 1e-5:
        return f"exact vs pattern ({_fmt(err_pattern)}); hook_attn_scores holds the pattern"
    return f"MISMATCH ({err:.1e})"


def _q_rows(reference, name: str, spec: RotarySpec, head: int, pair: int):
    """(weight, bias) rows of the reference model's layer-0 query projection for the pair."""
    dims = spec.dims[pair].tolist()
    layers = {
        "gpt_neox": lambda m: m.gpt_neox.layers[0].attention.query_key_value,
        "gptj": lambda m: m.transformer.h[0].attn.q_proj,
    }
    linear = layers.get(name, lambda m: m.model.layers[0].self_attn.q_proj)(reference)
    stride = 3 * spec.d_head if name == "gpt_neox" else spec.d_head  # NeoX: [head, (q k v), d]
    return linear, [head * stride + d for d in dims]


def edit_checks(bridge, reference, name, spec, tokens) -> tuple[str, str]:
    head, pair = 0, 0
    dims = spec.dims[pair].tolist()

    def zero_q(x, hook):
        x = x.clone()
        x[:, :, head, dims] = 0
        return x

    with torch.no_grad():
        base = bridge(tokens)
        edited = bridge.run_with_hooks(tokens, fwd_hooks=[(hook_name("q", 0), zero_q)])
        if reference is not None:
            surgery = copy.deepcopy(reference)
            linear, rows = _q_rows(surgery, name, spec, head, pair)
            linear.weight[rows] = 0
            if linear.bias is not None:
                linear.bias[rows] = 0
            expected = surgery(tokens).logits
            err = (edited - expected).abs().max().item()
            q_edit = f"exact ({_fmt(err)})" if err < 1e-4 else f"MISMATCH ({err:.1e})"
        else:
            changed = (edited - base).abs().max().item()
            q_edit = "changes logits" if changed > 0 else "NO EFFECT"
        if hook_name("rot_q", 0) in bridge.hook_dict:
            rot = bridge.run_with_hooks(tokens, fwd_hooks=[(hook_name("rot_q", 0), zero_q)])
            rot_edit = "yes" if (rot - base).abs().max().item() > 0 else "no (hook never fires)"
        else:
            rot_edit = "no hook"
    return q_edit, rot_edit


def ablation_check(bridge, spec, tokens) -> str:
    try:
        from rope_interp.interventions.ablation import Intervention
        from rope_interp.interventions.selection import select_pairs
    except Exception as exc:  # the module is young; report rather than crash
        return f"ablation import failed: {exc}"
    works, silent, failed = [], [], []
    with torch.no_grad():
        base = bridge(tokens)
        for mode, extra in (
            ("zero", {}),
            ("nope", {}),
            ("phase", {"phi": 1.0}),
            ("shift", {"delta": 3}),
        ):
            try:
                # Every query head: a k-side edit under GQA must cover whole KV groups.
                selection = select_pairs(spec, layers=0, heads=None, pairs=[0, 1])
                side = "q" if mode == "phase" else "both"
                with Intervention(bridge, selection, mode=mode, side=side, spec=spec, **extra):
                    out = bridge(tokens)
                (works if (out - base).abs().max().item() > 0 else silent).append(mode)
            except Exception as exc:
                failed.append(f"{mode}: {type(exc).__name__}")
    parts = []
    if works:
        parts.append("/".join(works))
    if silent:
        parts.append(f"no effect: {'/'.join(silent)}")
    if failed:
        parts.append(f"error: {'; '.join(failed)}")
    return ", ".join(parts)


def measure(name: str, bridge, reference, tokens) -> dict:
    row = {"architecture": name, "wrapped": architecture(bridge)}
    start = time.perf_counter()
    try:
        spec = RotarySpec.from_model(bridge)
    except Exception as exc:
        row["spec"] = f"ERROR {type(exc).__name__}: {exc}"
        return row
    row["spec"] = f"{spec.layout}, {spec.rotary_dim}/{spec.d_head} dims, base {spec.bases[0]:g}" + (
        f", {spec.n_kv_heads} KV heads" if spec.n_kv_heads != spec.n_heads else ""
    )
    row["bridge cfg wrong"] = "; ".join(bridge_cfg_errors(bridge, spec)) or "-"
    try:
        support = bridge_support(bridge, spec)
    except Exception as exc:
        row["q/k hooks fire"] = f"refused: {type(exc).__name__}: {exc}"
        return row
    row["q/k hooks fire"] = "yes" if support.pre_rotation_hooks else "NO"
    row["rot hooks fire"] = "yes" if support.rotated_hooks else "no"
    try:
        captured = capture(bridge, tokens, layers=list(range(spec.n_layers)))
    except Exception as exc:
        row["capture"] = f"ERROR {type(exc).__name__}: {exc}"
        return row
    how = "hooks" if support.rotated_hooks else "derived"
    if reference is not None:
        recorded = helpers.hf_reference(reference, tokens)
        err = max(
            max(
                (captured.rot_q(layer) - q).abs().max().item(),
                (captured.rot_k(layer) - k).abs().max().item(),
            )
            for layer, (q, k) in recorded.items()
        )
        row["capture vs HF"] = f"{how}, {_fmt(err)}"
    else:
        row["capture vs HF"] = f"{how}, no HF reference"
    row["score decomposition"] = score_check(bridge, spec, tokens, captured)
    row["hook_q edit = weight surgery"], row["rot_q edit"] = edit_checks(
        bridge, reference, name, spec, tokens
    )
    row["ablation modes"] = ablation_check(bridge, spec, tokens)
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-real", action="store_true", help="skip the built-in SmolLM2-135M")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    from importlib.metadata import version

    import transformer_lens  # noqa: F401

    print(
        f"TransformerLens {version('transformer-lens')}, transformers {version('transformers')}, "
        f"torch {torch.__version__}\n"
    )
    rows = []
    tokens = helpers.random_tokens(batch=2, pos=12)
    for name in [*helpers.HF_BUILDERS, *helpers.EXTRA_BUILDERS]:
        bridge, reference = helpers.make_bridge(name)
        rows.append(measure(name, bridge, reference, tokens))
    rows.append(measure("native (boot_native)", helpers.make_native_bridge(), None, tokens))
    if not args.no_real and helpers.smollm2_gguf() is not None:
        hf_model, tokenizer = helpers.load_smollm2_hf()
        reference = copy.deepcopy(hf_model)
        bridge = helpers.boot(hf_model, tokenizer)
        text_tokens = tokenizer(
            "The capital of France is Paris, and the capital of Italy is", return_tensors="pt"
        )["input_ids"]
        rows.append(measure("llama", bridge, reference, text_tokens))
        rows[-1]["architecture"] = "SmolLM2-135M (GGUF)"
    columns = [c for c in rows[0] if c not in ("wrapped",)]
    for row in rows:
        columns += [c for c in row if c not in columns and c != "wrapped"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
