"""One engine for DDIM, S-PNDM, F-PNDM and the classical fourth-order baseline FON.

All four are linear multistep methods with a Runge-Kutta-type warm-up; they differ only in

* the *family*: what a "direction" d is and how a step advances along it
  - pseudo (PNDM paper, section 3): d = ε(y, s) and advance(x, d, t → t') = φ(x, d, t, t'), the transfer of eq. 11;
  - classical (FON, section 4.1): d = D(y, s) = φ(x, ε(y, s), t, t−1) − x, the derivative of the DDIM ODE over
    one unit of t, and advance(x, d, t → t') = x + (t − t')·d. As in the released code, φ is always applied to
    the step's start point x; only the model sees the stage point y;
* the *order* of the Adams-Bashforth combination of past directions (1 = DDIM, 2 = S-PNDM, 4 = F-PNDM/FON);
* the *warm-up* used while fewer than ``order − 1`` past directions exist: improved Euler (S-PNDM) or the
  classical Runge-Kutta scheme (F-PNDM, FON). Only the first direction of a warm-up step enters the history.

Every engine here and in stochastic.py / exponential.py has one signature,
``engine(eps, grid, x, *, callback=None, noise=None, **options)``: ā at the grid's points comes from
``grid.alpha_bars``, ā at stage points between them from ``grid.alpha_bar``.

The history lives in a local deque: nothing survives between calls. Timesteps and ā may be 0-dim tensors that
require grad (``samplers.scalars``, used by ``samplers.tuning``); the arithmetic is then differentiable.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from torch import Tensor

from . import scalars as S
from .grids import Grid
from .transfer import transfer, transfer_delta

# Adams-Bashforth weights, newest direction first.
ADAMS_BASHFORTH = {
    1: (1.0,),
    2: (3 / 2, -1 / 2),
    3: (23 / 12, -16 / 12, 5 / 12),
    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
}

EpsFn = Callable[[Tensor, float], Tensor]
AlphaBarFn = Callable[[float], float]
StepCallback = Callable[[int, float, float, Tensor], None]
NoiseFn = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Point:
    """A stage point's model timestep t and its noise level ā (read once, from the grid where t is on it)."""

    t: float
    ab: float


@dataclass(frozen=True)
class Family:
    """direction(y, s, x, p) -> d at stage point (y, s) of the step that starts at (x, p);
    advance(x, d, p, q) -> the point reached from (x, p) along d, at q (p, q, s: ``Point``)."""

    direction: Callable[[Tensor, Point, Tensor, Point], Tensor]
    advance: Callable[[Tensor, Tensor, Point, Point], Tensor]


def pseudo_family(eps: EpsFn, alpha_bar: AlphaBarFn) -> Family:
    """d = ε(y, s); advance = the transfer φ of eq. 11 (PNDM paper, section 3)."""
    return Family(
        direction=lambda y, s, x, p: eps(y, s.t),
        advance=lambda x, d, p, q: transfer(x, d, p.ab, q.ab),
    )


def classical_family(eps: EpsFn, alpha_bar: AlphaBarFn) -> Family:
    """d = φ(x, ε(y, s), t, t−1) − x, one unit of t of the DDIM ODE (section 4.1); advance = x + (t − t')·d.
    ā at t − 1 is off the grid, so it comes from the grid's rule ``alpha_bar``."""
    return Family(
        direction=lambda y, s, x, p: transfer_delta(x, eps(y, s.t), p.ab, alpha_bar(p.t - 1)),
        advance=lambda x, d, p, q: S.add(x, d, p.t - q.t),
    )


FAMILIES = {"pseudo": pseudo_family, "classical": classical_family}


def combine(weights: Sequence[float], directions: Sequence[Tensor]) -> Tensor:
    """Σ w_i·d_i (directions newest first)."""
    out = directions[0] * weights[0]
    for w, d in zip(weights[1:], directions[1:]):
        out.add_(d, alpha=w)
    return out


def improved_euler(f: Family, x: Tensor, p: Point, q: Point, alpha_bar: AlphaBarFn) -> tuple[Tensor, Tensor]:
    """Pseudo improved Euler (S-PNDM's first step): returns (first direction, averaged direction)."""
    d1 = f.direction(x, p, x, p)
    d2 = f.direction(f.advance(x, d1, p, q), q, x, p)
    return d1, (d1 + d2) / 2


def runge_kutta4(f: Family, x: Tensor, p: Point, q: Point, alpha_bar: AlphaBarFn) -> tuple[Tensor, Tensor]:
    """Classical fourth-order Runge-Kutta with stage points built by ``f.advance`` (the paper's pseudo Runge-Kutta,
    section 3); the midpoint (t + t')/2 is off the grid, so its ā comes from ``alpha_bar``."""
    t_mid = (p.t + q.t) / 2
    mid = Point(t_mid, alpha_bar(t_mid))
    d1 = f.direction(x, p, x, p)
    d2 = f.direction(f.advance(x, d1, p, mid), mid, x, p)
    d3 = f.direction(f.advance(x, d2, p, mid), mid, x, p)
    d4 = f.direction(f.advance(x, d3, p, q), q, x, p)
    return d1, combine((1 / 6, 2 / 6, 2 / 6, 1 / 6), (d1, d2, d3, d4))


WARMUPS = {"improved_euler": improved_euler, "rk4": runge_kutta4}
# extra model evaluations one warm-up step costs beyond the single one of a multistep step
WARMUP_EXTRA_NFE = {"improved_euler": 1, "rk4": 3}


def linear_multistep(
    eps: EpsFn,
    grid: Grid,
    x: Tensor,
    *,
    callback: Optional[StepCallback] = None,
    noise: Optional[NoiseFn] = None,
    family: str = "pseudo",
    order: int = 1,
    warmup: Optional[str] = None,
) -> Tensor:
    """Integrate over ``grid`` from x and return the final x (``noise`` is unused: the methods are deterministic).

    ``family``: 'pseudo' or 'classical' (``FAMILIES``); ``order``: of the Adams-Bashforth combination (the paper's
    pseudo linear multistep, section 3); ``warmup``: a key of WARMUPS, or ``"lower_order"`` to start with
    lower-order Adams-Bashforth steps (no extra model evaluations), or None when ``order`` is 1.
    """
    f = FAMILIES[family](eps, grid.alpha_bar)
    points = [Point(t, ab) for t, ab in zip(grid.timesteps, grid.alpha_bars)]
    history: deque[Tensor] = deque(maxlen=order)  # newest at the left
    for i, (p, q) in enumerate(zip(points[:-1], points[1:])):
        if len(history) + 1 >= order or warmup == "lower_order":
            d = f.direction(x, p, x, p)
            history.appendleft(d)
            direction = combine(ADAMS_BASHFORTH[len(history)], list(history))
        else:
            d, direction = WARMUPS[warmup](f, x, p, q, grid.alpha_bar)
            history.appendleft(d)
        x = f.advance(x, direction, p, q)
        if callback is not None:
            callback(i, p.t, q.t, x)
    return x
