"""PF: the probability-flow ODE of the continuous VP SDE, solved by scipy's adaptive Runge-Kutta (the paper's
classical high-order baseline, Song et al. 2021).

With s in [t_end, 1], alpha_bar(s) from the schedule's continuous extension, β(s) = −d log ā/ds and
std(s) = sqrt(1 − ā(s)):

    dx/ds = −β(s)/2 · x + β(s)/2 · ε(x, s·(T−1)) / std(s)

The state is float64 inside the solver; the model sees the input's dtype (float32 for float32 noise, as in the
released code), so the solver's step-size control, and hence the NFE, match the released implementation.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torch import Tensor

from .multistep import EpsFn
from .schedule import NoiseSchedule


def probability_flow(
    eps: EpsFn,
    schedule: NoiseSchedule,
    x: Tensor,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t_end: float = 1e-3,
    solver: str = "RK45",
    callback: Optional[callable] = None,
) -> Tensor:
    shape, dtype, device = x.shape, x.dtype, x.device
    scale = schedule.T - 1

    def drift(s: float, y: np.ndarray) -> np.ndarray:
        xs = torch.from_numpy(y.reshape(shape)).to(device=device, dtype=dtype)
        beta = schedule.beta_continuous(s)
        std = math.sqrt(-math.expm1(schedule.log_alpha_bar_continuous(s)))
        d = xs * (-0.5 * beta) + eps(xs, s * scale) * (0.5 * beta / std)
        if callback is not None:
            callback(s, xs)
        return d.detach().to("cpu", torch.float64).numpy().reshape(-1)

    y0 = x.detach().to("cpu", torch.float64).numpy().reshape(-1)
    sol = solve_ivp(drift, (1.0, t_end), y0, method=solver, rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"PF: the ODE solver failed: {sol.message}")
    return torch.from_numpy(sol.y[:, -1].reshape(shape)).to(device=device, dtype=dtype)


def solve_flow(
    eps: EpsFn,
    schedule: NoiseSchedule,
    x: Tensor,
    t_start: float,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    solver: str = "RK45",
) -> tuple[Tensor, int]:
    """A high-accuracy solution of the deterministic sampling ODE from timestep ``t_start`` to clean data.

    It is the ODE that every grid method above discretises (standard convention), written in DDIM's variables
    x̄ = x/sqrt(ā), σ = sqrt((1−ā)/ā): dx̄/dσ = ε(x̄·sqrt(ā), t(σ)), from σ(t_start) to 0. The model sees the float
    timestep t(σ) that linearly interpolates the schedule's table (clamped at t = 0 over the final stretch from
    ā_0 to 1, which the samplers also cross with ε at t = 0). Returns (x_0, NFE).

    This is the reference from which ``ablate`` measures each sampler's distance: unlike FID, it keeps ranking
    methods once they are all visually converged.
    """
    shape, dtype, device = x.shape, x.dtype, x.device
    ab_table = schedule.alphas_cumprod.astype(np.float64)
    log_sigma_table = 0.5 * np.log((1 - ab_table) / ab_table)  # increasing in t
    t_grid = np.arange(schedule.T, dtype=np.float64)
    ab0 = schedule.alpha_bar(t_start, "standard")
    sigma0 = math.sqrt((1 - ab0) / ab0)
    nfe = 0

    def rhs(sigma: float, y: np.ndarray) -> np.ndarray:
        nonlocal nfe
        nfe += 1
        ab = 1.0 / (1.0 + sigma * sigma)
        t = float(np.interp(math.log(max(sigma, 1e-30)), log_sigma_table, t_grid)) if sigma > 0 else 0.0
        xt = torch.from_numpy(y.reshape(shape)).to(device=device, dtype=dtype) * math.sqrt(ab)
        return eps(xt, t).detach().to("cpu", torch.float64).numpy().reshape(-1)

    y0 = (x.detach().to("cpu", torch.float64) / math.sqrt(ab0)).numpy().reshape(-1)
    sol = solve_ivp(rhs, (sigma0, 0.0), y0, method=solver, rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"flow solve failed: {sol.message}")
    return torch.from_numpy(sol.y[:, -1].reshape(shape)).to(device=device, dtype=dtype), nfe
