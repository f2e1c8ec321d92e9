"""torch.distributed under torchrun: one process per device, nccl on GPUs and gloo on CPUs."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
import torch.distributed as dist

from .setup import resolve_device


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


@contextlib.contextmanager
def session(device: Optional[str] = None) -> Iterator[Dist]:
    """Join the process group torchrun describes (RANK/WORLD_SIZE/LOCAL_RANK), or run alone without one; leave it
    afterwards. ``device`` is checked to exist; a bare 'cuda' becomes this process's local GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        if dev.index is None:
            dev = torch.device("cuda", local % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    try:
        yield Dist(rank, world, dev)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
