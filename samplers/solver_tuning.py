"""``learn_solver``: fit a ``LearnedSolver`` (samplers/learned.py) to a high-accuracy teacher for one network.

The grid starts where ``tune_timesteps`` leaves DPM-Solver++(2M)'s (or at a grid you give), every coefficient at
zero (so the start *is* that method on that grid), and Adam then trains the grid's logits (``LogSNRGrid``), the
predictor and corrector weights, the network-time offsets and optionally the affine scales together on the mean
over samples of the log squared distance to the teacher — the loss ``tune_timesteps`` uses by default, which
tracks the median sample. The iterate with the lowest loss on held-out tuning noise wins, the start included.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from .api import get_method
from .grids import as_int
from .learned import BASE, LearnedSolver, learned_engine
from .schedule import NoiseSchedule
from .tuning import HOLDOUT, LogSNRGrid, TensorTimeModel, _per_sample, check_differentiable, \
    check_noise_and_reference, steps_for_nfe, teacher_solve, tensor_grid, tune_timesteps

def grid_stage_holdout(n: int, holdout: int) -> int:
    """How many of n noises the grid stage before ``learn_solver`` (``tune_timesteps`` with the same seed) must
    hold out so that learn_solver's ``holdout`` noises were never trained on there either: both stages take the
    first noises of the same seeded permutation as held out, so the grid stage's held-out part must contain
    learn_solver's — at least ``holdout``, and tune_timesteps' own default fraction when that is more (which
    keeps the grids of n >= 4·holdout as they were)."""
    return max(as_int("holdout", holdout), round(n * HOLDOUT))


# When the first held-out evaluation is worse than the start, the learning rates are too large for the size of the
# errors (a step of Adam moves every coefficient by ~lr whatever its gradient: at a teacher distance of 1e-3, as
# on an analytic mixture at NFE 10, lr = 0.03 multiplies the loss by 500); learning starts again with rates
# LR_BACKTRACK times smaller, at most BACKTRACKS times.
LR_BACKTRACK, BACKTRACKS = 0.1, 2
SHIFT_UNIT = 10.0  # one unit of the learned network-time offsets, in timesteps (Adam's steps are ~lr units)


@dataclass
class LearnedSolverInfo:
    """What ``learn_solver`` did. Losses are the geometric mean over samples of the per-sample RMS distance to the
    teacher (the log loss of ``tune_timesteps``, reported as exp(mean/2)): ``held_out_loss_start`` of the start
    (DPM-Solver++(2M) on the start grid), ``held_out_loss`` of the result; ``best_iteration``: the iteration whose
    iterate won (0: the start)."""

    start_grid: list
    held_out_loss_start: float
    held_out_loss: float
    best_iteration: int
    iterations: int
    n_train: int
    n_held_out: int
    affine: bool
    seconds_grid: float = 0.0
    seconds: float = 0.0
    history: list = field(default_factory=list)  # (iteration, held-out loss) at every evaluation
    lr_scale: float = 1.0  # the learning rates used, relative to those asked for (after backtracking)

    def as_dict(self) -> dict:
        return asdict(self)


class _Parameters:
    """The tensors Adam moves, seen by ``learned_engine`` as a solver: the grid's logits (``LogSNRGrid``), the
    predictor and corrector weights, the network-time offsets (in ``SHIFT_UNIT`` timesteps) and the affine
    scales (kept out of the graph unless ``affine``)."""

    def __init__(self, grid, evaluations: int, history: int, affine: bool, learn_times: bool, T: int):
        def zeros(*shape):
            return torch.zeros(*shape, dtype=torch.float64, requires_grad=True)

        self.grid, self.T = grid, T
        self.predictor, self.corrector = zeros(evaluations, history - 1), zeros(evaluations, history)
        self.shift, self.a, self.s = zeros(evaluations), zeros(evaluations), zeros(evaluations)
        self.affine, self.learn_times = affine, learn_times
        self.timesteps = grid.timesteps()

    def tensors(self) -> list:
        return [self.predictor, self.corrector] + ([self.shift] if self.learn_times else []) + \
            ([self.a, self.s] if self.affine else [])

    @property
    def network_times(self) -> list:
        if not self.learn_times:
            return self.timesteps[:-1]
        return [(t + SHIFT_UNIT * d).clamp(0.0, self.T - 1) for t, d in zip(self.timesteps[:-1], self.shift)]

    @property
    def x_scale(self):
        return self.a if self.affine else [0.0] * len(self.a)

    @property
    def m_scale(self):
        return self.s if self.affine else [0.0] * len(self.s)

    def refresh(self) -> None:
        """Rebuild the grid's timesteps from its logits (after an optimiser step)."""
        self.timesteps = self.grid.timesteps()

    def solver(self) -> LearnedSolver:
        with torch.no_grad():
            return LearnedSolver(tuple(self.grid.floats()), tuple(float(t) for t in self.network_times),
                                 self.predictor.tolist(), self.corrector.tolist(), [float(v) for v in self.x_scale],
                                 [float(v) for v in self.m_scale])


def learn_solver(
    model: Callable[[Tensor, Tensor], Tensor],
    schedule: NoiseSchedule,
    nfe: int,
    x_T: Tensor,
    *,
    reference: Optional[Tensor] = None,
    grid: Optional[Sequence[float]] = None,
    iterations: int = 600,
    history: int = 3,
    affine: bool = False,
    network_times: bool = True,
    lr: float = 0.03,
    grid_lr: float = 0.02,
    batch_size: int = 64,
    holdout: int = 64,
    eval_every: int = 25,
    seed: int = 0,
    callback: Optional[Callable[[dict], None]] = None,
    return_info: bool = False,
):
    """A ``LearnedSolver`` for ``nfe`` evaluations of ``model`` (module docstring), fitted so that its samples from
    the noises ``x_T`` match a high-accuracy teacher's; a ``LearnedSolverInfo`` too when ``return_info``.

    ``model(x, t)`` must be differentiable in x and t (as for ``tune_timesteps``). ``reference``: the teacher's
    endpoints for x_T (default ``tuning.teacher_solve``). ``grid``: the start grid with ``nfe`` steps (default:
    ``tune_timesteps(model, schedule, BASE, nfe, x_T, reference=reference, seed=seed,
    holdout=grid_stage_holdout(len(x_T), holdout))``). Then ``iterations`` Adam
    steps on mini-batches of ``batch_size`` tuning samples train the grid's logits (learning rate ``grid_lr``),
    the predictor and corrector weights of ``history`` data predictions, the network times (unless
    ``network_times=False``) and, with ``affine``, the per-step scales (learning rate ``lr``), both cosine-decayed,
    on the mean of the per-sample log squared distance to the teacher. ``holdout`` of the noises (a seeded draw) are
    never trained on: every ``eval_every`` iterations their loss is measured and the lowest one's iterate is
    returned, the start included, so the held-out loss never ends above the start's. The same inputs and ``seed``
    give the same solver on the same machine and torch thread count. If the first evaluation is worse than the start, the learning starts again with learning
    rates ten times smaller (at most twice; ``LearnedSolverInfo.lr_scale`` says what was used).
    ``callback(dict)`` after each iteration: iteration, iterations, train_loss (RMS units, of the batch before the
    step), held_out_loss (the latest measured), lr_scale (iteration restarts at 1 after a backtrack).
    """
    t_begin = time.perf_counter()
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a samplers.NoiseSchedule, got {type(schedule).__name__}")
    if not isinstance(x_T, Tensor) or not x_T.is_floating_point() or x_T.ndim < 1:
        raise ValueError("x_T must be a floating-point tensor with a batch dimension")
    steps = steps_for_nfe(get_method(BASE), nfe, schedule.T)
    iterations, history, batch_size = as_int("iterations", iterations), as_int("history", history), \
        as_int("batch_size", batch_size)
    holdout, eval_every = as_int("holdout", holdout), as_int("eval_every", eval_every)
    if iterations < 0 or history < 2 or batch_size < 1 or eval_every < 1:
        raise ValueError(f"need iterations >= 0, history >= 2, batch_size >= 1 and eval_every >= 1, got "
                         f"{iterations}, {history}, {batch_size} and {eval_every}")
    if not 2 <= holdout <= x_T.shape[0] - 2:
        raise ValueError(f"x_T has {x_T.shape[0]} samples: too few to hold out {holdout} (each part needs at "
                         f"least 2)")
    if not (0 < lr < math.inf and 0 < grid_lr < math.inf):
        raise ValueError(f"need lr > 0 and grid_lr > 0, got {lr} and {grid_lr}")
    check_noise_and_reference(x_T, reference)
    if grid is not None:
        grid = [float(t) for t in grid]
        LearnedSolver.start(grid)  # its form: decreasing, ending at −1
        if len(grid) - 1 != steps or grid[0] != schedule.T - 1:
            raise ValueError(f"grid must have {steps} steps from T-1 = {schedule.T - 1} for NFE {nfe}, got {grid}")
    check_differentiable(model, x_T, schedule.T)
    if reference is None:
        reference = teacher_solve(model, schedule, x_T)
    reference = reference.detach()
    t_grid = time.perf_counter()
    if grid is None:
        grid = tune_timesteps(model, schedule, BASE, nfe, x_T, reference=reference, seed=seed,
                              holdout=grid_stage_holdout(x_T.shape[0], holdout))
    seconds_grid = time.perf_counter() - t_grid

    eps = TensorTimeModel(model)

    def descend(scale: float, may_give_up: bool):
        """Adam at ``scale`` × the learning rates from the start; None when ``may_give_up`` and the held-out loss
        at the first evaluation is above the start's, else (best, record, start loss, tuning and held-out counts)."""
        params = _Parameters(LogSNRGrid.from_grid(schedule, grid), steps, history, affine, network_times,
                             schedule.T)
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(x_T.shape[0], generator=gen)
        held, fit = order[:holdout], order[holdout:]
        opt = torch.optim.Adam([{"params": params.tensors(), "lr": lr * scale},
                                {"params": [params.grid.logits], "lr": grid_lr * scale}])
        decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(iterations, 1))

        def run(x: Tensor) -> Tensor:
            return learned_engine(eps, tensor_grid(schedule, params.timesteps), x, solver=params)

        def held_out() -> float:
            with torch.no_grad():
                return _per_sample("log", run(x_T[held]), reference[held]).mean().item()

        start_loss = held_out()
        best = (start_loss, params.solver(), 0)
        record = [(0, math.exp(start_loss / 2))]
        latest = start_loss
        for it in range(iterations):
            idx = fit[torch.randperm(len(fit), generator=gen)[:batch_size]]
            with torch.enable_grad():
                loss = _per_sample("log", run(x_T[idx]), reference[idx]).mean()
                opt.zero_grad()
                loss.backward()
            opt.step()
            decay.step()
            params.refresh()
            if (it + 1) % eval_every == 0 or it + 1 == iterations:
                latest = held_out()
                record.append((it + 1, math.exp(latest / 2)))
                if len(record) == 2 and latest > start_loss and may_give_up:
                    return None  # the steps are too large for this error scale: start again with smaller ones
                if latest < best[0]:
                    best = (latest, params.solver(), it + 1)
            if callback is not None:
                callback({"iteration": it + 1, "iterations": iterations, "train_loss": math.exp(loss.item() / 2),
                          "held_out_loss": math.exp(latest / 2), "lr_scale": scale})
        return best, record, start_loss, len(fit), len(held)

    for attempt in range(BACKTRACKS + 1):
        scale = LR_BACKTRACK ** attempt
        result = descend(scale, may_give_up=attempt < BACKTRACKS)
        if result is not None:
            break
    best, record, start_loss, n_fit, n_held = result
    solver = best[1]
    if not return_info:
        return solver
    info = LearnedSolverInfo(list(grid), math.exp(start_loss / 2), math.exp(best[0] / 2), best[2], iterations,
                             n_fit, n_held, affine, seconds_grid, time.perf_counter() - t_begin, record, scale)
    return solver, info
