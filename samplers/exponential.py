"""Exponential-integrator multistep samplers: DPM-Solver++ (2M/3M), UniPC, DEIS and a variable-step Adams method.

All four integrate the probability-flow ODE with one model evaluation per step, reusing the model outputs of
earlier steps (the first steps of a grid use lower orders while that history is missing). Notation, per grid point:

    α = sqrt(ā),  σ = sqrt(1 − ā),  λ = log(α/σ) (half the log-SNR),  ρ = σ/α = e^(−λ),
    data prediction  m = x̂0 = (x − σ·ε(x, t)) / α.

Exact solution over one step s → t with h = λ_t − λ_s > 0 (variation of constants, τ = λ − λ_s):

    x_t = (σ_t/σ_s)·x_s + α_t ∫_0^h e^(−(h−τ)) x̂0(λ_s + τ) dτ                       (data-prediction form)
        = (α_t/α_s)·x_s − σ_t ∫_0^h e^(h−τ) ε(λ_s + τ) dτ                               (noise-prediction form)

Replacing x̂0 (or ε) by the polynomial through the last k model outputs and integrating it exactly needs the
moments g_n = ∫_0^h e^(−(h−τ)) (τ/h)^n dτ = n!·h·φ_{n+1}(−h) and G_n = ∫_0^h e^(h−τ) (τ/h)^n dτ = n!·h·φ_{n+1}(h)
(φ_j the usual exponential-integrator functions: φ_0 = e^z, φ_{j+1}(z) = (φ_j(z) − 1/j!)/z). If the polynomial is
p(θ) = Σ_n c_n θ^n in θ = τ/h through nodes r_j = (λ_j − λ_s)/h (r_0 = 0, earlier points r_j < 0), its integral is
Σ_n c_n g_n = Σ_j w_j m_j with w the solution of A^T w = (g_0, …, g_{k−1}), A_jn = r_j^n.

The step to data (ā = 1, σ = 0, λ = +∞) cannot use a polynomial in λ. Along an exact trajectory of a smooth data
density, dx̂0/dρ = −ρ·dε/dρ vanishes at ρ = 0, so x̂0 is a smooth function of u = ρ² = σ²/α² there. The final
step of ``dpm_solver_pp``, ``unipc`` and ``deis`` therefore returns the Lagrange extrapolation to u = 0 of the
data predictions at the last k grid points (k = the order that step would use; k = 1 gives x̂0 of the last point,
which is exactly the DDIM step and what diffusers does). On the analytic Gaussian-mixture model this is more
accurate than the first-order step: e.g. 5e-4 instead of 2.2e-2 RMSE for 20-step UniPC-3 on diffusers' linspace
grid, whose last step runs from t = 50 to data (the smooth mixture of tests/samplers/test_exponential.py; 2.8e-2
instead of 5.2e-2 on a mixture with narrow components). With integer timesteps the extrapolation weights stay
moderate (|w| < 3 for the densest possible end t = 2, 1, 0).
``variable_step_adams`` works in ρ, where σ = 0 is an ordinary point: its final step is its normal formula.

Coefficients are Python floats (float64) applied to the tensors with mul/add_, so the samplers make no device or
dtype assumptions; history lives in local lists and nothing survives a call. On a grid of 0-dim tensors that
require grad (``samplers.tuning``) the same code computes differentiable coefficients (``samplers.scalars``).
Every solver has the engine signature ``f(eps, grid, x, *, callback=None, noise=None, order[, variant])``
(``noise`` is unused: all are deterministic) and reads ā at the grid's points from ``grid.alpha_bars``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from torch import Tensor

from . import scalars as S
from .grids import Grid, as_int
from .multistep import EpsFn, NoiseFn, StepCallback
from .transfer import transfer_coefficients

UNIPC_VARIANTS = ("bh1", "bh2")


# ----------------------------------------------------------------------------------------------------------------
# noise levels and scalar coefficients (all in float64)

@dataclass(frozen=True)
class _Level:
    ab: float
    alpha: float
    sigma: float
    lam: float  # +inf at ā = 1
    rho: float  # σ/α, 0 at ā = 1


def _levels(grid: Grid) -> List[_Level]:
    """The noise levels of the grid's points (ā from ``grid.alpha_bars``: every stage here is a grid point)."""
    timesteps = grid.timesteps
    if len(timesteps) < 2:
        raise ValueError("timesteps needs at least two entries (the last one is the target of the final step)")
    levels = []
    for i, (t, ab) in enumerate(zip(timesteps, grid.alpha_bars)):
        last = i == len(timesteps) - 1
        if not (0.0 < ab < 1.0 or (last and ab == 1.0)):
            raise ValueError(f"alpha_bar({t}) = {ab} must lie in (0, 1) (only the final target may be 1)")
        if levels and not ab > levels[-1].ab:
            raise ValueError(f"alpha_bar must increase along timesteps; got {levels[-1].ab} then {ab} at t={t}")
        alpha, sigma = S.sqrt(ab), S.sqrt(1.0 - ab)
        lam = math.inf if ab == 1.0 else 0.5 * (S.log(ab) - S.log1p(-ab))
        levels.append(_Level(ab, alpha, sigma, lam, sigma / alpha))
    return levels


def _check_order(order, highest: int) -> int:
    order = as_int("order", order)
    if not 1 <= order <= highest:
        raise ValueError(f"order must be between 1 and {highest}, got {order}")
    return order


def _phi(j: int, z: float) -> float:
    """φ_j(z) = Σ_n z^n/(n+j)!, by its series for small |z| and by the recurrence from e^z otherwise."""
    if abs(z) < 0.5:
        total, term = 0.0, 1.0 / math.factorial(j)
        for n in range(30):
            total += term
            term *= z / (n + j + 1)
        return total
    value = S.exp(z)
    for k in range(j):
        value = (value - 1.0 / math.factorial(k)) / z
    return value


def _g(n: int, h: float) -> float:
    """∫_0^h e^(−(h−τ)) (τ/h)^n dτ (data-prediction moments)."""
    return math.factorial(n) * h * _phi(n + 1, -h)


def _G(n: int, h: float) -> float:
    """∫_0^h e^(h−τ) (τ/h)^n dτ (noise-prediction moments)."""
    return math.factorial(n) * h * _phi(n + 1, h)


def _lagrange_weights(nodes: Sequence[float], moments: Sequence[float]) -> List[float]:
    """w with Σ_j w_j p(nodes_j) = Σ_n moments_n·c_n for every polynomial p(θ) = Σ_n c_n θ^n of degree < len(nodes)."""
    return S.solve([[r**n for n in range(len(nodes))] for r in nodes], moments, transpose=True)


def _extrapolation_to_data(rhos: Sequence[float]) -> List[float]:
    """Lagrange weights, in u = ρ², that evaluate the polynomial through the points at u = 0."""
    u = [r * r for r in rhos]
    weights = []
    for j, uj in enumerate(u):
        w = 1.0
        for i, ui in enumerate(u):
            if i != j:
                w *= ui / (ui - uj)
        weights.append(w)
    return weights


# ----------------------------------------------------------------------------------------------------------------
# tensor helpers

def _combine(x: Tensor, a: float, terms: Sequence[Tuple[float, Tensor]]) -> Tensor:
    """a·x + Σ c·y (a new tensor)."""
    out = x.mul(a)
    for c, y in terms:
        out = S.add_(out, y, c)
    return out


def _data_prediction(x: Tensor, e: Tensor, lv: _Level) -> Tensor:
    return S.add_(x.mul(1.0 / lv.alpha), e, -lv.sigma / lv.alpha)


def _to_data(history: Sequence[Tuple[_Level, Tensor]], k: int) -> Tensor:
    """The final step to ā = 1: data predictions (newest first) extrapolated to σ = 0 in ρ²."""
    if k == 1:
        return history[0][1].clone()
    w = _extrapolation_to_data([lv.rho for lv, _ in history[:k]])
    return _combine(history[0][1], w[0], [(wj, m) for wj, (_, m) in zip(w[1:], history[1:k])])


def _exp_update(x: Tensor, s: _Level, t: _Level, history, moments) -> Tensor:
    """(σ_t/σ_s)·x + α_t·Σ_j w_j m_j over the newest len(moments) data predictions."""
    k = len(moments)
    h = t.lam - s.lam
    w = _lagrange_weights([(lv.lam - s.lam) / h for lv, _ in history[:k]], moments)
    return _combine(x, t.sigma / s.sigma, [(t.alpha * wj, m) for wj, (_, m) in zip(w, history[:k])])


# ----------------------------------------------------------------------------------------------------------------
# 1. DPM-Solver++

def dpm_solver_pp(eps: EpsFn, grid: Grid, x: Tensor, *, callback: Optional[StepCallback] = None,
                  noise: Optional[NoiseFn] = None, order: int) -> Tensor:
    """Multistep DPM-Solver++ (Lu et al. 2022) of ``order`` 1, 2 or 3; one model evaluation per step.

    With m_0, m_1, m_2 the data predictions at λ_s, λ_s − h_0, λ_s − h_0 − h_1, r_0 = h_0/h, r_1 = h_1/h:

    * order 1 (DDIM):  x_t = (σ_t/σ_s)·x + α_t·(1 − e^(−h))·m_0;
    * 2M (Algorithm 2): x_t = (σ_t/σ_s)·x + α_t·(1 − e^(−h))·(m_0 + (m_0 − m_1)/(2 r_0));
    * 3M: x_t = (σ_t/σ_s)·x + α_t·(g_0·m_0 + g_1·D_1 + g_2·D_2) with D_1 = h·p'(0), D_2 = h²·p''(0)/2 of the
      quadratic p through the three points (D_2 = (d_01 − d_12)/(r_0 + r_1), D_1 = d_01 + r_0·D_2,
      d_01 = (m_0 − m_1)/r_0, d_12 = (m_1 − m_2)/r_1): the exact integral of the quadratic, third order.

    The released DPM-Solver code and diffusers' third-order update weight D_2 by g_2/2 instead of g_2 (their
    φ_3-term: ((e^(−h) − 1 + h)/h² − 1/2) = −g_2/2); that halves the second-derivative correction and leaves a
    local error O(h³), i.e. a second-order method (on the analytic model, 40-320 steps uniform in λ: observed
    order 2.0 against 3.2-3.4 for this one; at 6-15 steps the two are within about 20% of each other either way).
    Here 3M is the third-order one; ``_dpm_solver_pp(..., official_3m=True)`` reproduces diffusers (parity test).
    Warm-up: the first step is first order, the second at most 2M. Their local errors, O(h²) and O(h³), make the
    global order 2 unless the first steps are cheap: from t = T−1, where the data prediction barely moves, the
    third order shows (above); from a start inside the flow (``timesteps=[500, …]``, a learned first timestep) the
    observed order is 2 (measured 1.99–2.00 on an analytic mixture, linear schedule, from t = 500) unless the
    first two steps are made short. The final step to ā = 1 is described in the module docstring.
    """
    return _dpm_solver_pp(eps, grid, x, callback=callback, order=order)


def _dpm_solver_pp(eps: EpsFn, grid: Grid, x: Tensor, *, callback: Optional[StepCallback] = None,
                   noise: Optional[NoiseFn] = None, order: int, official_3m: bool = False) -> Tensor:
    """``dpm_solver_pp``; ``official_3m`` weights D_2 by g_2/2 as the released code and diffusers do."""
    order = _check_order(order, 3)
    levels = _levels(grid)
    timesteps = grid.timesteps
    history: List[Tuple[_Level, Tensor]] = []  # (level, data prediction), newest first
    for i, (s, t) in enumerate(zip(levels[:-1], levels[1:])):
        history.insert(0, (s, _data_prediction(x, eps(x, timesteps[i]), s)))
        del history[order:]
        k = len(history)
        if t.sigma == 0.0:
            x = _to_data(history, k)
        else:
            h = t.lam - s.lam
            g0 = -S.expm1(-h)
            if k == 1:
                moments = [g0]
            elif k == 2:
                moments = [g0, g0 / 2]  # the midpoint form of Algorithm 2
            else:
                moments = [g0, _g(1, h), _g(2, h) / 2 if official_3m else _g(2, h)]
            x = _exp_update(x, s, t, history, moments)
        if callback is not None:
            callback(i, timesteps[i], timesteps[i + 1], x)
    return x


# ----------------------------------------------------------------------------------------------------------------
# 2. UniPC

def _unipc_betas(nodes: Sequence[float], h: float, variant: str) -> List[float]:
    """β_k (= B(h)·a_k) for the differences D_k = (m_k − m_0)/r_k at the nodes r_k.

    Order conditions Σ_k β_k r_k^(n−1) = g_n for n = 1..K; with a single difference (UniP-2, UniC-1) the paper's
    simplified choice a_1 = 1/2, β = B(h)/2 with B(h) = h ('bh1') or 1 − e^(−h) ('bh2'). For K ≥ 2 B(h) cancels.
    """
    if len(nodes) == 1:
        return [0.5 * (h if variant == "bh1" else -S.expm1(-h))]
    return S.solve([[rk**n for rk in nodes] for n in range(len(nodes))], [_g(n, h) for n in range(1, len(nodes) + 1)])


def _unipc_update(x: Tensor, s: _Level, t: _Level, m0: Tensor, others: Sequence[Tuple[float, Tensor]],
                  variant: str) -> Tensor:
    """(σ_t/σ_s)·x + α_t·((1 − e^(−h))·m_0 + Σ_k β_k (m_k − m_0)/r_k), ``others`` = [(r_k, m_k)]."""
    h = t.lam - s.lam
    c0 = -S.expm1(-h)
    terms = []
    if others:
        betas = _unipc_betas([r for r, _ in others], h, variant)
        for b, (r, m) in zip(betas, others):
            c0 -= b / r
            terms.append((t.alpha * b / r, m))
    return _combine(x, t.sigma / s.sigma, [(t.alpha * c0, m0)] + terms)


def unipc(eps: EpsFn, grid: Grid, x: Tensor, *, callback: Optional[StepCallback] = None,
          noise: Optional[NoiseFn] = None, order: int, variant: str) -> Tensor:
    """UniPC (Zhao et al. 2023) with data prediction, ``order`` 1, 2 or 3, ``variant`` 'bh1' or 'bh2'.

    B(h) = h ('bh1') or e^h − 1 ('bh2'); in the data-prediction form (h → −h, sign absorbed) h and 1 − e^(−h).

    Step i, from x_i (as predicted by step i − 1) at λ_i:
    1. evaluate the model once at x_i: m_i = x̂0(x_i);
    2. UniC-p (i ≥ 1, p = the order of the previous predictor): redo the previous step from its start x_{i−1}^c
       with the new value m_i as an extra node r = 1:
       x_i^c = (σ_i/σ_{i−1})·x_{i−1}^c + α_i·((1 − e^(−h))·m_{i−1} + Σ_k β_k (m_k − m_{i−1})/r_k)
       over the p − 1 earlier nodes and r = 1 (order p + 1, no extra model evaluation);
    3. UniP-p (p = min(order, i + 1)): the same formula from x_i^c at λ_i over the p − 1 earlier nodes only.
    The β_k solve the order conditions of ``_unipc_betas``; with one difference the paper's β = B(h)/2 is used, so
    'bh1' and 'bh2' differ only in UniP-2 and UniC-1 (UniP-2 with 'bh2' is DPM-Solver++ 2M). UniP-3 is the exact
    integral of the quadratic (= ``dpm_solver_pp`` 3M).

    m_i is computed at the uncorrected x_i and reused as is, as in the paper. No corrector follows the final step.
    ``callback`` sees the predicted (uncorrected) x_{i+1}, the value the next model call is made at.
    Final step to ā = 1: the data predictions are extrapolated to σ = 0 (module docstring), with the newest one
    moved to the corrected point, m_i + (x_i^c − x_i)/α_i (= (x_i^c − σ_i ε(x_i))/α_i), so that the last
    correction is not lost (with σ_t = 0 the factor σ_t/σ_s on x_i^c vanishes).
    """
    order = _check_order(order, 3)
    if variant not in UNIPC_VARIANTS:
        raise ValueError(f"unknown UniPC variant {variant!r}; choose one of {', '.join(UNIPC_VARIANTS)}")
    levels = _levels(grid)
    timesteps = grid.timesteps
    history: List[Tuple[_Level, Tensor]] = []  # (level, data prediction at the predicted point), newest first
    previous = None  # (start point x_{i-1}^c, its level, order of the predictor that left it)
    for i, (s, t) in enumerate(zip(levels[:-1], levels[1:])):
        m = _data_prediction(x, eps(x, timesteps[i]), s)
        m_final = m
        if previous is not None:
            x_start, s_start, p = previous
            h = s.lam - s_start.lam
            others = [((lv.lam - s_start.lam) / h, mk) for lv, mk in history[1:p]] + [(1.0, m)]
            x_corrected = _unipc_update(x_start, s_start, s, history[0][1], others, variant)
            if t.sigma == 0.0:
                m_final = S.add(m, x_corrected - x, 1.0 / s.alpha)
            x = x_corrected
        history.insert(0, (s, m))
        del history[order:]
        p = len(history)
        if t.sigma == 0.0:
            x = _to_data([(s, m_final)] + history[1:], p)
        else:
            others = [((lv.lam - s.lam) / (t.lam - s.lam), mk) for lv, mk in history[1:p]]
            previous = (x, s, p)
            x = _unipc_update(x, s, t, m, others, variant)
        if callback is not None:
            callback(i, timesteps[i], timesteps[i + 1], x)
    return x


# ----------------------------------------------------------------------------------------------------------------
# 3. DEIS

def deis(eps: EpsFn, grid: Grid, x: Tensor, *, callback: Optional[StepCallback] = None,
         noise: Optional[NoiseFn] = None, order: int) -> Tensor:
    """DEIS (Zhang & Chen 2022) as diffusers' DEISMultistepScheduler implements it ('logrho'), ``order`` 1-3.

    In DDIM's variables x̄ = x/α, ρ = σ/α the flow is dx̄/dρ = ε. This variant fits the Lagrange polynomial of ε
    in log ρ (= −λ) through the last ``order`` points and integrates it exactly over [ρ_s, ρ_t]; in λ that is the
    noise-prediction exponential integrator

        x_t = (α_t/α_s)·x − σ_t·Σ_j w_j ε_j,   A^T w = (G_0, …, G_{k−1}),  A_jn = r_j^n,  r_j = (λ_j − λ_s)/h.

    Order 1 is DDIM. (The paper's tAB fits ε in t and needs quadrature for its weights; its ρAB fits ε in ρ and
    is ``variable_step_adams``.) A polynomial in log ρ cannot be extrapolated to ρ = 0 usefully (ε ≈ ρ·const
    there; the extrapolated step is no better than DDIM), so the final step to ā = 1 is the data-prediction
    extrapolation of the module docstring.
    """
    order = _check_order(order, 3)
    levels = _levels(grid)
    timesteps = grid.timesteps
    history: List[Tuple[_Level, Tensor, Tensor]] = []  # (level, ε, x), newest first
    for i, (s, t) in enumerate(zip(levels[:-1], levels[1:])):
        history.insert(0, (s, eps(x, timesteps[i]), x))
        del history[order:]
        k = len(history)
        if t.sigma == 0.0:
            x = _to_data([(lv, _data_prediction(xj, ej, lv)) for lv, ej, xj in history], k)
        else:
            h = t.lam - s.lam
            w = _lagrange_weights([(lv.lam - s.lam) / h for lv, _, _ in history], [_G(n, h) for n in range(k)])
            x = _combine(x, t.alpha / s.alpha, [(-t.sigma * wj, ej) for wj, (_, ej, _) in zip(w, history)])
        if callback is not None:
            callback(i, timesteps[i], timesteps[i + 1], x)
    return x


# ----------------------------------------------------------------------------------------------------------------
# 4. variable-step pseudo Adams (DEIS's ρAB)

def variable_step_adams(eps: EpsFn, grid: Grid, x: Tensor, *, callback: Optional[StepCallback] = None,
                        noise: Optional[NoiseFn] = None, order: int) -> Tensor:
    """PNDM's pseudo linear multistep on any grid: Adams-Bashforth in DDIM's variables, ``order`` 1-4.

    With x̄ = x/α and ρ = σ/α the exact flow is dx̄/dρ = ε. Each step fits the Lagrange polynomial through the last
    k = min(order, i + 1) points (ρ_j, ε_j) and integrates it exactly over [ρ_i, ρ_{i+1}]:

        x̄_{i+1} = x̄_i + Δ·Σ_j β_j ε_j,   Δ = ρ_{i+1} − ρ_i,   A^T β = (1, 1/2, …, 1/k),  A_jn = θ_j^n,
        θ_j = (ρ_j − ρ_i)/Δ,

    applied as x_{i+1} = a·x_i + b·Σ_j β_j ε_j with (a, b) the DDIM transfer coefficients (a = α_{i+1}/α_i,
    b = α_{i+1}·Δ; order 1 is DDIM exactly). This is DEIS's ρAB. It is not ``deis``, which fits ε in log ρ. On a
    grid uniform in ρ the β are the classical Adams-Bashforth weights and the method is PNDM's pseudo linear
    multistep with lower-order (instead of Runge-Kutta) warm-up. ρ = 0 (ā = 1) is an ordinary point, so the final
    step uses the same formula.
    """
    order = _check_order(order, 4)
    levels = _levels(grid)
    timesteps = grid.timesteps
    history: List[Tuple[_Level, Tensor]] = []  # (level, ε), newest first
    for i, (s, t) in enumerate(zip(levels[:-1], levels[1:])):
        history.insert(0, (s, eps(x, timesteps[i])))
        del history[order:]
        k = len(history)
        delta = t.rho - s.rho
        beta = _lagrange_weights([(lv.rho - s.rho) / delta for lv, _ in history], [1.0 / (n + 1) for n in range(k)])
        a, b = transfer_coefficients(s.ab, t.ab)
        x = _combine(x, a, [(b * bj, ej) for bj, (_, ej) in zip(beta, history)])
        if callback is not None:
            callback(i, timesteps[i], timesteps[i + 1], x)
    return x

