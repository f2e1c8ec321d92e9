"""The random streams of a training job, all derived from the one ``Train.seed`` (``runners.seeds``).

- INIT: the initial weights (the process-global generator, seeded once before the model is built);
- DROPOUT: the process-global generator of rank r, seeded once from (seed, DROPOUT, r) after the weights are
  built; dropout draws from it step after step and the checkpoint stores its state, so a resume continues it;
- DATA: the permutation of epoch e, from (seed, DATA, e);
- STEP: the flips, timesteps and noise of step s on rank r, from an explicit generator seeded from
  (seed, STEP, s, r) — positional, so nothing about them needs saving;
- GRID: the fixed x_T of the preview sample grids.

The whole job runs inside ``forked`` so that the caller's global RNG state is the same afterwards; nothing else
may draw from the global generator during the job (the DataLoader gets its own generator, the preview grid runs
inside its own fork), or a resume would not continue the dropout stream where the checkpoint left it.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch

from ..seeds import derive_seed

INIT, DATA, STEP, DROPOUT, GRID = range(5)


def _cuda_index(device: torch.device) -> Optional[int]:
    if device.type != "cuda":
        return None
    return device.index if device.index is not None else torch.cuda.current_device()


@contextlib.contextmanager
def forked(device: torch.device) -> Iterator[None]:
    """Run the body on a fork of the global RNG (CPU, and ``device``'s when it is a GPU)."""
    index = _cuda_index(device)
    with torch.random.fork_rng(devices=[] if index is None else [index], device_type="cuda"):
        yield


def seed_global(seed: int, device: torch.device) -> None:
    """Seed the global generator of the CPU and of ``device`` (not every GPU, as ``torch.manual_seed`` would)."""
    torch.random.default_generator.manual_seed(seed)
    index = _cuda_index(device)
    if index is not None:
        torch.cuda.init()
        torch.cuda.default_generators[index].manual_seed(seed)


def seed_dropout(seed: int, rank: int, device: torch.device, step: int = 0) -> None:
    """Start rank ``rank``'s dropout stream (``step`` > 0 only when a checkpoint lacks the stream's state)."""
    seed_global(derive_seed(seed, DROPOUT, rank, step) if step else derive_seed(seed, DROPOUT, rank), device)


def global_state(device: torch.device) -> dict:
    """The state of this process's global stream: what a checkpoint stores to continue it."""
    state = {"torch": torch.get_rng_state()}
    index = _cuda_index(device)
    if index is not None:
        state["cuda"] = torch.cuda.get_rng_state(index)
    return state


def set_global_state(state: Optional[dict], device: torch.device) -> bool:
    """Continue the stream ``global_state`` captured; False when ``state`` does not hold it for this device."""
    if not isinstance(state, dict) or not isinstance(state.get("torch"), torch.Tensor):
        return False
    index = _cuda_index(device)
    if index is not None and not isinstance(state.get("cuda"), torch.Tensor):
        return False
    torch.set_rng_state(state["torch"])
    if index is not None:
        torch.cuda.set_rng_state(state["cuda"], index)
    return True


def step_generator(device: torch.device) -> torch.Generator:
    """The explicit generator of the per-step draws; reseed it with ``seed_step`` before every step."""
    return torch.Generator(device=device)


def seed_step(gen: torch.Generator, seed: int, step: int, rank: int) -> torch.Generator:
    return gen.manual_seed(derive_seed(seed, STEP, step, rank))
