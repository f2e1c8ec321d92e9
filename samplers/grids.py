"""Time grids: which model timesteps a sampler visits, and the noise level ā it assigns to each.

A list of timesteps is descending; its last entry is the target of the final step, −1 ("data": ā = 1 under the
standard convention, alphas_cumprod[0] under the official one). A ``Grid`` is that list together with ā at its
points and the rule for ā between them; the builders ``make_paper_grid``, ``make_spaced_grid`` and
``make_custom_grid`` are the only places that pair a list of timesteps with its ā rule.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from functools import partial
from typing import Callable, Sequence

import numpy as np

from .schedule import NoiseSchedule, check_convention


@dataclass(frozen=True)
class Grid:
    """What a fixed-step engine runs on.

    ``timesteps``: descending model timesteps, the last one the target of the final step;
    ``alpha_bars``: ā at each of them, as the grid's convention assigns it;
    ``alpha_bar``: the rule for ā at stage points off the grid (Runge-Kutta midpoints, FON's t − 1) — the table
    at floor(t) on the paper grid (as the released code reads it), linear interpolation on spaced and custom grids.
    """

    timesteps: tuple[float, ...]
    alpha_bars: tuple[float, ...]
    alpha_bar: Callable[[float], float]

    def __post_init__(self):
        if len(self.timesteps) != len(self.alpha_bars):
            raise ValueError(f"a grid needs one alpha_bar per timestep, got {len(self.alpha_bars)} for "
                             f"{len(self.timesteps)}")

    @property
    def steps(self) -> int:
        return len(self.timesteps) - 1


def make_grid(timesteps: Sequence[float], alpha_bar: Callable[[float], float]) -> Grid:
    """The grid over ``timesteps`` whose ā, on and off the grid, is ``alpha_bar``."""
    ts = tuple(float(t) for t in timesteps)
    return Grid(ts, tuple(float(alpha_bar(t)) for t in ts), alpha_bar)


def as_int(name: str, value) -> int:
    """An integer argument (int or numpy integer, not bool or float), or a ValueError naming it."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def check_steps(steps, T: int) -> int:
    """steps as an int in [1, T], or a ValueError that says what is wrong."""
    steps = as_int("steps", steps)
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if steps > T:
        raise ValueError(f"steps={steps} exceeds the schedule's {T} timesteps")
    return steps


def uniform_grid(schedule: NoiseSchedule, steps: int, convention: str = "standard") -> list[float]:
    """The paper's uniform grid.

    ``official``: the released code's grid, skip = T // steps and timesteps range(0, T, skip), so that steps which
    do not divide T give more steps than asked for (steps=33 → 34).
    ``standard``: exactly ``steps`` steps at 0, skip, ..., (steps−1)·skip (diffusers' "leading" spacing with
    steps_offset=0); identical to the official grid whenever steps divides T.
    """
    convention = check_convention(convention)
    T = schedule.T
    steps = check_steps(steps, T)
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


SPACINGS = ("uniform", "power1.5", "quadratic", "logsnr", "karras", "logsnr-ends")
ENDS_FIRST_STEP = 3  # logsnr-ends: the first step spans this many λ-intervals


def ends_positions(steps: int) -> np.ndarray:
    """The ``logsnr-ends`` grid's evaluated points as fractions u ∈ [0, 1) of the λ-range from t = T−1 (u = 0) to
    t = 0 (u = 1): the range is cut into M = steps − 2 + a + b equal intervals; the grid keeps u = 0, skips the
    next a − 1 points (the first step spans a = ``ENDS_FIRST_STEP`` intervals), keeps the next steps − 1 and
    leaves the last b = round(√steps) intervals to the final jump to data (b ≥ 1; plain ``logsnr`` is a = b = 1).
    """
    steps = as_int("steps", steps)
    a, b = ENDS_FIRST_STEP, max(1, round(math.sqrt(steps)))
    m = steps - 2 + a + b
    return np.array([0.0] + [(a + i) / m for i in range(steps - 1)])


def spaced_grid(schedule: NoiseSchedule, steps: int, spacing: str, rho: float = 7.0) -> list[float]:
    """``steps`` model timesteps from t = T−1 towards t = 0 in the given spacing, then −1 (ā = 1).

    The spacing places steps + 1 points from T−1 to 0; the last one (t = 0, where ε barely matters) is replaced by
    the jump to ā = 1, so no evaluation is spent at the end of the trajectory — measured on the analytic model,
    this is more accurate for every solver tried, most at 5–10 steps. The timesteps are floats; samplers on these
    grids read ā by linear interpolation of the table (``NoiseSchedule.alpha_bar_lerp``), the same continuous
    extension the model sees.

    * ``uniform``: equal steps in t;  ``quadratic``: t ∝ (1 − i/N)², dense near the data (DDIM's "quad");
      ``power1.5``: t ∝ (1 − i/N)^1.5, between the two — on the analytic mixtures the most accurate grid for
      UniPC-3 at 10–20 steps and for iPNDM at 50, on both the benchmark's mixtures and 7 held-out ones
      (docs/FRONTIER_READING.md);
    * ``logsnr``: equal steps in λ = log(sqrt(ā/(1−ā)));  ``karras``: σ = sqrt((1−ā)/ā) spaced as
      (σ_max^{1/ρ} + i/(N−1)·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ with ρ = 7 (Karras et al. 2022).
    * ``logsnr-ends``: equal steps in λ with long ends (``ends_positions``): the first step spans 3 λ-intervals and
      the last evaluated point sits round(√N) intervals before t = 0, so the final jump to ā = 1 is long (at 20
      steps: first step 999 → 877, last point t = 10, σ = 0.047). Both ends are where a step costs little
      accuracy: at pure noise x̂0 barely moves, so the first step is nearly exact, and the final step extrapolates
      x̂0 to σ = 0 in σ² (samplers/exponential.py), which from σ ≈ 0.03–0.1 beats spending evaluations down to
      σ_min. Measured on the analytic mixtures (docs/FRONTIER_READING.md): evaluating σ_min before the final step,
      as diffusers' exponential-sigma grids do, makes UniPC-3 ~10% worse than plain ``logsnr``; the long ends
      make its median error 0.12 / 0.38 / 0.68 / 0.66 / 0.27 of diffusers' UniPC-3 at 10 / 15 / 20 / 30 / 50 steps,
      against 0.17 / 0.54 / 0.71 / 0.96 / 0.45 on ``power1.5`` and 0.54 / 0.83 / 1.02 / 0.95 / 0.40 on ``logsnr``.
      Below 10 steps on the linear schedule the ends are too long (at 5 steps the first step crosses 3/8 of the
      λ-range) and ``quadratic`` or ``power1.5`` do better; on the cosine schedule, whose start is a long stretch of
      pure noise, ``logsnr-ends`` configurations lead from 5 steps on.
    """
    spacing = str(spacing).lower()
    if spacing not in SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r}; choose one of {', '.join(SPACINGS)}")
    T = schedule.T
    steps = check_steps(steps, T)
    if spacing == "logsnr-ends":
        u = ends_positions(steps)
    else:
        u = np.linspace(0.0, 1.0, steps + 1)[:-1]  # 0 at t = T−1, towards 1 at t = 0
    if spacing == "uniform":
        ts = (T - 1) * (1 - u)
    elif spacing == "power1.5":
        ts = (T - 1) * (1 - u) ** 1.5
    elif spacing == "quadratic":
        ts = (T - 1) * (1 - u) ** 2
    else:
        ab = schedule.alphas_cumprod.astype(np.float64)
        log_sigma = 0.5 * np.log((1 - ab) / ab)  # increasing in t
        lo, hi = log_sigma[0], log_sigma[-1]
        if spacing in ("logsnr", "logsnr-ends"):
            target = hi + u * (lo - hi)
        else:
            s_hi, s_lo = np.exp(hi) ** (1 / rho), np.exp(lo) ** (1 / rho)
            target = np.log((s_hi + u * (s_lo - s_hi)) ** rho)
        # invert the linear interpolation of ā exactly, so that alpha_bar_lerp(t) hits the target level
        ab_target = 1.0 / (1.0 + np.exp(2.0 * target))
        ts = np.interp(ab_target, ab[::-1], np.arange(T, dtype=np.float64)[::-1])
    ts[0] = T - 1  # exact despite rounding in the maps above
    return [float(t) for t in ts] + [-1.0]


def check_timesteps(timesteps, T: int) -> list[float]:
    """A user's own grid as a list of floats, or a ValueError that says what is wrong.

    The grid is the model timesteps the sampler visits, strictly decreasing from at most T−1, followed by the target
    of the last step: −1 for ā = 1 (the data), as every built-in grid ends, or a timestep ≥ 0 to stop early.
    """
    try:
        ts = [float(t) for t in timesteps]
    except (TypeError, ValueError):
        raise ValueError("timesteps must be a sequence of numbers") from None
    if len(ts) < 2:
        raise ValueError(f"timesteps needs at least 2 entries (a start and a target), got {len(ts)}")
    if not all(np.isfinite(ts)):
        raise ValueError("timesteps must be finite")
    if any(b >= a for a, b in zip(ts, ts[1:])):
        raise ValueError("timesteps must be strictly decreasing")
    if ts[0] > T - 1:
        raise ValueError(f"timesteps start at {ts[0]:g}, beyond the {T}-step schedule's last timestep {T - 1}")
    if ts[-2] < 0 or ts[-1] < -1:
        raise ValueError("model timesteps must be >= 0 and the final target >= -1 (−1 is ā = 1)")
    return ts


def make_paper_grid(schedule: NoiseSchedule, steps: int, convention: str = "standard") -> Grid:
    """The paper's uniform grid (``uniform_grid``) with ā read from the table at floor(t) under ``convention``."""
    return make_grid(uniform_grid(schedule, steps, convention), partial(schedule.alpha_bar, convention=convention))


def make_spaced_grid(schedule: NoiseSchedule, steps: int, spacing: str) -> Grid:
    """``spaced_grid`` with ā linearly interpolated (standard convention: the last step lands on ā = 1)."""
    return make_grid(spaced_grid(schedule, steps, spacing), schedule.alpha_bar_lerp)


def make_custom_grid(schedule: NoiseSchedule, timesteps: Sequence[float]) -> Grid:
    """A user's own timesteps (checked by ``check_timesteps``), ā read as on the spaced grids (interpolated)."""
    return make_grid(check_timesteps(timesteps, schedule.T), schedule.alpha_bar_lerp)
