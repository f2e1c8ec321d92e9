"""Learned solvers: a DPM-Solver++(2M)-based scheme whose grid, per-step coefficients and network times are all fitted
to a high-accuracy teacher for one network, as a solver of its own (``LearnedSolver``, ``learn_solver``).

A tuned time grid (``samplers.tuning``) moves where a fixed method evaluates the network; on the digits network
that stops at 0.99× / 0.73× the best fixed spacing of any method at NFE 5 / 10 (docs/TUNING.md): the error left
is the method's, not the grid's. A learned solver also learns how each step combines the evaluations, in the family
S4S (Frankel et al. 2025) and similar learned-solver work optimise. Notation as ``samplers.exponential``: per grid
point α, σ, λ = log(α/σ), the data prediction m_i = (x_i − σ_i·ε(x_i, τ_i))/α_i, h_i = λ_{i+1} − λ_i,
g_i = 1 − e^(−h_i); K = ``history`` data predictions, newest first. One network evaluation per grid point:

    network time   τ_i = t_i + shift_i                          (``network_times``; the step itself uses λ_i)
    predictor      x_{i+1} = (σ_{i+1}/σ_i)(1 + a_i)·x_i + α_{i+1}·g_i·(1 + s_i)·(b_i + Σ_{j≥1} p_ij·(m_{i−j} − m_i))
    corrector      x_{i+1} ← x_{i+1} + α_{i+1}·g_i·Σ_j c_ij·(n_j − m_i),  n = (m_{i+1}, m_{i−1}, …, m_{i−K+1})
    final step     x_N = (1 + s)·(e + Σ_{j≥1} p_{N−1,j}·(m_{N−1−j} − m_{N−1})) + a·x_{N−1}/α_{N−1}

b_i is DPM-Solver++(2M)'s update (m_i + (m_i − m_{i−1})/(2 r_i), r_i = h_{i−1}/h_i; m_i alone at the first step)
and e the extrapolation of the last two data predictions to σ = 0 in u = (σ/α)², as the library's final step;
m_{i+1} is evaluated at the predicted point and reused, as UniPC does (before the final step the corrected offset is
carried into m_{N−1} likewise). With every coefficient zero and τ_i = t_i this *is* DPM-Solver++(2M) on the grid,
so learning starts from the tuned grid's own result. The differences (m_k − m_i) keep the scheme exact for a
constant data prediction whatever p and c are; the network-time shifts read ε at another noise level than the step
assumes, and the affine scales a_i, s_i (``affine=True``: an affine correction of the network's estimate per noise
level, the idea of DPM-Solver-v3's empirical model statistics, learned from the teacher) give that consistency up
on purpose. docs/TUNING.md has the measurements ("Learned solvers").

Learning one: ``samplers.solver_tuning.learn_solver``. A learned solver holds only for the network, schedule and grid it was learned on: its file (``main.py
tune-solver``) records the checkpoint and schedule, and using it elsewhere is refused as for grid files.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

from torch import Tensor

from . import scalars as S
from .grids import Grid, as_int
from .schedule import NoiseSchedule

BASE = "DPM-Solver++(2M)"  # the scheme with every coefficient zero, and the method whose grid is tuned first


# ------------------------------------------------------------------------------------------------------------
# the solver and its engine

def _floats(name: str, values, length: int) -> tuple:
    """``values`` as a tuple of ``length`` finite floats, or a ValueError naming ``name``."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or len(values) != length:
        raise ValueError(f"{name} must be a list of {length} numbers, got {values!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{name} must hold finite numbers, got {v!r}")
        out.append(float(v))
    return tuple(out)


def _rows(name: str, values, rows: int, width: int) -> tuple:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or len(values) != rows:
        raise ValueError(f"{name} must be a list of {rows} rows, got {values!r}")
    return tuple(_floats(f"{name}[{i}]", row, width) for i, row in enumerate(values))


@dataclass(frozen=True)
class LearnedSolver:
    """A learned solver for N = len(timesteps) − 1 network evaluations (module docstring).

    ``timesteps``: the grid, strictly decreasing, ending at −1; ``network_times``: where the network is read at
    each of the N evaluations (the grid's own timesteps when nothing was learned); ``predictor`` N rows of K − 1
    weights, ``corrector`` N rows of K (the last row unused: the final step has no corrector), ``x_scale`` and
    ``m_scale`` N values (a_i, s_i; zero unless learned with ``affine``). Plain floats, so the solver is hashable,
    comparable and written to JSON as it is. ``sample(model, x_T, schedule, solver)`` runs it.
    """

    timesteps: tuple
    network_times: tuple
    predictor: tuple
    corrector: tuple
    x_scale: tuple
    m_scale: tuple

    def __post_init__(self):
        ts = _floats("timesteps", self.timesteps, len(self.timesteps) if hasattr(self.timesteps, "__len__") else -1)
        n = len(ts) - 1
        if n < 1:
            raise ValueError("timesteps needs at least two entries (a start and the final -1)")
        if ts[-1] != -1.0 or any(a <= b for a, b in zip(ts, ts[1:])) or ts[-2] < 0:
            raise ValueError(f"timesteps must be strictly decreasing, at least 0 before the final -1, got {list(ts)}")
        k = len(self.corrector[0]) if hasattr(self.corrector, "__len__") and len(self.corrector) and \
            hasattr(self.corrector[0], "__len__") else 0
        if k < 2:
            raise ValueError(f"corrector must have {n} rows of K >= 2 weights (K: the data predictions each step "
                             f"combines), got {self.corrector!r}")
        times = _floats("network_times", self.network_times, n)
        if min(times) < 0:
            raise ValueError(f"network_times must be >= 0, got {list(times)}")
        values = dict(timesteps=ts, network_times=times, predictor=_rows("predictor", self.predictor, n, k - 1),
                      corrector=_rows("corrector", self.corrector, n, k), x_scale=_floats("x_scale", self.x_scale, n),
                      m_scale=_floats("m_scale", self.m_scale, n))
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @classmethod
    def start(cls, timesteps: Sequence[float], history: int = 3) -> "LearnedSolver":
        """The solver with every coefficient zero on ``timesteps``: DPM-Solver++(2M) on that grid."""
        n, k = len(timesteps) - 1, as_int("history", history)
        if k < 2:
            raise ValueError(f"history must be at least 2, got {history}")
        zeros = (0.0,) * n
        return cls(tuple(timesteps), tuple(timesteps[:-1]), ((0.0,) * (k - 1),) * n, ((0.0,) * k,) * n, zeros, zeros)

    @property
    def nfe(self) -> int:
        return len(self.timesteps) - 1

    @property
    def history(self) -> int:
        return len(self.corrector[0])

    @property
    def affine(self) -> bool:
        """Whether the affine scales are in use (the scheme is then not exact for a constant data prediction)."""
        return any(self.x_scale) or any(self.m_scale)

    @property
    def name(self) -> str:
        return f"Learned({BASE}, NFE {self.nfe})"

    def as_dict(self) -> dict:
        """The solver as JSON-ready lists (``from_dict`` reads it back exactly)."""
        return {"base": BASE, **{k: [list(r) if isinstance(r, tuple) else r for r in v]
                                 for k, v in asdict(self).items()}}

    @classmethod
    def from_dict(cls, data: dict) -> "LearnedSolver":
        """The solver of ``as_dict``'s form; a ValueError for anything else."""
        if not isinstance(data, dict):
            raise ValueError(f"a learned solver is a mapping, got {type(data).__name__}")
        if data.get("base", BASE) != BASE:
            raise ValueError(f"a learned solver's base must be {BASE!r}, got {data.get('base')!r}")
        fields = ("timesteps", "network_times", "predictor", "corrector", "x_scale", "m_scale")
        missing = [k for k in fields if k not in data]
        if missing:
            raise ValueError(f"a learned solver needs {', '.join(missing)}")
        # A key this version does not know is refused rather than dropped: it means a file from another
        # version or a misspelling, and running without it would be a different solver than the file describes.
        unknown = sorted(set(data) - set(fields) - {"base"})
        if unknown:
            raise ValueError(f"a learned solver has no field {', '.join(map(repr, unknown))}")
        return cls(*(data[k] for k in fields))

    @property
    def sha256(self) -> str:
        """A fingerprint of the numbers that define the solver."""
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()

    def check(self, schedule: NoiseSchedule) -> None:
        """A ValueError when the solver does not fit ``schedule`` (a timestep or network time beyond T − 1)."""
        top = schedule.T - 1
        if self.timesteps[0] > top or max(self.network_times) > top:
            raise ValueError(f"the learned solver reads timesteps up to {max(self.timesteps[0], *self.network_times):g}"
                             f", beyond this schedule's last ({top})")


def _weighted(base: Tensor, anchor: Tensor, weights, nodes: Sequence[Tensor]) -> Tensor:
    """base + Σ_j weights_j·(nodes_j − anchor) over the nodes present (weights: floats or 0-dim tensors)."""
    out = base
    for w, node in zip(weights, nodes):
        out = out + w * (node - anchor)
    return out


def learned_engine(eps: Callable, grid: Grid, x: Tensor, *, callback=None, noise=None, solver) -> Tensor:
    """The scheme of the module docstring from x over ``grid`` (its ā at the grid points) with ``solver``'s
    coefficients: a ``LearnedSolver`` (floats) or any object with the same attributes holding 0-dim tensors, rows
    of them or tensors that index alike (``learn_solver``), in which case the result is differentiable in them and
    in tensor entries of the grid. ``eps(x, t)`` is called at ``solver.network_times``. The engine signature of
    ``samplers.api`` (``noise`` unused: the scheme is deterministic)."""
    n = len(grid.timesteps) - 1
    ab = grid.alpha_bars[:n]
    alpha = [S.sqrt(a) for a in ab]
    sigma = [S.sqrt(1.0 - a) for a in ab]
    lam = [0.5 * (S.log(a) - S.log1p(-a)) for a in ab]
    k = len(solver.corrector[0])
    history: list = []  # data predictions, newest first
    predicted = None  # x_i as the predictor left it, before its correction
    for i in range(n):
        m = (x - sigma[i] * eps(x, solver.network_times[i])) / alpha[i]
        if i > 0:  # the corrector of x_i, with the evaluation just made
            nodes = [m] + history[1:k]
            x = x + alpha[i] * (-S.expm1(lam[i - 1] - lam[i])) * _weighted(0, history[0], solver.corrector[i - 1],
                                                                           nodes)
        history.insert(0, m)
        del history[k:]
        a, s = solver.x_scale[i], solver.m_scale[i]
        if i == n - 1:  # the step to data (ā = 1)
            m_last = history[0] + (x - predicted) / alpha[i] if predicted is not None else history[0]
            if len(history) == 1:
                end = m_last
            else:  # Lagrange extrapolation in u = ρ² of the last two data predictions to u = 0
                u0, u1 = (sigma[i] / alpha[i]) ** 2, (sigma[i - 1] / alpha[i - 1]) ** 2
                end = m_last * (u1 / (u1 - u0)) + history[1] * (u0 / (u0 - u1))
            x = (1 + s) * _weighted(end, history[0], solver.predictor[i], history[1:]) + a * x / alpha[i]
        else:
            h = lam[i + 1] - lam[i]
            if len(history) == 1:
                b = history[0]
            else:
                b = history[0] + (history[0] - history[1]) / (2 * ((lam[i] - lam[i - 1]) / h))
            update = _weighted(b, history[0], solver.predictor[i], history[1:])
            x = (sigma[i + 1] / sigma[i]) * (1 + a) * x + alpha[i + 1] * (-S.expm1(-h)) * (1 + s) * update
            predicted = x
        if callback is not None:
            callback(i, grid.timesteps[i], grid.timesteps[i + 1], x)
    return x
