"""THE analytic benchmark: Gaussian mixtures whose exact probability-flow endpoint is known, and the RMSE of a
sampler's output against it. Both benchmarks use it: the frontier (``analytic_table``: every configuration of
both sides at NFE budgets, all mixtures in one ``MixtureBank``) and scripts/bench_samplers.py
(``accuracy_table``: the paper's methods against the exact flow from their own first timestep, one mixture at a
time, with wall time).
"""
from __future__ import annotations

import math
import sys
import time
from typing import Optional, Sequence

import torch
from tqdm.auto import tqdm

from models import GaussianMixture, MixtureBank
from samplers import NoiseSchedule, sample, uniform_grid

from .diffusers_side import T, diffusers_configs, diffusers_fit, run_diffusers
from .ours_side import our_fit, our_methods
from .scores import FLIP, summarise  # noqa: F401 (FLIP: exported here too)
from .tuned import TuneSettings, tuned_rows

COMPONENTS, SHAPE = 8, (3, 8, 8)
PAPER_METHODS_TABLE = ("DDIM", "S-PNDM", "F-PNDM", "FON")  # bench_samplers' accuracy table


class MixtureSet:
    """8-component mixtures in 3×8×8, one per seed, each with ``batch`` float64 noise samples drawn from
    ``torch.Generator().manual_seed(noise_offset + seed)``. ``x_T`` is all noises in seed order, ``bank`` the
    mixtures as one ε-model over it (sample i belongs to mixture i // batch)."""

    def __init__(self, seeds: Sequence[int], batch: int, schedule: NoiseSchedule, noise_offset: int = 1000):
        self.seeds, self.batch = list(seeds), batch
        self.mixtures = [GaussianMixture.random(COMPONENTS, SHAPE, seed=s, schedule=schedule) for s in self.seeds]
        self.noises = [torch.randn(batch, *SHAPE, generator=torch.Generator().manual_seed(noise_offset + s),
                                   dtype=torch.float64) for s in self.seeds]
        self.bank = MixtureBank(self.mixtures)
        self.x_T = torch.cat(self.noises)

    def exact(self, alpha_bar_start: float, alpha_bar_end: float = 1.0) -> torch.Tensor:
        """The exact probability-flow endpoint of every sample of ``x_T`` between these noise levels."""
        return self.bank.flow_endpoint(self.x_T, alpha_bar_start, alpha_bar_end)

    def errors(self, x0: torch.Tensor, exact: torch.Tensor) -> dict:
        """Per-mixture RMSE of ``x0`` against ``exact``: their mean ('rmse', the headline statistic) and median,
        the number of samples that ended in another component ('flips', a sample RMSE above ``FLIP``), and the
        per-mixture RMSEs themselves ('per_mixture', in seed order)."""
        return summarise(x0, exact, len(self.seeds), self.batch)


def analytic_table(budgets, mixtures, batch, schedule, noise_offset=1000, tune: Optional[TuneSettings] = None):
    """Every configuration × budget on all mixtures at once (one ``MixtureBank``, one sampler run): per-mixture
    RMSE, their mean and median, and the number of samples that ended in another component ("flips"), against
    the exact flow endpoint from t = T−1 to ā = 1. Mixture s's noise comes from seed ``noise_offset`` + s.
    Rows: dict(side, name, budget, steps, nfe, rmse, median, flips, per_mixture); with ``tune``, also the tuned
    rows of ``tuned.tuned_rows`` (side 'ours-tuned': grids learned per mixture on other noise, scored on this)."""
    problem = MixtureSet(mixtures, batch, schedule, noise_offset=noise_offset)
    exact = problem.exact(schedule.alpha_bar(T - 1), 1.0)

    def scored(side, name, budget, steps, nfe, x0):
        return dict(side=side, name=name, budget=budget, steps=steps, nfe=nfe, **problem.errors(x0, exact))

    rows = []
    for name in tqdm(our_methods(), desc="analytic: ours", unit="method", dynamic_ncols=True):
        for budget in budgets:
            steps = our_fit(name, schedule, budget)
            if steps is not None:
                x0, info = sample(problem.bank, problem.x_T, schedule, name, steps=steps, return_info=True)
                rows.append(scored("ours", name, budget, steps, info.nfe, x0))
    cache = {}
    for label, factory in tqdm(diffusers_configs(schedule.kind), desc="analytic: diffusers", unit="config",
                               dynamic_ncols=True):
        for budget in budgets:
            steps = diffusers_fit(factory, problem.mixtures[0], problem.noises[0], budget, cache)
            if steps is None:
                continue
            try:
                x0, nfe = run_diffusers(factory, problem.bank, problem.x_T, steps)
            except Exception as e:
                print(f"skipped {label} at {steps} steps: {type(e).__name__}: {e}", file=sys.stderr)
                continue
            row = scored("diffusers", label, budget, steps, nfe, x0)
            if math.isfinite(row["rmse"]):
                rows.append(row)
            else:  # said, not silently dropped: a missing configuration changes every "ours / diffusers" ratio
                print(f"dropped {label} at {steps} steps: its samples are not finite", file=sys.stderr)
    if tune is not None:
        rows += tuned_rows(problem, exact, schedule, budgets, noise_offset, tune, T)
    return rows


def accuracy_table(steps_list, seeds, batch, schedule, methods=PAPER_METHODS_TABLE):
    """scripts/bench_samplers.py part 1: each method × step count on each mixture (noise seed = mixture seed), RMSE
    against the exact flow from the sampler's own first timestep, and wall time; then PF at two tolerances against
    the exact flow between the continuous VP process's noise levels at s = 1 and s = 1e-3.
    Rows: dict(seed, method, steps, nfe, rmse, seconds)."""
    rows = []
    for seed in seeds:
        problem = MixtureSet([seed], batch, schedule, noise_offset=0)
        model, x_T = problem.mixtures[0], problem.x_T
        for steps in steps_list:
            grid = uniform_grid(schedule, steps)
            exact = problem.exact(schedule.alpha_bar(grid[0]), 1.0)
            for method in methods:
                t0 = time.perf_counter()
                x0, info = sample(model, x_T, schedule, method, steps=steps, return_info=True)
                rows.append(dict(seed=seed, method=method, steps=steps, nfe=info.nfe,
                                 rmse=problem.errors(x0, exact)["rmse"], seconds=time.perf_counter() - t0))
        # PF is the released code's solver of the continuous linear VP SDE's flow from s = 1 to s = 1e-3; its
        # exact counterpart runs between the continuous process's noise levels at those times.
        ab_cont = lambda s: math.exp(schedule.vp_log_alpha_bar(s))  # noqa: E731
        exact = problem.exact(ab_cont(1.0), ab_cont(1e-3))
        for tol in (1e-3, 1e-5):
            t0 = time.perf_counter()
            x0, info = sample(model, x_T, schedule, "PF", rtol=tol, atol=tol, return_info=True)
            rows.append(dict(seed=seed, method=f"PF(tol={tol:g})", steps=None, nfe=info.nfe,
                             rmse=problem.errors(x0, exact)["rmse"], seconds=time.perf_counter() - t0))
    return rows
