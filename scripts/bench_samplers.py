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
import math
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import GaussianMixture  # noqa: E402
from samplers import NoiseSchedule, sample, uniform_grid  # noqa: E402

METHODS = ("DDIM", "S-PNDM", "F-PNDM", "FON")
NEWER_METHODS = ("iPNDM", "DPM-Solver++(3M)", "UniPC-3(bh2)", "DEIS-3")  # overhead only


def accuracy_table(steps_list, seeds, batch, schedule):
    rows = []
    for seed in seeds:
        model = GaussianMixture.random(8, (3, 8, 8), seed=seed, schedule=schedule)
        x_T = torch.randn(batch, 3, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        for steps in steps_list:
            grid = uniform_grid(schedule, steps)
            exact = model.flow_endpoint(x_T, schedule.alpha_bar(grid[0]), 1.0)
            for method in METHODS:
                t0 = time.perf_counter()
                x0, info = sample(model, x_T, schedule, method, steps=steps, return_info=True)
                rows.append(dict(seed=seed, method=method, steps=steps, nfe=info.nfe,
                                 rmse=((x0 - exact) ** 2).mean().sqrt().item(), seconds=time.perf_counter() - t0))
        # PF is the released code's solver of the continuous linear VP SDE's flow from s = 1 to s = 1e-3; its
        # exact counterpart runs between the continuous process's noise levels at those times.
        ab_cont = lambda s: math.exp(schedule.vp_log_alpha_bar(s))
        exact = model.flow_endpoint(x_T, ab_cont(1.0), ab_cont(1e-3))
        for tol in (1e-3, 1e-5):
            t0 = time.perf_counter()
            x0, info = sample(model, x_T, schedule, "PF", rtol=tol, atol=tol, return_info=True)
            rows.append(dict(seed=seed, method=f"PF(tol={tol:g})", steps=None, nfe=info.nfe,
                             rmse=((x0 - exact) ** 2).mean().sqrt().item(), seconds=time.perf_counter() - t0))
    return rows


def print_accuracy(rows, steps_list):
    seeds = sorted({r["seed"] for r in rows})
    print(f"\n## Accuracy on the analytic model (8-component mixture, 3×8×8, RMSE to the exact flow endpoint; "
          f"mean over seeds {seeds})\n")
    print("| method | " + " | ".join(f"{s} steps: NFE / RMSE" for s in steps_list) + " |")
    print("|---|" + "---|" * len(steps_list))
    for method in METHODS:
        cells = []
        for s in steps_list:
            sel = [r for r in rows if r["method"] == method and r["steps"] == s]
            rmse = sum(r["rmse"] for r in sel) / len(sel)
            cells.append(f"{sel[0]['nfe']} / {rmse:.2e}")
        print(f"| {method} | " + " | ".join(cells) + " |")
    for name in sorted({r["method"] for r in rows if r["method"].startswith("PF")}):
        sel = [r for r in rows if r["method"] == name]
        print(f"\n{name}: NFE {sum(r['nfe'] for r in sel) / len(sel):.0f}, RMSE to the exact endpoint at s=1e-3 "
              f"{sum(r['rmse'] for r in sel) / len(sel):.2e}")


def plot_accuracy(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in METHODS:
        steps = sorted({r["steps"] for r in rows if r["method"] == method})
        nfe = [next(r["nfe"] for r in rows if r["method"] == method and r["steps"] == s) for s in steps]
        err = [sum(r["rmse"] for r in rows if r["method"] == method and r["steps"] == s) /
               len([r for r in rows if r["method"] == method and r["steps"] == s]) for s in steps]
        ax.loglog(nfe, err, "o-", label=method)
    ax.set_xlabel("NFE (model evaluations)")
    ax.set_ylabel("RMSE to the exact flow endpoint")
    ax.set_title("Samplers on the analytic Gaussian mixture (uniform grid)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"\nplot: {path}")


def _sync(x):
    if x.is_cuda:
        torch.cuda.synchronize(x.device)


class TimedModel:
    """Wraps a network and accumulates the time spent inside it. On a GPU it synchronizes before and after each
    call, so that the sampler's own queued kernels are counted as overhead, not as model time."""

    def __init__(self, net):
        self.net, self.seconds = net, 0.0

    def __call__(self, x, t):
        _sync(x)
        t0 = time.perf_counter()
        out = self.net(x, t)
        _sync(out)
        self.seconds += time.perf_counter() - t0
        return out


def cifar10_sized_network():
    """The CIFAR-10 DDPM UNet with random weights when models.build_model exists, else a stand-in of similar
    cost (a stack of 3×3 convolutions at 32×32)."""
    try:
        from models import build_model

        cfg = dict(ch=128, out_ch=3, ch_mult=[1, 2, 2, 2], num_res_blocks=2, attn_resolutions=[16], dropout=0.1,
                   in_channels=3, image_size=32, resamp_with_conv=True)
        return build_model({"Model": cfg}).eval(), "CIFAR-10 DDPM UNet (35.7M parameters, random weights)"
    except ImportError:
        layers = [torch.nn.Conv2d(3, 256, 3, padding=1)] + [torch.nn.Conv2d(256, 256, 3, padding=1)] * 8 + \
                 [torch.nn.Conv2d(256, 3, 3, padding=1)]
        net = torch.nn.Sequential(*layers).eval()
        return (lambda x, t: net(x)), "stand-in: 10 conv layers, 256 channels at 32×32"


def overhead_table(batch, steps, schedule, device):
    net, name = cifar10_sized_network()
    net = net.to(device)
    x_T = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} CPU threads"
    print(f"\n## Sampler overhead: {name}, batch {batch}, {steps} steps, {device} ({where})\n")
    print("| method | NFE | total s | model s | overhead (% of model time) |")
    print("|---|---|---|---|---|")
    with torch.no_grad():
        net(x_T, torch.full((batch,), 999.0, device=device))  # warm-up
    for method in METHODS + NEWER_METHODS:
        timed = TimedModel(net)
        t0 = time.perf_counter()
        x0, info = sample(timed, x_T, schedule, method, steps=steps, return_info=True)
        _sync(x0)
        total = time.perf_counter() - t0
        print(f"| {method} | {info.nfe} | {total:.2f} | {timed.seconds:.2f} | "
              f"{100 * (total - timed.seconds) / timed.seconds:.3f} % |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", default="5,10,20,50,100", help="comma-separated step counts")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated mixture/noise seeds")
    p.add_argument("--batch", type=int, default=64, help="samples per seed for the accuracy table")
    p.add_argument("--overhead-batch", type=int, default=8)
    p.add_argument("--overhead-steps", type=int, default=10)
    p.add_argument("--skip-overhead", action="store_true")
    p.add_argument("--skip-accuracy", action="store_true")
    p.add_argument("--device", default="cpu", help="device for the overhead part (the accuracy part is float64 CPU)")
    p.add_argument("--plot", default="docs/sampler_error.png", help="where to write the error-vs-NFE plot")
    args = p.parse_args()

    schedule = NoiseSchedule("linear")
    steps_list = [int(s) for s in args.steps.split(",")]
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, python {platform.python_version()}")
    if not args.skip_accuracy:
        rows = accuracy_table(steps_list, [int(s) for s in args.seeds.split(",")], args.batch, schedule)
        print_accuracy(rows, steps_list)
        if args.plot:
            plot_accuracy(rows, Path(args.plot))
    if not args.skip_overhead:
        overhead_table(args.overhead_batch, args.overhead_steps, schedule, torch.device(args.device))


if __name__ == "__main__":
    main()
