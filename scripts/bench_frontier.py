#!/usr/bin/env python
"""The sampler frontier: our samplers against diffusers' schedulers at fixed NFE budgets, side by side.

(a) RMSE to the exact probability-flow endpoint from t = 999 on 64 analytic Gaussian mixtures (32 noise samples
    each, linear schedule unless --schedule says otherwise; mean and median over the mixtures), for every method in ``samplers.available()`` and
    every diffusers scheduler configuration below, each at the largest step count whose NFE fits the budget;
    plus "ours-tuned" rows: UniPC-3(bh2), UniPC-3(bh1), UniPC-2(bh2), iPNDM and DPM-Solver++(3M) on a grid learned by
    ``samplers.tune_timesteps`` for each mixture and budget, on other noise than the scored one (--no-tuned: none);
(b) FID on the digits demo model: a screen of every configuration of both sides on 256 samples at NFE 5/10/20,
    then the best few of each side (by screen FID; by (a) at NFE 50) and the paper's methods on 2,000 samples.

    python scripts/bench_frontier.py                    # writes docs/FRONTIER.md and docs/frontier.png
    python scripts/bench_frontier.py --budgets 10,20 --skip-fid --no-tuned     # the fast path
    python scripts/bench_frontier.py --skip-fid --schedule cosine --mixtures 16-63 --out /tmp/cosine/FRONTIER.md
    python scripts/bench_frontier.py --skip-fid --mixtures 1000-1063 --noise-offset 5000 --out /tmp/h/FRONTIER.md
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runners.frontier import DIFFUSERS_BETAS, budget_list, run_frontier  # noqa: E402
from runners.frontier.run import int_list_arg, positive_int  # noqa: E402
from runners.frontier.tuned import TUNE_OFFSET, TUNED_METHODS, TuneSettings  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budgets", type=budget_list, default="5,10,20,50", help="NFE budgets, comma-separated")
    p.add_argument("--mixtures", type=int_list_arg(0), default="0-63", help="mixture seeds, e.g. 0-63 or 0,1,2")
    p.add_argument("--batch", type=positive_int, default=32, help="noise samples per mixture")
    p.add_argument("--noise-offset", type=int, default=1000,
                   help="mixture s draws its noise samples from seed NOISE_OFFSET + s (another value: other noise)")
    p.add_argument("--schedule", choices=sorted(DIFFUSERS_BETAS), default="linear",
                   help="noise schedule of the analytic benchmark (the FID stage uses the digits model's, linear)")
    p.add_argument("--skip-fid", action="store_true",
                   help="the analytic benchmark only (no FID stage: 4 min instead of 65 with --no-tuned, README)")
    p.add_argument("--fid-top", type=int, default=2,
                   help="configurations per side and budget scored on all FID samples")
    p.add_argument("--fid-samples", type=positive_int, default=2000, help="samples per FID of the final table")
    p.add_argument("--screen-samples", type=positive_int, default=256,
                   help="samples per configuration in the FID screen")
    p.add_argument("--fid-seeds", type=int, default=5,
                   help="noise seeds (0 and up) on which the best pair of each screened budget is scored")
    p.add_argument("--screen-budgets", type=budget_list, default="5,10,20",
                   help="budgets at which every configuration is FID-screened ('' for none)")
    p.add_argument("--no-tuned", action="store_true",
                   help="skip the tuned rows (grids learned per mixture by tune_timesteps): the fast path")
    p.add_argument("--tuned-methods", default=",".join(TUNED_METHODS),
                   help="methods whose grids are tuned per mixture and budget, comma-separated")
    p.add_argument("--tune-mixtures", type=int, default=16,
                   help="tune on the first N mixtures (the tuned table compares all sides on those N); 0: all")
    p.add_argument("--tune-budgets", type=budget_list, default="5,10,20",
                   help="budgets (of --budgets) at which to tune ('' for all of --budgets)")
    p.add_argument("--tune-noises", type=positive_int, default=TuneSettings.noises,
                   help="tuning noises per mixture (a quarter held out; the rest is each Adam step's batch)")
    p.add_argument("--tune-iterations", type=int, default=TuneSettings.iterations,
                   help="Adam iterations per tuned grid")
    p.add_argument("--tune-loss", choices=("log", "mse"), default="mse",
                   help="tune_timesteps' loss: mean MSE (default: the RMSE the tables report) or mean log MSE "
                        "(tracks the median sample)")
    p.add_argument("--tune-offset", type=int, default=TUNE_OFFSET,
                   help="mixture s tunes on noise seed TUNE_OFFSET + s (must differ from the scored seeds)")
    p.add_argument("--out", default="docs/FRONTIER.md",
                   help="the report (it links the hand-written FRONTIER_READING.md); its plots go next to it")
    args = p.parse_args()
    if not args.budgets:
        p.error("--budgets needs at least one budget")
    tune = None
    if not args.no_tuned:
        methods = [m.strip() for m in args.tuned_methods.split(",") if m.strip()]
        if args.tune_mixtures < 0:
            p.error("--tune-mixtures must be 0 (all) or more (use --no-tuned for none)")
        if args.tune_noises < 4:
            p.error("--tune-noises must be at least 4 (a quarter is held out, each part needs 2)")
        overlap = {args.tune_offset + s for s in args.mixtures} & {args.noise_offset + s for s in args.mixtures}
        if overlap:
            p.error(f"--tune-offset {args.tune_offset} draws tuning noise from scored noise seeds "
                    f"(e.g. {min(overlap)}); choose another")
        tune = TuneSettings(methods=methods, noises=args.tune_noises, iterations=args.tune_iterations,
                            offset=args.tune_offset, mixtures=args.tune_mixtures or None,
                            budgets=args.tune_budgets or None, extra=dict(loss=args.tune_loss))
    run_frontier(args.budgets, args.mixtures, args.batch, args.schedule, args.out, skip_fid=args.skip_fid,
                 fid_top=args.fid_top, fid_samples=args.fid_samples, screen_samples=args.screen_samples,
                 fid_seeds=args.fid_seeds, screen_budgets=args.screen_budgets, noise_offset=args.noise_offset,
                 tune=tune)


if __name__ == "__main__":
    main()
