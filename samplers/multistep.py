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

The history lives in a local deque: nothing survives between calls.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from torch import Tensor

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


@dataclass(frozen=True)
class Family:
    """direction(y, s, x, t) -> d at stage point (y, s) of the step that starts at (x, t);
    advance(x, d, t, t_next) -> the point reached from (x, t) along d."""

    direction: Callable[[Tensor, float, Tensor, float], Tensor]
    advance: Callable[[Tensor, Tensor, float, float], Tensor]


def pseudo_family(eps: EpsFn, alpha_bar: AlphaBarFn) -> Family:
    return Family(
        direction=lambda y, s, x, t: eps(y, s),
        advance=lambda x, d, t, t_next: transfer(x, d, alpha_bar(t), alpha_bar(t_next)),
    )


def classical_family(eps: EpsFn, alpha_bar: AlphaBarFn) -> Family:
    return Family(
        direction=lambda y, s, x, t: transfer_delta(x, eps(y, s), alpha_bar(t), alpha_bar(t - 1)),
        advance=lambda x, d, t, t_next: x.add(d, alpha=t - t_next),
    )


def combine(weights: Sequence[float], directions: Sequence[Tensor]) -> Tensor:
    """Σ w_i·d_i (directions newest first)."""
    out = directions[0] * weights[0]
    for w, d in zip(weights[1:], directions[1:]):
        out.add_(d, alpha=w)
    return out


def improved_euler(f: Family, x: Tensor, t: float, t_next: float) -> tuple[Tensor, Tensor]:
    """Pseudo improved Euler (S-PNDM's first step): returns (first direction, averaged direction)."""
    d1 = f.direction(x, t, x, t)
    d2 = f.direction(f.advance(x, d1, t, t_next), t_next, x, t)
    return d1, (d1 + d2) / 2


def runge_kutta4(f: Family, x: Tensor, t: float, t_next: float) -> tuple[Tensor, Tensor]:
    """Classical fourth-order Runge-Kutta with stage points built by ``f.advance`` (pseudo RK in the paper)."""
    t_mid = (t + t_next) / 2
    d1 = f.direction(x, t, x, t)
    d2 = f.direction(f.advance(x, d1, t, t_mid), t_mid, x, t)
    d3 = f.direction(f.advance(x, d2, t, t_mid), t_mid, x, t)
    d4 = f.direction(f.advance(x, d3, t, t_next), t_next, x, t)
    return d1, combine((1 / 6, 2 / 6, 2 / 6, 1 / 6), (d1, d2, d3, d4))


WARMUPS = {"improved_euler": improved_euler, "rk4": runge_kutta4}
# extra model evaluations one warm-up step costs beyond the single one of a multistep step
WARMUP_EXTRA_NFE = {"improved_euler": 1, "rk4": 3}


def linear_multistep(
    f: Family,
    x: Tensor,
    timesteps: Sequence[float],
    order: int,
    warmup: Optional[str],
    callback: Optional[StepCallback] = None,
) -> Tensor:
    """Integrate over ``timesteps`` (descending, the last entry is the target) and return the final x.

    ``warmup`` is a key of WARMUPS, or ``"lower_order"`` to start with lower-order Adams-Bashforth steps
    (no extra model evaluations), or None when ``order`` is 1.
    """
    history: deque[Tensor] = deque(maxlen=order)  # newest at the left
    for i, (t, t_next) in enumerate(zip(timesteps[:-1], timesteps[1:])):
        if len(history) + 1 >= order or warmup == "lower_order":
            d = f.direction(x, t, x, t)
            history.appendleft(d)
            direction = combine(ADAMS_BASHFORTH[len(history)], list(history))
        else:
            d, direction = WARMUPS[warmup](f, x, t, t_next)
            history.appendleft(d)
        x = f.advance(x, direction, t, t_next)
        if callback is not None:
            callback(i, t, t_next, x)
    return x
