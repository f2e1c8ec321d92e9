"""Time grids: which model timesteps a sampler visits.

A grid is a descending list of timesteps; its last entry is the target of the final step, −1 ("data": alpha_bar
= 1 under the standard convention, alphas_cumprod[0] under the official one).
"""
from __future__ import annotations

import operator

from .schedule import NoiseSchedule, check_convention


def uniform_grid(schedule: NoiseSchedule, steps: int, convention: str = "standard") -> list[float]:
    """The paper's uniform grid.

    ``official``: the released code's grid, skip = T // steps and timesteps range(0, T, skip), so that steps which
    do not divide T give more steps than asked for (steps=33 → 34).
    ``standard``: exactly ``steps`` steps at 0, skip, ..., (steps−1)·skip (diffusers' "leading" spacing with
    steps_offset=0); identical to the official grid whenever steps divides T.
    """
    convention = check_convention(convention)
    T = schedule.T
    if isinstance(steps, bool):
        raise ValueError(f"steps must be an integer, got {steps!r}")
    try:
        steps = operator.index(steps)
    except TypeError:
        raise ValueError(f"steps must be an integer, got {steps!r}") from None
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if steps > T:
        raise ValueError(f"steps={steps} exceeds the schedule's {T} timesteps")
    skip = T // steps
    if convention == "official":
        ts = list(range(0, T, skip))
        if ts[-1] + 1 >= T:
            raise ValueError(
                f"steps={steps} under convention='official' visits t={ts[-1]}, where the released code reads "
                f"alphas_cumprod[{ts[-1] + 1}] past the end of its {T}-entry table; use convention='standard'"
            )
    else:
        ts = [i * skip for i in range(steps)]
    return [float(t) for t in reversed(ts)] + [-1.0]
