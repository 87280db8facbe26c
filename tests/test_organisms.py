"""The shipped model organisms: they load as `organism:NAME` on the installed host, their
geometry is the planted one, their task accuracy is what training recorded, and every report
verdict with a planted truth matches it (or misses it exactly as docs/findings.md explains)."""

import json
import math

import pytest
import torch

from rope_interp.core.spec import RotarySpec
from rope_interp.errors import RopeInterpError
from rope_interp.loading.models import check_model_name, load_model
from rope_interp.loading.organism_tasks import SEQ_LEN, task_batch
from rope_interp.loading.organisms import BASE, ORGANISMS, organism_corpus
from rope_interp.testing.organism_evaluation import (
    ablation_accuracy,
    accuracy_summary,
    task_accuracy,
)
from rope_interp.testing.organism_truth import TRUTH, compare_verdicts, organism_claims


@pytest.fixture(scope="module")
def organisms():
    return {name: load_model(f"organism:{name}", device="cpu") for name in ORGANISMS}


def test_unknown_organism_is_one_clear_line():
    with pytest.raises(RopeInterpError, match="Unknown organism 'nope'; choose from organism:"):
        check_model_name("organism:nope")
    with pytest.raises(RopeInterpError, match="Unknown organism"):
        load_model("organism:nope", device="cpu")


def test_geometry_is_the_planted_one(organisms):
    full = RotarySpec.from_model(organisms["content-rope"])
    prope = RotarySpec.from_model(organisms["content-prope"])
    # Full RoPE: 8 pairs at base 100, θ_i = 100^(−2i/16).
    expected = BASE ** (-torch.arange(8, dtype=torch.float64) / 8)
    assert (full.n_pairs, full.n_pass) == (8, 0)
    torch.testing.assert_close(full.thetas[0], expected, rtol=1e-6, atol=0)
    # p-RoPE: the same ladder truncated (not re-spaced), the two lowest pairs as NoPE dims.
    assert (prope.n_pairs, prope.n_pass, prope.layout) == (6, 4, "half")
    torch.testing.assert_close(prope.thetas[0], expected[:6], rtol=1e-6, atol=0)
    for name in ("positional", "content", "sink"):
        spec = RotarySpec.from_model(organisms[name])
        assert (spec.n_pairs, spec.n_pass, spec.layout) == (8, 0, "half")


@pytest.mark.parametrize("name", list(ORGANISMS))
def test_task_accuracy_is_the_recorded_one(organisms, name):
    """Held-out accuracy recomputed on the loaded model (either host) against training.json,
    which transformers measured on the model it trained."""
    record = json.loads((ORGANISMS[name].path / "training.json").read_text())
    tokens, scored = task_batch(ORGANISMS[name].task, 256, seed=10_000)
    accuracy = task_accuracy(organisms[name], ORGANISMS[name].task, tokens, scored)
    assert accuracy == pytest.approx(record["held_out_accuracy"], abs=2e-3)
    chance = {"induction": 1 / 40, "sink": 1 / 16, "bag": 0.5}[ORGANISMS[name].task]
    assert accuracy > 5 * chance or accuracy > 0.99


def test_corpus_file_holds_task_sequences(organisms):
    """corpus.txt (for `rope-interp report --corpus`) is 64 sequences of 64 task words."""
    lines = (ORGANISMS["sink"].path / "corpus.txt").read_text().splitlines()
    assert len(lines) == 64 and all(len(line.split()) == SEQ_LEN for line in lines)
    ids = torch.tensor(
        [organisms["sink"].tokenizer.convert_tokens_to_ids(w) for w in lines[0].split()]
    )
    # The sink task: b = (a + key) mod 16 after the key word at position 0.
    key, a, b = ids[0] - 3, ids[1:-1:2] - 3, ids[2::2] - 3
    assert torch.equal(b, (a + key) % 16)


def test_removing_the_low_band_breaks_the_content_organism_only_with_full_rope(organisms):
    """The planted content match lives in the lowest pairs under full RoPE and in the NoPE dims
    under p-RoPE: zeroing the lowest quarter of the rotating pairs costs 60× more loss in the
    full twin, and nothing at all in either twin for the highest quarter."""
    from rope_interp.interventions.conditions import standard_conditions
    from rope_interp.interventions.experiment import run_experiment

    deltas = {}
    for name in ("content-rope", "content-prope"):
        model = organisms[name]
        conditions = standard_conditions(
            model, RotarySpec.from_model(model), groups=("band",), n_random=0
        )
        result = run_experiment(
            model, conditions, organism_corpus(name, 32), progress=False, n_boot=100
        )
        deltas[name] = dict(zip(result.summary.band, result.summary.delta_loss, strict=True))
    assert deltas["content-rope"]["low"] > 0.3
    assert deltas["content-prope"]["low"] < deltas["content-rope"]["low"] / 20
    assert max(abs(d["high"]) for d in deltas.values()) < 1e-3


def test_band_ablation_accuracy_on_the_sink_and_positional_organisms(organisms):
    sink = accuracy_summary(ablation_accuracy(organisms["sink"], "sink", n_random=4))
    assert sink["low"] < sink["clean"] - 0.1 < sink["high"]  # the low band builds the sink
    positional = accuracy_summary(
        ablation_accuracy(organisms["positional"], "positional", n_random=0)
    )
    assert max(positional["high"], positional["low"]) < positional["clean"] / 2
    assert math.isnan(positional["random_min"])


@pytest.mark.parametrize("name", list(ORGANISMS))
def test_verdicts_against_the_planted_truth(organisms, name):
    table = compare_verdicts(organism_claims(organisms[name], name), name)
    assert len(table) == len(TRUTH[name])
    explained = table.known_miss != ""
    wrong = table[~table.match & ~explained]
    assert wrong.empty, wrong[["claim", "expected", "verdict", "number"]].to_string()
    # A documented miss that starts to match means docs/findings.md needs updating.
    fixed = table[table.match & explained]
    assert fixed.empty, fixed[["claim", "expected", "verdict"]].to_string()
