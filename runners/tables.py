"""The ablation's outputs: results.csv (one row per cell and seed), results.md (the paper's layout, mean ± sd
over seeds, paired gaps to DDIM), plot.png and tensorboard scalars."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from .files import write_atomic, write_text_atomic


def write_results(out: Path, rows: list, floors=()) -> None:
    """results.csv (one row per cell and seed), results.md (the paper's layout) and plot.png."""
    out.mkdir(parents=True, exist_ok=True)
    fields = ["method", "steps", "nfe", "seed", "fid", "rms", "seconds", "num_samples"]
    def write_csv(fh):
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)

    write_atomic(out / "results.csv", write_csv, binary=False)
    write_text_atomic(out / "results.md", results_markdown(rows, floors))
    plot_results(rows, out / "plot.png")
    _log_tensorboard(out, rows)
    print(f"results: {out / 'results.md'}, {out / 'results.csv'}, {out / 'plot.png'}")


def _group(rows):
    cells = {}
    for r in rows:
        cells.setdefault((r["method"], r["steps"]), []).append(r)
    return cells


def _mean_sd(values):
    v = np.array([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def _mean_nfe(rs: list) -> float:
    """A cell's NFE over its seeds (an adaptive solver's differs between them)."""
    return float(np.mean([r["nfe"] for r in rs]))


def _nfe_of(rs: list) -> str:
    """A cell's NFE over its seeds: one number, or the mean and range where an adaptive solver's NFE varied."""
    nfes = [r["nfe"] for r in rs]
    if min(nfes) == max(nfes):
        return f"{nfes[0]:g}"
    return f"{_mean_nfe(rs):.0f}, {min(nfes):.0f}–{max(nfes):.0f}"


def results_markdown(rows: list, floors=()) -> str:
    cells = _group(rows)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    steps = sorted({r["steps"] for r in rows if r["steps"] is not None})
    seeds = sorted({r["seed"] for r in rows})
    n = rows[0]["num_samples"] if rows else 0

    def table(title, fmt):
        lines = [f"### {title}", "", "| method | " + " | ".join(f"{s} steps" for s in steps) + " | adaptive |",
                 "|---|" + "---|" * (len(steps) + 1)]
        for m in methods:
            row = [fmt(m, s) for s in steps] + [fmt(m, None)]
            lines.append(f"| {m} | " + " | ".join(row) + " |")
        return "\n".join(lines) + "\n"

    def fid_cell(m, s):
        rs = cells.get((m, s))
        if not rs:
            return ""
        mean, sd = _mean_sd([r["fid"] for r in rs])
        return (f"{mean:.2f} ± {sd:.2f}" if len(rs) > 1 else f"{mean:.2f}") + f" ({_nfe_of(rs)})"

    def gap_cell(m, s):
        rs, base = cells.get((m, s)), cells.get(("DDIM", s))
        if not rs or not base:
            return ""
        by_seed = {r["seed"]: r["fid"] for r in base}
        gaps = [r["fid"] - by_seed[r["seed"]] for r in rs if r["seed"] in by_seed]
        mean, sd = _mean_sd(gaps)
        return f"{mean:+.2f} ± {sd:.2f}" if len(gaps) > 1 else f"{mean:+.2f}"

    def rms_cell(m, s):
        rs = cells.get((m, s))
        if not rs:
            return ""
        mean, sd = _mean_sd([r["rms"] for r in rs])
        return "—" if math.isnan(mean) else f"{mean:.4f}"

    head = (f"## Ablation: FID ({n} samples per cell, seeds {seeds}); NFE in parentheses\n\n"
            f"Mean ± sd over seeds. Every method starts from the same noise for a given seed.\n\n")
    if len(floors):
        mean, sd = _mean_sd(floors)
        head += (f"Noise floor: {n} real training images drawn with replacement score FID {mean:.2f}"
                 + (f" ± {sd:.2f}" if len(floors) > 1 else "") + " against the same statistics.\n\n")
    return (head + table("FID (NFE)", fid_cell) + "\n" +
            table("Paired FID gap to DDIM at the same steps (negative = better than DDIM)", gap_cell) + "\n" +
            table("RMS distance to the high-accuracy ODE solution from the same noise ([-1, 1] pixel units; — for "
                  "stochastic methods and the released code's convention, which ends at ā[0], not the data)",
                  rms_cell))


def plot_results(rows: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = _group(rows)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for m in dict.fromkeys(r["method"] for r in rows):
        keys = sorted((k for k in cells if k[0] == m), key=lambda k: _mean_nfe(cells[k]))
        nfe = [_mean_nfe(cells[k]) for k in keys]
        for ax, field in zip(axes, ("fid", "rms")):
            stats = [_mean_sd([r[field] for r in cells[k]]) for k in keys]
            if all(math.isnan(s[0]) for s in stats):
                continue
            ax.errorbar(nfe, [s[0] for s in stats], yerr=[s[1] for s in stats], marker="o", capsize=3, label=m)
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    nfes = [r["nfe"] for r in rows]
    ticks = [v for v in (5, 10, 20, 50, 100, 200, 500, 1000, 2000) if min(nfes) / 1.5 <= v <= max(nfes) * 1.5]
    for ax, label in zip(axes, ("FID", "RMS distance to the ODE solution")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(ticks)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("NFE (model evaluations)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    write_atomic(path, lambda fh: fig.savefig(fh, dpi=110, format="png"))
    plt.close(fig)


def _log_tensorboard(out: Path, rows: list) -> None:
    from torch.utils.tensorboard import SummaryWriter

    # the log is rewritten like results.csv: events of earlier runs would show stale numbers at the same steps
    folder = out / "tensorboard"
    if folder.is_dir():
        for old in folder.glob("events.out.tfevents.*"):
            old.unlink()
    with SummaryWriter(str(folder)) as w:
        for r in rows:
            tag = f"{r['method']}/seed{r['seed']}"
            w.add_scalar(f"fid/{tag}", r["fid"], global_step=round(r["nfe"]))  # an adaptive cell's is a mean
            if not math.isnan(r["rms"]):
                w.add_scalar(f"rms/{tag}", r["rms"], global_step=round(r["nfe"]))
