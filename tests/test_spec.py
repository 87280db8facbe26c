import dataclasses
import math

import pytest
import torch

from rope_interp.core.pairs import rotate
from rope_interp.core.spec import RotarySpec, first_partial_pair, spec_for
from rope_interp.errors import RopeInterpError
from tests.helpers import HookedTransformer, HookedTransformerConfig, hooked_only, make_model


def _single_layer(d_head: int, base: float, n_ctx: int = 64, **extra) -> HookedTransformer:
    cfg = HookedTransformerConfig(
        n_layers=1,
        d_model=d_head,
        n_heads=1,
        d_head=d_head,
        n_ctx=n_ctx,
        d_vocab=8,
        act_fn="silu",
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=d_head,
        rotary_base=base,
        **extra,
    )
    return HookedTransformer(cfg)


def test_thetas_follow_the_base_formula(tiny_model):
    spec = RotarySpec.from_model(tiny_model)
    base = tiny_model.cfg.rotary_base
    i = torch.arange(spec.n_pairs, dtype=torch.float64)
    plain = base ** (-2 * i / spec.rotary_dim)
    if tiny_model.cfg.use_NTK_by_parts_rope:
        # NTK-by-parts keeps the fastest pairs and slows the slowest by the factor.
        assert spec.thetas[0, 0] == pytest.approx(plain[0].item(), rel=1e-6)
        assert spec.thetas[0, -1] == pytest.approx(plain[-1].item() / 8, rel=1e-5)
        assert not torch.allclose(spec.thetas[0], plain, rtol=1e-3)
    else:
        torch.testing.assert_close(spec.thetas[0], plain, rtol=1e-6, atol=0)
    assert spec.thetas.shape == (tiny_model.cfg.n_layers, spec.n_pairs)
    assert (spec.thetas[:, :-1] > spec.thetas[:, 1:]).all(), "pair 0 must be the highest"


@hooked_only
def test_gemma_reference_rotation_of_ones():
    """Gemma library test values: head_dim 4, base 100, half-split, position 1."""
    spec = RotarySpec.from_model(_single_layer(4, 100))
    assert spec.layout == "half"
    ones = torch.ones(1, 2, 1, 4)
    rotated = rotate(ones, spec, layer=0)
    torch.testing.assert_close(rotated[0, 0, 0], torch.ones(4))
    expected = torch.tensor([-0.30116868, 0.89517075, 1.3817732, 1.0948375])
    torch.testing.assert_close(rotated[0, 1, 0], expected, rtol=1e-6, atol=1e-7)


@hooked_only
@pytest.mark.parametrize(
    "rotary_dim, base, context, first_full, first_half",
    [
        (256, 1e4, 8192, 100, 110),  # Gemma 7B
        (128, 1e4, 4096, 46, 50),  # Llama 2 7B
        (128, 5e5, 8192, 35, 39),  # Llama 3 8B
        (128, 1e4, 8192, 50, 55),  # Mistral 7B v0.1
        (32, 1e4, 2048, 11, 12),  # Phi-1 / Pythia-1.4B
    ],
)
def test_partial_cycle_pairs_match_published_table(
    rotary_dim, base, context, first_full, first_half
):
    assert first_partial_pair(rotary_dim, base, context) == first_full
    spec = RotarySpec.from_model(_single_layer(rotary_dim, base, n_ctx=16))
    assert spec.first_partial_pair(context) == first_full
    assert spec.first_partial_pair(context, turn=math.pi) == first_half
    assert int(spec.partial_cycle_mask(context).sum()) == rotary_dim // 2 - first_full


@hooked_only
def test_llama2_critical_dimension_is_92():
    spec = RotarySpec.from_model(_single_layer(128, 1e4, n_ctx=16))
    assert spec.critical_dimension(4096) == 92
    cycles = spec.cycles(4096)[0]
    assert cycles[45] >= 1 > cycles[46]


def test_layouts_and_pass_through_dims():
    spec = RotarySpec.from_model(make_model("interleaved_partial"))
    assert spec.layout == "interleaved"
    assert (spec.rotary_dim, spec.n_pass, spec.n_pairs) == (8, 8, 4)
    assert spec.dims.tolist() == [[0, 1], [2, 3], [4, 5], [6, 7]]
    half = RotarySpec.from_model(make_model("half_full"))
    assert half.dims.tolist() == [[0, 4], [1, 5], [2, 6], [3, 7]]


def test_gqa_map():
    spec = RotarySpec.from_model(make_model("gqa"))
    assert (spec.n_heads, spec.n_kv_heads, spec.group_size) == (4, 2, 2)
    assert [spec.kv_head(h) for h in range(4)] == [0, 0, 1, 1]


def test_local_attention_layers_use_their_own_base():
    model = make_model(
        "half_full",
        use_local_attn=True,
        attn_types=["global", "local"],
        window_size=8,
        rotary_base_local=10.0,
    )
    spec = RotarySpec.from_model(model)
    assert spec.bases == (100.0, 10.0)
    assert spec.thetas[1, 1].item() == pytest.approx(10 ** (-2 / 8), rel=1e-6)
    assert spec.thetas[0, 1].item() == pytest.approx(100 ** (-2 / 8), rel=1e-6)


def test_linear_scaling_slows_every_pair():
    plain = RotarySpec.from_model(make_model("half_full"))
    scaled = RotarySpec.from_model(make_model("half_full", rotary_scaling_factor=4.0))
    torch.testing.assert_close(scaled.thetas, plain.thetas / 4, rtol=1e-6, atol=0)


def test_yarn_frequencies_and_attention_factor():
    model = make_model(
        "ntk_by_parts",
        use_NTK_by_parts_rope=False,
        use_yarn_rope=True,
        yarn_factor=4.0,
        yarn_attention_factor=1.2,
        yarn_original_max_position_embeddings=32,
    )
    spec = RotarySpec.from_model(model)
    plain = 10000 ** (-2 * torch.arange(8, dtype=torch.float64) / 16)
    assert spec.thetas[0, 0].item() == pytest.approx(1.0, rel=1e-6)  # extrapolated
    assert spec.thetas[0, -1].item() == pytest.approx(plain[-1].item() / 4, rel=1e-5)
    phasor = spec.phasors(0, torch.arange(5))
    torch.testing.assert_close(phasor.abs(), torch.full((5, 8), 1.2), rtol=1e-6, atol=0)


def test_config_that_disagrees_with_buffers_is_an_error():
    model = make_model("half_full")
    model.cfg.rotary_base = 50
    with pytest.raises(RopeInterpError, match=r"buffer θ=.*config formula θ="):
        RotarySpec.from_model(model)
    # Without the cross-check the buffers are trusted.
    assert RotarySpec.from_model(model, check_config=False).thetas[0, 1] == pytest.approx(
        100 ** (-2 / 8), rel=1e-6
    )


@hooked_only
def test_model_without_rotary_is_a_clear_error():
    cfg = HookedTransformerConfig(
        n_layers=1, d_model=8, n_heads=1, d_head=8, n_ctx=8, d_vocab=5, act_fn="relu"
    )
    with pytest.raises(RopeInterpError, match="no rotary attention"):
        RotarySpec.from_model(HookedTransformer(cfg))


def test_out_of_range_indices_name_the_valid_range():
    spec = RotarySpec.from_model(make_model("gqa"))
    with pytest.raises(RopeInterpError, match=r"layer 2 .* 0\.\.1"):
        spec.check_layer(2)
    with pytest.raises(RopeInterpError, match=r"head -1"):
        spec.kv_head(-1)
    with pytest.raises(RopeInterpError, match=r"pair 4 .* 0\.\.3"):
        spec.check_pair(4)
    with pytest.raises(RopeInterpError, match="context"):
        spec.phasors(0, torch.tensor([0, 64]))


def test_tables_cover_the_whole_context_beyond_the_initial_cache():
    model = make_model("half_full", n_ctx=4096)
    spec = RotarySpec.from_model(model)
    assert spec.cos[0].shape == (4096, 4)
    angle = spec.phasors(0, torch.tensor([3000]), torch.complex128).angle()
    expected = torch.remainder(3000 * spec.thetas[0] + math.pi, 2 * math.pi) - math.pi
    torch.testing.assert_close(angle[0], expected, atol=2e-3, rtol=0)


def test_wavelengths_and_replace():
    spec = RotarySpec.from_model(make_model("half_full"))
    torch.testing.assert_close(
        spec.wavelengths() * spec.thetas, torch.full_like(spec.thetas, 2 * math.pi)
    )
    swapped = dataclasses.replace(spec, layout="interleaved")
    assert swapped.dims.tolist() != spec.dims.tolist()


def test_resolve_layers_validates_sorts_and_deduplicates():
    spec = RotarySpec.from_model(make_model("gqa"))  # 2 layers
    assert spec.resolve_layers(None) == [0, 1]
    assert spec.resolve_layers(1) == [1]
    assert spec.resolve_layers([1, 0, 1]) == [0, 1]
    with pytest.raises(RopeInterpError, match=r"layer 2 .* 0\.\.1"):
        spec.resolve_layers([0, 2])
    with pytest.raises(RopeInterpError, match="layers is empty"):
        spec.resolve_layers([])


def test_a_spec_read_from_a_model_is_bound_to_it():
    model, twin = make_model("gqa"), make_model("gqa")
    spec = RotarySpec.from_model(model)
    assert spec.backend.model is model
    assert spec_for(model, spec) is spec  # passed down: used as it is, not read again
    assert spec_for(model).backend.model is model  # none passed: read from the model
    # The twin has the same geometry, but its q/k are read through its own modules.
    with pytest.raises(RopeInterpError, match="not read from this model"):
        spec_for(twin, spec)
    by_hand = dataclasses.replace(spec, bound=None)
    with pytest.raises(RopeInterpError, match="built by hand"):
        _ = by_hand.backend
    with pytest.raises(RopeInterpError, match="not read from this model"):
        spec_for(model, by_hand)
