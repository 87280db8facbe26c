"""Re-create the shipped model organisms (rope_interp/organisms/<name>/): train each tiny rotary
model on its synthetic task with a fixed seed on one CPU thread, and write its checkpoint
(config.json, model.safetensors), tokenizer, corpus.txt and training.json.

    python scripts/train_organisms.py                 # all of them, a few minutes each
    python scripts/train_organisms.py positional sink --out /tmp/organisms

Deterministic on one machine (seeded data and init, one thread); other CPUs or torch versions
may round differently, so re-trained weights can differ in the last bits from the shipped ones.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from rope_interp.loading.hf_loading import quiet
from rope_interp.loading.organism_tasks import scored_prediction, task_batch
from rope_interp.loading.organisms import ORGANISMS, ROOT, SEQ_LEN, VOCAB_SIZE, Organism
from rope_interp.testing import word_tokenizer
from rope_interp.utils.atomic import atomic_write_text

BATCH = 64
LR = 3e-3
WARMUP = 100
CORPUS_SEQUENCES = 64  # corpus.txt: 64 × 64 = 4096 tokens
SEED = 0


def hf_config(spec: Organism):
    """The transformers config of an organism: d_model 64, 4 heads of 16 dims, MLP 256."""
    import transformers

    shared = dict(
        hidden_size=64,
        num_hidden_layers=spec.n_layers,
        num_attention_heads=4,
        intermediate_size=256,
        vocab_size=VOCAB_SIZE,
        # Room beyond the task's 64 tokens: the report's sanity check shifts positions by 16.
        max_position_embeddings=2 * SEQ_LEN,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
    )
    rope = {"rope_type": "default", "rope_theta": spec.base}
    if spec.family == "llama":
        return transformers.LlamaConfig(
            **shared, num_key_value_heads=4, head_dim=16, rope_parameters=rope
        )
    rope["partial_rotary_factor"] = spec.rotary_fraction
    return transformers.GPTNeoXConfig(**shared, rope_parameters=rope, use_parallel_residual=False)


def evaluate(model, task: str, n: int = 256, seed: int = 10_000) -> dict[str, float]:
    """Task accuracy (top-1 on the scored queries) and mean loss on held-out sequences."""
    tokens, scored = task_batch(task, n, seed=seed)
    model.eval()
    with torch.no_grad():
        out = model(input_ids=tokens, labels=tokens)
    model.train()
    right = scored_prediction(task, tokens, out.logits)
    return {"accuracy": float(right[scored].float().mean()), "loss": float(out.loss)}


def train(spec: Organism, log=print):
    """Train one organism from its seed; returns (model, training record)."""
    import transformers

    torch.manual_seed(SEED)
    with quiet():
        model_class = (
            transformers.LlamaForCausalLM
            if spec.family == "llama"
            else transformers.GPTNeoXForCausalLM
        )
        model = model_class(hf_config(spec))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01, betas=(0.9, 0.98))

    def schedule(step: int) -> float:
        if step < WARMUP:
            return (step + 1) / WARMUP
        progress = (step - WARMUP) / max(1, spec.steps - WARMUP)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    generator = torch.Generator().manual_seed(SEED + 1)
    started = time.perf_counter()
    for step in range(spec.steps):
        tokens, _ = task_batch(
            spec.task, BATCH, seed=int(torch.randint(2**31, (), generator=generator))
        )
        loss = model(input_ids=tokens, labels=tokens).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if (step + 1) % 250 == 0 or step + 1 == spec.steps:
            metrics = evaluate(model, spec.task)
            log(
                f"{spec.name} step {step + 1}/{spec.steps}: train loss {loss.item():.3f}, "
                f"held-out loss {metrics['loss']:.3f}, task accuracy {metrics['accuracy']:.3f} "
                f"({time.perf_counter() - started:.0f} s)"
            )
    model.eval()
    record = {
        "organism": spec.name,
        "task": spec.task,
        "family": spec.family,
        "steps": spec.steps,
        "batch": BATCH,
        "lr": LR,
        "seed": SEED,
        "seconds": round(time.perf_counter() - started, 1),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        **{f"held_out_{k}": round(v, 4) for k, v in evaluate(model, spec.task).items()},
    }
    return model, record


def write(spec: Organism, model, record: dict, out: Path) -> Path:
    """Checkpoint, tokenizer, corpus.txt and training.json in `out/<name>` (replaced)."""
    folder = out / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    with quiet():
        model.save_pretrained(str(folder), safe_serialization=True)
    word_tokenizer().save_pretrained(str(folder))
    tokens, _ = task_batch(spec.task, CORPUS_SEQUENCES, seed=SEED + 2)
    tokenizer = word_tokenizer()
    lines = [" ".join(tokenizer.convert_ids_to_tokens(row.tolist())) for row in tokens]
    atomic_write_text(folder / "corpus.txt", "\n".join(lines) + "\n")
    atomic_write_text(folder / "training.json", json.dumps(record, indent=1) + "\n")
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"organisms (default all: {', '.join(ORGANISMS)})")
    parser.add_argument("--out", default=str(ROOT), help="folder to write the organisms into")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in ORGANISMS]
    if unknown:
        sys.exit(f"Unknown organism(s) {unknown}; choose from {', '.join(ORGANISMS)}.")
    torch.set_num_threads(1)
    for name in args.names or list(ORGANISMS):
        model, record = train(ORGANISMS[name])
        folder = write(ORGANISMS[name], model, record, Path(args.out))
        print(f"wrote {folder}: {json.dumps(record)}", flush=True)


if __name__ == "__main__":
    main()
