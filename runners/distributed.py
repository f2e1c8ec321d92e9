"""torch.distributed under torchrun: one process per device, nccl on GPUs and gloo on CPUs."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch
import torch.distributed as dist

from .errors import UserError
from .files import Ownership, owned_folder
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

    def sum(self, array: np.ndarray) -> np.ndarray:
        """The element-wise sum of every rank's ``array`` (float64), on every rank; with one process, ``array``."""
        if self.world == 1:
            return array
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))
        tensor = tensor.to(self.device) if self.device.type == "cuda" else tensor  # nccl sums on the GPU only
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.cpu().numpy()

    def settle(self, error: Optional[UserError]) -> None:
        """After a step only rank 0 runs: every rank learns whether it failed, and raises if so (rank 0 its own
        error), instead of the others waiting at the next barrier forever."""
        failed = error is not None
        if self.world > 1:
            flag = torch.tensor([int(failed)], device=self.device if self.device.type == "cuda" else "cpu")
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            failed = bool(flag.item())
        if error is not None:
            raise error
        if failed:
            raise UserError("rank 0 of this torchrun job could not start (its error is printed above)")


def main_owns(d: Dist, stack: contextlib.ExitStack, folder: Path, bookkeeping: tuple = (),
              start: Optional[Callable[[Ownership], None]] = None) -> Ownership:
    """Rank 0 takes ``folder`` (``files.owned_folder``, released when ``stack`` closes) and runs ``start`` on it;
    the other ranks get a stand-in. A UserError there stops every rank (``Dist.settle``)."""
    own, error = Ownership(Path(folder), created=False), None
    if d.is_main:
        try:
            own = stack.enter_context(owned_folder(folder, bookkeeping))
            if start is not None:
                start(own)
        except UserError as e:
            error = e
    d.settle(error)
    return own


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
