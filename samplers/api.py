"""The one entry point: ``sample(model, x_T, schedule, method=..., steps=...)``, the method registry, and
``plan()``, which validates a run's arguments and says what it will do without running it."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor

from .exponential import deis, dpm_solver_pp, unipc, variable_step_adams
from .grids import SPACINGS, Grid, make_custom_grid, make_paper_grid, make_spaced_grid
from .learned import LearnedSolver, learned_engine
from .multistep import WARMUP_EXTRA_NFE, linear_multistep
from .probability_flow import probability_flow
from .schedule import NoiseSchedule, check_convention
from .stochastic import generalized_ddim


@dataclass(frozen=True)
class Method:
    """What a method name means: its engine, the engine's options, and the time grid it runs on.

    ``kind``: 'multistep' (the PNDM engine), 'exponential' (exponential-integrator solvers), 'ancestral',
    'ode' (the adaptive PF solver, see ``adaptive``) or 'learned' (a ``LearnedSolver`` given as the method: never
    in the registry, its grid and coefficients come with it). A fixed-step method runs as
    ``engine(eps, grid, x, callback=..., noise=..., **options)``.
    ``grid``: 'paper' — the paper's uniform grid, under either convention — or one of ``grids.SPACINGS`` (from
    t = T−1 to ā = 1, standard convention, ā interpolated at float timesteps).
    A name ``BASE@spacing`` runs BASE on that spacing (``BASE@paper`` on the paper's grid). The default grids
    of the newer solvers are the ones that measured best for them in scripts/bench_frontier.py.
    """

    name: str
    description: str
    kind: str
    engine: Callable = field(repr=False)
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)
    grid: str = "paper"

    def __post_init__(self):
        # read-only: the registry's records are shared by every caller
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    @property
    def adaptive(self) -> bool:
        """True for the adaptive PF solver: no grid, no steps, NFE known only after solving."""
        return self.kind == "ode"

    @property
    def eta(self) -> Optional[float]:
        """η of the generalised DDIM step this method runs (1.0 for DDPM), None for deterministic methods."""
        return self.options.get("eta")

    def nfe(self, num_steps: int) -> int:
        """Model evaluations for ``num_steps`` steps of the grid."""
        warmup, order = self.options.get("warmup"), self.options.get("order", 1)
        if warmup in WARMUP_EXTRA_NFE:
            return num_steps + WARMUP_EXTRA_NFE[warmup] * min(num_steps, order - 1)
        return num_steps


def _multistep(name, description, family, order=1, warmup=None, grid="paper"):
    return Method(name, description, "multistep", linear_multistep,
                  dict(family=family, order=order, warmup=warmup), grid)


def _exponential(name, description, engine, grid, **options):
    return Method(name, description, "exponential", engine, options, grid)


_METHODS = (
    _multistep("DDIM", "DDIM, the pseudo Euler method (eta=0; eta>0 adds DDIM's stochasticity)", "pseudo"),
    _multistep("S-PNDM", "pseudo 2-step linear multistep, pseudo improved Euler first step; NFE = steps+1",
               "pseudo", 2, "improved_euler"),
    _multistep("F-PNDM", "pseudo 4-step linear multistep, 3 pseudo Runge-Kutta warm-up steps; NFE = steps+9",
               "pseudo", 4, "rk4"),
    _multistep("FON", "classical 4th-order: Runge-Kutta warm-up then 4-step linear multistep on the DDIM ODE; "
               "NFE = steps+9", "classical", 4, "rk4"),
    _multistep("iPNDM", "pseudo 4-step linear multistep with lower-order multistep warm-up (Zhang & Chen 2022); "
               "NFE = steps", "pseudo", 4, "lower_order", grid="quadratic"),
    _exponential("DPM-Solver++(2M)", "DPM-Solver++ multistep, 2nd order, data prediction (Lu et al. 2022); "
                 "NFE = steps", dpm_solver_pp, "logsnr", order=2),
    _exponential("DPM-Solver++(3M)", "DPM-Solver++ multistep, 3rd order (exact 3rd-order weights, unlike "
                 "diffusers' 3M); NFE = steps", dpm_solver_pp, "logsnr", order=3),
    _exponential("UniPC-2(bh1)", "UniPC, order-2 predictor + corrector, B(h) = h; NFE = steps", unipc, "quadratic",
                 order=2, variant="bh1"),
    _exponential("UniPC-2(bh2)", "UniPC, order-2 predictor + corrector, B(h) = e^h - 1; NFE = steps", unipc,
                 "quadratic", order=2, variant="bh2"),
    _exponential("UniPC-3(bh1)", "UniPC, order-3 predictor + corrector, B(h) = h; NFE = steps", unipc, "quadratic",
                 order=3, variant="bh1"),
    _exponential("UniPC-3(bh2)", "UniPC, order-3 predictor + corrector, B(h) = e^h - 1; NFE = steps", unipc,
                 "quadratic", order=3, variant="bh2"),
    _exponential("DEIS-2", "DEIS log-rho multistep, order 2 (as diffusers' DEISMultistepScheduler); NFE = steps",
                 deis, "karras", order=2),
    _exponential("DEIS-3", "DEIS log-rho multistep, order 3; NFE = steps", deis, "karras", order=3),
    _exponential("VS-PNDM-3", "PNDM's pseudo linear multistep with coefficients for non-uniform steps (exact "
                 "integration of the eps polynomial in sigma/alpha; DEIS's rho-AB), order 3; NFE = steps",
                 variable_step_adams, "quadratic", order=3),
    _exponential("VS-PNDM-4", "as VS-PNDM-3, order 4; NFE = steps", variable_step_adams, "quadratic", order=4),
    Method("DDPM", "DDPM ancestral sampling (DDIM with eta=1: posterior variance)", "ancestral", generalized_ddim,
           dict(eta=1.0)),
    Method("PF", "probability-flow ODE of the VP SDE with scipy's adaptive RK45 (rtol, atol); NFE = solver's",
           "ode", probability_flow),
)
METHODS = {m.name.upper(): m for m in _METHODS}


def available() -> list[str]:
    """Names that ``sample(method=...)`` accepts (case-insensitive): every method on its own grid, and every
    grid-based method on every spacing as ``NAME@spacing``."""
    names = [m.name for m in _METHODS]
    return names + [f"{m.name}@{s}" for m in _METHODS if not m.adaptive
                    for s in ("paper",) + SPACINGS if s != m.grid]


def get_method(name: str) -> Method:
    base, at, spacing = str(name).partition("@")
    if at and not spacing.strip():
        raise ValueError(f"method {name!r} names no spacing after '@'; choose one of "
                         f"{', '.join(('paper',) + SPACINGS)}")
    try:
        m = METHODS[base.strip().upper()]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(m.name for m in _METHODS)} "
                         f"(optionally @{'/@'.join(('paper',) + SPACINGS)})") from None
    if not spacing:
        return m
    spacing = spacing.strip().lower()
    if m.adaptive:
        raise ValueError(f"{m.name} is adaptive and takes no grid")
    if spacing == "paper":  # the paper's uniform grid, under either convention
        return replace(m, name=f"{m.name}@paper", grid="paper")
    if spacing not in SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r} in {name!r}; choose one of {', '.join(SPACINGS)}")
    return replace(m, name=f"{m.name}@{spacing}", grid=spacing)


@dataclass(frozen=True)
class Plan:
    """What ``sample()`` will do with these arguments, known before any model call.

    ``method``: the method that runs (DDIM with η > 0 runs the generalised DDIM engine with that η);
    ``convention``: how the table is read (for PF: which VP process it integrates); ``grid``: None for PF;
    ``eta``: η of the generalised DDIM step (the given η for DDIM, None when not given; 1.0 for DDPM; None for
    every other method), so ``bool(eta)`` says the run draws noise; ``nfe``: model evaluations (None for PF,
    whose NFE is the solver's); ``t_start``: the first model timestep (the grid's first point; T−1 for PF, which
    starts at s = 1).
    """

    method: Method
    convention: Optional[str]
    grid: Optional[Grid]
    eta: Optional[float]
    nfe: Optional[int]
    t_start: float


def _resolve(method, convention: str, schedule: NoiseSchedule) -> tuple[Method, str]:
    if isinstance(method, LearnedSolver):  # a solver of its own: its grid and coefficients come with it
        m = Method(method.name, "a learned solver (samplers.learned)", "learned", learned_engine,
                   dict(solver=method), "learned")
    else:
        m = get_method(method)
    convention = check_convention(convention)
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a samplers.NoiseSchedule, got {type(schedule).__name__}")
    return m, convention


def _build_grid(m: Method, schedule: NoiseSchedule, steps, timesteps, convention: str) -> Grid:
    """The grid a fixed-step run of ``m`` uses: the user's ``timesteps``, or its own grid of ``steps``."""
    if timesteps is not None:
        if "@" in m.name:
            raise ValueError(f"timesteps= replaces the grid: give {m.name.split('@')[0]!r}, not {m.name!r}")
        if steps is not None:
            raise ValueError("give steps or timesteps, not both")
        if convention != "standard":
            raise ValueError("timesteps= runs under the standard convention only")
        return make_custom_grid(schedule, timesteps)
    if steps is None:
        raise ValueError(f"{m.name} needs steps (or timesteps)")
    if m.grid == "paper":
        return make_paper_grid(schedule, steps, convention)
    if convention != "standard":
        raise ValueError(f"{m.name} runs on its own grid under the standard convention only")
    return make_spaced_grid(schedule, steps, m.grid)


def _plan(m: Method, convention: str, schedule: NoiseSchedule, steps, timesteps, eta) -> Plan:
    if eta is not None and m.name.split("@")[0] != "DDIM":
        raise ValueError(f"eta applies to DDIM only, not {m.name}")
    if eta is not None and (isinstance(eta, bool) or not isinstance(eta, numbers.Real) or not 0 <= eta < math.inf):
        raise ValueError(f"eta must be a number >= 0 and finite, got {eta!r}")
    if m.adaptive:
        if steps is not None or timesteps is not None:
            raise ValueError("PF is an adaptive solver: give rtol/atol, not steps or timesteps")
        # the flow starts at s = 1; the convention picks the VP process (samplers.probability_flow)
        return Plan(m, convention, None, None, None, float(schedule.T - 1))
    if m.kind == "learned":
        solver = m.options["solver"]
        if steps is not None or timesteps is not None:
            raise ValueError("a learned solver carries its own grid: give no steps or timesteps")
        if convention != "standard":
            raise ValueError("a learned solver runs under the standard convention only")
        solver.check(schedule)
        grid = make_custom_grid(schedule, solver.timesteps)
        return Plan(m, convention, grid, None, solver.nfe, grid.timesteps[0])
    grid = _build_grid(m, schedule, steps, timesteps, convention)
    if eta:  # η = 0 is the DDIM step itself; η > 0 is the generalised (stochastic) step
        m = replace(m, kind="ancestral", engine=generalized_ddim, options=dict(eta=eta))
    return Plan(m, convention, grid, m.options.get("eta", eta), m.nfe(grid.steps), grid.timesteps[0])


def plan(method, schedule: NoiseSchedule, steps: Optional[int] = None, convention: str = "standard", *,
         timesteps: Optional[Sequence[float]] = None, eta: Optional[float] = None) -> Plan:
    """Validate ``sample()``'s arguments of the same names, with its error messages, and return the ``Plan``:
    the method that runs, its grid, η, NFE and first model timestep. Calls no model. ``method``: a name, or a
    ``samplers.LearnedSolver``."""
    return _plan(*_resolve(method, convention, schedule), schedule, steps, timesteps, eta)


def expected_nfe(method: str, steps: Optional[int], schedule: NoiseSchedule, convention: str = "standard",
                 timesteps: Optional[Sequence[float]] = None) -> int:
    """The NFE ``sample`` will spend, without running it (not defined for the adaptive PF solver); a learned
    solver's is ``plan(solver, schedule).nfe``."""
    if isinstance(method, LearnedSolver):
        return plan(method, schedule, steps, convention, timesteps=timesteps).nfe
    if get_method(method).adaptive:
        raise ValueError("PF is adaptive: its NFE is known only after solving")
    return plan(method, schedule, steps, convention, timesteps=timesteps).nfe


@dataclass
class SampleInfo:
    """What a sampling run did: ``nfe`` model evaluations at ``model_timesteps`` (in call order), starting at
    model timestep ``t_start``, over the grid ``timesteps`` (None for PF). Filled for every method."""

    method: str
    convention: Optional[str]
    nfe: int = 0
    model_timesteps: list = field(default_factory=list)
    timesteps: Optional[list] = None
    t_start: Optional[float] = None


class _CountingModel:
    """Calls ``model(x, t)`` with t as a (B,) float tensor; counts evaluations and rejects bad outputs.

    A non-finite ε is reported with the step and timestep where it happened, instead of silently turning the
    whole batch into NaN images.
    """

    def __init__(self, model: Callable, info: SampleInfo, num_steps: Optional[int], input_dtype: torch.dtype):
        self.model, self.info, self.num_steps, self.steps_done = model, info, num_steps, 0
        self.input_dtype = input_dtype  # the model sees x in x_T's dtype, whatever the solver works in

    def __call__(self, x: Tensor, t: float) -> Tensor:
        t_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        eps = self.model(x.to(self.input_dtype), torch.full((x.shape[0],), t, dtype=t_dtype, device=x.device))
        self.info.nfe += 1
        self.info.model_timesteps.append(t)
        where = f"step {self.steps_done + 1}/{self.num_steps}" if self.num_steps else f"evaluation {self.info.nfe}"
        if not isinstance(eps, Tensor) or eps.shape != x.shape:
            got = tuple(eps.shape) if isinstance(eps, Tensor) else type(eps).__name__
            raise ValueError(f"model returned {got} at {where}; expected ε with the input's shape {tuple(x.shape)}")
        if not torch.isfinite(eps).all():
            raise FloatingPointError(f"model returned a non-finite ε at {where} (timestep t={t:g})")
        return eps.to(x.dtype)


def _noise_source(generator, x: Tensor) -> Callable[[Tensor], Tensor]:
    """Fresh N(0, I) noise shaped like x: from one generator, or one generator per sample (batch-invariant).

    Noise is drawn in float32 on the generator's device whatever the working dtype and device, so that a seed
    means the same noise in float64, bf16 or on another device.
    """
    if generator is None:
        return lambda y: torch.randn(y.shape, dtype=torch.float32).to(y)
    if isinstance(generator, torch.Generator):
        return lambda y: torch.randn(y.shape, generator=generator, device=generator.device).to(y)
    gens = list(generator)
    if len(gens) != x.shape[0]:
        raise ValueError(f"got {len(gens)} generators for a batch of {x.shape[0]}")
    return lambda y: torch.stack([torch.randn(y.shape[1:], generator=g, device=g.device) for g in gens]).to(y)


def _check_adaptive(rtol, atol, t_end) -> None:
    """PF's tolerances and end point: a NaN or a zero tolerance would run forever or blame the model."""
    for name, value in (("rtol", rtol), ("atol", atol)):
        if not (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
                and value > 0):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    if not (isinstance(t_end, numbers.Real) and not isinstance(t_end, bool) and 0 < t_end < 1):
        raise ValueError(f"t_end (the diffusion time s where PF stops) must lie in (0, 1), got {t_end!r}")


def sample(
    model: Callable[[Tensor, Tensor], Tensor],
    x_T: Tensor,
    schedule: NoiseSchedule,
    method: Union[str, LearnedSolver] = "F-PNDM",
    steps: Optional[int] = None,
    convention: str = "standard",
    *,
    timesteps: Optional[Sequence[float]] = None,
    eta: Optional[float] = None,
    generator: Union[None, torch.Generator, Iterable[torch.Generator]] = None,
    callback: Optional[Callable[[dict], None]] = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t_end: float = 1e-3,
    return_info: bool = False,
):
    """Run ``method`` from x_T and return x_0 (and a ``SampleInfo`` when ``return_info``).

    ``method``: a name of ``available()``, or a ``samplers.LearnedSolver`` (``learn_solver``; it brings its own
    grid, so no ``steps`` or ``timesteps``).

    model(x, t) -> ε, with t a float tensor of shape (B,). ``steps`` is the number of grid steps (see
    ``grids.uniform_grid`` for the two conventions); PF takes ``rtol``, ``atol`` and ``t_end`` instead.
    ``timesteps`` replaces the method's grid by your own (instead of ``steps``): strictly decreasing model
    timesteps from at most T−1, then the last step's target, −1 for ā = 1; ā is interpolated at fractional
    timesteps, as on the built-in spaced grids.
    ``eta`` (DDIM only) adds DDIM's stochasticity; stochastic methods draw noise from ``generator``: one
    torch.Generator, or one per sample so that sample i does not depend on its batch.
    ``callback`` receives a dict {step, t, t_next, x, nfe} after every step (for PF: after every model call,
    with t the model timestep).

    A float16 or bfloat16 x_T is integrated in float32 (the model still sees x in x_T's dtype, the result comes
    back in it): the data prediction divides by sqrt(ā), 5e-5 at t = T−1 on the cosine schedule, which half
    precision turns into errors of order one.
    """
    m, convention = _resolve(method, convention, schedule)
    # x_T is checked between the schedule and the rest of plan()'s checks, as it always was
    if not isinstance(x_T, Tensor) or not x_T.is_floating_point() or x_T.ndim < 1:
        raise ValueError("x_T must be a floating-point tensor with a batch dimension")
    p = _plan(m, convention, schedule, steps, timesteps, eta)
    if p.method.adaptive:
        _check_adaptive(rtol, atol, t_end)
    if not bool(torch.isfinite(x_T).all()):  # else the first model call would be blamed for it
        raise ValueError("x_T holds NaN or infinite values")
    grid = p.grid
    input_dtype = x_T.dtype
    if input_dtype in (torch.float16, torch.bfloat16):
        x_T = x_T.float()
    info = SampleInfo(p.method.name, p.convention, timesteps=None if grid is None else list(grid.timesteps),
                      t_start=p.t_start)

    with torch.no_grad():
        if p.method.adaptive:
            eps = _CountingModel(model, info, None, input_dtype)
            user_cb = None
            if callback is not None:
                user_cb = lambda s, x: callback({"step": info.nfe - 1, "t": s * (schedule.T - 1),
                                                 "t_next": None, "x": x, "nfe": info.nfe})
            x0 = p.method.engine(eps, schedule, x_T, rtol=rtol, atol=atol, t_end=t_end, callback=user_cb,
                                 convention=p.convention)
        else:
            eps = _CountingModel(model, info, grid.steps, input_dtype)

            def on_step(i, t, t_next, x):
                eps.steps_done = i + 1
                if callback is not None:
                    callback({"step": i, "t": t, "t_next": t_next, "x": x, "nfe": info.nfe})

            # the noise source only exists for runs that draw noise (a bad generator list is no error otherwise)
            noise = _noise_source(generator, x_T) if p.eta else None
            x0 = p.method.engine(eps, grid, x_T, callback=on_step, noise=noise, **p.method.options)
    x0 = x0.to(input_dtype)
    return (x0, info) if return_info else x0
