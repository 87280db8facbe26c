"""Commands under `torchrun`: one process per rank, NCCL when the ranks have GPUs, gloo on
the CPU. Outside torchrun a command is rank 0 of 1 and nothing here starts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) outside torchrun."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


@contextmanager
def process_group(device: str | None) -> Iterator[tuple[int, int, str | None]]:
    """`(rank, world, device)` with the process group up for the block (world > 1); on CUDA
    each rank takes the GPU `cuda:LOCAL_RANK`."""
    rank, world = distributed_rank()
    if world == 1:
        yield rank, world, device
        return
    import torch
    import torch.distributed as dist

    cuda = (device or "cuda").startswith("cuda") and torch.cuda.is_available()
    if cuda:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    try:
        yield rank, world, device
    finally:
        dist.destroy_process_group()
