#!/usr/bin/env python
"""Network throughput: images/s of ε(x, t) for a released network (default: the CIFAR-10 DDPM UNet) at each
precision of the inference fast path, against the plain float32 eager model measured in the same process, with
each one's deviation from it.

    python scripts/bench_unet.py                       # random weights, batch 8, fp32/bf16/fp16
    python scripts/bench_unet.py --compile --batch 64 --checkpoint ~/ckpt/ddim_cifar10.ckpt
    python scripts/bench_unet.py --model cifar10_pf_deep --batch 8   # NCSN++ (DDPM++ cont. deep), 106.6M

Precisions the device cannot run are listed as skipped. Timings on a shared machine are noisy: the baseline and
the fast paths are measured in rounds that alternate, and the median round is reported.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import build_model, load_model  # noqa: E402
from models.factory import known_model_configs  # noqa: E402
from models.inference import precision_supported, prepare_for_inference  # noqa: E402
from runners.frontier.run import positive_int  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(fn, x, t, device, iters: int) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn(x, t)
    _sync(device)
    return (time.perf_counter() - start) / iters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=positive_int, default=8)
    parser.add_argument("--iters", type=positive_int, default=5, help="calls per timing round")
    parser.add_argument("--rounds", type=positive_int, default=3)
    parser.add_argument("--precisions", default="fp32,bf16,fp16")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd fast paths")
    parser.add_argument("--layouts", default="auto",
                        help="comma-separated memory layouts of the fast path: auto (channels-last on the CPU only), "
                             "channels_last, contiguous")
    parser.add_argument("--model", default="cifar10",
                        help="a layout of configs/ (cifar10, cifar10_iddpm, cifar10_pf, cifar10_pf_deep, celeba, …)")
    parser.add_argument("--checkpoint", help="a checkpoint of that layout (any format load_model reads)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    layouts_known = known_model_configs()
    if args.model not in layouts_known:
        parser.error(f"--model {args.model!r}: choose one of {', '.join(sorted(layouts_known))}")
    config = layouts_known[args.model]
    model = load_model(config, args.checkpoint) if args.checkpoint else build_model(config).eval()
    model = model.to(device)
    channels = config.get("in_channels", config.get("num_channels", 3))
    x = torch.randn(args.batch, channels, config["image_size"], config["image_size"], device=device)
    t = torch.linspace(10.5, 990.5, args.batch, device=device)

    def baseline(x_, t_):
        with torch.no_grad():
            return model(x_, t_)

    contenders = {"fp32 eager (baseline)": baseline}
    skipped = []
    layouts = {"auto": None, "channels_last": True, "contiguous": False}
    for precision in args.precisions.split(","):
        for compiled in (False, True) if args.compile else (False,):
            for layout in args.layouts.split(","):
                name = f"{precision} fast path" + (f", {layout}" if layout != "auto" else "") + \
                    (" + compile" if compiled else "")
                if not precision_supported(precision, device):
                    skipped.append(name)
                    continue
                contenders[name] = prepare_for_inference(model, precision, compile=compiled,
                                                         channels_last=layouts[layout])

    # Deviations are measured against exact float32: on CUDA, PyTorch runs convolutions in TF32 by default
    # (Ampere and newer), which the baseline row keeps (it is what users get) and this reference switches off.
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        reference = baseline(x, t)
    errors = {}
    for name, fn in contenders.items():  # warm-up (and compilation) outside the timed rounds
        out = fn(x, t)
        fn(x, t)
        errors[name] = ((out.float() - reference).norm() / reference.norm()).item()

    rounds = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, fn in contenders.items():
            rounds[name].append(seconds_per_call(fn, x, t, device, args.iters))
    seconds = {name: statistics.median(r) for name, r in rounds.items()}
    base = seconds["fp32 eager (baseline)"]

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"\n## {args.model}: {type(model).__name__} ({params:.1f}M parameters), batch {args.batch}, {device} "
          f"({gpu}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads\n")
    print("| path | images/s | × baseline | relative ε deviation |")
    print("|---|---|---|---|")
    for name, sec in seconds.items():
        print(f"| {name} | {args.batch / sec:.1f} | {base / sec:.2f} | {errors[name]:.1e} |")
    for name in skipped:
        print(f"| {name} | skipped: not supported on {device} | — | — |")


if __name__ == "__main__":
    main()
