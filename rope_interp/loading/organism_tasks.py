"""The synthetic tasks the organisms are trained on: seeded token batches and, for each, the
positions whose next token the task determines (where task accuracy is measured).

Every task draws ids from the 50-id word vocabulary of `rope_interp.testing.word_tokenizer`
(`VOCAB_SIZE`; ids 0–2 are `<unk>`, `<s>`, `</s>`, never used in task sequences; id i ≥ 3 is
the word `w<i>`), so one tokenizer serves all organisms. A batch is `(tokens, scored)`:
`tokens` `Int[Tensor, "n seq"]`, `scored` `Bool[Tensor, "n seq"]` True at query positions m
whose target `tokens[:, m + 1]` the task determines (so `scored[:, -1]` is always False).

- "induction" (positional): random words with one segment of 12–24 words repeated at a random
  distance; the target after the second copy's first word is determined (previous-token head +
  induction head).
- "bag" (content-only): each sequence draws 3 "letters" out of 24 and then i.i.d. tokens, a
  letter of the sequence with probability ½ else one of 20 "digits"; the order is exchangeable,
  so position carries no information; the scored queries are those before a letter that has
  already appeared, and the task's answer is the letter set (top-1 prediction in it).
- "sink" (first token): a key word c (one of 16) at position 0, then pairs (a, b) with a
  random and b = (a + c) mod 16; the b targets are determined and need the first token, which
  differs from the others by position only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from rope_interp.errors import RopeInterpError

VOCAB_SIZE = 50
FIRST_WORD = 3  # ids 0..2 are <unk>, <s>, </s>
SEQ_LEN = 64

_INDUCTION_WORDS = 40
_LETTERS, _DIGITS, _K_LETTERS = 24, 20, 3
_SINK_MOD = 16


def induction_batch(n: int, generator: torch.Generator, seq_len: int = SEQ_LEN):
    """Random words with one repeated segment (length 12–24) per sequence."""
    tokens = torch.randint(0, _INDUCTION_WORDS, (n, seq_len), generator=generator) + FIRST_WORD
    scored = torch.zeros(n, seq_len, dtype=torch.bool)
    for row in range(n):
        length = int(torch.randint(12, 25, (), generator=generator))
        first = int(torch.randint(0, seq_len - 2 * length + 1, (), generator=generator))
        second = int(torch.randint(first + length, seq_len - length + 1, (), generator=generator))
        tokens[row, second : second + length] = tokens[row, first : first + length]
        # Queries second..second+length-2 predict copies 1..length-1 of the segment.
        scored[row, second : second + length - 1] = True
    return tokens, scored


def bag_batch(n: int, generator: torch.Generator, seq_len: int = SEQ_LEN):
    """Exchangeable sequences: letters of a per-sequence set of 3, or random digits."""
    letters = torch.stack(
        [torch.randperm(_LETTERS, generator=generator)[:_K_LETTERS] for _ in range(n)]
    )
    pick = torch.randint(0, _K_LETTERS, (n, seq_len), generator=generator)
    letter_ids = letters.gather(1, pick) + FIRST_WORD
    digit_ids = torch.randint(0, _DIGITS, (n, seq_len), generator=generator) + FIRST_WORD + _LETTERS
    is_letter = torch.rand(n, seq_len, generator=generator) < 0.5
    tokens = torch.where(is_letter, letter_ids, digit_ids)
    # A letter target counts once it has been seen before (the set is then in the context).
    seen = torch.zeros(n, seq_len, dtype=torch.bool)
    for m in range(1, seq_len):
        seen[:, m] = (tokens[:, :m] == tokens[:, m : m + 1]).any(1)
    scored = torch.zeros(n, seq_len, dtype=torch.bool)
    scored[:, :-1] = is_letter[:, 1:] & seen[:, 1:]
    return tokens, scored


def sink_batch(n: int, generator: torch.Generator, seq_len: int = SEQ_LEN):
    """Position 0: key c; then (a, (a + c) mod 16) pairs (and one more a if seq_len is even)."""
    key = torch.randint(0, _SINK_MOD, (n, 1), generator=generator)
    a = torch.randint(0, _SINK_MOD, (n, seq_len // 2), generator=generator)
    b = (a + key) % _SINK_MOD
    body = torch.stack([a, b], dim=2).reshape(n, -1)
    tokens = torch.cat([key, body], dim=1)[:, :seq_len] + FIRST_WORD
    scored = torch.zeros(n, seq_len, dtype=torch.bool)
    scored[:, 1 : seq_len - 1 : 2] = True  # the a positions (odd), whose next word is b
    return tokens, scored


TASKS: dict[str, Callable[..., tuple[Tensor, Tensor]]] = {
    "induction": induction_batch,
    "bag": bag_batch,
    "sink": sink_batch,
}


def task_batch(task: str, n: int, seed: int = 0, seq_len: int = SEQ_LEN):
    """`(tokens, scored)` of `n` sequences of `task`, deterministic under `seed`."""
    if task not in TASKS:
        raise RopeInterpError(f"Unknown task {task!r}; choose from {', '.join(TASKS)}.")
    return TASKS[task](n, torch.Generator().manual_seed(seed), seq_len)


def scored_prediction(task: str, tokens: Tensor, logits: Tensor) -> Tensor:
    """Per scored query, whether the model's top-1 next word is right: `Bool[Tensor, "n seq"]`
    (meaningful where `scored`). "bag": right = a letter already in the context (the answer is
    the set, not one letter); the others: right = the determined next word."""
    top = logits.argmax(-1)
    if task != "bag":
        out = torch.zeros_like(tokens, dtype=torch.bool)
        out[:, :-1] = top[:, :-1] == tokens[:, 1:]
        return out
    letter_top = (top >= FIRST_WORD) & (top < FIRST_WORD + _LETTERS)
    seen = torch.zeros_like(tokens, dtype=torch.bool)
    for m in range(tokens.shape[1]):
        seen[:, m] = (tokens[:, : m + 1] == top[:, m : m + 1]).any(1)
    return letter_top & seen
