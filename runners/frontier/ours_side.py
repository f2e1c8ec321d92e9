"""Our side of the frontier: which of ``samplers.available()`` take part, and their step count for an NFE budget."""
from __future__ import annotations

from typing import Optional

from samplers import NoiseSchedule, available, expected_nfe, get_method

PAPER_METHODS = ("DDIM", "S-PNDM", "F-PNDM")  # also scored by FID, on the paper's grid


def our_methods() -> list[str]:
    """Every fixed-step deterministic method name (the PNDM engine's and the exponential integrators', on every
    grid)."""
    return [m for m in available() if get_method(m).kind in ("multistep", "exponential")]


def our_fit(method: str, schedule: NoiseSchedule, budget: int) -> Optional[int]:
    """The largest step count whose NFE fits the budget (None if none does)."""
    best = None
    for steps in range(1, budget + 1):
        try:
            if expected_nfe(method, steps, schedule) <= budget:
                best = steps
        except ValueError:
            pass
    return best
