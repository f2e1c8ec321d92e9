"""The one entry point: ``sample(model, x_T, schedule, method=..., steps=...)`` and the method registry."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial
from typing import Callable, Iterable, Optional, Sequence, Union

import torch
from torch import Tensor

from .grids import SPACINGS, check_timesteps, spaced_grid, uniform_grid
from .multistep import WARMUP_EXTRA_NFE, classical_family, linear_multistep, pseudo_family
from .probability_flow import probability_flow
from .schedule import NoiseSchedule, check_convention
from .stochastic import generalized_ddim


@dataclass(frozen=True)
class Method:
    """What a method name means: the algorithm and the time grid it runs on.

    ``kind``: 'multistep' (the PNDM engine), 'exponential' (exponential-integrator solvers), 'ancestral' or
    'ode'. ``grid``: 'paper' — the paper's uniform grid, under either convention — or one of
    ``grids.SPACINGS`` (from t = T−1 to ā = 1, standard convention, ā interpolated at float timesteps).
    A name ``BASE@spacing`` runs BASE on that spacing (``BASE@paper`` on the paper's grid). The default grids
    of the newer solvers are the ones that measured best for them in scripts/bench_frontier.py.
    """

    name: str
    description: str
    kind: str
    family: Optional[str] = None  # 'pseudo' | 'classical' for multistep methods
    order: int = 1
    warmup: Optional[str] = None
    eta: Optional[float] = None  # fixed η of an ancestral method
    solver: Optional[str] = None  # key of EXPONENTIAL_SOLVERS
    variant: Optional[str] = None  # e.g. UniPC's 'bh1' / 'bh2'
    grid: str = "paper"

    def nfe(self, num_steps: int) -> int:
        """Model evaluations for ``num_steps`` steps of the grid."""
        if self.warmup in WARMUP_EXTRA_NFE:
            return num_steps + WARMUP_EXTRA_NFE[self.warmup] * min(num_steps, self.order - 1)
        return num_steps


_METHODS = (
    Method("DDIM", "DDIM, the pseudo Euler method (eta=0; eta>0 adds DDIM's stochasticity)", "multistep", "pseudo"),
    Method("S-PNDM", "pseudo 2-step linear multistep, pseudo improved Euler first step; NFE = steps+1",
           "multistep", "pseudo", 2, "improved_euler"),
    Method("F-PNDM", "pseudo 4-step linear multistep, 3 pseudo Runge-Kutta warm-up steps; NFE = steps+9",
           "multistep", "pseudo", 4, "rk4"),
    Method("FON", "classical 4th-order: Runge-Kutta warm-up then 4-step linear multistep on the DDIM ODE; "
           "NFE = steps+9", "multistep", "classical", 4, "rk4"),
    Method("iPNDM", "pseudo 4-step linear multistep with lower-order multistep warm-up (Zhang & Chen 2022); "
           "NFE = steps", "multistep", "pseudo", 4, "lower_order", grid="quadratic"),
    Method("DPM-Solver++(2M)", "DPM-Solver++ multistep, 2nd order, data prediction (Lu et al. 2022); NFE = steps",
           "exponential", order=2, solver="dpmpp", grid="logsnr"),
    Method("DPM-Solver++(3M)", "DPM-Solver++ multistep, 3rd order (exact 3rd-order weights, unlike diffusers' "
           "3M); NFE = steps", "exponential", order=3, solver="dpmpp", grid="logsnr"),
    Method("UniPC-2(bh1)", "UniPC, order-2 predictor + corrector, B(h) = h; NFE = steps", "exponential", order=2,
           solver="unipc", variant="bh1", grid="quadratic"),
    Method("UniPC-2(bh2)", "UniPC, order-2 predictor + corrector, B(h) = e^h - 1; NFE = steps", "exponential",
           order=2, solver="unipc", variant="bh2", grid="quadratic"),
    Method("UniPC-3(bh1)", "UniPC, order-3 predictor + corrector, B(h) = h; NFE = steps", "exponential", order=3,
           solver="unipc", variant="bh1", grid="quadratic"),
    Method("UniPC-3(bh2)", "UniPC, order-3 predictor + corrector, B(h) = e^h - 1; NFE = steps", "exponential",
           order=3, solver="unipc", variant="bh2", grid="quadratic"),
    Method("DEIS-2", "DEIS log-rho multistep, order 2 (as diffusers' DEISMultistepScheduler); NFE = steps",
           "exponential", order=2, solver="deis", grid="karras"),
    Method("DEIS-3", "DEIS log-rho multistep, order 3; NFE = steps", "exponential", order=3, solver="deis",
           grid="karras"),
    Method("VS-PNDM-3", "PNDM's pseudo linear multistep with coefficients for non-uniform steps (exact "
           "integration of the eps polynomial in sigma/alpha; DEIS's rho-AB), order 3; NFE = steps",
           "exponential", order=3, solver="adams", grid="quadratic"),
    Method("VS-PNDM-4", "as VS-PNDM-3, order 4; NFE = steps", "exponential", order=4, solver="adams",
           grid="quadratic"),
    Method("DDPM", "DDPM ancestral sampling (DDIM with eta=1: posterior variance)", "ancestral", eta=1.0),
    Method("PF", "probability-flow ODE of the VP SDE with scipy's adaptive RK45 (rtol, atol); NFE = solver's",
           "ode"),
)
METHODS = {m.name.upper(): m for m in _METHODS}


def available() -> list[str]:
    """Names that ``sample(method=...)`` accepts (case-insensitive): every method on its own grid, and every
    grid-based method on every spacing as ``NAME@spacing``."""
    names = [m.name for m in _METHODS]
    return names + [f"{m.name}@{s}" for m in _METHODS if m.kind in ("multistep", "exponential", "ancestral")
                    for s in ("paper",) + SPACINGS if s != m.grid]


def get_method(name: str) -> Method:
    base, _, spacing = str(name).partition("@")
    try:
        m = METHODS[base.strip().upper()]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(m.name for m in _METHODS)} "
                         f"(optionally @{'/@'.join(('paper',) + SPACINGS)})") from None
    if not spacing:
        return m
    spacing = spacing.strip().lower()
    if m.kind == "ode":
        raise ValueError(f"{m.name} is adaptive and takes no grid")
    if spacing == "paper":  # the paper's uniform grid, under either convention
        return replace(m, name=f"{m.name}@paper", grid="paper")
    if spacing not in SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r} in {name!r}; choose one of {', '.join(SPACINGS)}")
    return replace(m, name=f"{m.name}@{spacing}", grid=spacing)


def method_grid(m: Method, schedule: NoiseSchedule, steps: int, convention: str):
    """(timesteps, alpha_bar) of method ``m``: the paper grid under ``convention``, or its spacing."""
    if m.grid == "paper":
        return uniform_grid(schedule, steps, convention), partial(schedule.alpha_bar, convention=convention)
    if convention != "standard":
        raise ValueError(f"{m.name} runs on its own grid under the standard convention only")
    return spaced_grid(schedule, steps, m.grid), schedule.alpha_bar_continuous


def custom_grid(m: Method, schedule: NoiseSchedule, timesteps, steps, convention: str):
    """(timesteps, alpha_bar) for a grid the user gives: ā read as on the spaced grids (interpolated)."""
    if m.kind == "ode":
        raise ValueError(f"{m.name} is adaptive and takes no grid")
    if "@" in m.name:
        raise ValueError(f"timesteps= replaces the grid: give {m.name.split('@')[0]!r}, not {m.name!r}")
    if steps is not None:
        raise ValueError("give steps or timesteps, not both")
    if convention != "standard":
        raise ValueError("timesteps= runs under the standard convention only")
    return check_timesteps(timesteps, schedule.T), schedule.alpha_bar_continuous


def run_grid(m: Method, schedule: NoiseSchedule, steps, timesteps, convention: str):
    """(timesteps, alpha_bar) a fixed-step run of ``m`` uses: the user's ``timesteps``, or its grid of ``steps``."""
    if timesteps is not None:
        return custom_grid(m, schedule, timesteps, steps, convention)
    if steps is None:
        raise ValueError(f"{m.name} needs steps (or timesteps)")
    return method_grid(m, schedule, steps, convention)


def expected_nfe(method: str, steps: Optional[int], schedule: NoiseSchedule, convention: str = "standard",
                 timesteps: Optional[Sequence[float]] = None) -> int:
    """The NFE ``sample`` will spend, without running it (not defined for the adaptive PF solver)."""
    m = get_method(method)
    if m.kind == "ode":
        raise ValueError("PF is adaptive: its NFE is known only after solving")
    return m.nfe(len(run_grid(m, schedule, steps, timesteps, convention)[0]) - 1)


@dataclass
class SampleInfo:
    """What a sampling run did: ``nfe`` model evaluations at ``model_timesteps`` (in call order), over the
    grid ``timesteps`` (None for PF)."""

    method: str
    convention: Optional[str]
    nfe: int = 0
    model_timesteps: list = field(default_factory=list)
    timesteps: Optional[list] = None


class _CountingModel:
    """Calls ``model(x, t)`` with t as a (B,) float tensor; counts evaluations and rejects bad outputs.

    A non-finite ε is reported with the step and timestep where it happened, instead of silently turning the
    whole batch into NaN images.
    """

    def __init__(self, model: Callable, info: SampleInfo, num_steps: Optional[int]):
        self.model, self.info, self.num_steps, self.steps_done = model, info, num_steps, 0

    def __call__(self, x: Tensor, t: float) -> Tensor:
        t_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        eps = self.model(x, torch.full((x.shape[0],), t, dtype=t_dtype, device=x.device))
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


def sample(
    model: Callable[[Tensor, Tensor], Tensor],
    x_T: Tensor,
    schedule: NoiseSchedule,
    method: str = "F-PNDM",
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

    model(x, t) -> ε, with t a float tensor of shape (B,). ``steps`` is the number of grid steps (see
    ``grids.uniform_grid`` for the two conventions); PF takes ``rtol``, ``atol`` and ``t_end`` instead.
    ``timesteps`` replaces the method's grid by your own (instead of ``steps``): strictly decreasing model
    timesteps from at most T−1, then the last step's target, −1 for ā = 1; ā is interpolated at fractional
    timesteps, as on the built-in spaced grids.
    ``eta`` (DDIM only) adds DDIM's stochasticity; stochastic methods draw noise from ``generator``: one
    torch.Generator, or one per sample so that sample i does not depend on its batch.
    ``callback`` receives a dict {step, t, t_next, x, nfe} after every step (for PF: after every model call,
    with t the model timestep).
    """
    m = get_method(method)
    convention = check_convention(convention)
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a samplers.NoiseSchedule, got {type(schedule).__name__}")
    if not isinstance(x_T, Tensor) or not x_T.is_floating_point() or x_T.ndim < 1:
        raise ValueError("x_T must be a floating-point tensor with a batch dimension")
    if eta is not None and m.name.split("@")[0] != "DDIM":
        raise ValueError(f"eta applies to DDIM only, not {m.name}")
    if eta is not None and not eta >= 0:
        raise ValueError(f"eta must be >= 0, got {eta}")

    with torch.no_grad():
        if m.kind == "ode":
            if steps is not None or timesteps is not None:
                raise ValueError("PF is an adaptive solver: give rtol/atol, not steps or timesteps")
            info = SampleInfo(m.name, None)
            eps = _CountingModel(model, info, None)
            user_cb = None
            if callback is not None:
                user_cb = lambda s, x: callback({"step": info.nfe - 1, "t": s * (schedule.T - 1),
                                                 "t_next": None, "x": x, "nfe": info.nfe})
            x0 = probability_flow(eps, schedule, x_T, rtol=rtol, atol=atol, t_end=t_end, callback=user_cb)
        else:
            grid, alpha_bar = run_grid(m, schedule, steps, timesteps, convention)
            info = SampleInfo(m.name, convention, timesteps=grid)
            eps = _CountingModel(model, info, len(grid) - 1)

            def on_step(i, t, t_next, x):
                eps.steps_done = i + 1
                if callback is not None:
                    callback({"step": i, "t": t, "t_next": t_next, "x": x, "nfe": info.nfe})

            ancestral_eta = m.eta if m.kind == "ancestral" else eta
            if m.kind == "exponential":
                from .exponential import EXPONENTIAL_SOLVERS

                solve = EXPONENTIAL_SOLVERS[m.solver]
                extra = {"variant": m.variant} if m.variant else {}
                x0 = solve(eps, alpha_bar, x_T, grid, m.order, callback=on_step, **extra)
            elif ancestral_eta:
                x0 = generalized_ddim(eps, alpha_bar, x_T, grid, ancestral_eta, _noise_source(generator, x_T),
                                      on_step)
            else:
                make_family = pseudo_family if m.family == "pseudo" else classical_family
                x0 = linear_multistep(make_family(eps, alpha_bar), x_T, grid, m.order, m.warmup, on_step)
    return (x0, info) if return_info else x0
