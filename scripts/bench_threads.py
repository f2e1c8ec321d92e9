"""Torch CPU threads for the digits network: milliseconds per network call at several batch sizes with 1 thread,
with every core, and with what `--threads`' default picks, on an idle machine and with one core kept busy by
another process (as on a shared machine). Prints the table with ratios against 1 thread.

    python scripts/bench_threads.py [--batches 7,64,1000] [--calls 30]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import load_model  # noqa: E402
from runners.config import load_config  # noqa: E402
from runners.setup import default_threads  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def burn(stop) -> None:
    """Keep one core busy until told to stop."""
    x = 0
    while not stop.is_set():
        x = (x * 1103515245 + 12345) % 2147483648


def ms_per_call(model, batch: int, threads: int, calls: int) -> float:
    torch.set_num_threads(threads)
    x, t = torch.randn(batch, 1, 8, 8), torch.full((batch,), 500.0)
    with torch.no_grad():
        for _ in range(3):
            model(x, t)
        start = time.perf_counter()
        for _ in range(calls):
            model(x, t)
    return (time.perf_counter() - start) / calls * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", default="7,64,1000", help="comma-separated batch sizes")
    p.add_argument("--calls", type=int, default=30, help="timed calls per cell")
    args = p.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    cfg = load_config(REPO / "configs/digits.yml")
    model = load_model(cfg, cfg["Model"]["ckpt"])
    cores = os.cpu_count() or 1
    print(f"# {platform.machine()}, {cores} cores, torch {torch.__version__}; ms per call of the digits UNet")
    print("| load | batch | 1 thread | all cores | default picks | all / 1 |")
    print("|---|---|---|---|---|---|")
    for busy in (False, True):
        stop = mp.Event()
        burner = mp.Process(target=burn, args=(stop,), daemon=True) if busy else None
        if burner is not None:
            burner.start()
            time.sleep(1.0)
        for batch in batches:
            one = ms_per_call(model, batch, 1, args.calls)
            every = ms_per_call(model, batch, cores, args.calls)
            picked = default_threads()
            print(f"| {'one core busy' if busy else 'idle'} | {batch} | {one:.2f} | {every:.2f} | {picked} | "
                  f"{every / one:.2f}x |", flush=True)
        if burner is not None:
            stop.set()
            burner.join()


if __name__ == "__main__":
    main()
