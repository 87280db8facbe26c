"""A small sweep that test_faults interrupts and resumes, in its own process or in a child one
(`python -m tests.interrupted_sweep OUT_DIR` prints the conditions it reused). With
$ROPE_INTERP_TEST_SIGNAL set (SIGINT, SIGKILL) the process sends itself that signal from
inside the third condition's forward pass on the second batch, after every condition's first
batch was checkpointed."""

from __future__ import annotations

import json
import os
import signal
import sys

import torch

from rope_interp.core.spec import RotarySpec
from rope_interp.interventions.ablation import Intervention, p_rope
from rope_interp.interventions.experiment import Condition, RunSettings, run_experiment
from rope_interp.interventions.selection import select_band
from rope_interp.testing import make_model, random_tokens

_CALLS = [0]


def signal_if_asked(x, hook):
    """A hook that changes nothing, unless the environment asks it to interrupt the run (on
    its second call: the second batch)."""
    _CALLS[0] += 1
    name = os.environ.get("ROPE_INTERP_TEST_SIGNAL")
    if name and _CALLS[0] == 2:
        os.kill(os.getpid(), getattr(signal, name))
    return x


def run(out_dir):
    """The sweep (single-threaded, so that every run computes bit-identical numbers)."""
    torch.set_num_threads(1)
    _CALLS[0] = 0
    model = make_model("gqa")
    spec = RotarySpec.from_model(model)
    conditions = [
        Condition("zero high", Intervention(model, select_band(spec, "high", k=1), spec=spec)),
        Condition("p=0.5", p_rope(model, 0.5, spec=spec)),
        Condition("interrupted here", hooks=[("blocks.1.attn.hook_q", signal_if_asked)]),
        Condition("zero low", Intervention(model, select_band(spec, "low", k=1), spec=spec)),
    ]
    tokens = random_tokens(model, batch=6, pos=16)
    settings = RunSettings(batch_size=2, n_boot=50, progress=False, checkpoint_seconds=0.0)
    return run_experiment(model, conditions, tokens, out_dir=out_dir, settings=settings)


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1]).skipped))
