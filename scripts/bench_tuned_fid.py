#!/usr/bin/env python
"""Learned time grids on the digits demo: FID and RMS-to-teacher of tuned grids against the best fixed grids.

    python scripts/bench_tuned_fid.py                          # NFE 3,4,5,6,8,10,20; 5 seeds of 2,000 samples
    python scripts/bench_tuned_fid.py --nfe 3,4 --seeds 3 --out /tmp/tuned_fid.md

For each NFE budget:

1. screen: every fixed-step deterministic method of ``samplers.available()`` on the paper's grid and on every
   spacing of ``samplers.grids.SPACINGS``, at the largest step count whose NFE fits, FID on the first
   ``--screen-samples`` noises of seed 0 (digits-classifier features, the demo's FID);
2. tune: ``tune_timesteps`` for the best ``--tune-top`` screened configurations, each started from its grid
   (from the paper's grid, which starts below T−1, with the first timestep learned too: ``learn_first``), on
   ``--n-tune`` noises of their own stream (``runners.tune.TUNE_STREAM``: never the scored noise);
3. score: the best ``--final-top`` fixed configurations and the tuned grids on ``--samples`` samples for every
   seed of ``--seeds`` (the noise ``main.py sample`` draws: streams the tuning never sees), FID mean ± sd over
   seeds, and the median per-sample RMS to the teacher (``samplers.tuning.teacher_solve``) on ``--n-test`` noises
   of ``runners.tune.EVAL_STREAM``.

Prints a markdown table; ``--out`` also writes it (atomically). The network is the plain fp32 eager model.
"""
from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from samplers import available, get_method, sample, tune_timesteps  # noqa: E402
from samplers.grids import SPACINGS  # noqa: E402
from samplers.tuning import teacher_solve  # noqa: E402


def fixed_configs(nfe: int) -> list[tuple[str, int]]:
    """(method@spacing, steps) for every fixed-step deterministic method and spacing fitting ``nfe``."""
    out = []
    for name in available():
        m = get_method(name)
        if "@" in name or m.adaptive or m.kind not in ("multistep", "exponential"):
            continue
        steps = max((s for s in range(1, nfe + 1) if m.nfe(s) <= nfe), default=None)
        if steps is not None:
            out += [(f"{name}@{spacing}", steps) for spacing in ("paper",) + SPACINGS]
    return out


def main() -> None:
    from runners.files import write_text_atomic
    from runners.frontier.fid_screen import DIGITS_SHAPE, DigitsFID
    from runners.tune import EVAL_STREAM, TUNE_STREAM, stream_noise

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nfe", default="3,4,5,6,8,10,20", help="budgets, comma-separated")
    p.add_argument("--seeds", type=int, default=5, help="noise seeds 0..N-1 of the final FIDs")
    p.add_argument("--samples", type=int, default=2000, help="samples per final FID")
    p.add_argument("--screen-samples", type=int, default=256)
    p.add_argument("--tune-top", type=int, default=2, help="screened configurations whose method is tuned")
    p.add_argument("--final-top", type=int, default=3, help="fixed configurations scored on every seed")
    p.add_argument("--n-tune", type=int, default=256)
    p.add_argument("--n-test", type=int, default=256)
    p.add_argument("--iterations", type=int, default=40)
    p.add_argument("--out", default=None, help="also write the markdown table here")
    args = p.parse_args()
    budgets = [int(b) for b in args.nfe.split(",") if b.strip()]

    fid = DigitsFID(args.samples)  # the extractor, reference statistics and the scored noise
    net = digits_network()  # the same checkpoint, weights frozen: differentiable in x and t for the tuning
    x_tune = stream_noise(args.n_tune, DIGITS_SHAPE, 0, TUNE_STREAM)
    x_test = stream_noise(args.n_test, DIGITS_SHAPE, 0, EVAL_STREAM)
    started = time.perf_counter()
    ref_tune = teacher_solve(net, fid.schedule, x_tune)
    ref_test = teacher_solve(net, fid.schedule, x_test)
    print(f"teacher on {args.n_tune} + {args.n_test} noises: {time.perf_counter() - started:.0f} s", flush=True)

    def median_rms(**kwargs) -> float:
        with torch.no_grad():
            x = sample(net, x_test, fid.schedule, **kwargs)
        return float((x.double() - ref_test.double()).pow(2).flatten(1).mean(1).sqrt().median())

    def fid_over_seeds(**kwargs) -> list[float]:
        values = []
        for seed in range(args.seeds):
            fid.reseed(seed)
            values.append(fid_of(fid, net, **kwargs))
        fid.reseed(0)
        return values

    lines = ["| NFE | configuration | FID (mean ± sd over seeds) | seeds | median RMS to teacher | tuning time |",
             "|---|---|---|---|---|---|"]
    for nfe in budgets:
        t0 = time.perf_counter()
        screen = {}
        for name, steps in tqdm(fixed_configs(nfe), desc=f"screen NFE {nfe}", unit="config", dynamic_ncols=True):
            screen[(name, steps)] = fid_of(fid, net, method=name, steps=steps, n=args.screen_samples)
        ranked = sorted(screen, key=screen.get)
        print(f"NFE {nfe}: screened {len(screen)} fixed configurations in {time.perf_counter() - t0:.0f} s; best "
              + ", ".join(f"{n} ({s} steps) {screen[(n, s)]:.2f}" for n, s in ranked[:args.final_top]), flush=True)
        rows = []
        for name, steps in ranked[:args.final_top]:
            rows.append((f"{name} ({steps} steps, fixed)", fid_over_seeds(method=name, steps=steps),
                         median_rms(method=name, steps=steps), None))
        # the paper's grid starts below T−1 (at T − T/N): tuning from it learns the first timestep too
        for name, _ in ranked[:args.tune_top]:
            t1 = time.perf_counter()
            paper = name.endswith("@paper")
            grid = tune_timesteps(net, fid.schedule, name, nfe, x_tune, reference=ref_tune,
                                  iterations=args.iterations, learn_first=paper)
            seconds = time.perf_counter() - t1
            base = name.split("@")[0]
            rows.append((f"{base} tuned from @{name.split('@')[1]}{', first timestep learned' if paper else ''} "
                         f"({len(grid) - 1} steps)",
                         fid_over_seeds(method=base, timesteps=grid), median_rms(method=base, timesteps=grid),
                         seconds))
            print(f"NFE {nfe}: tuned {name} in {seconds:.0f} s: grid {[round(t, 1) for t in grid]}", flush=True)
        best_fixed = min(statistics.mean(v) for label, v, _, seconds in rows if seconds is None)
        for label, values, rms, seconds in rows:
            mean = statistics.mean(values)
            sd = statistics.stdev(values) if len(values) > 1 else float("nan")
            line = (f"| {nfe} | {label} | {mean:.2f} ± {sd:.2f} ({mean / best_fixed:.2f}× best fixed) | "
                    f"{len(values)} | {rms:.2e} | {'' if seconds is None else f'{seconds:.0f} s'} |")
            lines.append(line)
            print(line, flush=True)
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        write_text_atomic(Path(args.out), header(args, time.perf_counter() - started) + table)


def header(args, seconds: float) -> str:
    """What the table is, how it was made and on what machine (the top of ``--out``)."""
    return (f"# Learned time grids on the digits model: FID and RMS against the best fixed grids\n\n"
            f"`python scripts/bench_tuned_fid.py --nfe {args.nfe} --seeds {args.seeds} --samples {args.samples}` "
            f"({time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
            f"{torch.get_num_threads()} threads, torch {torch.__version__}; {seconds / 60:.0f} min). "
            f"Per budget: every fixed configuration screened on {args.screen_samples} samples, the best "
            f"{args.final_top} scored on {args.samples} samples for each of {args.seeds} noise seeds (FID mean ± sd "
            f"over seeds, the demo's digits-classifier FID), and the best {args.tune_top} screened configurations "
            f"tuned by `samplers.tune_timesteps` ({args.iterations} iterations, the log loss, {args.n_tune} noises "
            f"of the tuning stream) and scored the same way; median RMS to the teacher on {args.n_test} other "
            f"noises. The network's accurate ODE solution scores FID ≈ 3.9–4.4 here (DDIM-1000; README), so "
            f"at NFE ≥ 5 a fixed grid can score below it: FID there rewards some solver errors, and a grid closer "
            f"to the teacher can score worse. docs/TUNING.md has the reading.\n\n")


def fid_of(fid, net, method: str, steps: int = None, timesteps=None, n: int = None, x_T=None) -> float:
    """FID of one configuration on ``x_T`` (default ``fid``'s current noise; the first ``n``), inf when samples
    are not finite."""
    from runners.fid import fid_from_features
    from runners.images import to_uint8

    x_T = fid.x_T if x_T is None else x_T
    x_T = x_T if n is None else x_T[:n]
    kwargs = dict(steps=steps) if timesteps is None else dict(timesteps=timesteps)
    with torch.no_grad():
        x0 = torch.cat([sample(net, chunk, fid.schedule, method, **kwargs) for chunk in x_T.split(1000)])
    if not torch.isfinite(x0).all():
        return math.inf
    return fid_from_features(fid.extractor(to_uint8(x0)).numpy(), fid.reference, fid.extractor.name)


def digits_network():
    from models import load_model
    from runners.config import load_config
    from runners.frontier.fid_screen import DIGITS_CONFIG

    cfg = load_config(DIGITS_CONFIG)
    return load_model(cfg, cfg["Model"]["ckpt"]).requires_grad_(False)


if __name__ == "__main__":
    main()
