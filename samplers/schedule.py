"""The noise schedule: the only place that knows alpha_bar and how a timestep maps to it.

Two conventions for reading the discrete table ``alphas_cumprod`` (index 0..T-1) at a model timestep ``t``
(see ../shared/reference/README.md):

* ``standard`` (DDIM, diffusers with ``set_alpha_to_one=True``): alpha_bar(t) = alphas_cumprod[t], and
  t = -1 (the end of sampling) means alpha_bar = 1, i.e. clean data.
* ``official`` (the released PNDM code): alpha_bar(t) = alphas_cumprod[t + 1]; the final step to t = -1 lands on
  alphas_cumprod[0], and t = T - 1 would read past the end of the table.

Fractional timesteps (Runge-Kutta midpoints) are floored for the table index in both conventions, exactly like
the released code, while the model itself receives the float timestep.

Two time axes, and the accessors named after them:

* model timestep t ∈ [−1, T−1]: ``alpha_bar(t, convention)`` (table at floor(t): the paper's grids),
  ``alpha_bar_lerp(t)`` (linear interpolation, continued to ā = 1 at t = −1: spaced and custom grids),
  ``alpha_bar_lerp_clamped(t)`` (array-valued interpolation clamped to [0, T−1]: the analytic models) and
  ``alpha_bar_lerp_torch(t)`` (the same interpolation on tensors, differentiable in t: learned grids);
* VP time s ∈ [0, 1] of the continuous process (probability-flow ODE): ``vp_log_alpha_bar(s)``, ``vp_beta(s)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

KINDS = ("linear", "quad", "cosine")
CONVENTIONS = ("standard", "official")


def check_convention(convention: str) -> str:
    name = str(convention).lower()
    if name not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; choose one of {', '.join(CONVENTIONS)}")
    return name


def _cosine_f(s):
    """Nichol & Dhariwal's cosine schedule, alpha_bar(s) up to normalisation (offset 0.008)."""
    return np.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2


def make_betas(kind: str, beta_start: float, beta_end: float, num_timesteps: int) -> np.ndarray:
    """Betas in float64, as the released code computes them (they are cast to float32 afterwards)."""
    T = num_timesteps
    if kind == "linear":
        return np.linspace(beta_start, beta_end, T, dtype=np.float64)
    if kind == "quad":
        return np.linspace(beta_start**0.5, beta_end**0.5, T, dtype=np.float64) ** 2
    if kind == "cosine":
        i = np.arange(T, dtype=np.float64)
        return np.minimum(1 - _cosine_f((i + 1) / T) / _cosine_f(i / T), 0.999)
    raise ValueError(f"unknown schedule {kind!r}; choose one of {', '.join(KINDS)}")


@dataclass(frozen=True)
class NoiseSchedule:
    """A discrete DDPM noise schedule with T = ``num_timesteps`` steps.

    ``betas`` and ``alphas_cumprod`` are float32 numpy arrays: betas are computed in float64, cast to float32,
    and the cumulative product is taken in float32 — the released code's arithmetic, which the golden samples
    depend on at the 1e-6 level.
    """

    kind: str = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    num_timesteps: int = 1000
    betas: np.ndarray = field(init=False, repr=False, compare=False)
    alphas_cumprod: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        kind = str(self.kind).lower()
        if kind not in KINDS:
            raise ValueError(f"unknown schedule {self.kind!r}; choose one of {', '.join(KINDS)}")
        for name in ("beta_start", "beta_end"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise ValueError(f"{name} must be a number, got {value!r}")
        n = self.num_timesteps
        if isinstance(n, bool) or not isinstance(n, (int, float, np.integer, np.floating)) or n != int(n):
            raise ValueError(f"num_timesteps must be an integer, got {n!r}")  # 10.9 would quietly be 10
        if int(n) < 2:
            raise ValueError(f"num_timesteps must be at least 2, got {n}")
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "num_timesteps", int(self.num_timesteps))
        betas = make_betas(kind, self.beta_start, self.beta_end, self.num_timesteps).astype(np.float32)
        if not (np.all(betas > 0) and np.all(betas < 1)):
            raise ValueError("betas must lie in (0, 1)")
        alphas_cumprod = np.cumprod(1.0 - betas, dtype=np.float32)
        if not alphas_cumprod[-1] > 0:  # every sampler divides by sqrt(ā) somewhere
            first = int(np.argmax(alphas_cumprod <= 0))
            raise ValueError(f"alpha_bar underflows to 0 in float32 from timestep {first} on: no signal is left "
                             f"there (lower beta_end or the number of timesteps)")
        betas.setflags(write=False)
        alphas_cumprod.setflags(write=False)
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "alphas_cumprod", alphas_cumprod)

    @classmethod
    def from_config(cls, section: dict) -> "NoiseSchedule":
        """Build from a config's ``Schedule`` section (keys as in the released configs)."""
        section = dict(section)
        known = {"type", "beta_start", "beta_end", "diffusion_step"}
        # flags of the released iDDPM config that describe the model, not alpha_bar
        model_flags = {"learn_sigma", "sigma_small", "noise_schedule", "use_kl", "predict_xstart",
                       "rescale_timesteps", "rescale_learned_sigmas", "timestep_respacing"}
        unknown = sorted(set(section) - known - model_flags)
        if unknown:
            raise ValueError(f"unknown Schedule key(s) {unknown}; expected {sorted(known)}")
        kind = section.get("type", "linear")
        if "noise_schedule" in section:  # improved-diffusion's name for the same thing: it must not disagree
            named = str(section["noise_schedule"]).lower()
            if "type" not in section:
                kind = named
            if named != str(kind).lower():
                raise ValueError(f"Schedule.noise_schedule is {section['noise_schedule']!r} but Schedule.type is "
                                 f"{section.get('type')!r}: give one schedule")
            if named == "linear" and section.get("diffusion_step", 1000) != 1000 and not (
                    "beta_start" in section and "beta_end" in section):
                # improved-diffusion scales its linear betas by 1000/T; ours are the given ones: say which
                raise ValueError("Schedule.noise_schedule: linear with diffusion_step != 1000 is improved-diffusion's "
                                 "rescaled schedule (betas × 1000/T): give beta_start and beta_end explicitly")
        return cls(
            kind=kind,
            beta_start=float(section.get("beta_start", 1e-4)),
            beta_end=float(section.get("beta_end", 0.02)),
            num_timesteps=section.get("diffusion_step", 1000),
        )

    @property
    def T(self) -> int:
        return self.num_timesteps

    # ----------------------------------------------------------------------------------------------------------
    # the model-timestep axis t in [-1, T-1], as the samplers and the models see it
    def alpha_bar(self, t: float, convention: str = "standard") -> float:
        """ā at model timestep ``t`` ∈ [−1, T−1] under ``convention``: the table at floor(t) (the paper's grids).

        Fractional t (Runge-Kutta midpoints) is floored for the table index, as in the released code.
        """
        convention = check_convention(convention)
        i = math.floor(t)
        if convention == "official":
            i += 1
        elif i < 0:
            return 1.0
        if not 0 <= i < self.T:
            raise ValueError(f"timestep {t} is outside the {convention} table of a {self.T}-step schedule")
        return float(self.alphas_cumprod[i])

    def alpha_bar_lerp(self, t: float) -> float:
        """ā at model timestep ``t`` ∈ [−1, T−1] for the spaced and custom grids: the table linearly interpolated
        on [0, T−1] (``alpha_bar_lerp_clamped``), continued linearly to ā = 1 at t = −1 (where every grid ends)."""
        if t <= -1:
            return 1.0
        if t < 0:
            return float(1.0 + (t + 1) * (float(self.alphas_cumprod[0]) - 1.0))
        if t > self.T - 1:
            raise ValueError(f"timestep {t} is beyond the {self.T}-step schedule")
        return float(self.alpha_bar_lerp_clamped(t))

    def alpha_bar_lerp_clamped(self, t):
        """ā at model timesteps ``t`` (scalar or array) linearly interpolated between table entries, t clamped
        to [0, T−1]; float64 (an array for array input).

        This is the continuous extension the analytic models use (models/analytic.py), so that a model evaluated
        at a Runge-Kutta midpoint sees a noise level between its neighbours.
        """
        t = np.clip(np.asarray(t, dtype=np.float64), 0, self.T - 1)
        return np.interp(t, np.arange(self.T, dtype=np.float64), self.alphas_cumprod.astype(np.float64))

    def _table_float64(self) -> Tensor:
        """``alphas_cumprod`` as a float64 CPU tensor, made once (the table is read-only)."""
        table = self.__dict__.get("_table64")
        if table is None:
            table = torch.from_numpy(self.alphas_cumprod.astype(np.float64))
            object.__setattr__(self, "_table64", table)
        return table

    def alpha_bar_lerp_torch(self, t: Tensor) -> Tensor:
        """``alpha_bar_lerp`` on a float tensor of timesteps (any shape), differentiable in t: float64, t clamped
        to [−1, T−1]; on [0, T−1] the table interpolated linearly (as ``alpha_bar_lerp_clamped``), on [−1, 0) the
        line to ā = 1 at t = −1. dā/dt is the slope of the segment that starts at floor(t).

        Learned time grids (``samplers.tuning``) read ā with it, and the analytic models use it when t requires
        grad, so that the network's ā and the sampler's agree (to rounding) with the float accessors.
        """
        table = self._table_float64().to(t.device)
        t = t.to(torch.float64).clamp(-1.0, self.T - 1)
        i = t.detach().floor().clamp(0, self.T - 2).long()
        inside = table[i] + (t - i) * (table[i + 1] - table[i])
        below = 1.0 + (t + 1.0) * (table[0] - 1.0)  # the continuation to ā = 1 at t = −1
        return torch.where(t < 0, below, inside)

    # ----------------------------------------------------------------------------------------------------------
    # the VP time axis s in [0, 1] of the continuous process, for the probability-flow ODE (model timestep s·(T−1))
    def _vp_beta_ends(self):
        b0, b1 = float(self.betas[0]), float(self.betas[-1])
        return b0, b1

    def vp_log_alpha_bar(self, s: float, released: bool = False) -> float:
        """log ā(s) of the continuous-time VP process matching this schedule, at VP time ``s`` ∈ [0, 1].

        For ``linear`` this is the VP SDE of Song et al. with beta(s) = (beta_0 + s(beta_1 - beta_0))·T, as the
        released PF solver uses; ``quad`` integrates beta(s) = (sqrt(beta_0) + s(sqrt(beta_1) - sqrt(beta_0)))²·T;
        ``cosine`` is the closed form f(s)/f(0). ``released``: the linear form between betas[0] and betas[-1]
        whatever the kind — the released code's PF on every schedule, which for ``quad`` and ``cosine`` is not
        the process the model was trained on.
        """
        T = self.T
        if self.kind == "linear" or released:
            b0, b1 = self._vp_beta_ends()
            # -integral_0^s beta = -(beta_0 s + (beta_1 - beta_0) s^2 / 2) T  (twice the released log_mean_coeff)
            return -(b0 * s + 0.5 * (b1 - b0) * s * s) * T
        if self.kind == "quad":
            r0, r1 = (float(v) ** 0.5 for v in self._vp_beta_ends())
            d = r1 - r0
            # integral_0^s (r0 + u d)^2 du = r0^2 s + r0 d s^2 + d^2 s^3 / 3
            return -T * (r0 * r0 * s + r0 * d * s * s + d * d * s**3 / 3)
        return float(np.log(_cosine_f(s) / _cosine_f(0.0)))

    def vp_beta(self, s: float, released: bool = False) -> float:
        """beta(s) = −d log ā / ds of the continuous VP process, at VP time ``s`` ∈ [0, 1] (``released``: as in
        ``vp_log_alpha_bar``)."""
        T = self.T
        if self.kind == "linear" or released:
            b0, b1 = self._vp_beta_ends()
            return (b0 + s * (b1 - b0)) * T
        if self.kind == "quad":
            r0, r1 = (float(v) ** 0.5 for v in self._vp_beta_ends())
            return (r0 + s * (r1 - r0)) ** 2 * T
        # d/ds log cos^2(u) = -2 tan(u) du/ds with u = (s + 0.008)/1.008 · pi/2
        u = (s + 0.008) / 1.008 * math.pi / 2
        return 2 * math.tan(u) * math.pi / (2 * 1.008)
