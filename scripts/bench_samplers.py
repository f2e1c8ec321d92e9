#!/usr/bin/env python
"""Sampler benchmark: accuracy per NFE on the analytic model, and the sampler's own overhead.

Part 1 — method × steps on a Gaussian-mixture model with an exact solution: NFE, RMS error against the exact
probability-flow endpoint started from the sampler's own first timestep, and wall time.
Part 2 — overhead: the same samplers driving a network of the CIFAR-10 UNet's size (35.7M parameters, 32×32,
random weights); the time spent outside the model as a fraction of the time inside it.

    python scripts/bench_samplers.py                 # both parts, writes docs/sampler_error.png
    python scripts/bench_samplers.py --skip-overhead --steps 5,10,20
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runners.frontier import run_samplers  # noqa: E402
from runners.frontier.run import int_list_arg, positive_int  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int_list_arg(1), default="5,10,20,50,100", help="comma-separated step counts")
    p.add_argument("--seeds", type=int_list_arg(0), default="0,1,2", help="comma-separated mixture/noise seeds")
    p.add_argument("--batch", type=positive_int, default=64, help="samples per seed for the accuracy table")
    p.add_argument("--overhead-batch", type=positive_int, default=8)
    p.add_argument("--overhead-steps", type=positive_int, default=10)
    p.add_argument("--skip-overhead", action="store_true")
    p.add_argument("--skip-accuracy", action="store_true")
    p.add_argument("--device", default="cpu", help="device for the overhead part (the accuracy part is float64 CPU)")
    p.add_argument("--plot", default="docs/sampler_error.png", help="where to write the error-vs-NFE plot")
    args = p.parse_args()

    run_samplers(args.steps, args.seeds, args.batch,
                 accuracy=not args.skip_accuracy, overhead=not args.skip_overhead, plot_path=args.plot,
                 overhead_batch=args.overhead_batch, overhead_steps=args.overhead_steps, device=args.device)


if __name__ == "__main__":
    main()
