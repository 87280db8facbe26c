# ruff: noqa: E501  (node ids are long; one per line reads best)
"""Tests that cannot run on a `TransformerBridge` (TransformerLens 4), each with its reason.

The suite runs on whichever TransformerLens is installed; under 4.x the tiny fixture models are
bridges of the same geometry (`rope_interp.testing`). The tests listed here are skipped there
with the reason shown, and run under 3.x (.venv-tl3). Each entry is a node id prefix: a test
name, or a test name with the start of its parameter id.
"""

from __future__ import annotations

_HOOKED_BUILD = (
    "builds, plants weights in or edits the config of a HookedTransformer by hand (config "
    "overrides, the qk_norm/olmo2_norm/clip_qkv/soft_cap variants, W_Q edits, a fake GGUF "
    "conversion): HookedTransformer only"
)
_GPTJ_NO_BIAS = (
    "plants a constant q/k pair through the attention biases, which the GPT-J bridge (the "
    "interleaved fixture) does not have"
)
_GPTJ_SCORES = (
    "compares with hook_attn_scores, which on a GPT-J bridge carries the attention pattern, "
    "not the pre-softmax scores (TransformerLens 4.3)"
)

BRIDGE_GAPS: dict[str, str] = {
    # construction of HookedTransformers by hand
    "tests/test_analysis_outliers.py::test_planted_offset_pair_is_flagged": _HOOKED_BUILD,
    "tests/test_analysis_outliers.py::test_offset_angle_maps_query_heads": _HOOKED_BUILD,
    "tests/test_analysis_outliers.py::test_reference_rule_uses_one_global": _HOOKED_BUILD,
    "tests/test_analysis_massive.py::test_planted_massive_dimension_maps_to_its_pair[interleaved": _GPTJ_NO_BIAS,
    "tests/test_analysis_positional.py::test_planted_previous_token_head_is_found_and_explained[interleaved": _GPTJ_NO_BIAS,
    "tests/test_analysis_sinks.py::test_planted_sink_is_found_and_made_by_its_pair[interleaved": _GPTJ_NO_BIAS,
    "tests/test_analysis_spectral.py::test_planted_constant_pair_peaks_at_its_frequency[interleaved": _GPTJ_NO_BIAS,
    "tests/test_analysis_usage.py::test_usage_of_a_planted_single_pair_head[interleaved": _GPTJ_NO_BIAS,
    "tests/test_backends.py::test_captured_q_k_are_what_enters_the_rotation": _HOOKED_BUILD,
    "tests/test_backends.py::test_every_ablation_mode_acts_on_the_post_norm_vectors": _HOOKED_BUILD,
    "tests/test_backends.py::test_pairs_plus_pass_through_give_the_hosts_attention_scores": _HOOKED_BUILD,
    "tests/test_backends.py::test_what_cannot_be_decomposed_exactly_is_refused": _HOOKED_BUILD,
    "tests/test_backends.py::test_one_backend_per_model": _HOOKED_BUILD,
    "tests/test_experiment.py::test_cached_unembedding_forward_is_bit_identical": (
        "the cached-unembedding forward uses HookedTransformer's start_at_layer; bridges run "
        "the whole model"
    ),
    "tests/test_parity.py::test_low_precision_spec_keeps_the_config_check": _HOOKED_BUILD,
    "tests/test_parity.py::test_nothing_is_created_on_torch_s_default_device": (
        "TransformerLens 4.3 cannot boot a bridge under torch.set_default_device('meta')"
    ),
    "tests/test_scale.py::test_load_refuses_statistics_of_another_geometry": _HOOKED_BUILD,
    "tests/test_spec.py::test_config_that_disagrees_with_buffers_is_an_error": _HOOKED_BUILD,
    "tests/test_spec.py::test_linear_scaling_slows_every_pair": _HOOKED_BUILD,
    "tests/test_spec.py::test_local_attention_layers_use_their_own_base": _HOOKED_BUILD,
    "tests/test_spec.py::test_tables_cover_the_whole_context_beyond_the_initial_cache": _HOOKED_BUILD,
    "tests/test_spec.py::test_yarn_frequencies_and_attention_factor": _HOOKED_BUILD,
    "tests/test_spec.py::test_thetas_follow_the_base_formula": (
        "reads the base from the host config, which TransformerLens 4.3 bridges get wrong; "
        "tests/bridge checks θ against the HF model's inv_freq instead"
    ),
    # GPT-J bridges (the interleaved, partial-rotary fixture)
    "tests/test_capturing.py::test_hook_list_composes_with_user_hooks[interleaved": (
        "adds a user hook at hook_rot_q, which a GPT-J bridge never fires (TransformerLens 4.3)"
    ),
    "tests/test_parity.py::test_decomposition_is_exact_against_low_precision_hook_attn_scores[interleaved": _GPTJ_SCORES,
    "tests/test_ablation.py::test_nope_on_every_pair_equals_unrotated_attention[interleaved": _GPTJ_SCORES,
    "tests/test_ablation.py::test_zero_matches_float64_reference[interleaved": _GPTJ_SCORES,
    "tests/test_pairs.py::test_pair_scores_sum_to_transformer_lens_scores[interleaved": _GPTJ_SCORES,
    "tests/test_examples.py::test_capture_example_on_every_layout[interleaved": _GPTJ_SCORES,
    # checkpoint families through load_model
    "tests/test_families.py::test_what_transformer_lens_cannot_convert_is_refused_by_name": (
        "names what TransformerLens 3.x cannot convert; a bridge runs the HF model itself"
    ),
}


def bridge_gap(nodeid: str) -> str | None:
    """Why the test `nodeid` cannot run on a bridge, or None."""
    return next((why for prefix, why in BRIDGE_GAPS.items() if nodeid.startswith(prefix)), None)
