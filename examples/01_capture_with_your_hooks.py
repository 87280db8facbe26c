"""rope-interp's capture hooks next to your own hooks, in one `run_with_hooks` call.

`RotaryCapture.hooks()` is a plain TransformerLens hook list: add it to yours. Here "yours" is
a hook that records the attention scores (`hook_attn_scores`) and one that measures the
entropy of each head's attention pattern. The captured pre-rotation q/k are then split into
rotary pairs, and the exact per-pair contributions are checked against the model's own scores:
per pair + pass-through = `hook_attn_scores`. Finally: the model's logits are the same with and
without the hooks (capturing changes nothing).

    python examples/01_capture_with_your_hooks.py [--layer 3] [--out out/examples]
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import plotly.graph_objects as go  # noqa: E402
import torch  # noqa: E402
from _common import load, parser, save  # noqa: E402
from plotly.subplots import make_subplots  # noqa: E402
from transformer_lens.utilities import get_act_name  # noqa: E402

from rope_interp.core.capturing import RotaryCapture  # noqa: E402
from rope_interp.core.pairs import score_contributions  # noqa: E402
from rope_interp.core.spec import RotarySpec  # noqa: E402


def run(model, tokens: torch.Tensor, layer: int = 0) -> dict:
    """Capture q/k at `layer` alongside two user hooks; return the figures and the checks."""
    spec = RotarySpec.from_model(model)
    layer = spec.check_layer(layer)

    # --- your own hooks: ordinary TransformerLens (name, fn) pairs ---------------------------
    mine: dict[str, torch.Tensor] = {}

    def keep_scores(scores, hook):  # [batch, head, query, key], before masking
        mine["scores"] = scores.detach().clone()

    def pattern_entropy(pattern, hook):  # [batch, head, query, key]
        p = pattern.detach().clamp(min=1e-12)
        mine["entropy"] = -(p * p.log()).sum(-1).mean((0, 2))  # per head

    your_hooks = [
        (get_act_name("attn_scores", layer), keep_scores),
        (get_act_name("pattern", layer), pattern_entropy),
    ]

    # --- rope-interp's hooks, added to the same list ------------------------------------------
    cap = RotaryCapture(model, layers=[layer], kinds=("q", "k", "rot_q", "rot_k"))
    with torch.no_grad():
        logits_hooked = model.run_with_hooks(tokens, fwd_hooks=your_hooks + cap.hooks())
        logits_plain = model(tokens)
    cap.check_fired()  # raises HooksDidNotFire if a capture hook never ran

    q, k = cap.captured.q(layer), cap.captured.k(layer)
    per_pair, pass_through = score_contributions(q, k, spec, layer, dtype=torch.float64)
    total = per_pair.sum(-1) + pass_through
    n = tokens.shape[1]
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    error = (total - mine["scores"].double())[..., causal].abs().max().item()
    scale = mine["scores"][..., causal].abs().max().item()

    # Each pair's share of the score magnitude, per head (causal entries only).
    magnitude = per_pair[..., causal, :].abs().mean((0, 2))  # [head, pair]
    share = (magnitude / magnitude.sum(-1, keepdim=True)).float().numpy()

    heatmap = go.Figure(
        go.Heatmap(
            z=share,
            x=list(range(spec.n_pairs)),
            y=[f"head {h}" for h in range(spec.n_heads)],
            colorscale="Viridis",
            colorbar={"title": "share"},
        )
    )
    heatmap.update_layout(
        title=f"Layer {layer}: each rotary pair's share of |attention score| (pair 0 = highest θ)",
        xaxis_title="rotary pair",
        height=420,
    )

    # One query row decomposed: the last query of the first sequence, head 0.
    row = per_pair[0, 0, -1].float()  # [key, pair]
    decomposition = make_subplots(rows=1, cols=2, subplot_titles=("per-pair terms", "sum"))
    for pair in range(spec.n_pairs):
        decomposition.add_scatter(
            x=list(range(n)),
            y=row[:, pair].numpy(),
            mode="lines",
            name=f"pair {pair}",
            row=1,
            col=1,
            showlegend=pair < 8,
        )
    decomposition.add_scatter(
        x=list(range(n)),
        y=total[0, 0, -1].float().numpy(),
        name="pairs + pass-through",
        row=1,
        col=2,
    )
    decomposition.add_scatter(
        x=list(range(n)),
        y=mine["scores"][0, 0, -1].numpy(),
        name="hook_attn_scores",
        mode="markers",
        row=1,
        col=2,
    )
    decomposition.update_layout(
        title=f"Layer {layer}, head 0, last query: score vs key position, split by pair",
        height=420,
    )
    decomposition.update_xaxes(title_text="key position")

    return {
        "figures": {"hooks_pair_share": heatmap, "hooks_score_decomposition": decomposition},
        "max_abs_error": error,
        "score_scale": scale,
        "logits_unchanged": bool(torch.equal(logits_hooked, logits_plain)),
        "entropy_per_head": mine["entropy"].tolist(),
    }


def main(argv: Sequence[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0], tokens=512)
    p.add_argument("--layer", type=int, default=0, help="layer to capture")
    args = p.parse_args(argv)
    model, corpus = load(args)
    result = run(model, corpus.tokens[:2], layer=args.layer)
    print(
        f"per-pair terms + pass-through reproduce hook_attn_scores to {result['max_abs_error']:.2e}"
        f" (scores up to {result['score_scale']:.1f}); logits unchanged by the hooks: "
        f"{result['logits_unchanged']}"
    )
    entropy = ", ".join(f"{e:.2f}" for e in result["entropy_per_head"])
    print(f"your hook measured attention entropy per head (nats): {entropy}")
    save(result["figures"], args.out)
    return result


if __name__ == "__main__":
    main()
