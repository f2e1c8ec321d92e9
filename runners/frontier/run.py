"""The two benchmarks end to end, behind scripts/bench_frontier.py and scripts/bench_samplers.py (which keep only
their command lines), and the argument types those command lines share with the tests."""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path
from typing import Optional

import torch

from samplers import NoiseSchedule

from ..files import write_text_atomic
from .analytic import accuracy_table, analytic_table
from .fid_screen import fid_table
from .overhead import overhead_table
from .tuned import TuneSettings
from .report import markdown, plot, plot_accuracy, plot_fid, print_accuracy, print_summary


def budget_list(text: str) -> list[int]:
    """'5,10,20' → [5, 10, 20]; '' → [] (argparse turns a ValueError into a usage error)."""
    budgets = [int(b) for b in text.split(",") if b.strip()]
    if any(b < 1 for b in budgets):
        raise ValueError("budgets must be positive")
    return budgets


def parse_seeds(text: str) -> list[int]:
    """'0-63' or '0,1,2' (or a mix: '0-3,8') → a list of integer seeds."""
    seeds = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        seeds += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    return seeds


def int_list_arg(minimum: int = 0):
    """An argparse ``type``: comma-separated integers or ranges (``parse_seeds``), each ≥ ``minimum``, so that a
    script's bad value is argparse's one error line (exit 2) rather than a traceback deep in the benchmark."""
    def parse(text: str) -> list[int]:
        try:
            values = parse_seeds(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
        if not values or min(values) < minimum:
            raise argparse.ArgumentTypeError(f"expected integers >= {minimum}, got {text!r}")
        return values
    return parse


def positive_int(text: str) -> int:
    """An argparse ``type``: one integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def run_frontier(budgets, mixtures, batch, schedule_kind, out, *, skip_fid=False, fid_top=2, fid_samples=2000,
                 screen_samples=256, fid_seeds=5, screen_budgets=(5, 10, 20), noise_offset=1000,
                 tune: Optional[TuneSettings] = None) -> Path:
    """scripts/bench_frontier.py: the analytic table (printing the best of each side per budget), the FID stage
    unless ``skip_fid``, then the report at ``out`` (generated tables and a link to the hand-written reading) with
    its plots next to it. Mixture s's noise samples come from seed ``noise_offset`` + s. ``tune``: also the tuned
    rows (runners/frontier/tuned.py; None: none). Returns ``out``."""
    start = time.time()
    schedule = NoiseSchedule(schedule_kind)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the analytic model's small ops are fastest single-threaded
    rows = analytic_table(budgets, mixtures, batch, schedule, noise_offset, tune)
    torch.set_num_threads(threads)
    print_summary(rows, budgets)
    extra_seeds = range(1, fid_seeds)
    fid_screen, fid_final, fid_spread = ([], [], []) if skip_fid else fid_table(
        rows, budgets, screen_budgets, screen_samples, fid_samples, fid_top, extra_seeds)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot(rows, budgets, out.with_name("frontier.png"))
    if fid_final:
        plot_fid(fid_final, budgets, out.with_name("frontier_fid.png"))
    settings = dict(screen=screen_samples, final=fid_samples, k=fid_top)
    write_text_atomic(out, markdown(rows, budgets, mixtures, batch, schedule.kind, fid_screen, fid_final,
                                    fid_spread, settings, time.time() - start, noise_offset))
    print(f"wrote {out} and {out.with_name('frontier.png')}")
    return out


def run_samplers(steps_list, seeds, batch, *, accuracy=True, overhead=True, plot_path=None, overhead_batch=8,
                 overhead_steps=10, device="cpu") -> None:
    """scripts/bench_samplers.py: the accuracy table on the analytic model (and its plot at ``plot_path``), then the
    overhead table on ``device``; both printed as markdown."""
    schedule = NoiseSchedule("linear")
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, python {platform.python_version()}")
    if accuracy:
        rows = accuracy_table(steps_list, seeds, batch, schedule)
        print_accuracy(rows, steps_list)
        if plot_path:
            plot_accuracy(rows, Path(plot_path))
    if overhead:
        overhead_table(overhead_batch, overhead_steps, schedule, torch.device(device))
