#!/usr/bin/env python
"""Why the analytic mixtures' mean RMSE stays high at NFE 5–10 (issue #14; docs/TUNING.md "Where flips start").

At low NFE the mean over mixtures is set by the few samples that end in another component (flips). Two
measurements on the frontier's mixtures (8 components in 3×8×8, linear schedule, from t = 999):

* ``origins``: for each method and grid, the step that decided each flip (``runners.frontier.flips``), with the
  mean/median RMSE and the flip count. ``--grid`` adds grids of your own (comma-separated timesteps ending at −1).
* ``oracle``: how low can a grid take the scored mean at all? Per mixture, scipy's Nelder–Mead on the grid's
  log-SNR parameterisation minimises the frontier's own score — the RMSE over the 32 *scored* noises — starting
  from every spacing. This tunes on the scored samples, which the frontier never does: it is a bound on what
  any grid of the method can reach there, not a result (and the same grid is shown on ``--noises`` others).
* ``losses``: per mixture, ``tune_timesteps`` with the mse and log losses and two robust ones given as its
  ``distance`` — *cap* (squared distance clipped at c) and *cauchy* (c·log(1 + d/c)) — tuned on other noise
  (seed 90000 + mixture), scored on the frontier's noise (32 per mixture, seed 1000 + mixture) and on
  ``--noises`` more per mixture (seed 3000 + mixture).

    python scripts/bench_flips.py origins --method "UniPC-3(bh2)" --steps 10 \\
        --grid 999,880,780,690,600,480,350,220,110,35,-1                      # ~1 min on 2 cores
    python scripts/bench_flips.py losses --method "UniPC-3(bh2)" --nfe 10      # ~6 min
    python scripts/bench_flips.py oracle --method "UniPC-3(bh1)" --nfe 5
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.optimize import minimize  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from runners.frontier import parse_seeds  # noqa: E402
from runners.frontier.analytic import MixtureSet  # noqa: E402
from runners.frontier.flips import flip_origins  # noqa: E402
from runners.frontier.scores import summarise  # noqa: E402
from samplers import NoiseSchedule, sample, tune_timesteps  # noqa: E402
from samplers.grids import SPACINGS, spaced_grid  # noqa: E402
from samplers.tuning import LogSNRGrid, squared_distance, steps_for_nfe, tunable_method  # noqa: E402

T = 1000
LOSSES = ("mse", "log", "cap", "cauchy")


def problem(seeds, noises, offset, schedule):
    """A MixtureSet and its exact endpoints from t = T−1, per mixture."""
    mixtures = MixtureSet(seeds, noises, schedule, noise_offset=offset)
    start = schedule.alpha_bar(T - 1)
    return mixtures, [m.flow_endpoint(x, start, 1.0) for m, x in zip(mixtures.mixtures, mixtures.noises)]


def robust_loss(name: str, c: float) -> dict:
    """tune_timesteps keyword arguments for one of LOSSES (c: the robust losses' scale, a squared RMS)."""
    if name in ("mse", "log"):
        return dict(loss=name)
    if name == "cap":
        return dict(loss="mse", distance=lambda x, r: squared_distance(x, r).clamp(max=c))
    return dict(loss="mse", distance=lambda x, r: c * torch.log1p(squared_distance(x, r) / c))


def origins(args, schedule):
    seeds = parse_seeds(args.mixtures)
    mixtures = MixtureSet(seeds, args.noises, schedule, noise_offset=3000)
    grids = [("default", None)] + [(g, [float(v) for v in g.split(",")]) for g in args.grid]
    print(f"| method | grid | mean RMSE | median | flips / {len(seeds) * args.noises} | flips by the step that "
          f"decided them |\n|---|---|---|---|---|---|")
    for method in args.method:
        for label, grid in grids:
            x0s, exact, decided = [], [], Counter()
            for m, x in tqdm(list(zip(mixtures.mixtures, mixtures.noises)), desc=f"{method} {label}", leave=False):
                kwargs = dict(steps=args.steps) if grid is None else dict(timesteps=grid)
                x0, ex, found = flip_origins(m, schedule, x, method, **kwargs)
                x0s.append(x0)
                exact.append(ex)
                decided.update(o["step"] for o in found)
            s = summarise(torch.cat(x0s), torch.cat(exact), len(seeds), args.noises)
            by_step = ", ".join(f"step {k}: {v}" for k, v in sorted(decided.items())) or "none"
            print(f"| {method} | {label} | {s['rmse']:.2e} | {s['median']:.2e} | {s['flips']} | {by_step} |",
                  flush=True)


def losses(args, schedule):
    seeds = parse_seeds(args.mixtures)
    scored, scored_exact = problem(seeds, 32, 1000, schedule)
    more, more_exact = problem(seeds, args.noises, 3000, schedule)
    tuning = MixtureSet(seeds, args.n_tune, schedule, noise_offset=90000)
    start = schedule.alpha_bar(T - 1)
    refs = [m.flow_endpoint(x, start, 1.0, rtol=1e-8, atol=1e-8) for m, x in zip(tuning.mixtures, tuning.noises)]
    base = args.method[0].split("@")[0]
    print(f"| {args.method[0]} (NFE {args.nfe}) | loss | scored mean | median | flips / {32 * len(seeds)} | "
          f"{args.noises}-noise mean | median | flips / {args.noises * len(seeds)} |\n" + "|---" * 8 + "|")
    for loss in ["start"] + args.losses.split(","):
        xs, xm = [], []
        for i, (m, noise, ref) in enumerate(tqdm(list(zip(tuning.mixtures, tuning.noises, refs)), desc=loss,
                                                  leave=False)):
            grid = tune_timesteps(m, schedule, args.method[0], args.nfe, noise, reference=ref,
                                  iterations=0 if loss == "start" else args.iterations,
                                  batch_size=args.n_tune - args.n_tune // 4, holdout=0.25,
                                  **robust_loss("log" if loss == "start" else loss, args.c))
            xs.append(sample(m, scored.noises[i], schedule, base, timesteps=grid))
            xm.append(sample(m, more.noises[i], schedule, base, timesteps=grid))
        a = summarise(torch.cat(xs), torch.cat(scored_exact), len(seeds), 32)
        b = summarise(torch.cat(xm), torch.cat(more_exact), len(seeds), args.noises)
        print(f"| {args.method[0]} | {loss} | {a['rmse']:.2e} | {a['median']:.2e} | {a['flips']} | {b['rmse']:.2e} | "
              f"{b['median']:.2e} | {b['flips']} |", flush=True)


def oracle(args, schedule):
    seeds = parse_seeds(args.mixtures)
    scored, scored_exact = problem(seeds, 32, 1000, schedule)
    more, more_exact = problem(seeds, args.noises, 3000, schedule)
    print(f"| method (NFE {args.nfe}) | grids | scored mean | median | flips / {32 * len(seeds)} | "
          f"{args.noises}-noise mean | median | flips / {args.noises * len(seeds)} |\n" + "|---" * 8 + "|")
    for method in args.method:
        base = tunable_method(method)[0]
        steps = steps_for_nfe(base, args.nfe, T)
        rows = {"best spacing": ([], []), "oracle": ([], [])}
        for i, m in enumerate(tqdm(scored.mixtures, desc=method, leave=False)):
            def rmse(grid, x, exact):
                return float(((sample(m, x, schedule, base.name, timesteps=grid) - exact) ** 2).mean().sqrt())

            def score(grid):
                return rmse(grid, scored.noises[i], scored_exact[i])

            starts = {name: spaced_grid(schedule, steps, name) for name in SPACINGS}
            start = min(starts.values(), key=score)
            best = start
            for grid0 in starts.values():
                params = LogSNRGrid.from_grid(schedule, grid0)
                x0 = params.logits.detach().numpy().copy()

                def objective(z):
                    with torch.no_grad():
                        params.logits.copy_(torch.from_numpy(z))
                    return score(params.floats())

                res = minimize(objective, x0, method="Nelder-Mead",
                               options=dict(maxfev=args.evaluations, xatol=1e-4, fatol=1e-7))
                objective(res.x)
                if score(params.floats()) < score(best):
                    best = params.floats()
            for name, grid in (("best spacing", start), ("oracle", best)):
                rows[name][0].append(sample(m, scored.noises[i], schedule, base.name, timesteps=grid))
                rows[name][1].append(sample(m, more.noises[i], schedule, base.name, timesteps=grid))
        for name, (xs, xm) in rows.items():
            a = summarise(torch.cat(xs), torch.cat(scored_exact), len(seeds), 32)
            b = summarise(torch.cat(xm), torch.cat(more_exact), len(seeds), args.noises)
            print(f"| {method} | {name} | {a['rmse']:.2e} | {a['median']:.2e} | {a['flips']} | {b['rmse']:.2e} | "
                  f"{b['median']:.2e} | {b['flips']} |", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("part", choices=("origins", "losses", "oracle"))
    p.add_argument("--method", action="append", help="a method of samplers.available() (repeatable; default "
                                                     "UniPC-3(bh2))")
    p.add_argument("--steps", type=int, default=10, help="origins: steps of the default grid")
    p.add_argument("--grid", action="append", default=[], help="origins: a grid of your own, comma-separated")
    p.add_argument("--nfe", type=int, default=10, help="losses: the budget tuned for")
    p.add_argument("--losses", default=",".join(LOSSES), help=f"losses: comma-separated of {', '.join(LOSSES)}")
    p.add_argument("--c", type=float, default=0.25, help="losses: the robust losses' scale (0.25: RMS 0.5, a flip)")
    p.add_argument("--n-tune", type=int, default=512, help="losses: tuning noises per mixture")
    p.add_argument("--iterations", type=int, default=30, help="losses: full-batch Adam steps")
    p.add_argument("--evaluations", type=int, default=300, help="oracle: Nelder–Mead evaluations per start")
    p.add_argument("--mixtures", default="0-15", help="mixture seeds, e.g. 0-15 or 0-3,8")
    p.add_argument("--noises", type=int, default=128, help="noises per mixture (seed 3000 + mixture)")
    args = p.parse_args(argv)
    args.method = args.method or ["UniPC-3(bh2)"]
    unknown = set(args.losses.split(",")) - set(LOSSES)
    if unknown:
        p.error(f"unknown loss {sorted(unknown)[0]!r}; choose from {', '.join(LOSSES)}")
    schedule = NoiseSchedule("linear")
    {"origins": origins, "losses": losses, "oracle": oracle}[args.part](args, schedule)


if __name__ == "__main__":
    main()
