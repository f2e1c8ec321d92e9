"""``main.py ablate``: methods × steps × seeds, each cell sampled, scored and cached; tables and a plot.

Every method starts from the same noise for a given seed (sample i's x_T depends only on (seed, i)), so the
differences between methods are paired. Besides FID each cell reports its RMS distance to a high-accuracy solution
from the same noise and the same start time t0: iPNDM (4th-order pseudo multistep) over every integer timestep
t0, t0−1, …, 0. It is deterministic and keeps separating methods after FID has saturated. The reference never
queries the network between integer timesteps: a DDPM trained on integer t has a sinusoidal time embedding whose
fastest component turns by a radian per step, so its output between integers is not to be trusted, and an
adaptive ODE solver would land there.
"""
from __future__ import annotations

import csv
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from samplers import get_method
from samplers.api import method_grid

from .commands import image_shape, load_eps, pick, positive, resolve_sampling
from .config import ConfigError, get, load_config
from .distributed import setup, teardown
from .fid import build_extractor, extract_features, fid_from_features, image_features, load_stats
from .images import sample_path
from .sampling import SampleJob, initial_noise, run_sampling, sha256_file

CELL_FILE = "cell.json"
REFERENCE = "iPNDM over every integer timestep from the cell's start"


def _split(text, cast=str):
    return [cast(v.strip()) for v in str(text).split(",") if v.strip()]


def cell_dir(out: Path, method: str, steps, seed: int) -> Path:
    return out / (method if steps is None else f"{method}-{steps}") / f"seed{seed}"


def run_ablation(args) -> None:
    cfg = load_config(args.config, args.overrides)
    methods = [get_method(m).name for m in _split(args.methods or get(cfg, "FID", "methods", "DDIM,S-PNDM,F-PNDM"))]
    steps_list = _split(args.steps or get(cfg, "FID", "steps", "10,20,50"), int)
    seeds = _split(args.seeds or get(cfg, "FID", "seeds", "0"), int)
    num = positive("--num-samples", pick(args.num_samples, get(cfg, "FID", "num_samples")))
    batch = positive("--batch-size", pick(args.batch_size, get(cfg, "Sample", "batch_size", 64)))
    ref_n = min(num, args.reference_samples or get(cfg, "FID", "reference_samples", 64))
    precision = args.precision or get(cfg, "Sample", "precision", "fp32")
    shape = image_shape(cfg)
    cells = []  # (method, steps)
    for method in methods:
        for steps in ([None] if get_method(method).kind == "ode" else steps_list):
            m, s, convention, schedule = resolve_sampling(args, cfg, method, steps)
            cells.append((m, s))
    reference = load_stats(args.stats or get(cfg, "FID", "stats", required=True))
    ckpt = args.ckpt or get(cfg, "Model", "ckpt")
    out = Path(args.out)

    dist = setup(args.device)
    try:
        eps = load_eps(cfg, ckpt, args.trust_checkpoint, precision, dist.device,
                       compile=bool(args.compile or get(cfg, "Sample", "compile", False)))
        extractor = build_extractor(cfg, dist.device, args.inception_weights) if dist.is_main else None
        sha = sha256_file(ckpt)
        rows = []
        for seed in seeds:
            ref_cache = {}
            for method, steps in cells:
                folder = cell_dir(out, method, steps, seed)
                cached = _read_cell(folder, sha, num)
                if cached is None:
                    job = SampleJob(config=cfg, method=method, steps=steps, convention=convention, num_samples=num,
                                    seed=seed, image_shape=shape, checkpoint=str(ckpt), checkpoint_sha256=sha,
                                    precision=precision, batch_size=batch)
                    manifest = run_sampling(job, eps, schedule, folder, dist)
                    if dist.is_main:
                        cached = _score_cell(folder, job, manifest, eps, schedule, extractor, reference, cfg,
                                             ref_n, ref_cache, dist.device)
                if dist.is_main:
                    rows.append(cached)
                    print(f"seed {seed} {method:>7} {steps or '':>4}: NFE {cached['nfe']}, FID {cached['fid']:.3f}, "
                          f"RMS to reference {cached['rms']:.4g}")
        if dist.is_main:
            floors = noise_floor(cfg, extractor, reference, num, seeds) if get(cfg, "FID", "noise_floor") else []
            write_results(out, rows, floors)
    finally:
        teardown()


def noise_floor(cfg, extractor, reference, num, seeds) -> list:
    """FID of ``num`` real training images drawn with replacement (one draw per seed) against the reference
    statistics: the best FID a perfect sampler could get at this sample count."""
    from .datasets import image_dataset

    data = image_dataset(cfg, get(cfg, "Dataset", "split", "train"))
    floors = []
    for seed in seeds:
        idx = torch.randint(len(data), (num,), generator=torch.Generator().manual_seed(seed)).tolist()
        batches = (torch.stack([data[i][0] for i in idx[lo:lo + 1000]]) for lo in range(0, num, 1000))
        features = extract_features(extractor, batches, num, progress=False)
        floors.append(fid_from_features(features, reference, extractor.name))
    print(f"noise floor (real vs real, {num} images): " + ", ".join(f"{f:.3f}" for f in floors))
    return floors


def _read_cell(folder: Path, sha, num):
    try:
        cell = json.loads((folder / CELL_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    same = (cell.get("checkpoint_sha256"), cell.get("num_samples"), cell.get("reference")) == (sha, num, REFERENCE)
    return cell if same else None


def _score_cell(folder, job, manifest, eps, schedule, extractor, reference, cfg, ref_n, ref_cache, device):
    paths = [sample_path(folder, i, job.num_samples) for i in range(job.num_samples)]
    features = image_features(paths, extractor, job.image_shape[0], get(cfg, "FID", "batch_size", 200))
    fid = fid_from_features(features, reference, extractor.name)
    rms = _distance_to_reference(job, eps, schedule, ref_n, ref_cache, device)
    cell = {"method": job.method, "steps": job.steps, "nfe": manifest["nfe"], "seed": job.seed, "fid": fid,
            "rms": rms, "seconds": manifest["seconds"], "num_samples": job.num_samples,
            "checkpoint_sha256": job.checkpoint_sha256, "reference": REFERENCE}
    tmp = folder / f".{CELL_FILE}.tmp"
    tmp.write_text(json.dumps(cell, indent=1))
    os.replace(tmp, folder / CELL_FILE)
    return cell


def _distance_to_reference(job, eps, schedule, n, cache, device) -> float:
    """RMS (in [-1, 1] pixel units) between the cell's first n samples (float, re-sampled) and the
    high-accuracy ODE solution from the same noise and start time. NaN for stochastic methods."""
    from samplers import sample

    m = get_method(job.method)
    if m.kind == "ancestral":
        return float("nan")
    t0 = float(schedule.T - 1) if m.kind == "ode" else method_grid(m, schedule, job.steps, job.convention)[0][0]
    x_T = initial_noise(range(n), job.image_shape, job.seed).to(device)
    key = (t0, job.seed)
    if key not in cache:
        # steps = t0 + 1 > T/2 makes the standard grid t0, t0−1, …, 0 (skip 1), starting where the cell starts
        cache[key] = torch.cat([sample(eps, chunk, schedule, "iPNDM@paper", steps=int(t0) + 1)
                                for chunk in x_T.split(256)])
    kwargs = {} if m.kind == "ode" else {"steps": job.steps}
    x0 = torch.cat([sample(eps, chunk, schedule, job.method, convention=job.convention, **kwargs)
                    for chunk in x_T.split(256)])
    return float(((x0.double() - cache[key].double()) ** 2).mean().sqrt())


def write_results(out: Path, rows: list, floors=()) -> None:
    """results.csv (one row per cell and seed), results.md (the paper's layout) and plot.png."""
    out.mkdir(parents=True, exist_ok=True)
    fields = ["method", "steps", "nfe", "seed", "fid", "rms", "seconds", "num_samples"]
    tmp = out / ".results.csv.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, out / "results.csv")
    _atomic_text(out / "results.md", results_markdown(rows, floors))
    plot_results(rows, out / "plot.png")
    _log_tensorboard(out, rows)
    print(f"results: {out / 'results.md'}, {out / 'results.csv'}, {out / 'plot.png'}")


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


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
        return f"{mean:.2f} ± {sd:.2f} ({rs[0]['nfe']})" if len(rs) > 1 else f"{mean:.2f} ({rs[0]['nfe']})"

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
            table("RMS distance to the high-accuracy ODE solution from the same noise ([-1, 1] pixel units)",
                  rms_cell))


def plot_results(rows: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = _group(rows)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for m in dict.fromkeys(r["method"] for r in rows):
        keys = sorted((k for k in cells if k[0] == m), key=lambda k: cells[k][0]["nfe"])
        nfe = [cells[k][0]["nfe"] for k in keys]
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
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def _log_tensorboard(out: Path, rows: list) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(out / "tensorboard")) as w:
        for r in rows:
            tag = f"{r['method']}/seed{r['seed']}"
            w.add_scalar(f"fid/{tag}", r["fid"], global_step=r["nfe"])
            if not math.isnan(r["rms"]):
                w.add_scalar(f"rms/{tag}", r["rms"], global_step=r["nfe"])
