#!/usr/bin/env python
"""The sampler frontier: our samplers against diffusers' schedulers at fixed NFE budgets, side by side.

(a) RMSE to the exact probability-flow endpoint from t = 999 on analytic Gaussian mixtures (several mixtures and
    noise seeds, linear schedule), for every method in ``samplers.available()`` and every diffusers scheduler
    configuration below, each at the largest step count whose NFE fits the budget;
(b) FID on the digits demo model (2,000 samples, digits-classifier features) for the best few of each side by (a),
    and the paper's methods on the paper's grid.

    python scripts/bench_frontier.py                    # writes docs/FRONTIER.md and docs/frontier.png
    python scripts/bench_frontier.py --budgets 10,20 --skip-fid
"""
from __future__ import annotations

import argparse
import contextlib
import io
import math
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import GaussianMixture  # noqa: E402
from samplers import NoiseSchedule, available, expected_nfe, get_method, sample  # noqa: E402

T = 1000
PAPER_METHODS = ("DDIM", "S-PNDM", "F-PNDM")  # also scored by FID, on the paper's grid


# ---------------------------------------------------------------------------------------------------------------
# diffusers side

def diffusers_configs():
    """(label, scheduler factory) for every scheduler and sigma spacing diffusers offers here."""
    import diffusers as d

    base = dict(num_train_timesteps=T, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
    out = []
    spacings = ("leading", "trailing", "linspace")
    for sp in spacings:
        out.append((f"DDIMScheduler[{sp}]", lambda sp=sp: d.DDIMScheduler(**base, clip_sample=False,
                                                                           timestep_spacing=sp)))
        for prk in (False, True):
            for one in (False, True):
                label = f"PNDMScheduler[{sp}{', PRK' if prk else ', PLMS'}{', alpha_to_one' if one else ''}]"
                out.append((label, lambda sp=sp, prk=prk, one=one: d.PNDMScheduler(
                    **base, skip_prk_steps=not prk, set_alpha_to_one=one, timestep_spacing=sp)))
    sigma_options = {"default": {}, "karras": {"use_karras_sigmas": True},
                     "exponential": {"use_exponential_sigmas": True}, "beta": {"use_beta_sigmas": True}}
    for order in (2, 3):
        for name, extra in {**sigma_options, "logSNR": {"use_lu_lambdas": True}}.items():
            for sp in spacings if name == "default" else ("linspace",):
                out.append((f"DPMSolverMultistep[{order}M, {name}, {sp}]",
                    lambda order=order, extra=extra, sp=sp: d.DPMSolverMultistepScheduler(
                        **base, algorithm_type="dpmsolver++", solver_order=order, timestep_spacing=sp,
                        final_sigmas_type="zero", **extra)))
    for variant in ("bh1", "bh2"):
        for order in (2, 3):
            for name, extra in sigma_options.items():
                for sp in spacings if name == "default" else ("linspace",):
                    out.append((f"UniPCMultistep[{variant}, order {order}, {name}, {sp}]",
                                lambda variant=variant, order=order, extra=extra, sp=sp: d.UniPCMultistepScheduler(
                                    **base, solver_type=variant, solver_order=order, timestep_spacing=sp,
                                    final_sigmas_type="zero", **extra)))
    for order in (2, 3):
        for name, extra in sigma_options.items():
            for sp in spacings if name == "default" else ("linspace",):
                out.append((f"DEISMultistep[order {order}, {name}, {sp}]",
                            lambda order=order, extra=extra, sp=sp: d.DEISMultistepScheduler(
                                **base, solver_order=order, timestep_spacing=sp, **extra)))
    return out


def run_diffusers(factory, model, x, steps):
    """Drive a diffusers scheduler; returns (x0, nfe)."""
    scheduler = factory()
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scheduler.set_timesteps(steps)
    x = x * scheduler.init_noise_sigma
    nfe = 0
    for t in scheduler.timesteps:
        inp = scheduler.scale_model_input(x, t)
        eps = model(inp, torch.full((x.shape[0],), float(t), dtype=x.dtype))
        nfe += 1
        x = scheduler.step(eps, t, x).prev_sample
    return x, nfe


def diffusers_fit(factory, model, x, budget, cache):
    """The largest num_inference_steps whose NFE fits the budget (PNDM with PRK costs more than one per step)."""
    for steps in range(budget, 0, -1):
        key = (id(factory), steps)
        if key not in cache:
            try:
                cache[key] = run_diffusers(factory, model, x[:1], steps)[1]
            except Exception as e:  # a configuration diffusers refuses at this step count
                cache[key] = f"error: {type(e).__name__}"
        if isinstance(cache[key], int) and cache[key] <= budget:
            return steps
    return None


# ---------------------------------------------------------------------------------------------------------------
# our side

def our_methods():
    return [m for m in available() if get_method(m).kind in ("multistep", "exponential")]


def our_fit(method, schedule, budget):
    best = None
    for steps in range(1, budget + 1):
        try:
            if expected_nfe(method, steps, schedule) <= budget:
                best = steps
        except ValueError:
            pass
    return best


# ---------------------------------------------------------------------------------------------------------------

def analytic_table(budgets, mixtures, batch, schedule):
    problems = []
    for seed in mixtures:
        model = GaussianMixture.random(8, (3, 8, 8), seed=seed, schedule=schedule)
        x_T = torch.randn(batch, 3, 8, 8, generator=torch.Generator().manual_seed(1000 + seed), dtype=torch.float64)
        problems.append((model, x_T, model.flow_endpoint(x_T, schedule.alpha_bar(T - 1), 1.0)))
    rows = []  # dict(side, name, budget, steps, nfe, rmse)
    for name in our_methods():
        for budget in budgets:
            steps = our_fit(name, schedule, budget)
            if steps is None:
                continue
            errs, nfe = [], None
            for model, x_T, exact in problems:
                x0, info = sample(model, x_T, schedule, name, steps=steps, return_info=True)
                errs.append(((x0 - exact) ** 2).mean().sqrt().item())
                nfe = info.nfe
            rows.append(dict(side="ours", name=name, budget=budget, steps=steps, nfe=nfe, rmse=float(np.mean(errs))))
    cache = {}
    for label, factory in diffusers_configs():
        for budget in budgets:
            steps = diffusers_fit(factory, problems[0][0], problems[0][1], budget, cache)
            if steps is None:
                continue
            errs, nfe = [], None
            try:
                for model, x_T, exact in problems:
                    x0, nfe = run_diffusers(factory, model, x_T, steps)
                    errs.append(((x0 - exact) ** 2).mean().sqrt().item())
            except Exception as e:
                print(f"skipped {label} at {steps} steps: {type(e).__name__}: {e}", file=sys.stderr)
                continue
            err = float(np.mean(errs))
            if math.isfinite(err):
                rows.append(dict(side="diffusers", name=label, budget=budget, steps=steps, nfe=nfe, rmse=err))
    return rows


def best(rows, side, budget, k=1):
    sel = sorted((r for r in rows if r["side"] == side and r["budget"] == budget), key=lambda r: r["rmse"])
    return sel[:k]


def markdown(rows, budgets, mixtures, batch, fid_rows, seconds):
    lines = [
        "# The sampler frontier", "",
        f"`python scripts/bench_frontier.py` — {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
        f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}, {seconds / 60:.1f} min.", "",
        "## (a) Analytic Gaussian mixtures: RMSE to the exact probability-flow endpoint from t = 999", "",
        f"8-component mixtures in 3×8×8 (seeds {mixtures}), {batch} noise samples each, linear schedule; every "
        "sampler starts from the same x_T, read as the noise at t = 999, and runs the largest step count whose "
        "NFE fits the budget. Mean RMSE over the mixtures.", "",
        "| budget | best of ours | RMSE | best diffusers configuration | RMSE | ours / diffusers |",
        "|---|---|---|---|---|---|"]
    for b in budgets:
        o, d = best(rows, "ours", b), best(rows, "diffusers", b)
        if o and d:
            o, d = o[0], d[0]
            lines.append(f"| {b} | {o['name']} ({o['steps']} steps, NFE {o['nfe']}) | {o['rmse']:.2e} | "
                         f"{d['name']} ({d['steps']} steps, NFE {d['nfe']}) | {d['rmse']:.2e} | "
                         f"**{o['rmse'] / d['rmse']:.2f}×** |")
    lines += ["", "### The paper's methods on the paper's grid", "",
              "| budget | " + " | ".join(["DDIM", "S-PNDM", "F-PNDM", "FON"]) + " |", "|---|---|---|---|---|"]
    for b in budgets:
        cells = []
        for m in ("DDIM", "S-PNDM", "F-PNDM", "FON"):
            r = [r for r in rows if r["side"] == "ours" and r["name"] == m and r["budget"] == b]
            cells.append(f"{r[0]['rmse']:.2e} (NFE {r[0]['nfe']})" if r else "—")
        lines.append(f"| {b} | " + " | ".join(cells) + " |")
    lines += ["", "### Top 5 on each side per budget", ""]
    for b in budgets:
        lines.append(f"**NFE ≤ {b}**: ours — " + "; ".join(f"{r['name']} {r['rmse']:.2e}" for r in best(rows, "ours", b, 5))
                     + " · diffusers — " + "; ".join(f"{r['name']} {r['rmse']:.2e}"
                                                   for r in best(rows, "diffusers", b, 5)))
        lines.append("")
    if fid_rows:
        lines += ["## (b) FID on the digits demo model (2,000 samples, digits-classifier features)", "",
                  "| budget | sampler | side | NFE | FID |", "|---|---|---|---|---|"]
        for r in fid_rows:
            lines.append(f"| {r['budget']} | {r['name']} | {r['side']} | {r['nfe']} | {r['fid']:.3f} |")
    return "\n".join(lines) + "\n"


def plot(rows, budgets, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for side, style in (("ours", "-"), ("diffusers", "--")):
        names = {r["name"] for b in budgets for r in best(rows, side, b, 2)}
        for name in sorted(names):
            pts = sorted((r["nfe"], r["rmse"]) for r in rows if r["side"] == side and r["name"] == name)
            ax.loglog(*zip(*pts), style, marker="o", label=f"{name}")
    for m in ("DDIM", "F-PNDM"):
        pts = sorted((r["nfe"], r["rmse"]) for r in rows if r["side"] == "ours" and r["name"] == m)
        ax.loglog(*zip(*pts), ":", marker="x", color="gray" if m == "DDIM" else "black", label=f"{m} (paper grid)")
    ax.set_xlabel("NFE")
    ax.set_ylabel("RMSE to the exact flow endpoint")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def fid_table(rows, budgets, k):
    """FID of the best k configurations of each side per budget on the digits model."""
    from models import load_model
    from runners.config import load_config
    from runners.fid import build_extractor, fid_from_features, load_stats
    from runners.images import to_uint8
    from runners.sampling import initial_noise

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "digits.yml")
    schedule = NoiseSchedule.from_config(cfg["Schedule"])
    net = load_model(cfg, cfg["Model"]["ckpt"])
    model = lambda x, t: net(x, t)
    extractor = build_extractor(cfg, "cpu")
    reference = load_stats(cfg["FID"]["stats"])
    x_T = initial_noise(range(2000), (1, 8, 8), 0)
    factories = dict(diffusers_configs())
    out = []
    with torch.no_grad():
        for b in budgets:
            paper = [r for r in rows if r["side"] == "ours" and r["budget"] == b and r["name"] in PAPER_METHODS]
            for side in ("ours", "diffusers"):
                for r in best(rows, side, b, k) + (paper if side == "ours" else []):
                    if side == "ours":
                        x0 = sample(model, x_T, schedule, r["name"], steps=r["steps"])
                    else:
                        x0 = run_diffusers(factories[r["name"]], model, x_T, r["steps"])[0]
                    fid = fid_from_features(extractor(to_uint8(x0)).numpy(), reference, extractor.name)
                    out.append(dict(budget=b, name=r["name"], side=side, nfe=r["nfe"], fid=fid))
                    print(f"FID NFE≤{b} {side} {r['name']}: {fid:.3f}")
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budgets", default="5,10,20,50")
    p.add_argument("--mixtures", default="0,1,2", help="mixture seeds")
    p.add_argument("--batch", type=int, default=32, help="noise samples per mixture")
    p.add_argument("--skip-fid", action="store_true")
    p.add_argument("--fid-top", type=int, default=2, help="configurations per side and budget scored by FID")
    p.add_argument("--out", default="docs/FRONTIER.md")
    args = p.parse_args()
    start = time.time()
    budgets = [int(b) for b in args.budgets.split(",")]
    mixtures = [int(s) for s in args.mixtures.split(",")]
    schedule = NoiseSchedule("linear")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the analytic model's small ops are fastest single-threaded
    rows = analytic_table(budgets, mixtures, args.batch, schedule)
    torch.set_num_threads(threads)
    for b in budgets:
        o, d = best(rows, "ours", b)[0], best(rows, "diffusers", b)[0]
        print(f"NFE ≤ {b}: ours {o['name']} {o['rmse']:.3e} | diffusers {d['name']} {d['rmse']:.3e} | "
              f"ratio {o['rmse'] / d['rmse']:.2f}")
    fid_rows = [] if args.skip_fid else fid_table(rows, budgets, args.fid_top)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot(rows, budgets, out.with_name("frontier.png"))
    text = markdown(rows, budgets, mixtures, args.batch, fid_rows, time.time() - start)
    if out.exists() and "\n## Reading" in out.read_text():  # keep the hand-written interpretation
        text += "\n## Reading" + out.read_text().split("\n## Reading", 1)[1]
    out.write_text(text)
    print(f"wrote {out} and {out.with_name('frontier.png')}")


if __name__ == "__main__":
    main()
