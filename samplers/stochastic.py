"""Ancestral sampling: DDPM (Ho et al.) and DDIM with η > 0 (Song et al., eq. 12 and 16).

One generalised step from noise level ā to ā' with the model's ε:

    x̂0 = (x − sqrt(1−ā)·ε) / sqrt(ā)
    σ  = η · sqrt((1−ā')/(1−ā)) · sqrt(1 − ā/ā')
    x' = sqrt(ā')·x̂0 + sqrt(1 − ā' − σ²)·ε + σ·z,   z ~ N(0, I)

η = 0 is the deterministic DDIM step (the transfer φ); η = 1 on the full 1000-step grid is DDPM's ancestral
sampler with the posterior variance β̃_t. Under the standard convention the last step lands on ā' = 1, so σ = 0
and no noise is added to the final sample.
"""
from __future__ import annotations

import math
from typing import Optional

from torch import Tensor

from .grids import Grid
from .multistep import EpsFn, NoiseFn, StepCallback


def generalized_ddim(
    eps: EpsFn,
    grid: Grid,
    x: Tensor,
    *,
    callback: Optional[StepCallback] = None,
    noise: Optional[NoiseFn] = None,
    eta: float,
) -> Tensor:
    """The generalised DDIM step above over ``grid`` with ``eta``; ``noise(x)`` returns fresh N(0, I) noise shaped
    like x (needed whenever a step adds noise, i.e. η > 0 and ā' < 1)."""
    for i, (t, t_next, ab, ab_next) in enumerate(zip(grid.timesteps[:-1], grid.timesteps[1:],
                                                      grid.alpha_bars[:-1], grid.alpha_bars[1:])):
        e = eps(x, t)
        sigma = eta * math.sqrt((1 - ab_next) / (1 - ab) * (1 - ab / ab_next))
        c_x = math.sqrt(ab_next / ab)
        c_e = math.sqrt(max(1 - ab_next - sigma**2, 0.0)) - c_x * math.sqrt(1 - ab)
        x = x.mul(c_x).add_(e, alpha=c_e)
        if sigma > 0:
            if noise is None:
                raise ValueError(f"eta={eta} adds noise: give a noise source (noise=)")
            x.add_(noise(x), alpha=sigma)
        if callback is not None:
            callback(i, t, t_next, x)
    return x
