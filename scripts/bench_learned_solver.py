#!/usr/bin/env python
"""Accuracy of a learned solver (``samplers.learn_solver``) against every fixed spacing of every method, and against
the tuned grid it starts from, on the digits demo network.

Issue #14 asks, on that network, for a median RMS distance to the high-accuracy solution of ≤ 0.5× the best fixed
spacing of any method at NFE 5 and 10; a tuned grid alone reaches 0.99× / 0.73× (docs/TUNING.md). This script
tunes DPM-Solver++(2M)'s grid on the tuning noise (``tune_timesteps``), learns the solver's coefficients, network
times (and with ``--affine`` its per-step scales) from that grid, and scores all three on test noise the tuning
never saw: the same noise and teacher as ``scripts/bench_tuning.py --model digits``. Ratios are against the best
fixed configuration measured in the same process.

    python scripts/bench_learned_solver.py --nfe 5,10                 # ~10 min on 2 cores
    python scripts/bench_learned_solver.py --nfe 10 --iterations 600
    python scripts/bench_learned_solver.py --nfe 5 --affine --iterations 600
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from samplers import NoiseSchedule, learn_solver, sample, tune_timesteps  # noqa: E402
from samplers.learned import BASE  # noqa: E402
from samplers.tuning import teacher_solve  # noqa: E402


def digits_setup(n_tune: int, n_test: int, seed: int):
    """The digits network, its schedule, tuning/test noise and teacher endpoints as scripts/bench_tuning.py has them."""
    from bench_tuned_fid import digits_network
    from runners.config import load_config
    from runners.frontier.fid_screen import DIGITS_CONFIG

    net = digits_network()
    schedule = NoiseSchedule.from_config(load_config(DIGITS_CONFIG)["Schedule"])
    x_tune = torch.randn(n_tune, 1, 8, 8, generator=torch.Generator().manual_seed(seed + 1))
    x_test = torch.randn(n_test, 1, 8, 8, generator=torch.Generator().manual_seed(seed + 2))
    return net, schedule, x_tune, x_test, teacher_solve(net, schedule, x_tune), teacher_solve(net, schedule, x_test)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nfe", default="5,10", help="comma-separated model-evaluation budgets")
    p.add_argument("--iterations", type=int, default=300, help="Adam steps (cosine-decayed learning rates)")
    p.add_argument("--lr", type=float, default=0.03, help="learning rate of the coefficients, times and scales")
    p.add_argument("--grid-lr", type=float, default=0.02, help="learning rate of the grid's logits")
    p.add_argument("--history", type=int, default=3, help="data predictions each step combines (K ≥ 2)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--holdout", type=int, default=64, help="tuning noises held out to select the iterate")
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--n-tune", type=int, default=256)
    p.add_argument("--n-test", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-shift", action="store_true", help="no learned network times")
    p.add_argument("--affine", action="store_true",
                   help="also learn per-step scales of x_i and of the data-prediction update (not consistent)")
    p.add_argument("--any-methods", default="all",
                   help="methods whose fixed spacings form 'best fixed of any method' (default: every one)")
    args = p.parse_args(argv)
    try:
        budgets = [int(v) for v in args.nfe.split(",") if v.strip()]
    except ValueError:
        p.error(f"--nfe must be comma-separated integers, got {args.nfe!r}")
    if args.history < 2 or args.iterations < 0 or not 0 < args.holdout < args.n_tune:
        p.error("need --history >= 2, --iterations >= 0 and 0 < --holdout < --n-tune")
    if args.threads:
        torch.set_num_threads(args.threads)
    from bench_tuning import fixed_table, median_rms, tunable_methods

    net, schedule, x_tune, x_test, ref_tune, ref_test = digits_setup(args.n_tune, args.n_test, args.seed)
    pool = tunable_methods() if args.any_methods == "all" else [m.strip() for m in args.any_methods.split(",")]
    print("| NFE | best fixed of any method | tuned grid (DPM-Solver++(2M)) | learned solver | "
          "learned / best fixed | time |")
    print("|---|---|---|---|---|---|")
    for nfe in budgets:
        fixed = fixed_table(net, schedule, pool, nfe, x_test, ref_test)
        best_any = min(fixed, key=fixed.get)
        t0 = time.perf_counter()
        grid = tune_timesteps(net, schedule, BASE, nfe, x_tune, reference=ref_tune, seed=args.seed)
        tuned = median_rms(sample(net, x_test, schedule, BASE, timesteps=grid), ref_test)
        with tqdm(total=args.iterations, desc=f"learned solver, NFE {nfe}", leave=False) as bar:
            def progress(state):
                bar.set_postfix(held_out_rms=f"{state['held_out_loss']:.3e}")
                bar.update(1)

            solver = learn_solver(net, schedule, nfe, x_tune, reference=ref_tune, grid=grid,
                                  iterations=args.iterations, history=args.history, affine=args.affine,
                                  network_times=not args.no_shift, lr=args.lr, grid_lr=args.grid_lr,
                                  batch_size=args.batch_size, holdout=args.holdout, eval_every=args.eval_every,
                                  seed=args.seed, callback=progress)
        with torch.no_grad():
            out = torch.cat([sample(net, x, schedule, solver) for x in x_test.split(128)])
        learned = median_rms(out, ref_test)
        print(f"| {nfe} | {best_any[0]}@{best_any[1]} {fixed[best_any]:.2e} | {tuned:.2e} | {learned:.2e} | "
              f"{learned / fixed[best_any]:.2f} | {time.perf_counter() - t0:.0f} s |", flush=True)
        shifts = [round(tau - t, 1) for tau, t in zip(solver.network_times, solver.timesteps)]
        print(f"  grid {[round(t, 1) for t in solver.timesteps]}; network-time shifts (timesteps) {shifts}",
              flush=True)


if __name__ == "__main__":
    main()
