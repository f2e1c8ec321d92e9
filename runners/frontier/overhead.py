"""scripts/bench_samplers.py part 2: the samplers' own overhead, driving a network of the CIFAR-10 UNet's size;
the time spent outside the model as a fraction of the time inside it."""
from __future__ import annotations

import time

import torch

from samplers import sample

from .analytic import PAPER_METHODS_TABLE

NEWER_METHODS = ("iPNDM", "DPM-Solver++(3M)", "UniPC-3(bh2)", "DEIS-3")  # overhead only


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


def overhead_table(batch, steps, schedule, device, methods=PAPER_METHODS_TABLE + NEWER_METHODS):
    """Print, per method, NFE, total and in-model seconds and the overhead in % of model time."""
    net, name = cifar10_sized_network()
    net = net.to(device)
    x_T = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} CPU threads"
    print(f"\n## Sampler overhead: {name}, batch {batch}, {steps} steps, {device} ({where})\n")
    print("| method | NFE | total s | model s | overhead (% of model time) |")
    print("|---|---|---|---|---|")
    with torch.no_grad():
        net(x_T, torch.full((batch,), 999.0, device=device))  # warm-up
    for method in methods:
        timed = TimedModel(net)
        t0 = time.perf_counter()
        x0, info = sample(timed, x_T, schedule, method, steps=steps, return_info=True)
        _sync(x0)
        total = time.perf_counter() - t0
        print(f"| {method} | {info.nfe} | {total:.2f} | {timed.seconds:.2f} | "
              f"{100 * (total - timed.seconds) / timed.seconds:.3f} % |")
