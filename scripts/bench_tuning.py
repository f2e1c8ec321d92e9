#!/usr/bin/env python
"""Learned time grids (``samplers.tune_timesteps``) against fixed spacings, on noise not used for tuning.

For each method and NFE budget: the median per-sample RMS distance to the reference on ``--n-test`` fresh noises,
for the grid tuned on ``--n-tune`` other noises and for every fixed spacing (paper and ``grids.SPACINGS``: uniform,
power1.5, quadratic, logsnr, karras, ...) of the methods at the same budget. Ratios below 1: the tuned grid is
closer.

* mixtures: analytic Gaussian mixtures (8 components, 3×8×8, linear schedule; one grid tuned per mixture, the
  default teacher inside); the reference for scoring is the exact flow endpoint. Ratios against the best fixed
  spacing of the same method, per mixture, then the median over mixtures.
* digits: the CPU demo DDPM (configs/digits.yml); the reference is the default teacher (``teacher_solve``) on the
  test noise. Ratios against the best fixed spacing of the same method and of any method (``--any-methods``).

    python scripts/bench_tuning.py                       # both: ~25 min digits + ~30 min mixtures, busy 2 cores
    python scripts/bench_tuning.py --model digits --nfe 5,10 --methods "UniPC-3(bh2),DDIM"
    python scripts/bench_tuning.py --model mixtures --mixtures 0,1 --teacher-accuracy
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from samplers import NoiseSchedule, available, get_method, sample, tune_timesteps  # noqa: E402
from samplers.grids import SPACINGS  # noqa: E402
from samplers.tuning import teacher_solve  # noqa: E402
from runners.frontier.run import int_list_arg, positive_int  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
METHODS = "UniPC-3(bh2),iPNDM,DPM-Solver++(3M),DDIM"


def median_rms(x, ref) -> float:
    return float((x.double() - ref.double()).pow(2).flatten(1).mean(1).sqrt().median())


def tunable_methods() -> list:
    """Every fixed-step deterministic method (the pool for "best fixed spacing of any method")."""
    return [n for n in available() if "@" not in n and not get_method(n).adaptive and get_method(n).kind != "ancestral"]


def fixed_steps(method: str, nfe: int):
    m = get_method(method)
    return max((s for s in range(1, nfe + 1) if m.nfe(s) <= nfe), default=None)


def fixed_table(model, schedule, methods, nfe, x, ref) -> dict:
    """{(method, spacing): median RMS} for every fixed spacing that fits the budget."""
    out = {}
    for name in methods:
        steps = fixed_steps(name, nfe)
        if steps is None:
            continue
        for spacing in ("paper",) + SPACINGS:
            out[(name, spacing)] = median_rms(sample(model, x, schedule, f"{name}@{spacing}", steps=steps), ref)
    return out


def tune_kwargs(args) -> dict:
    names = ("iterations", "lr", "batch_size", "slack", "holdout", "teacher_steps", "race")
    return {k: getattr(args, k) for k in names if getattr(args, k) is not None}


def run_case(model, schedule, name, nfe, x_tune, x_test, ref_test, args, reference=None):
    """(tuned median RMS on the test noise, TuningInfo) for one method and budget."""
    grid, info = tune_timesteps(model, schedule, name, nfe, x_tune, reference=reference, seed=args.seed,
                                return_info=True, **tune_kwargs(args))
    return median_rms(sample(model, x_test, schedule, name, timesteps=grid), ref_test), info


def tuned_row(label, model, schedule, name, nfe, fixed, x_tune, x_test, ref, args):
    """One method tuned at one budget against its own fixed spacings (``fixed``: ``fixed_table``'s result), as a
    row for ``print_row``; None when the method has no fixed spacing at this budget or cannot be tuned there."""
    same = {s: v for (m, s), v in fixed.items() if m == name}
    if not same:
        return None
    t0 = time.perf_counter()
    try:
        tuned, info = run_case(model, schedule, name, nfe, x_tune, x_test, ref, args)
    except ValueError as e:  # reported now, and in the exit code at the end: the other rows still run
        print(f"error: {label} {name} NFE {nfe}: {e}", file=sys.stderr, flush=True)
        args.failures.append(f"{label} {name} NFE {nfe}")
        return None
    best = min(same, key=same.get)
    return dict(model=label, method=name, nfe=nfe, steps=info.steps, start=info.start_spacing,
                best_same=f"{best} {same[best]:.2e}", tuned=tuned, ratio_same=tuned / same[best],
                seconds=time.perf_counter() - t0, teacher_s=info.seconds_teacher)


def mixtures(args):
    from models import GaussianMixture

    schedule = NoiseSchedule(args.schedule)
    rows = []
    for seed in args.mixtures:
        model = GaussianMixture.random(8, (3, 8, 8), seed=seed, schedule=schedule)
        gen = torch.Generator().manual_seed(10_000 + seed)
        x_tune = torch.randn(args.n_tune, 3, 8, 8, generator=gen, dtype=torch.float64)
        x_test = torch.randn(args.n_test, 3, 8, 8, generator=gen, dtype=torch.float64)
        exact = model.flow_endpoint(x_test, float(schedule.alphas_cumprod[-1]), 1.0)
        if args.teacher_accuracy:
            for steps in (50, 100, 200):
                err = median_rms(teacher_solve(model, schedule, x_test, steps), exact)
                print(f"mixture {seed}: teacher_solve({steps} steps): median RMS to the exact flow {err:.2e}")
            for steps in (schedule.T, schedule.T // 2):
                err = median_rms(sample(model, x_test, schedule, "iPNDM@paper", steps=steps), exact)
                print(f"mixture {seed}: iPNDM@paper, {steps} steps: median RMS to the exact flow {err:.2e}")
        for nfe in args.nfe:
            fixed = fixed_table(model, schedule, args.methods, nfe, x_test, exact)
            for name in args.methods:
                row = tuned_row(f"mixture {seed}", model, schedule, name, nfe, fixed, x_tune, x_test, exact, args)
                if row is not None:
                    rows.append(row)
                    print_row(row)
    print("\nmedian ratio over mixtures (tuned / best fixed spacing of the same method):")
    for name in args.methods:
        for nfe in args.nfe:
            r = [row["ratio_same"] for row in rows if row["method"] == name and row["nfe"] == nfe]
            if r:
                print(f"  {name:18s} NFE {nfe:3d}: median {statistics.median(r):.2f}  max {max(r):.2f}  (n={len(r)})")


def digits(args):
    from models import load_model
    from runners.config import load_config

    torch.set_num_threads(args.threads)
    cfg = load_config(REPO / "configs" / "digits.yml")
    net = load_model(cfg, REPO / "models" / "weights" / "digits_ddpm_ema.pt")
    for p in net.parameters():
        p.requires_grad_(False)
    schedule = NoiseSchedule.from_config(cfg["Schedule"])
    x_tune = torch.randn(args.n_tune, 1, 8, 8, generator=torch.Generator().manual_seed(args.seed + 1))
    x_test = torch.randn(args.n_test, 1, 8, 8, generator=torch.Generator().manual_seed(args.seed + 2))
    steps = args.teacher_steps or 100
    t0 = time.perf_counter()
    ref_test = teacher_solve(net, schedule, x_test, steps)
    print(f"teacher ({steps} steps) on {args.n_test} test samples: {time.perf_counter() - t0:.1f} s")
    if args.teacher_accuracy:
        for s in (2 * steps, 4 * steps):
            print(f"teacher {steps} steps vs {s} steps: median RMS "
                  f"{median_rms(ref_test, teacher_solve(net, schedule, x_test, s)):.2e}")
    pool = tunable_methods() if args.any_methods == "all" else \
        [m.strip() for m in args.any_methods.split(",") if m.strip()]
    for nfe in args.nfe:
        fixed = fixed_table(net, schedule, list(dict.fromkeys(args.methods + pool)), nfe, x_test, ref_test)
        best_any = min(fixed, key=fixed.get)
        print(f"NFE {nfe}: best fixed spacing of any method: {best_any[0]}@{best_any[1]} {fixed[best_any]:.2e}")
        for name in args.methods:
            row = tuned_row("digits", net, schedule, name, nfe, fixed, x_tune, x_test, ref_test, args)
            if row is not None:
                print_row(dict(row, best_any=f"{best_any[0]}@{best_any[1]} {fixed[best_any]:.2e}",
                               ratio_any=row["tuned"] / fixed[best_any]))


def print_row(r):
    extra = f"  any: {r['best_any']}  ratio {r['ratio_any']:.2f}  (teacher {r['teacher_s']:.0f} s)" \
        if "best_any" in r else ""
    print(f"{r['model']:10s} {r['method']:18s} NFE {r['nfe']:3d} ({r['steps']:2d} steps, start {r['start']:9s}) "
          f"best fixed {r['best_same']:20s} tuned {r['tuned']:.2e}  ratio {r['ratio_same']:.2f}  "
          f"{r['seconds']:5.1f} s{extra}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=("mixtures", "digits", "both"), default="both")
    p.add_argument("--methods", default=METHODS, help="comma-separated method names")
    p.add_argument("--nfe", type=int_list_arg(1), default=None, help="budgets (default 5,10,20 mixtures; 5,10 digits)")
    p.add_argument("--mixtures", type=int_list_arg(0), default="0,1,2", help="mixture seeds")
    p.add_argument("--schedule", default="linear", help="noise schedule of the mixtures")
    p.add_argument("--n-tune", type=positive_int, default=256, help="noise samples given to tune_timesteps")
    p.add_argument("--n-test", type=positive_int, default=256, help="fresh noise samples for scoring")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch threads for the digits model")
    p.add_argument("--teacher-accuracy", action="store_true", help="also print the teacher's own accuracy")
    p.add_argument("--any-methods", default="all",
                   help="digits: methods whose fixed spacings make 'the best fixed spacing of any method' "
                        "(comma-separated; default every fixed-step deterministic method)")
    for name, kind in (("iterations", int), ("lr", float), ("batch-size", int), ("slack", float),
                       ("holdout", float), ("teacher-steps", int), ("race", int)):
        p.add_argument(f"--{name}", type=kind, default=None, help=f"tune_timesteps' {name.replace('-', '_')}")
    args = p.parse_args()
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    args.failures = []  # rows that could not be tuned (tuned_row)
    nfe = args.nfe
    if args.model in ("mixtures", "both"):
        args.nfe = nfe or [5, 10, 20]
        mixtures(args)
    if args.model in ("digits", "both"):
        args.nfe = nfe or [5, 10]
        digits(args)
    if args.failures:
        sys.exit(f"error: {len(args.failures)} rows could not be tuned ({'; '.join(args.failures)})")


if __name__ == "__main__":
    main()
