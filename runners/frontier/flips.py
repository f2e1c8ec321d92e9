"""Where a flip is decided: for each sample that a sampler sends to another mixture component than the exact flow
(a *flip*, ``scores.FLIP``), the first step after which the exact flow continued from the sampler's own state
ends in the wrong component.

A flip needs no late error: once the state sits on the wrong side of the boundary between two components, the
exact flow from it goes to the wrong one. So continuing the exact flow (``GaussianMixture.flow_endpoint``) from
the state after each step, and comparing with the exact endpoint from x_T, finds the step whose error crossed
the boundary. For UniPC the state is the predicted one that the next model call is made at (its corrector moves
it by the next step's local error), as the sampler's ``callback`` reports it.
"""
from __future__ import annotations

from typing import Optional, Sequence

from torch import Tensor

from samplers import NoiseSchedule, plan, sample

from .scores import FLIP


def flip_origins(mixture, schedule: NoiseSchedule, x_T: Tensor, method: str, *, steps: Optional[int] = None,
                 timesteps: Optional[Sequence[float]] = None) -> tuple[Tensor, Tensor, list[dict]]:
    """Run ``method`` (with ``steps`` or on ``timesteps``) from ``x_T`` at its grid's first noise level and return
    (its samples, the exact flow endpoints of x_T from that level, one dict per flipped sample). Each dict:
    ``sample`` (its index), ``step`` (1-based: the first step after which the exact continuation ends in the wrong
    component; the last step if only the final one did) and ``t`` (the timestep that step landed on).
    ``mixture``: a model with ``flow_endpoint`` (``models.GaussianMixture``). Noise levels are the grid's own
    (``samplers.plan``), so the exact flow starts where the sampler does."""
    kwargs = dict(steps=steps) if timesteps is None else dict(timesteps=list(timesteps))
    grid = plan(method, schedule, **kwargs).grid
    if grid is None:
        raise ValueError(f"{method} has no fixed grid: flip origins need a fixed-step method")
    exact = mixture.flow_endpoint(x_T, grid.alpha_bars[0], 1.0)
    states = []
    x0 = sample(mixture, x_T, schedule, method, callback=lambda info: states.append(info["x"].detach().clone()),
                **kwargs)
    rms = ((x0 - exact) ** 2).flatten(1).mean(1).sqrt()
    origins = []
    for b in (rms > FLIP).nonzero().flatten().tolist():
        decided = len(states)  # only the last step (the endpoint itself) is wrong
        for k, x in enumerate(states[:-1]):
            endpoint = mixture.flow_endpoint(x[b:b + 1], grid.alpha_bars[k + 1], 1.0)
            if float(((endpoint - exact[b:b + 1]) ** 2).mean().sqrt()) > FLIP:
                decided = k + 1
                break
        origins.append(dict(sample=b, step=decided, t=float(grid.timesteps[decided])))
    return x0, exact, origins
