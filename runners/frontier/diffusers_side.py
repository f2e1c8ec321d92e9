"""The diffusers side: the scheduler configurations the frontier compares against, and THE one driver that runs a
diffusers scheduler on an ε-model (used by scripts/bench_frontier.py and by tests/samplers/test_diffusers_parity.py
and tests/samplers/test_exponential.py).

diffusers is a test/benchmark-only dependency: it is imported inside the functions that need it.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from typing import Callable, Optional

import torch

T = 1000
DIFFUSERS_BETAS = {"linear": "linear", "cosine": "squaredcos_cap_v2", "quad": "scaled_linear"}  # same betas
SPACINGS = ("leading", "trailing", "linspace")


def diffusers_configs(schedule_kind: str = "linear"):
    """(label, scheduler factory) for every scheduler and sigma spacing diffusers offers here."""
    import diffusers as d

    base = dict(num_train_timesteps=T, beta_start=1e-4, beta_end=0.02, beta_schedule=DIFFUSERS_BETAS[schedule_kind])
    out = []
    spacings = SPACINGS
    for sp in spacings:
        out.append((f"DDIMScheduler[{sp}]", lambda sp=sp: d.DDIMScheduler(**base, clip_sample=False,
                                                                           timestep_spacing=sp)))
        for prk in (False, True):
            for one in (False, True):
                label = f"PNDMScheduler[{sp}{', PRK' if prk else ', PLMS'}{', alpha_to_one' if one else ''}]"
                out.append((label, lambda sp=sp, prk=prk, one=one: d.PNDMScheduler(
                    **base, skip_prk_steps=not prk, set_alpha_to_one=one, timestep_spacing=sp)))
    sigma_options = {"default": {}, "karras": {"use_karras_sigmas": True},
                     "exponential": {"use_exponential_sigmas": True}, "beta": {"use_beta_sigmas": True}}
    for order in (2, 3):
        for name, extra in {**sigma_options, "logSNR": {"use_lu_lambdas": True}}.items():
            for sp in spacings if name == "default" else ("linspace",):
                out.append((f"DPMSolverMultistep[{order}M, {name}, {sp}]",
                    lambda order=order, extra=extra, sp=sp: d.DPMSolverMultistepScheduler(
                        **base, algorithm_type="dpmsolver++", solver_order=order, timestep_spacing=sp,
                        final_sigmas_type="zero", **extra)))
    for variant in ("bh1", "bh2"):
        # bh1's B(h) = h is infinite on the step to σ = 0, where diffusers returns NaN: it ends at σ_min there
        # (the only end on which bh1 finishes; dropping its NaN rows left diffusers without bh1 in the comparison)
        final = "zero" if variant == "bh2" else "sigma_min"
        for order in (2, 3):
            for name, extra in sigma_options.items():
                for sp in spacings if name == "default" else ("linspace",):
                    end = "" if final == "zero" else ", ends at sigma_min"
                    out.append((f"UniPCMultistep[{variant}, order {order}, {name}, {sp}{end}]",
                                lambda variant=variant, order=order, extra=extra, sp=sp, final=final:
                                d.UniPCMultistepScheduler(**base, solver_type=variant, solver_order=order,
                                                          timestep_spacing=sp, final_sigmas_type=final, **extra)))
    for order in (2, 3):
        for name, extra in sigma_options.items():
            for sp in spacings if name == "default" else ("linspace",):
                out.append((f"DEISMultistep[order {order}, {name}, {sp}]",
                            lambda order=order, extra=extra, sp=sp: d.DEISMultistepScheduler(
                                **base, solver_order=order, timestep_spacing=sp, **extra)))
    return out


def run_scheduler(scheduler, model: Callable, x: torch.Tensor, steps: Optional[int] = None, *,
                  callback: Optional[Callable] = None, **step_kwargs) -> tuple[torch.Tensor, int]:
    """Run a diffusers ``scheduler`` on the ε-model ``model(x, t)`` from x_T = ``x``: (x0, NFE).

    ``steps``: the scheduler's ``num_inference_steps`` (``set_timesteps`` is called with diffusers' messages and
    warnings silenced); None when the caller has already set the timesteps. The model sees the scheduler's
    ``scale_model_input`` and t as a float tensor in x's dtype, one per sample; ``step_kwargs`` (eta,
    generator, ...) go to every ``scheduler.step``; ``callback(t, x)`` gets x after each step.
    """
    if steps is not None:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scheduler.set_timesteps(steps)
    x = x * scheduler.init_noise_sigma
    nfe = 0
    for t in scheduler.timesteps:
        inp = scheduler.scale_model_input(x, t)
        eps = model(inp, torch.full((x.shape[0],), float(t), dtype=x.dtype))
        nfe += 1
        x = scheduler.step(eps, t, x, **step_kwargs).prev_sample
        if callback is not None:
            callback(t, x)
    return x, nfe


def run_diffusers(factory: Callable, model: Callable, x: torch.Tensor, steps: int) -> tuple[torch.Tensor, int]:
    """A fresh scheduler from ``factory`` (one of ``diffusers_configs``), run for ``steps`` steps: (x0, NFE)."""
    return run_scheduler(factory(), model, x, steps)


def diffusers_fit(factory, model, x, budget, cache):
    """The largest num_inference_steps whose NFE fits the budget (PNDM with PRK costs more than one per step).
    ``cache`` maps (id(factory), steps) to the NFE of that many steps (or an error text) across calls."""
    for steps in range(budget, 0, -1):
        key = (id(factory), steps)
        if key not in cache:
            try:
                cache[key] = run_diffusers(factory, model, x[:1], steps)[1]
            except Exception as e:  # a configuration diffusers refuses at this step count
                cache[key] = f"error: {type(e).__name__}"
        if isinstance(cache[key], int) and cache[key] <= budget:
            return steps
    return None
