"""torch.distributed under torchrun: one process per device, nccl on GPUs and gloo on CPUs."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist


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


def setup(device: Optional[str] = None) -> Dist:
    """Join the process group torchrun describes (RANK/WORLD_SIZE/LOCAL_RANK), or run alone without one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available on this machine")
        if dev.index is None:
            dev = torch.device("cuda", local % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Dist(rank, world, dev)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_ok(d: Dist, ok: bool) -> bool:
    """True on every rank iff ``ok`` on every rank (so that one rank's failure stops them all cleanly)."""
    if d.world == 1:
        return ok
    flag = torch.tensor([1 if ok else 0], device=d.device if d.device.type == "cuda" else "cpu")
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())
