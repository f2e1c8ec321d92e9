#!/usr/bin/env python
"""PNDM: sample, evaluate and train diffusion models from a YAML config.

    python main.py sample --config configs/cifar10.yml --ckpt ema_cifar10.ckpt --method F-PNDM --steps 50 \\
        --num-samples 50000 --out runs/cifar10/f-pndm-50
    python main.py fid    --config configs/cifar10.yml --samples runs/cifar10/f-pndm-50
    python main.py stats  --config configs/cifar10.yml --out fid_stats_cifar10_train.npz
    python main.py ablate --config configs/digits.yml --out runs/digits-ablation
    python main.py tune-grid --config configs/digits.yml --method 'UniPC-3(bh2)' --nfe 5 --out runs/grid-5.json
    python main.py tune-solver --config configs/digits.yml --nfe 5 --affine --out runs/solver-5.json
    python main.py train  --config configs/digits.yml --workdir runs/digits-train

Each subcommand has --help. Any config key can be overridden with --set Section.key=value.
"""
from __future__ import annotations

import argparse
import sys

from samplers import CONVENTIONS, available


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="YAML config (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="Section.key=value",
                   help="override a config key (repeatable)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: the cores not busy with other work, at least 1; tune-grid "
                        "and tune-solver: all cores, whatever the load, since what they learn depends on it)")


def _sampling(p: argparse.ArgumentParser, seed_help: bool = True) -> None:
    p.add_argument("--ckpt", default=None, help="checkpoint file or diffusers folder (default: Model.ckpt)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow checkpoints that need full unpickling (runs code from the file: only for files "
                        "you trust)")
    # no argparse choices: a bad value gets the same one-line error as a bad config value
    p.add_argument("--convention", default=None,
                   help=f"alpha indexing, one of {', '.join(CONVENTIONS)}: 'standard' (DDIM/diffusers, default) or "
                        f"'official' (the released code's alphas_cumprod[t+1])")
    p.add_argument("--batch-size", type=int, default=None, help="default: Sample.batch_size")
    # ablate keeps the flag only to refuse it (argparse would read --seed as an abbreviation of --seeds)
    p.add_argument("--seed", type=int, default=None,
                   help="base seed; sample i uses a generator seeded from (seed, i) (default: Sample.seed or 0)"
                   if seed_help else argparse.SUPPRESS)
    p.add_argument("--precision", default=None, help="fp32 (default), bf16 or fp16")
    p.add_argument("--compile", action="store_true", default=None,
                   help="torch.compile the network (pays off on a GPU: 2.7x in bf16 on an H200; see "
                        "docs/PERFORMANCE.md) (default: Sample.compile or false)")


def _features(p: argparse.ArgumentParser, stats_help: str) -> None:
    p.add_argument("--stats", default=None, help=stats_help)
    p.add_argument("--inception-weights", default=None, help="local pt_inception-2015-12-05 weights file")


_BASES = [name for name in available() if "@" not in name]
_SPACINGS = list(dict.fromkeys(name.split("@", 1)[1] for name in available() if "@" in name))
METHOD_HELP = (f"one of {', '.join(_BASES)}; a fixed-step method runs on another time grid as NAME@SPACING, "
               f"SPACING one of {', '.join(_SPACINGS)} (samplers.available() lists every name)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{sample,fid,stats,ablate,tune-grid,tune-solver,train}")

    p = sub.add_parser("sample", help="sample images to PNG files (resumable, torchrun-aware)")
    _common(p)
    _sampling(p)
    p.add_argument("--method", default=None, help=METHOD_HELP + " (default: Sample.method)")
    p.add_argument("--steps", type=int, default=None, help="number of steps (default: Sample.steps)")
    p.add_argument("--eta", type=float, default=None, help="DDIM only: stochasticity η (0 = deterministic)")
    p.add_argument("--num-samples", type=int, default=None, help="default: Sample.total_num")
    p.add_argument("--out", required=True, help="output folder: DIR/000000.png … and DIR/manifest.json")
    p.add_argument("--timesteps-file", default=None,
                   help="run on a tuned time grid (a grid.json from 'tune-grid') instead of --steps; the method "
                        "defaults to the grid's (default: Sample.timesteps_file)")
    p.add_argument("--solver-file", default=None,
                   help="run a learned solver (a solver.json from 'tune-solver': its own grid and coefficients) "
                        "instead of --method/--steps (default: Sample.solver_file)")
    p.add_argument("--force", action="store_true",
                   help="use a grid or solver file tuned for another checkpoint, method or schedule")
    p.add_argument("--fid", action="store_true", help="compute the FID of the samples when done")
    _features(p, "with --fid: reference statistics (default: FID.stats)")

    p = sub.add_parser("fid", help="FID of a folder of samples against reference statistics")
    _common(p)
    p.add_argument("--samples", required=True, help="folder of images (e.g. written by 'sample')")
    _features(p, "reference statistics .npz (default: FID.stats)")

    p = sub.add_parser("stats", help="reference statistics (mu, sigma) of a dataset split or an image folder")
    _common(p)
    p.add_argument("--source", default=None, help="image folder (default: the config's dataset, train split)")
    p.add_argument("--split", default=None, help="dataset split when --source is not given (default: train)")
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--inception-weights", default=None, help="local pt_inception-2015-12-05 weights file")
    p.add_argument("--batch-size", type=int, default=None,
                   help="dataset images loaded per batch (default: FID.batch_size); the feature network always sees "
                        "chunks of 64, so the statistics do not depend on it")

    p = sub.add_parser("ablate", help="methods × steps × seeds: FID and distance to a reference solution")
    _common(p)
    _sampling(p, seed_help=False)
    p.add_argument("--methods", default=None, help="comma-separated, as --method of 'sample' (default: FID.methods)")
    p.add_argument("--steps", default=None, help="comma-separated step counts (default: FID.steps)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: FID.seeds or 0)")
    p.add_argument("--num-samples", type=int, default=None, help="per cell (default: FID.num_samples)")
    _features(p, "reference statistics (default: FID.stats)")
    p.add_argument("--reference-samples", type=int, default=None,
                   help="samples per seed used for the distance to the reference solution (default: "
                        "FID.reference_samples or 64)")
    p.add_argument("--timesteps-file", default=None,
                   help="comma-separated grid files from 'tune-grid': each adds a cell running its method on "
                        "the tuned grid (METHOD@tuned in the tables)")
    p.add_argument("--solver-file", default=None,
                   help="comma-separated solver files from 'tune-solver': each adds a cell running that learned "
                        "solver (DPM-Solver++(2M)@learned in the tables)")
    p.add_argument("--force", action="store_true",
                   help="use grid or solver files tuned for another checkpoint or schedule")
    p.add_argument("--out", required=True, help="output folder: DIR/<method>-<steps>/seed<seed>/ per cell and "
                                                "seed (PF: DIR/PF/seed<seed>/), results.*")

    p = sub.add_parser("tune-grid", help="learn a time grid for this network and method at a given NFE")
    _common(p)
    p.add_argument("--ckpt", default=None, help="checkpoint file or diffusers folder (default: Model.ckpt)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow checkpoints that need full unpickling (only for files you trust)")
    p.add_argument("--method", default=None, help="a deterministic fixed-step method (default: Sample.method); "
                                                  "NAME@SPACING starts the tuning from that spacing")
    p.add_argument("--nfe", type=int, required=True, help="the budget of model evaluations the grid is for")
    p.add_argument("--objective", default="teacher",
                   help="'teacher': fit the grid to a fine solve from the same noise, sample by sample, by gradient "
                        "(samplers.tune_timesteps); 'fid': search the grid on the FID of its samples from the "
                        "tuning noise (samplers.search_timesteps; for NFE <= 4, where a per-sample fit does not "
                        "lower FID; try with --learn-first --last 0 and METHOD@paper) (default: teacher)")
    p.add_argument("--num-samples", type=int, default=None,
                   help="noise samples to tune on (teacher: part is held out for validation) (default: 256 for "
                        "teacher, 2000 for fid)")
    p.add_argument("--eval-samples", type=int, default=None,
                   help="further noise samples, never used for tuning, on which the tuned grid and every fixed "
                        "spacing are compared (default: 128 for teacher, 2000 for fid)")
    p.add_argument("--iterations", type=int, default=None, help="teacher: optimiser iterations (default: the "
                                                                "library's)")
    p.add_argument("--evaluations", type=int, default=None,
                   help="fid: FID evaluations of the search after one per start candidate (default: 40)")
    _features(p, "fid: reference statistics (default: FID.stats)")
    p.add_argument("--seed", type=int, default=0, help="seed of the tuning noise (its own stream: never the "
                                                       "noise 'sample' draws for any seed) (default: 0)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="samples per model call for the reference solves (default: Sample.batch_size)")
    p.add_argument("--loss", default=None,
                   help="teacher: what the grid minimises: 'log' (the mean of each sample's log squared distance to "
                        "the teacher: tracks the median sample) or 'mse' (the mean squared distance: the RMS over all "
                        "samples) (default: log)")
    p.add_argument("--learn-first", action="store_true",
                   help="also learn the first timestep (x_T is then taken to be at that noise level, as the "
                        "released grids do; the paper's grid joins the starts)")
    p.add_argument("--last", type=float, default=None,
                   help="pin the last timestep before -1 (e.g. 0: the released grids' last evaluation at t = 0)")
    p.add_argument("--out", required=True, help="output grid file (JSON), for sample/ablate --timesteps-file")

    p = sub.add_parser("tune-solver", help="learn a solver (grid, coefficients, network times) for this network at "
                                           "a given NFE")
    _common(p)
    p.add_argument("--ckpt", default=None, help="checkpoint file or diffusers folder (default: Model.ckpt)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow checkpoints that need full unpickling (only for files you trust)")
    p.add_argument("--nfe", type=int, required=True, help="the budget of model evaluations the solver is for")
    p.add_argument("--num-samples", type=int, default=1024,
                   help="noise samples to learn on, --holdout of them held out to select the iterate; more noise "
                        "gave a better solver on digits (NFE 5: 0.54x -> 0.48x the best fixed spacing from 256 to "
                        "1024), at the cost of one teacher solve per sample (default: 1024)")
    p.add_argument("--holdout", type=int, default=64, help="tuning noises held out (default: 64)")
    p.add_argument("--eval-samples", type=int, default=128,
                   help="further noise samples, never used for learning, on which the solver, its start grid and "
                        "every fixed spacing are compared (default: 128)")
    p.add_argument("--iterations", type=int, default=600, help="Adam steps on batches of 64 (default: 600)")
    p.add_argument("--affine", action="store_true",
                   help="also learn per-step scales of x and of the data-prediction update (gave 0.67x -> 0.54x "
                        "the best fixed spacing at NFE 5 on digits; like the learned network times, they fit the "
                        "scheme to this network at the cost of exactness for a point mass)")
    p.add_argument("--history", type=int, default=3, help="data predictions each step combines (default: 3)")
    p.add_argument("--compare", default=None,
                   help="comma-separated methods whose fixed spacings the solver is compared with, each of which "
                        "must fit the NFE (default: every deterministic fixed-step method that fits it)")
    p.add_argument("--seed", type=int, default=0, help="seed of the tuning noise (its own stream: never the "
                                                       "noise 'sample' draws for any seed) (default: 0)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="samples per model call for the reference solves and comparisons (default: "
                        "Sample.batch_size)")
    p.add_argument("--out", required=True, help="output solver file (JSON), for sample/ablate --solver-file")

    p = sub.add_parser("train", help="train an ε-prediction DDPM (resumable, torchrun-aware)")
    _common(p)
    p.add_argument("--workdir", required=True, help="checkpoints, tensorboard logs and samples go here")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimiser steps")
    p.add_argument("--resume", action="store_true", help="continue from WORKDIR/checkpoints/last.pt")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from runners import cli  # imported late: --help stays fast

    try:
        cli.run(args)
    except cli.user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: {cli.interrupted_hint(args)}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
