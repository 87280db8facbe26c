"""Model organisms: tiny rotary transformers trained on synthetic tasks whose solution needs a
known mechanism, shipped as safetensors checkpoints so that every command and the report can
run on a model whose answer is known (`load_model("organism:positional")`).

Each organism is a folder next to this file (config.json, model.safetensors, the word-level
tokenizer, `corpus.txt` with sequences of its task, one per line, and `training.json` with how
it was trained and its task accuracy); `scripts/train_organisms.py` re-creates them (seeded,
a few minutes each on one CPU thread). The tasks are in `rope_interp.loading.organism_tasks`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rope_interp.errors import RopeInterpError
from rope_interp.loading.organism_tasks import SEQ_LEN, VOCAB_SIZE, task_batch

PREFIX = "organism:"
ROOT = Path(__file__).resolve().parents[1] / "organisms"  # the shipped folders (package data)
#: The rotary base of the full-RoPE organisms: with 8 pairs (d_head 16) and 64-token windows
#: the lowest quarter (pairs 6, 7; θL = 2.0, 1.1) turns less than half a cycle, the highest
#: (pairs 0, 1; θ = 1, 0.56) turns 10 and 6 times.
BASE = 100.0
#: p-RoPE with the lowest quarter as NoPE, written as partial rotary: the first 75 % of the
#: dims rotate with base BASE**0.75, so θ_i = BASE^(−2i/16) exactly as in the full twin for
#: i < 6, and the other 4 dims (the two lowest pairs of the full twin) never rotate.
PROPE_FRACTION = 0.75


@dataclass(frozen=True)
class Organism:
    """One organism: its task, architecture and training, and the mechanism the task plants.

    Attributes:
        family: "llama" (`LlamaForCausalLM`, the built-in model's family) or "neox"
            (`GPTNeoXForCausalLM`, which can leave dims unrotated: the p-RoPE twins).
        rotary_fraction: share of each head's dims that rotate (1: full RoPE).
        steps: AdamW steps of 64 sequences.
        mechanism: the planted mechanism in words (what the task forces).
    """

    name: str
    task: str
    family: str
    n_layers: int
    steps: int
    mechanism: str
    rotary_fraction: float = 1.0

    @property
    def base(self) -> float:
        return BASE**self.rotary_fraction

    @property
    def path(self) -> Path:
        return ROOT / self.name


ORGANISMS: dict[str, Organism] = {
    o.name: o
    for o in (
        Organism(
            "positional",
            "induction",
            "llama",
            n_layers=2,
            steps=3000,
            mechanism="a previous-token head in layer 0 and an induction head in layer 1: "
            "predicting a repeated segment needs the token before each earlier word",
        ),
        Organism(
            "content",
            "bag",
            "llama",
            n_layers=1,
            steps=1200,
            mechanism="a content head that gathers the letters seen so far; position carries "
            "no information (the sequences are exchangeable), so no positional head can help",
        ),
        Organism(
            "sink",
            "sink",
            "llama",
            n_layers=1,
            steps=4000,
            mechanism="a first-token sink: every b needs the key word at position 0, which "
            "differs from the other words by position only; in one layer only a score that "
            "grows with distance over the whole window finds it, which only the lowest "
            "frequencies (θ·63 < π) can build",
        ),
        Organism(
            "content-rope",
            "bag",
            "neox",
            n_layers=1,
            steps=1200,
            mechanism="the content task on GPT-NeoX with full RoPE: the twin of content-prope",
        ),
        Organism(
            "content-prope",
            "bag",
            "neox",
            n_layers=1,
            steps=1200,
            rotary_fraction=PROPE_FRACTION,
            mechanism="the content task trained with p-RoPE (the lowest quarter of the "
            "frequencies never rotates): the content head can match in NoPE dims",
        ),
    )
}


def organism(name: str) -> Organism:
    """The organism called `name` (with or without the "organism:" prefix)."""
    key = name.removeprefix(PREFIX)
    if key not in ORGANISMS:
        raise RopeInterpError(
            f"Unknown organism {key!r}; choose from {', '.join(PREFIX + n for n in ORGANISMS)}."
        )
    return ORGANISMS[key]


def check_shipped(name: str) -> Path:
    """The folder of a shipped organism; `RopeInterpError` if its weights are missing."""
    path = organism(name).path
    if not (path / "model.safetensors").is_file():
        raise RopeInterpError(
            f"The weights of {PREFIX}{organism(name).name} are missing from {path}; re-create "
            "them with: python scripts/train_organisms.py"
        )
    return path


def as_organism(model: Any, name: str) -> Any:
    """The loaded checkpoint of organism `name` marked as it: named, and with no BOS prepended
    (position 0 is the task's first word). `load_model("organism:NAME")` loads it."""
    model.cfg.default_prepend_bos = False
    model.cfg.model_name = PREFIX + organism(name).name
    return model


def organism_corpus(name: str, n_windows: int = 64, seed: int = 0):
    """`n_windows` fresh sequences of the organism's task as a `Corpus` (no BOS)."""
    from rope_interp.loading.data import Corpus

    tokens, _ = task_batch(organism(name).task, n_windows, seed=seed)
    return Corpus(f"{PREFIX}{organism(name).name} task (seed {seed})", tokens, False)


__all__ = [
    "ORGANISMS",
    "PREFIX",
    "SEQ_LEN",
    "VOCAB_SIZE",
    "Organism",
    "as_organism",
    "check_shipped",
    "organism",
    "organism_corpus",
]
