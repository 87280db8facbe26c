"""Every rotary family, as a tiny random Hugging Face checkpoint saved to disk and loaded with
`load_model(path)`, is exact against the Hugging Face model itself: logits, θ_i against the HF
rotary module's inv_freq, and Σ pairs + pass-through against the attention logits (TL's
hook_attn_scores after the soft-cap, and the HF model's own float64 attention). The numbers are
the ones benchmarks/models_matrix.py writes into docs/models.md."""

from __future__ import annotations

import math

import pytest
import torch

from rope_interp.errors import RopeInterpError
from rope_interp.loading.checkpoints import hooked_config
from rope_interp.loading.models import load_model
from rope_interp.testing import YARN_SCALING
from rope_interp.testing.family_check import (
    LONGROPE_SCALING,
    build_checkpoint,
    edited_checkpoint,
    families,
    measure,
)
from tests.helpers import HOST, bridge_only, hooked_only

NAMES = [family.name for family in families()]


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """Every family saved once per session: name -> directory."""
    root = tmp_path_factory.mktemp("families")
    return {
        family.name: build_checkpoint(family, root / f"family{i}")
        for i, family in enumerate(families())
    }


@pytest.fixture(scope="session")
def tokens():
    return torch.randint(3, 128, (2, 12), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", NAMES)
def test_family_is_exact_against_its_hugging_face_model(name, checkpoints, tokens):
    measured = measure(checkpoints[name], tokens)
    assert measured["logits"] < 1e-4
    assert measured["theta"] < 1e-6
    # NaN only where the host fires no pre-softmax scores (a TransformerLens 4.3 bridge bug on
    # GPT-J); the decomposition is then checked against the HF model alone.
    host_has_scores = not (HOST == "bridge" and name == "GPT-J")
    assert (
        measured["decomposition"] < 1e-5
        if host_has_scores
        else math.isnan(measured["decomposition"])
    )
    assert measured["hf_logits"] < 1e-5


def test_partial_rotary_and_layouts_come_from_the_checkpoint(checkpoints):
    from rope_interp.core.spec import RotarySpec

    neox = load_model(str(checkpoints["Pythia / GPT-NeoX"]), device="cpu")
    gptj = load_model(str(checkpoints["GPT-J"]), device="cpu")
    assert (RotarySpec.from_model(neox).rotary_dim, RotarySpec.from_model(neox).layout) == (
        4,
        "half",
    )
    assert (RotarySpec.from_model(gptj).rotary_dim, RotarySpec.from_model(gptj).layout) == (
        8,
        "interleaved",
    )


def test_n_ctx_overrides_the_context(checkpoints):
    model = load_model(str(checkpoints["Llama"]), device="cpu", n_ctx=512)
    assert model.cfg.n_ctx == 512


@pytest.mark.parametrize(
    "family, changes, message",
    [
        (
            "Qwen2 / Qwen2.5",
            dict(rope_parameters=dict(YARN_SCALING)),
            "RoPE scaling 'yarn' is not reproduced",
        ),
        ("Llama", dict(architectures=["GPT2LMHeadModel"]), "architecture GPT2LMHeadModel is not"),
    ],
)
def test_what_transformer_lens_cannot_convert_is_refused_by_name(
    family, changes, message, checkpoints, tmp_path
):
    directory = edited_checkpoint(checkpoints[family], tmp_path / "edited", **changes)
    with pytest.raises(RopeInterpError, match=message):
        hooked_config(directory)


def test_an_unknown_name_is_one_line_saying_what_is_accepted():
    with pytest.raises(RopeInterpError, match="accepts 'smollm2-135m'") as error:
        load_model("my-org/my-finetune", device="cpu")
    assert "\n" not in str(error.value)


def test_the_summary_command_runs_on_a_checkpoint_directory(checkpoints, capsys):
    from rope_interp.cli import main

    argv = ["summary", "--model", str(checkpoints["Qwen3"]), "--tokens", "64", "--seq-len", "32"]
    assert main([*argv, "--device", "cpu", "--n-ctx", "128"]) == 0
    assert "RoPE: 2 layers, 4 heads (2 KV)" in capsys.readouterr().out


def test_the_command_line_gives_one_line_and_exit_2_for_an_unknown_name(capsys):
    from rope_interp.cli import main

    assert main(["summary", "--model", "my-org/my-finetune", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "local Hugging Face checkpoint directory" in err


def test_the_built_in_tokenizer_adds_no_start_token(real_model):
    assert real_model.tokenizer("Hello world")["input_ids"] == [19556, 905]
    assert real_model.to_tokens("Hello world").tolist() == [[19556, 905]]
    assert real_model.to_tokens("Hello world", prepend_bos=True)[0, 0].item() == 1


@pytest.mark.parametrize("kwargs", [dict(n_ctx=0), dict(n_devices=0), dict(n_ctx=4096)])
def test_bad_or_inapplicable_loading_options_are_refused_before_any_work(kwargs):
    with pytest.raises(RopeInterpError, match="n_ctx|n_devices"):
        load_model("smollm2-135m", device="cpu", **kwargs)


@bridge_only
def test_longrope_is_exact_within_its_original_context_and_refused_beyond(checkpoints, tmp_path):
    """A bridge runs the HF rotary module, so LongRoPE's short factors are exact; past the
    original context the model switches to its long factors, which the tables do not hold."""
    from rope_interp.core.capturing import capture
    from rope_interp.core.pairs import score_contributions
    from rope_interp.core.spec import RotarySpec

    path = edited_checkpoint(
        checkpoints["Phi-3"], tmp_path / "longrope", original_max_position_embeddings=64,
        rope_parameters=dict(LONGROPE_SCALING),
    )  # fmt: skip
    short = torch.randint(3, 128, (1, 40), generator=torch.Generator().manual_seed(0))
    measured = measure(path, short)
    assert measured["theta"] < 1e-6 and measured["decomposition"] < 1e-5
    model = load_model(str(path), device="cpu")
    spec = RotarySpec.from_model(model)
    assert spec.cos[0].shape[0] == 64
    long = torch.randint(3, 128, (1, 80), generator=torch.Generator().manual_seed(0))
    got = capture(model, long, kinds=("q", "k"))
    with pytest.raises(RopeInterpError, match=r"Positions must lie in \[0, 64\)"):
        score_contributions(got.q(0), got.k(0), spec, 0)


@hooked_only
def test_a_conversion_that_misreads_the_rope_parameters_is_refused(checkpoints, monkeypatch):
    """Loading compares the built HookedTransformer's θ with the checkpoint's own rotary
    module: a conversion that read the wrong base (here: patched in) is refused by layer."""
    from rope_interp.loading import checkpoints as checkpoints_module

    converted = checkpoints_module.hooked_config

    def wrong_base(path):
        return {**converted(path), "rotary_base": 12345.0}

    monkeypatch.setattr(checkpoints_module, "hooked_config", wrong_base)
    with pytest.raises(RopeInterpError, match="layer 0.*checkpoint's own rotary module"):
        load_model(str(checkpoints["Llama"]), device="cpu")
