#!/usr/bin/env python
"""The digits demo's default ablation, end to end, against the same command at a baseline revision.

    git worktree add /tmp/baseline 68703be        # the revision to compare with (issue #15: before one-pass FID)
    python scripts/bench_ablation.py --baseline /tmp/baseline --rounds 2

Runs ``main.py ablate --config configs/digits.yml`` in the baseline tree and in this one, alternately (so both see
the same machine load), each into a fresh folder, with this tree's interpreter. Prints every run's wall and CPU
time, the ratio of the medians, and compares the two results tables cell by cell: every number must agree to the
digits printed (a difference of one unit in the last printed digit is reported as rounding: the fast path's
GroupNorm and convolutions round differently from the baseline's at the 1e-6 level).
"""
from __future__ import annotations

import argparse
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
NUMBER = re.compile(r"[-+]?\d+\.\d+")


def run_once(tree: Path, out: Path, config: str) -> tuple[float, float]:
    """Wall and CPU (user + system, children) seconds of one ablation run in ``tree``."""
    shutil.rmtree(out, ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "main.py", "ablate", "--config", config, "--out", str(out)], cwd=tree,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def table_numbers(results_md: Path) -> list[str]:
    """Every decimal number of the results' table rows, as printed."""
    return [n for line in results_md.read_text().splitlines() if line.startswith("|") for n in NUMBER.findall(line)]


def compare(a: list[str], b: list[str]) -> tuple[int, int, float]:
    """(equal, differing by one unit in the last digit, largest other absolute difference)."""
    equal = rounding = 0
    worst = 0.0
    for x, y in zip(a, b):
        if x == y:
            equal += 1
            continue
        unit = 10.0 ** -len(x.split(".")[1])
        if abs(float(x) - float(y)) <= unit * 1.0001:
            rounding += 1
        else:
            worst = max(worst, abs(float(x) - float(y)))
    if len(a) != len(b):
        worst = float("inf")
    return equal, rounding, worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, required=True, help="a checkout of the baseline revision")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (default 2)")
    parser.add_argument("--config", default="configs/digits.yml")
    args = parser.parse_args()
    if not (args.baseline / "main.py").is_file():
        sys.exit(f"error: no main.py in --baseline {args.baseline}")

    times: dict[str, list[tuple[float, float]]] = {"baseline": [], "this tree": []}
    with tempfile.TemporaryDirectory(prefix="bench_ablation_") as tmp:
        outs = {"baseline": Path(tmp) / "baseline", "this tree": Path(tmp) / "new"}
        trees = {"baseline": args.baseline.resolve(), "this tree": HERE}
        for r in range(args.rounds):
            for name in ("baseline", "this tree"):
                wall, cpu = run_once(trees[name], outs[name], args.config)
                times[name].append((wall, cpu))
                print(f"round {r + 1} {name:>9}: wall {wall:7.1f} s, CPU {cpu:7.1f} s", flush=True)
        equal, rounding, worst = compare(table_numbers(outs["baseline"] / "results.md"),
                                         table_numbers(outs["this tree"] / "results.md"))

    base = statistics.median(w for w, _ in times["baseline"])
    new = statistics.median(w for w, _ in times["this tree"])
    base_cpu = statistics.median(c for _, c in times["baseline"])
    new_cpu = statistics.median(c for _, c in times["this tree"])
    print(f"median wall: baseline {base:.1f} s, this tree {new:.1f} s: {base / new:.2f}x faster "
          f"(CPU time {base_cpu / new_cpu:.2f}x)")
    print(f"results table: {equal} numbers equal, {rounding} differ by one unit in the last printed digit, "
          f"largest other difference {worst:g}")


if __name__ == "__main__":
    main()
