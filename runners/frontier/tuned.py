"""The frontier's tuned rows: for a few of our methods, a time grid learned by ``samplers.tune_timesteps`` for each
mixture (the model at hand) at each budget, then scored on the benchmark's noise exactly like the fixed rows.

The tuning never sees the scored noise: mixture s tunes on ``TuneSettings.noises`` samples drawn from seed
``TuneSettings.offset`` + s (the scored ones come from ``noise_offset`` + s; ``tuned_rows`` refuses overlapping
seeds), with the exact probability-flow endpoint of those samples as ``reference`` (no teacher solve). Within the
tuning noise, ``tune_timesteps`` holds out a quarter to pick its iterate (the start grid included), so on the
tuning noise a tuned grid is never worse than the best fixed spacing it started from.

Tuning costs seconds per grid (``TuneSettings.mixtures`` limits it to the first mixtures; the report then compares
every side on those mixtures only).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from samplers import NoiseSchedule, sample, tune_timesteps
from samplers.tuning import check_differentiable, steps_for_nfe, tunable_method

from .scores import summarise

# The best fixed methods of the analytic table at NFE 5-20 (UniPC-3(bh1) at 5, UniPC-2(bh2) at 10 and 20) and the
# higher-order multistep methods whose grids gain most from tuning.
TUNED_METHODS = ("UniPC-3(bh2)", "UniPC-3(bh1)", "UniPC-2(bh2)", "iPNDM", "DPM-Solver++(3M)")
TUNE_OFFSET = 90000  # mixture s tunes on noise seed TUNE_OFFSET + s; the scored noise uses noise_offset + s
SIDE = "ours-tuned"
HOLDOUT = 0.25  # the fraction of each mixture's tuning noise that selects the iterate


@dataclass
class TuneSettings:
    """What the tuned rows tune: ``methods`` at each of ``budgets`` (None: all of the benchmark's) where they have
    ≥ 2 steps, on the first ``mixtures`` mixtures (None: all), each with ``noises`` tuning noises from seed
    ``offset`` + mixture seed, ``iterations`` Adam steps on batches of ``batch_size`` (None: the whole tuning
    part, so the steps carry no mini-batch noise; tune_timesteps' defaults otherwise). The defaults keep the
    tuning to ~10 minutes on 2 CPU cores: 16 mixtures, NFE ≤ 20 (NFE 50 costs 2.5× NFE 20 per iteration)."""

    methods: Sequence[str] = TUNED_METHODS
    noises: int = 128
    iterations: int = 30
    batch_size: Optional[int] = None
    offset: int = TUNE_OFFSET
    mixtures: Optional[int] = 16
    budgets: Optional[Sequence[int]] = (5, 10, 20)  # None: every budget of the benchmark
    lr: float = 0.1
    seed: int = 0
    reference_tol: float = 1e-8  # DOP853 tolerance of the tuning noises' exact endpoints (scoring uses 1e-10)
    extra: dict = field(default_factory=dict)  # more keyword arguments for tune_timesteps


def tuned_name(method: str) -> str:
    return f"{method}@tuned"


def base_of(name: str) -> str:
    """'UniPC-3(bh2)@power1.5' → 'UniPC-3(bh2)'; '…@tuned' → its method."""
    return name.split("@")[0]


def tuning_seeds(mixtures: Sequence[int], settings: TuneSettings) -> list[int]:
    """The noise seeds the tuning draws from, one per tuned mixture."""
    return [settings.offset + s for s in tuned_mixtures(mixtures, settings)]


def tuned_mixtures(mixtures: Sequence[int], settings: TuneSettings) -> list[int]:
    mixtures = list(mixtures)
    return mixtures if settings.mixtures is None else mixtures[:settings.mixtures]


def geometric(x0: torch.Tensor, exact: torch.Tensor, n_mixtures: int, batch: int) -> list[float]:
    """Per mixture, the geometric mean over its samples of their RMS error: the statistic ``tune_timesteps``
    minimises (its loss is the mean log squared error), which a sample ending in another component (a flip)
    moves far less than the RMSE."""
    per_sample = ((x0 - exact) ** 2).flatten(1).mean(1).clamp_min(1e-300).log().reshape(n_mixtures, batch)
    return [float(v) for v in per_sample.mean(1).mul(0.5).exp()]


def tuned_rows(problem, exact: torch.Tensor, schedule: NoiseSchedule, budgets: Sequence[int], noise_offset: int,
               settings: TuneSettings, T: int = 1000) -> list[dict]:
    """Rows dict(side='ours-tuned', name='METHOD@tuned', budget, steps, nfe, rmse, median, flips, per_mixture,
    mixtures, tune_seconds (mean per grid), tune_noise_seeds, scored_noise_seeds, start_spacings, grids, ...) for
    ``problem`` (the benchmark's ``MixtureSet``: its noises are the scored ones, ``exact`` their endpoints).
    ``start_per_mixture``/``start_flips``: the grid each tuning started from, scored the same way; ``geo`` /
    ``start_geo``: per mixture, the geometric mean of the per-sample RMS errors (``geometric``) of both."""
    seeds = tuned_mixtures(problem.seeds, settings)
    if not seeds:
        return []
    tune_seeds = tuning_seeds(problem.seeds, settings)
    scored_seeds = [noise_offset + s for s in problem.seeds]
    if set(tune_seeds) & set(scored_seeds):
        raise ValueError(f"the tuning noise seeds (offset {settings.offset}) overlap the scored ones (offset "
                         f"{noise_offset}): choose another --tune-offset")
    tuning = type(problem)(seeds, settings.noises, schedule, noise_offset=settings.offset)  # a MixtureSet
    t0 = time.perf_counter()
    references = [m.flow_endpoint(x, schedule.alpha_bar(T - 1), 1.0, rtol=settings.reference_tol,
                                  atol=settings.reference_tol) for m, x in zip(tuning.mixtures, tuning.noises)]
    seconds_reference = (time.perf_counter() - t0) / len(seeds)
    check_differentiable(tuning.mixtures[0], tuning.noises[0], T)  # one clear line if the model is not
    index = {s: i for i, s in enumerate(problem.seeds)}
    scored_exact = exact.split(problem.batch)
    budgets = [b for b in budgets if settings.budgets is None or b in settings.budgets]
    rows = []
    jobs = [(m, b) for m in settings.methods for b in budgets]
    for method, budget in tqdm(jobs, desc="analytic: tuned", unit="grid set", dynamic_ncols=True):
        base, _ = tunable_method(method)
        try:
            steps = steps_for_nfe(base, budget, T)
        except ValueError:  # fewer than 2 steps fit: nothing to tune
            continue
        x0s, start_x0s, exacts, grids, starts, seconds, held = [], [], [], [], [], [], []
        batch_size = settings.batch_size or settings.noises - round(settings.noises * HOLDOUT)
        nfe = None
        for s, mixture, noise, ref in zip(seeds, tuning.mixtures, tuning.noises, references):
            grid, info = tune_timesteps(mixture, schedule, method, budget, noise, reference=ref,
                                        iterations=settings.iterations, seed=settings.seed, lr=settings.lr,
                                        holdout=HOLDOUT, batch_size=batch_size, return_info=True,
                                        **settings.extra)
            i = index[s]
            x0, sinfo = sample(mixture, problem.noises[i], schedule, base.name, timesteps=grid, return_info=True)
            nfe = sinfo.nfe
            x0s.append(x0)
            start_x0s.append(sample(mixture, problem.noises[i], schedule, base.name, timesteps=info.start))
            exacts.append(scored_exact[i])
            grids.append(list(grid))
            starts.append(info.start_spacing)
            seconds.append(info.seconds)
            held.append((info.held_out_loss_start, info.held_out_loss))
        stats = summarise(torch.cat(x0s), torch.cat(exacts), len(seeds), problem.batch)
        start = summarise(torch.cat(start_x0s), torch.cat(exacts), len(seeds), problem.batch)
        rows.append(dict(side=SIDE, name=tuned_name(base.name), budget=budget, steps=steps, nfe=nfe, **stats,
                         start_per_mixture=start["per_mixture"], start_flips=start["flips"],
                         geo=geometric(torch.cat(x0s), torch.cat(exacts), len(seeds), problem.batch),
                         start_geo=geometric(torch.cat(start_x0s), torch.cat(exacts), len(seeds), problem.batch),
                         mixtures=list(seeds), tune_seconds=float(np.mean(seconds)),
                         reference_seconds=seconds_reference, tune_noise_seeds=tune_seeds,
                         scored_noise_seeds=[noise_offset + s for s in seeds], start_spacings=starts, grids=grids,
                         held_out=held, iterations=settings.iterations, tune_noises=settings.noises,
                         tune_batch=batch_size,
                         loss=settings.extra.get("loss", "log")))
    return rows
