"""Learned time grids: ``tune_timesteps`` fits a fixed-step method's timesteps to a high-accuracy teacher.

For a budget of NFE model evaluations a method takes N steps over a grid T−1 = t_0 > t_1 > … > t_{N−1} ≥ 0 > −1.
The interior points are chosen so that Ψ(x_T; t), the method run on that grid, lands where a fine solve Φ(x_T) of
the same probability-flow ODE lands from the same noise: the distillation objective of LD3 (Tong et al., "Learning
to Discretize Denoising Diffusion ODEs", ICLR 2025), differentiating through the sampler itself as DDSS (Watson
et al., ICLR 2022) does. Gradients flow through the engines' own code (``samplers.scalars`` makes their
coefficients differentiable; ``student``), through ā(t) and through the network's time input, so the grid is
fitted to exactly the sampler that will use it.

* Teacher (``teacher_solve``): UniPC-3 on ~100 integer timesteps spaced quadratically (unit steps near t = 0);
  integer timesteps only, where a DDPM's time embedding was trained. At a tenth of the cost of iPNDM on all 1000
  integer timesteps it is as accurate or better (numbers at ``teacher_solve``).
* Loss: the mean over samples of log ‖Ψ − Φ‖² (reported as exp(mean/2), the geometric mean of the per-sample RMS
  distances). Per-sample errors are heavy-tailed — a few samples end in another mode of the data — and a plain
  mean square lets those few steer the grid and make the held-out selection noisy; the log weighs every sample's
  relative improvement equally and tracks the median (UniPC-3 and iPNDM at NFE 10 on a mixture: tuned median
  error 3–7x lower than when tuned on the mean square).
* Parameterisation (``LogSNRGrid``): softmax gaps on the λ = log(α/σ) axis, so every iterate is a valid grid.
* Start: the spacing of ``grids.SPACINGS`` with the lowest loss on the tuning samples, or the ``@spacing`` given.
* Selection: the noise is split once (seeded) into tuning and held-out samples; Adam runs on mini-batches of the
  tuning part and the iterate with the lowest held-out loss wins, the start included, so the held-out loss never
  ends above the start's.
* LD3's soft teacher forcing (``slack``): the student may start from x_T + δ_i, ‖δ_i‖ ≤ slack·‖x_T,i‖, δ_i learned
  per tuning sample. Off by default: it did not lower the held-out loss (scripts/bench_tuning.py --slack).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from .api import Method, get_method, sample
from .grids import SPACINGS, Grid, as_int, check_timesteps, spaced_grid, uniform_grid
from .schedule import NoiseSchedule

TEACHER = "UniPC-3(bh2)"
HOLDOUT = 0.25  # the part of the tuning noise held out to select the iterate, by default


@dataclass
class GridChoice:
    """The part of a learned grid's record that every way of learning it shares: the method, its steps and NFE,
    the start (its spacing's name and grid) and the resulting grid."""

    method: str
    steps: int
    nfe: int
    start_spacing: str
    start: list
    grid: list

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class TuningInfo(GridChoice):
    """What ``tune_timesteps`` did. Losses are RMS distances to the teacher as its ``loss`` measures them (the
    geometric mean over samples of the per-sample RMS for "log", the RMS over all samples for "mse"), on
    the tuning samples (``train_*``) and the held-out ones (``held_out_*``), for the start grid and the result;
    ``start_losses``: each candidate start's loss on (up to) two batches of tuning samples; ``iterations``: the
    steps taken, races included; ``best_iteration``: the winning iterate's step along its own descent (0: the
    start)."""

    train_loss_start: float
    train_loss: float
    held_out_loss_start: float
    held_out_loss: float
    iterations: int
    best_iteration: int
    teacher: str
    n_train: int
    n_held_out: int
    seconds_teacher: float = 0.0
    seconds: float = 0.0
    start_losses: dict = field(default_factory=dict)
    learn_first: bool = False
    last: Optional[float] = None
    objective: str = "log"  # the ``loss`` argument
    raced: dict = field(default_factory=dict)  # with race > 1: each raced start's best held-out loss after its race


# ------------------------------------------------------------------------------------------------------------
# the engines on tensor timesteps

def tensor_grid(schedule: NoiseSchedule, timesteps: Sequence) -> Grid:
    """A ``Grid`` over ``timesteps`` (floats or 0-dim tensors) with ā interpolated as on custom grids, by
    ``alpha_bar_lerp_torch`` at tensor points (also at the engines' off-grid stage points: RK midpoints, t − 1)."""
    def alpha_bar(t):
        return schedule.alpha_bar_lerp_torch(t) if isinstance(t, Tensor) else schedule.alpha_bar_lerp(t)

    return Grid(tuple(timesteps), tuple(alpha_bar(t) for t in timesteps), alpha_bar)


class TensorTimeModel:
    """ε(x, t) for the engines with t a float or a 0-dim tensor: ``model(x, t)`` with t expanded to (B,) —
    a tensor t keeps its graph, so the network's time embedding gives dε/dt — in float64 for float64 x, else
    float32, as ``sample()`` calls it."""

    def __init__(self, model: Callable[[Tensor, Tensor], Tensor]):
        self.model = model

    def __call__(self, x: Tensor, t) -> Tensor:
        t_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        if isinstance(t, Tensor):
            tt = t.to(device=x.device, dtype=t_dtype).expand(x.shape[0])
        else:
            tt = torch.full((x.shape[0],), t, dtype=t_dtype, device=x.device)
        eps = self.model(x, tt)
        if not isinstance(eps, Tensor) or eps.shape != x.shape:
            got = tuple(eps.shape) if isinstance(eps, Tensor) else type(eps).__name__
            raise ValueError(f"model returned {got}; expected ε with the input's shape {tuple(x.shape)}")
        return eps.to(x.dtype)


def student(model: Callable, schedule: NoiseSchedule, method: Union[str, Method], x: Tensor,
            timesteps: Sequence) -> Tensor:
    """``method`` run from x over ``timesteps`` (floats or 0-dim float64 tensors), by its own engine: equal to
    ``sample(model, x, schedule, method, timesteps=...)`` up to rounding, differentiable in the tensor entries."""
    m = get_method(method) if isinstance(method, str) else method
    return m.engine(TensorTimeModel(model), tensor_grid(schedule, timesteps), x, **m.options)


class LogSNRGrid:
    """The free timesteps of an N-step grid ending at −1, as a function of logits.

    A grid is t_0 > t_1 > … > t_{N−1} ≥ 0 > −1. By default t_0 = T−1 (the teacher's start) and t_1 … t_{N−1} are
    free; ``learn_first`` frees t_0 too (the released code's grids start below T−1, at T − T/N: from x_T the
    method then runs as if x_T were at t_0's noise level), and ``last`` pins t_{N−1} (e.g. 0, where the released
    grids make their last evaluation). The K free points live on the λ = log(sqrt(ā/(1−ā))) axis between λ(T−1)
    and λ(last if pinned, else 0): the K + 1 gaps are floor + (span − (K+1)·floor)·softmax(logits), so every value
    of the logits is a grid with strictly increasing λ (strictly decreasing t), and every such grid is reachable.
    λ is the axis on which good grids are roughly uniform, and a logit step changes a gap's length relatively
    wherever it lies. t comes from inverting the interpolated ā(t), so ā at t_k is sigmoid(2λ_k) up to rounding.
    """

    FLOOR = 1e-4  # the smallest gap, as a fraction of span/(K+1): keeps neighbouring timesteps apart in float64

    def __init__(self, schedule: NoiseSchedule, free: Sequence[float], learn_first: bool = False,
                 last: Optional[float] = None):
        self.T = schedule.T
        self.learn_first, self.last = learn_first, last
        self.table = torch.from_numpy(schedule.alphas_cumprod.astype(np.float64))
        ends = torch.tensor([float(self.T - 1), 0.0 if last is None else float(last)], dtype=torch.float64)
        self.lo, self.hi = (float(v) for v in self._lam(schedule.alpha_bar_lerp_torch(ends)))
        self.n = len(free) + 1
        self.floor = self.FLOOR * (self.hi - self.lo) / self.n
        lam = self._lam(schedule.alpha_bar_lerp_torch(torch.tensor([float(t) for t in free], dtype=torch.float64)))
        gaps = torch.diff(torch.cat([torch.tensor([self.lo]), lam, torch.tensor([self.hi])]).to(torch.float64))
        raw = (gaps - self.floor).clamp_min(1e-3 * self.floor)
        if learn_first and len(raw) > 1:  # a start at T−1 has no first gap: give it 5% of the smallest other one,
            raw[0] = raw[0].clamp_min(0.05 * raw[1:].min())  # else its logit sits ~16 below and never moves
        self.logits = torch.log(raw).requires_grad_(True)

    @staticmethod
    def _lam(ab: Tensor) -> Tensor:
        return 0.5 * (torch.log(ab) - torch.log1p(-ab))

    def free(self) -> Tensor:
        """The free timesteps, decreasing, float64, differentiable in ``logits``."""
        gaps = self.floor + (self.hi - self.lo - self.n * self.floor) * torch.softmax(self.logits, 0)
        ab = torch.sigmoid(2 * (self.lo + torch.cumsum(gaps, 0)[:-1]))
        asc = self.table.flip(0)  # asc[j] = ā(T−1−j), increasing
        j = torch.searchsorted(asc, ab.detach()).clamp(1, self.T - 1)
        return (self.T - 1 - j) + (asc[j] - ab) / (asc[j] - asc[j - 1])  # linear between t = T−1−j and T−j

    def _assemble(self, free: list) -> list:
        head = [] if self.learn_first else [float(self.T - 1)]
        tail = [] if self.last is None else [float(self.last)]
        return head + free + tail + [-1.0]

    def timesteps(self) -> list:
        """The grid for the engines: the fixed points as floats, the free ones as 0-dim tensors."""
        return self._assemble(list(self.free().unbind(0)))

    def floats(self) -> list[float]:
        """The current grid as floats, for ``sample(timesteps=...)``."""
        with torch.no_grad():
            return self._assemble([float(t) for t in self.free()])

    @classmethod
    def from_grid(cls, schedule: NoiseSchedule, grid: Sequence[float], learn_first: bool = False,
                  last: Optional[float] = None) -> "LogSNRGrid":
        """The parameterisation at a full grid (T−1 first unless ``learn_first``, ``last`` before −1 if pinned)."""
        pts = [float(t) for t in grid[:-1]]
        return cls(schedule, pts[(0 if learn_first else 1):(len(pts) if last is None else len(pts) - 1)],
                   learn_first, last)


# ------------------------------------------------------------------------------------------------------------
# checks

def tunable_method(method: str) -> tuple[Method, Optional[str]]:
    """(the base method, the ``@spacing`` to start from or None), or a ValueError for a method without a
    deterministic fixed-step path."""
    m = get_method(method)
    base = get_method(m.name.split("@")[0])
    if m.adaptive:
        raise ValueError(f"{base.name} is an adaptive solver with no time grid to tune")
    if m.eta or m.kind == "ancestral":
        raise ValueError(f"{base.name} is stochastic: there is no deterministic teacher path for its samples to match")
    spacing = m.name.split("@")[1] if "@" in m.name else None
    return base, spacing  # "paper": the released grid if the first timestep is learned, else uniform from T−1


def steps_for_nfe(m: Method, nfe, T: int) -> int:
    """The most steps of ``m`` whose NFE fits in ``nfe``; a ValueError when fewer than 2 (nothing to tune)."""
    nfe = as_int("nfe", nfe)
    steps = max((s for s in range(1, min(nfe, T) + 1) if m.nfe(s) <= nfe), default=0)
    if steps < 2:
        need = next(m.nfe(s) for s in range(2, T + 1))
        raise ValueError(f"NFE {nfe} is too small to tune {m.name}: a grid needs 2 steps ({need} NFE) to have an "
                         f"interior timestep")
    return steps


def check_last(last, T: int) -> Optional[float]:
    """``last`` as a float timestep in [0, T−1) (or None); a ValueError otherwise."""
    if last is None:
        return None
    if isinstance(last, bool) or not isinstance(last, (int, float)) or not 0 <= last < T - 1:
        raise ValueError(f"last must be a timestep in [0, {T - 1}), got {last!r}")
    return float(last)


def check_free_points(m: Method, steps: int, learn_first: bool, last: Optional[float]) -> None:
    """A ValueError when a ``steps``-step grid of ``m`` has no timestep left to learn (first fixed, last pinned)."""
    if steps - (0 if learn_first else 1) - (0 if last is None else 1) < 1:
        first, pinned = "learned" if learn_first else "fixed", "pinned" if last is not None else "free"
        raise ValueError(f"NFE {m.nfe(steps)} gives {m.name} {steps} steps: with the first timestep {first} and "
                         f"the last {pinned} no timestep is left to learn")


def check_differentiable(model: Callable, x: Tensor, T: int) -> None:
    """One call of ``model`` on two samples with x and t requiring grad; a ValueError unless ε depends on both
    (a FloatingPointError when ε is not finite)."""
    x = x[:2].detach().clone().requires_grad_(True)
    t = torch.tensor(0.5 * (T - 1) + 0.37, dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():
        try:
            eps = TensorTimeModel(model)(x, t)
        except RuntimeError as e:  # e.g. a model that calls .numpy() on its inputs: autograd cannot follow it
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"model failed on x and t that require grad ({first}); learned grids need a "
                             f"model differentiable in x and t") from None
        if not torch.isfinite(eps).all():  # else NaN gradients would be blamed on the time input
            raise FloatingPointError(f"model returned a non-finite ε at t={float(t.detach()):g}")
        if not eps.requires_grad:
            raise ValueError("model is not differentiable in t or x (its ε has no grad_fn; does it run under "
                             "torch.no_grad(), as models.prepare_for_inference does? pass the network itself)")
        w = torch.randn(eps.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(eps)
        gx, gt = torch.autograd.grad((eps * w).sum(), [x, t], allow_unused=True)
    if gt is None or not torch.isfinite(gt) or gt == 0:
        raise ValueError("model is not differentiable in t (dε/dt is missing or zero: does it round or detach "
                         "t?); learned grids need the gradient of its time input")
    if gx is None or not torch.isfinite(gx).all() or not gx.any():
        raise ValueError("model is not differentiable in x (dε/dx is missing or zero: does it detach x?)")


def held_out_count(n: int, holdout: Union[float, int] = HOLDOUT) -> int:
    """How many of n tuning samples ``holdout`` (a fraction or a count) holds out; a ValueError unless both parts
    have at least 2."""
    if isinstance(holdout, float):
        if not 0 < holdout < 1:
            raise ValueError(f"holdout must be a fraction in (0, 1) or a count, got {holdout}")
        holdout = round(n * holdout)
    holdout = as_int("holdout", holdout)
    if holdout < 2 or n - holdout < 2:
        raise ValueError(f"x_T has {n} samples: too few to split into tuning and held-out parts "
                         f"(holdout={holdout}; each part needs at least 2)")
    return holdout


def _split(n: int, holdout, seed: int) -> tuple[Tensor, Tensor]:
    """(tuning indices, held-out indices) of a seeded permutation of n samples."""
    holdout = held_out_count(n, holdout)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[holdout:].sort().values, perm[:holdout].sort().values


# ------------------------------------------------------------------------------------------------------------
# teacher and losses

def teacher_grid(schedule: NoiseSchedule, steps: int) -> list[float]:
    """The default teacher's grid: integer timesteps round((T−1)·(1 − i/steps)²), i = 0..steps, without repeats
    (unit steps near t = 0, where ε changes fastest), then −1. Integer timesteps only: a DDPM's network was
    trained there."""
    T = schedule.T
    steps = min(as_int("teacher_steps", steps), T)
    if steps < 2:
        raise ValueError(f"teacher_steps must be at least 2, got {steps}")
    ts = sorted({round((T - 1) * (1 - i / steps) ** 2) for i in range(steps + 1)}, reverse=True)
    return [float(t) for t in ts] + [-1.0]


def teacher_solve(model: Callable, schedule: NoiseSchedule, x_T: Tensor, steps: int = 100,
                      batch_size: int = 256) -> Tensor:
    """The default teacher: ``TEACHER`` over ``teacher_grid(schedule, steps)``, in chunks of ``batch_size``.

    Median RMS distance to the exact flow of an analytic mixture (scripts/bench_tuning.py --teacher-accuracy),
    100 requested steps (98 model calls): 8e-6 on the linear schedule, 1e-4 on the cosine one (2e-5 with 200);
    iPNDM on all 1000 integer timesteps: 7e-5 and 3e-5 — its last step to ā = 1 weights the ε history as if the
    steps were equal. On the digits model this teacher is 4e-4 from its 360-step version (the tuned students at
    NFE 10 are ~1e-2 from it), iPNDM@paper with 250 steps 1.5e-3 from its 1000-step version.
    """
    grid = teacher_grid(schedule, steps)
    return torch.cat([sample(model, x, schedule, TEACHER, timesteps=grid) for x in x_T.split(batch_size)])


def squared_distance(x: Tensor, ref: Tensor) -> Tensor:
    """The default ``distance``: each sample's mean squared difference to the teacher, in float64."""
    return (x.to(torch.float64) - ref.to(torch.float64)).pow(2).flatten(1).mean(1)


LOSSES = ("log", "mse")


def _per_sample(loss: str, x: Tensor, ref: Tensor, distance: Callable = squared_distance) -> Tensor:
    """Each sample's term of the loss: log of its squared distance ("log"; floored at 1e-300, exact samples exist)
    or the squared distance itself ("mse")."""
    d = distance(x, ref)
    if not isinstance(d, Tensor) or d.shape != x.shape[:1]:
        got = tuple(d.shape) if isinstance(d, Tensor) else type(d).__name__
        raise ValueError(f"distance(x, reference) must return one squared distance per sample, shape "
                         f"({x.shape[0]},); got {got}")
    d = d.to(torch.float64)
    return d.clamp_min(1e-300).log() if loss == "log" else d


def _report(loss: str, mean_term: float) -> float:
    """A mean of per-sample terms as an RMS distance: exp(mean log MSE / 2) or sqrt(mean MSE)."""
    return math.exp(0.5 * mean_term) if loss == "log" else math.sqrt(mean_term)


def _loss_of(model, schedule, m, timesteps, x_T, ref, batch_size, loss: str = "log",
             distance: Callable = squared_distance) -> float:
    """The loss of the method on the float grid ``timesteps`` over all of x_T (no grad), as an RMS distance: the
    geometric mean of the per-sample RMS distances to the teacher ("log") or the RMS over all samples ("mse")."""
    with torch.no_grad():
        total = sum(_per_sample(loss, student(model, schedule, m, x, timesteps), r, distance).sum().item()
                    for x, r in zip(x_T.split(batch_size), ref.split(batch_size)))
    return _report(loss, total / len(x_T))


def check_noise_and_reference(x_T: Tensor, reference: Optional[Tensor]) -> None:
    """The tuning noises and the teacher's endpoints for them (None: computed later), or a ValueError."""
    if reference is not None and (not isinstance(reference, Tensor) or reference.shape != x_T.shape):
        got = tuple(reference.shape) if isinstance(reference, Tensor) else type(reference).__name__
        raise ValueError(f"reference must be the teacher's endpoints for x_T, shape {tuple(x_T.shape)}; got {got}")
    for name, value in (("x_T", x_T), ("reference", reference)):
        if value is not None and not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name} holds NaN or infinite values")


def tune_timesteps(
    model: Callable[[Tensor, Tensor], Tensor],
    schedule: NoiseSchedule,
    method: str,
    nfe: int,
    x_T: Tensor,
    *,
    reference: Optional[Tensor] = None,
    iterations: int = 40,
    callback: Optional[Callable[[dict], None]] = None,
    seed: int = 0,
    holdout: Union[float, int] = HOLDOUT,
    batch_size: int = 64,
    lr: float = 0.1,
    slack: float = 0.0,
    start: Union[None, str, Sequence[float]] = None,
    teacher_steps: int = 100,
    loss: str = "log",
    distance: Optional[Callable[[Tensor, Tensor], Tensor]] = None,
    learn_first: bool = False,
    last: Optional[float] = None,
    race: int = 1,
    return_info: bool = False,
):
    """Timesteps for ``method`` at ≤ ``nfe`` model evaluations, fitted so that its samples from the noises
    ``x_T`` match a high-accuracy teacher's (module docstring). Returns a descending list of floats ending at −1
    (starting at T−1 unless ``learn_first``)
    for ``sample(model, x, schedule, BASE, timesteps=grid)`` (BASE: the name without ``@spacing``), and a
    ``TuningInfo`` too when ``return_info``.

    ``model(x, t)`` must be differentiable in x and t (a network with frozen weights, not the no-grad wrapper of
    ``models.prepare_for_inference``); one call on two samples checks it. ``method``: any fixed-step deterministic
    method; ``NAME@spacing`` starts from that spacing (``@paper``: from the released grid if ``learn_first``,
    else from ``uniform``, which starts at T−1 as a grid with a fixed first timestep must).
    The grid has the most steps whose NFE fits (F-PNDM/FON: steps + 9 from 3 steps on, S-PNDM steps + 1, the
    others steps), at least 2.
    ``reference``: the teacher's endpoints for x_T (same shape); default ``teacher_solve(..., teacher_steps)``.
    ``holdout``: the fraction (float) or number (int) of x_T held out to select the iterate; ``iterations`` Adam
    steps of learning rate ``lr`` on ``LogSNRGrid``'s logits, each on ``batch_size`` tuning samples; ``slack``:
    LD3's soft teacher-forcing radius (0: off). ``start``: None (the ``@spacing`` given, else the spacing of
    ``grids.SPACINGS`` with the lowest loss on up to two batches of tuning samples), a spacing, or a grid with
    the right number of steps. ``loss``: "log" (default; the mean over samples of log MSE: every sample's relative
    improvement counts alike, which tracks the median sample) or "mse" (the mean MSE: the RMS over all samples,
    which the few samples ending in another mode dominate). ``distance(x, reference)``: each sample's squared
    distance to the teacher, shape (B,), differentiable in x (default ``squared_distance``, the mean squared pixel
    difference); pass e.g. a perceptual distance (LD3 tunes on LPIPS) to fit the grid in a feature space — the
    losses are then reported in its units. ``learn_first``: also learn the first timestep (x_T is then taken to be
    at that noise level, as the released code's grids do from T − T/N; the paper's grid joins the start
    candidates). ``last``: pin the last timestep before −1 (e.g. 0.0: the released grids end with an evaluation at
    t = 0, which sharpens samples at NFE ≤ 4 although a per-sample loss would move it up — FIDs in
    docs/TUNING.md). The same inputs and ``seed`` give the same grid on the same machine and torch thread count (a
    CPU's sums round differently with another thread count, and the learning amplifies it).
    ``race``: with k > 1 the k starts of lowest loss take ``iterations // 4`` steps each and the one with the lowest
    held-out loss then takes the rest (k − 1 races more in all; a first-order method's good start can lie in a
    worse basin than the runner-up's).
    ``callback(dict)`` after each iteration: iteration, iterations (all, races included), start (the spacing this
    step descends from), train_loss (of the batch, before the step), held_out_loss (after it),
    best_held_out_loss (of this start), grid. Losses: ``TuningInfo``.
    """
    t_begin = time.perf_counter()
    base, spacing = tunable_method(method)
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a samplers.NoiseSchedule, got {type(schedule).__name__}")
    if not isinstance(x_T, Tensor) or not x_T.is_floating_point() or x_T.ndim < 1:
        raise ValueError("x_T must be a floating-point tensor with a batch dimension")
    T = schedule.T
    steps = steps_for_nfe(base, nfe, T)
    iterations, batch_size = as_int("iterations", iterations), as_int("batch_size", batch_size)
    race = as_int("race", race)
    if iterations < 0 or batch_size < 1 or race < 1:
        raise ValueError(f"need iterations >= 0, batch_size >= 1 and race >= 1, got {iterations}, {batch_size} and "
                         f"{race}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    if distance is None:
        distance = squared_distance
    elif not callable(distance):
        raise TypeError(f"distance must be a callable (x, reference) -> per-sample squared distances, got "
                        f"{type(distance).__name__}")
    if not (0 <= slack < math.inf and 0 < lr < math.inf):
        raise ValueError(f"need lr > 0 and slack >= 0, got lr={lr}, slack={slack}")
    check_noise_and_reference(x_T, reference)
    train, held = _split(x_T.shape[0], holdout, seed)
    last = check_last(last, T)
    check_free_points(base, steps, learn_first, last)
    starts = _start_candidates(schedule, steps, spacing if start is None else start, learn_first, last)
    teacher = "reference given" if reference is not None else \
        f"{TEACHER} on {len(teacher_grid(schedule, teacher_steps)) - 1} integer timesteps (teacher_grid)"
    check_differentiable(model, x_T, T)

    t0 = time.perf_counter()
    if reference is None:
        reference = teacher_solve(model, schedule, x_T, teacher_steps, batch_size=max(batch_size, 256))
    seconds_teacher = time.perf_counter() - t0
    reference = reference.detach()
    x_tr, r_tr, x_ho, r_ho = x_T[train], reference[train], x_T[held], reference[held]

    def loss_of(grid, x, r):  # inf where the model's ε is not finite on the grid: a grid to avoid, not to pick
        value = _loss_of(model, schedule, base, grid, x, r, batch_size, loss, distance)
        return value if math.isfinite(value) else math.inf

    probe = slice(0, 2 * batch_size)  # the start: the lowest loss on (up to) two batches of tuning samples
    start_losses = {name: loss_of(grid, x_tr[probe], r_tr[probe]) for name, grid in starts.items()}
    finite = {name: grid for name, grid in starts.items() if math.isfinite(start_losses[name])}
    if not finite:
        example = ", ".join(f"{t:g}" for t in next(iter(starts.values())))
        raise ValueError(f"the model's ε (or the loss) is not finite on any start grid of {base.name} with {steps} "
                         f"steps (e.g. {example}): there is nothing to tune from")
    starts, start_losses = finite, {name: start_losses[name] for name in finite}

    def descend(grid0):
        """Adam from grid0 (LD3's per-sample δ too when slack > 0); yields (train loss, grid) after each step."""
        params = LogSNRGrid.from_grid(schedule, grid0, learn_first, last)
        wrt = [params.logits]
        optimisers = [torch.optim.Adam([params.logits], lr=lr)]
        if slack > 0:  # LD3: per-sample inputs within slack·|x_T,i| of x_T,i
            delta = torch.zeros_like(x_tr, requires_grad=True)
            radius = slack * x_tr.flatten(1).norm(dim=1).view(-1, *[1] * (x_tr.ndim - 1))
            wrt.append(delta)
            optimisers.append(torch.optim.Adam([delta], lr=0.1 * slack))
        batches = _batches(len(x_tr), batch_size, seed)
        while True:
            idx = next(batches)
            with torch.enable_grad():  # also when called under torch.no_grad()
                x = x_tr[idx] if slack == 0 else x_tr[idx] + delta[idx]
                objective = _per_sample(loss, student(model, schedule, base, x, params.timesteps()), r_tr[idx],
                                        distance).mean()
                grads = torch.autograd.grad(objective, wrt)
            if not all(bool(torch.isfinite(g).all()) for g in (objective, *grads)):
                # ε not finite somewhere on this grid for this batch: no step (a NaN step would end the grid)
                yield math.inf, params.floats()
                continue
            for p, g in zip(wrt, grads):
                p.grad = g
            for opt in optimisers:
                opt.step()
            if slack > 0:
                with torch.no_grad():  # project each δ_i back into its ball
                    norms = delta.flatten(1).norm(dim=1).view_as(radius).clamp_min(1e-300)
                    delta.mul_((radius / norms).clamp(max=1.0))
            yield _report(loss, objective.item()), params.floats()

    # the race: the `race` starts with the lowest probe loss take `race_iterations` steps each, and the one with the
    # lowest held-out loss so far takes the remaining steps (a good start can sit in a worse basin than the second)
    ranked = sorted(start_losses, key=start_losses.get)[:race]
    race_iterations = min(iterations, max(1, iterations // 4)) if len(ranked) > 1 else iterations
    total = iterations + (len(ranked) - 1) * race_iterations
    runs = {name: dict(steps=descend(starts[name]), best=dict(loss=loss_of(starts[name], x_ho, r_ho),
                                                              grid=starts[name], iteration=0)) for name in ranked}
    done = 0

    def advance(name, count):
        nonlocal done
        run = runs[name]
        for _ in range(count):
            train_loss, grid = next(run["steps"])
            run["iteration"] = run.get("iteration", 0) + 1
            done += 1
            held_out = loss_of(grid, x_ho, r_ho)
            if held_out < run["best"]["loss"]:
                run["best"] = dict(loss=held_out, grid=grid, iteration=run["iteration"])
            if callback is not None:
                callback(dict(iteration=done, iterations=total, start=name, train_loss=train_loss,
                              held_out_loss=held_out, best_held_out_loss=run["best"]["loss"], grid=grid))

    held_out_starts = {name: run["best"]["loss"] for name, run in runs.items()}
    for name in ranked:
        advance(name, race_iterations)
    raced = {name: run["best"]["loss"] for name, run in runs.items()} if len(ranked) > 1 else {}
    start_name = min(ranked, key=lambda name: runs[name]["best"]["loss"])
    advance(start_name, iterations - race_iterations)
    best, grid0, held_out_start = runs[start_name]["best"], starts[start_name], held_out_starts[start_name]
    result = check_timesteps(best["grid"], T)
    if not return_info:
        return result
    info = TuningInfo(base.name, steps, base.nfe(steps), start_name, grid0, result, loss_of(grid0, x_tr, r_tr),
                      loss_of(result, x_tr, r_tr), held_out_start, best["loss"], total, best["iteration"],
                      teacher, len(train), len(held), seconds_teacher, 0.0, start_losses, learn_first, last, loss,
                      raced)
    info.seconds = time.perf_counter() - t_begin
    return result, info


def _batches(n: int, batch_size: int, seed: int):
    """Index batches of the tuning samples: seeded reshuffles, each sample once per epoch."""
    gen = torch.Generator().manual_seed(seed + 1)
    while True:
        order = torch.randperm(n, generator=gen)
        for i in range(0, max(n - batch_size, 0) + 1, batch_size):
            yield order[i:i + batch_size]


def _start_candidates(schedule: NoiseSchedule, steps: int, start, learn_first: bool = False,
                      last: Optional[float] = None) -> dict:
    """{name: float grid} to start from: every spacing (None; and the paper's grid when the first timestep is
    learned), one spacing, or the user's grid. A pinned ``last`` replaces each grid's last point before −1; a
    spacing that then is not strictly decreasing is left out."""
    T = schedule.T

    def grid_of(name):
        if name == "paper":
            return uniform_grid(schedule, steps) if learn_first else spaced_grid(schedule, steps, "uniform")
        return spaced_grid(schedule, steps, name)

    if start is None or isinstance(start, str):
        names = (SPACINGS + (("paper",) if learn_first else ())) if start is None else (start.lower(),)
        grids = {("uniform" if n == "paper" and not learn_first else n): grid_of(n) for n in names}
    else:
        grid = check_timesteps(start, T)
        if len(grid) != steps + 1 or grid[-1] != -1 or (grid[0] != T - 1 and not learn_first):
            raise ValueError(f"start must be a {steps}-step grid from {'at most ' if learn_first else ''}{T - 1} to "
                             f"-1, got {len(grid) - 1} steps from {grid[0]:g} to {grid[-1]:g}")
        grids = {"given": grid}
    if last is not None:
        grids = {n: g[:-2] + [float(last), -1.0] for n, g in grids.items()}
        grids = {n: g for n, g in grids.items() if all(a > b for a, b in zip(g, g[1:]))}
        if not grids:
            raise ValueError(f"no start grid has its last timestep before -1 pinned at {last:g} and still decreases "
                             f"(its point before is lower): give another start or last")
    return grids
