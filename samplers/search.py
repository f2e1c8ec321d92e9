"""Time grids searched on any objective of the whole grid: ``search_timesteps``.

``tune_timesteps`` fits a grid to a teacher sample by sample. At NFE ≤ 4 that is the wrong target: samples are then
far from the teacher's (RMS ≈ 0.3 on the digits model), a per-sample loss rewards blurred averages, and every
per-sample loss tried lowered its own value while FID rose (docs/TUNING.md). What such budgets are judged by is a
property of the sample distribution — FID — which needs the features of many samples and a matrix square root,
and whose estimate from the few hundred samples a gradient step could afford is noise. So search instead:
Nelder–Mead (scipy) over the free timesteps in the same log-SNR parameterisation as ``tune_timesteps``
(``LogSNRGrid``: every point of the search is a valid grid), on a scalar ``objective(grid)`` the caller supplies —
e.g. the FID of the method's samples from noise that the final evaluation never uses, as AutoDiffusion (Li et al.,
ICCV 2023) searches timesteps by FID. The best grid evaluated wins, the start included, so the result is never
worse than the start on the objective; whether it is better on other noise is the caller's check (``main.py
tune-grid --objective fid`` scores it on a separate noise stream).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch

from .grids import as_int, check_timesteps
from .schedule import NoiseSchedule
from .tuning import GridChoice, LogSNRGrid, _start_candidates, check_free_points, check_last, steps_for_nfe, tunable_method

STEP = 0.5  # the initial simplex: each free log-gap moved by 0.5, a gap 1.65× longer (relative to the others)


@dataclass
class SearchInfo(GridChoice):
    """What ``search_timesteps`` did: the start (the candidate with the lowest objective), the objective there and
    at the result, the objective of every start candidate, and the evaluations in all (start candidates included)."""

    objective_start: float
    objective: float
    evaluations: int
    start_objectives: dict = field(default_factory=dict)
    learn_first: bool = False
    last: Optional[float] = None
    seconds: float = 0.0


def search_timesteps(
    objective: Callable[[list], float],
    schedule: NoiseSchedule,
    method: str,
    nfe: int,
    *,
    evaluations: int = 40,
    start: Union[None, str, Sequence[float]] = None,
    learn_first: bool = False,
    last: Optional[float] = None,
    callback: Optional[Callable[[dict], None]] = None,
    return_info: bool = False,
):
    """Timesteps for ``method`` at ≤ ``nfe`` model evaluations that minimise ``objective(grid)`` (a float, lower is
    better; ``inf`` for a grid whose samples are unusable), found by Nelder–Mead in ``evaluations`` calls after one
    call per start candidate (module docstring). Returns a descending list of floats ending at −1, for
    ``sample(model, x, schedule, BASE, timesteps=grid)`` (BASE: the name without ``@spacing``), and a
    ``SearchInfo`` too when ``return_info``.

    ``method``, ``start``, ``learn_first`` and ``last`` mean what they mean for ``tune_timesteps``: ``NAME@spacing``
    or ``start`` (a spacing or a grid) fixes the start, else every spacing is a candidate (with ``learn_first`` the
    released code's grid too) and the lowest objective starts. At NFE ≤ 4 the released grids (first timestep below
    T−1, last evaluation at t = 0: ``learn_first=True, last=0.0``) are the strong starts. No model is needed here:
    ``objective`` runs it. Deterministic when ``objective`` is. ``callback(dict)`` after each call: evaluation,
    evaluations (all, starts included), objective, best, grid.
    """
    t_begin = time.perf_counter()
    base, spacing = tunable_method(method)
    if not callable(objective):
        raise TypeError(f"objective must be a callable grid -> float, got {type(objective).__name__}")
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a samplers.NoiseSchedule, got {type(schedule).__name__}")
    steps = steps_for_nfe(base, nfe, schedule.T)
    evaluations = as_int("evaluations", evaluations)
    if evaluations < 0:
        raise ValueError(f"evaluations must be >= 0, got {evaluations}")
    last = check_last(last, schedule.T)
    check_free_points(base, steps, learn_first, last)
    starts = _start_candidates(schedule, steps, spacing if start is None else start, learn_first, last)
    total = len(starts) + evaluations
    history: list[tuple[float, list]] = []

    def evaluate(grid: list) -> float:
        value = objective(list(grid))
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"objective must return a float, got {type(value).__name__}") from None
        if math.isnan(value):
            raise ValueError(f"objective returned NaN for the grid {[round(t, 3) for t in grid]}: return inf for a "
                             f"grid whose samples are unusable")
        history.append((value, grid))
        if callback is not None:
            callback(dict(evaluation=len(history), evaluations=total, objective=value,
                          best=min(v for v, _ in history), grid=grid))
        return value

    start_objectives = {name: evaluate(grid) for name, grid in starts.items()}
    start_name = min(start_objectives, key=start_objectives.get)
    params = LogSNRGrid.from_grid(schedule, starts[start_name], learn_first, last)
    fixed = params.logits.detach()[-1:].clone()  # softmax ignores a common shift: the last log-gap stays put

    def f(z: np.ndarray) -> float:
        if len(history) >= total:  # scipy may ask once more than maxfev; the budget is a promise
            return math.inf
        with torch.no_grad():
            params.logits.copy_(torch.cat([torch.from_numpy(z), fixed]))
        return evaluate(params.floats())

    if evaluations > 0:
        from scipy.optimize import minimize

        z0 = params.logits.detach()[:-1].numpy().copy()
        simplex = np.vstack([z0] + [z0 + STEP * e for e in np.eye(len(z0))])
        minimize(f, z0, method="Nelder-Mead",
                 options=dict(maxfev=evaluations, initial_simplex=simplex, xatol=1e-3, fatol=0.0))
    value, grid = min(history, key=lambda h: h[0])  # the first of equals: a start wins ties
    result = check_timesteps(grid, schedule.T)
    if not return_info:
        return result
    info = SearchInfo(base.name, steps, base.nfe(steps), start_name, starts[start_name], result,
                      start_objectives[start_name], value, len(history), start_objectives, learn_first, last,
                      time.perf_counter() - t_begin)
    return result, info
