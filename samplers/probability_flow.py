"""PF: the probability-flow ODE of the continuous VP SDE, solved by scipy's adaptive Runge-Kutta (the paper's
classical high-order baseline, Song et al. 2021).

On the VP time axis s ∈ [t_end, 1] (model timestep s·(T−1)), with ā(s) = exp(``schedule.vp_log_alpha_bar(s)``),
β(s) = ``schedule.vp_beta(s)`` = −d log ā/ds and std(s) = sqrt(1 − ā(s)) (Song et al. 2021, eq. 13 with
the VP SDE's drift and diffusion):

    dx/ds = −β(s)/2 · x + β(s)/2 · ε(x, s·(T−1)) / std(s)

On ``quad`` and ``cosine`` schedules the standard convention integrates the VP process of that schedule (the one
the model was trained on); the official convention integrates what the released code does on every schedule —
the linear VP SDE between betas[0] and betas[-1] — so that its numbers, the paper's PF rows included, are
reproduced. On ``linear`` the two are the same.

The state is float64 inside the solver; the model sees the input's dtype (float32 for float32 noise, as in the
released code), so the solver's step-size control, and hence the NFE, match the released implementation.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torch import Tensor

from .multistep import EpsFn
from .schedule import NoiseSchedule, check_convention


def probability_flow(
    eps: EpsFn,
    schedule: NoiseSchedule,
    x: Tensor,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t_end: float = 1e-3,
    callback: Optional[Callable[[float, Tensor], None]] = None,
    convention: str = "standard",
) -> Tensor:
    """x_0 of the flow from s = 1 to ``t_end`` by RK45 with ``rtol``/``atol``; ``callback(s, x)`` after every
    model call; ``convention`` 'official': the released code's VP process (module docstring). The NFE is the
    solver's: count the calls of ``eps``."""
    released = check_convention(convention) == "official"
    shape, dtype, device = x.shape, x.dtype, x.device
    scale = schedule.T - 1

    def drift(s: float, y: np.ndarray) -> np.ndarray:
        xs = torch.from_numpy(y.reshape(shape)).to(device=device, dtype=dtype)
        beta = schedule.vp_beta(s, released)
        std = math.sqrt(-math.expm1(schedule.vp_log_alpha_bar(s, released)))
        d = xs * (-0.5 * beta) + eps(xs, s * scale) * (0.5 * beta / std)
        if callback is not None:
            callback(s, xs)
        return d.detach().to("cpu", torch.float64).numpy().reshape(-1)

    y0 = x.detach().to("cpu", torch.float64).numpy().reshape(-1)
    sol = solve_ivp(drift, (1.0, t_end), y0, method="RK45", rtol=rtol, atol=atol)
    if not sol.success:  # a step size below float spacing: the flow blows up (or is too stiff) for this model
        raise FloatingPointError(f"PF: the ODE solver failed at s = {sol.t[-1]:.4g} (model timestep "
                                 f"{sol.t[-1] * scale:.1f}): {sol.message}")
    return torch.from_numpy(sol.y[:, -1].reshape(shape)).to(device=device, dtype=dtype)

