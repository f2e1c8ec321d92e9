#!/usr/bin/env python
"""The sampler frontier: our samplers against diffusers' schedulers at fixed NFE budgets, side by side.

(a) RMSE to the exact probability-flow endpoint from t = 999 on 64 analytic Gaussian mixtures (32 noise samples
    each, linear schedule unless --schedule says otherwise; mean and median over the mixtures), for every method in ``samplers.available()`` and
    every diffusers scheduler configuration below, each at the largest step count whose NFE fits the budget;
(b) FID on the digits demo model: a screen of every configuration of both sides on 256 samples at NFE 5/10/20,
    then the best few of each side (by screen FID; by (a) at NFE 50) and the paper's methods on 2,000 samples.

    python scripts/bench_frontier.py                    # writes docs/FRONTIER.md and docs/frontier.png
    python scripts/bench_frontier.py --budgets 10,20 --skip-fid
    python scripts/bench_frontier.py --skip-fid --schedule cosine --mixtures 16-63 --out /tmp/cosine/FRONTIER.md
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
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import GaussianMixture, MixtureBank  # noqa: E402
from samplers import NoiseSchedule, available, expected_nfe, get_method, sample  # noqa: E402

T = 1000
PAPER_METHODS = ("DDIM", "S-PNDM", "F-PNDM")  # also scored by FID, on the paper's grid
ALL_MARK = "\n## All configurations"  # the full tables follow the hand-written reading


# ---------------------------------------------------------------------------------------------------------------
# diffusers side

DIFFUSERS_BETAS = {"linear": "linear", "cosine": "squaredcos_cap_v2", "quad": "scaled_linear"}  # same betas


def diffusers_configs(schedule_kind: str = "linear"):
    """(label, scheduler factory) for every scheduler and sigma spacing diffusers offers here."""
    import diffusers as d

    base = dict(num_train_timesteps=T, beta_start=1e-4, beta_end=0.02, beta_schedule=DIFFUSERS_BETAS[schedule_kind])
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

FLIP = 0.5  # a sample whose RMSE exceeds this ended in another mixture component (component means are ~1.4 apart)


def seed_text(seeds) -> str:
    """[0, 1, 2, 3] → '0–3' (a contiguous run), otherwise the list."""
    seeds = list(seeds)
    contiguous = seeds == list(range(seeds[0], seeds[0] + len(seeds)))
    return f"{seeds[0]}–{seeds[-1]}" if contiguous and len(seeds) > 2 else ", ".join(map(str, seeds))


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


def analytic_table(budgets, mixtures, batch, schedule):
    """Every configuration × budget on all mixtures at once (one ``MixtureBank``, one sampler run): per-mixture
    RMSE, their mean and median, and the number of samples that ended in another component ("flips")."""
    models, noises = [], []
    for seed in mixtures:
        models.append(GaussianMixture.random(8, (3, 8, 8), seed=seed, schedule=schedule))
        noises.append(torch.randn(batch, 3, 8, 8, generator=torch.Generator().manual_seed(1000 + seed),
                                  dtype=torch.float64))
    bank, x_T = MixtureBank(models), torch.cat(noises)
    exact = bank.flow_endpoint(x_T, schedule.alpha_bar(T - 1), 1.0)

    def scored(side, name, budget, steps, nfe, x0):
        per_sample = ((x0 - exact) ** 2).flatten(1).mean(1).reshape(len(mixtures), batch)  # squared errors
        per_mixture = per_sample.mean(1).sqrt().numpy()
        return dict(side=side, name=name, budget=budget, steps=steps, nfe=nfe, rmse=float(np.mean(per_mixture)),
                    median=float(np.median(per_mixture)), flips=int((per_sample.sqrt() > FLIP).sum()))

    rows = []  # dict(side, name, budget, steps, nfe, rmse (mean over mixtures), median, flips)
    for name in tqdm(our_methods(), desc="analytic: ours", unit="method", dynamic_ncols=True):
        for budget in budgets:
            steps = our_fit(name, schedule, budget)
            if steps is not None:
                x0, info = sample(bank, x_T, schedule, name, steps=steps, return_info=True)
                rows.append(scored("ours", name, budget, steps, info.nfe, x0))
    cache = {}
    for label, factory in tqdm(diffusers_configs(schedule.kind), desc="analytic: diffusers", unit="config",
                               dynamic_ncols=True):
        for budget in budgets:
            steps = diffusers_fit(factory, models[0], noises[0], budget, cache)
            if steps is None:
                continue
            try:
                x0, nfe = run_diffusers(factory, bank, x_T, steps)
            except Exception as e:
                print(f"skipped {label} at {steps} steps: {type(e).__name__}: {e}", file=sys.stderr)
                continue
            row = scored("diffusers", label, budget, steps, nfe, x0)
            if math.isfinite(row["rmse"]):
                rows.append(row)
    return rows


def best(rows, side, budget, k=1, key="rmse"):
    sel = sorted((r for r in rows if r["side"] == side and r["budget"] == budget), key=lambda r: r[key])
    return sel[:k]


def full_table(rows, budgets, key, fmt):
    """Every configuration × budget, the best of each side per column in bold."""
    best_of = {(side, b): min((r[key] for r in rows if r["side"] == side and r["budget"] == b), default=None)
               for side in ("ours", "diffusers") for b in budgets}
    lines = ["| side | configuration | " + " | ".join(f"NFE ≤ {b}" for b in budgets) + " |",
             "|---|---|" + "---|" * len(budgets)]
    for side in ("ours", "diffusers"):
        for name in dict.fromkeys(r["name"] for r in rows if r["side"] == side):
            cells = []
            for b in budgets:
                r = next((r for r in rows if r["side"] == side and r["name"] == name and r["budget"] == b), None)
                text = "—" if r is None else fmt(r[key])
                cells.append(f"**{text}**" if r is not None and r[key] == best_of[(side, b)] else text)
            lines.append(f"| {side} | {name} | " + " | ".join(cells) + " |")
    return lines


def markdown(rows, budgets, mixtures, batch, kind, fid_screen, fid_final, fid_spread, fid_settings, seconds):
    lines = [
        "# The sampler frontier", "",
        f"`python scripts/bench_frontier.py` — {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
        f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}, {seconds / 60:.1f} min.", "",
        "## (a) Analytic Gaussian mixtures: RMSE to the exact probability-flow endpoint from t = 999", "",
        f"8-component mixtures in 3×8×8 (seeds {seed_text(mixtures)}), {batch} noise samples each, {kind} "
        "schedule; every sampler starts from the same x_T, read as the noise at t = 999, and runs the largest step "
        f"count whose NFE fits the budget. Each configuration's RMSE per mixture, then the mean over the "
        f"{len(mixtures)} mixtures (the headline statistic) and their median. A *flip* is a sample that ends in "
        f"another mixture component than the exact solution (RMSE > {FLIP}), out of {len(mixtures) * batch}.", "",
        "![RMSE against NFE](frontier.png)", "",
        "### Mean RMSE over the mixtures", "",
        "| budget | best of ours | RMSE | flips | best diffusers configuration | RMSE | flips | ours / diffusers |",
        "|---|---|---|---|---|---|---|---|"]
    for b in budgets:
        o, d = best(rows, "ours", b), best(rows, "diffusers", b)
        if o and d:
            o, d = o[0], d[0]
            lines.append(f"| {b} | {o['name']} ({o['steps']} steps, NFE {o['nfe']}) | {o['rmse']:.2e} | {o['flips']} | "
                         f"{d['name']} ({d['steps']} steps, NFE {d['nfe']}) | {d['rmse']:.2e} | {d['flips']} | "
                         f"**{o['rmse'] / d['rmse']:.2f}×** |")
    lines += ["", "### Median RMSE over the mixtures", "",
              "| budget | best of ours | RMSE | best diffusers configuration | RMSE | ours / diffusers |",
              "|---|---|---|---|---|---|"]
    for b in budgets:
        o, d = best(rows, "ours", b, key="median"), best(rows, "diffusers", b, key="median")
        if o and d:
            o, d = o[0], d[0]
            lines.append(f"| {b} | {o['name']} ({o['steps']} steps) | {o['median']:.2e} | {d['name']} "
                         f"({d['steps']} steps) | {d['median']:.2e} | **{o['median'] / d['median']:.2f}×** |")
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
        def top(side):
            return "; ".join(f"{r['name']} {r['rmse']:.2e} (median {r['median']:.2e}, {r['flips']} flips)"
                             for r in best(rows, side, b, 5))
        lines.append(f"**NFE ≤ {b}**: ours — {top('ours')} · diffusers — {top('diffusers')}")
        lines.append("")
    if fid_final:
        lines += fid_markdown(fid_screen, fid_final, fid_spread, budgets, fid_settings)
    for key, what in (("rmse", "mean"), ("median", "median")):
        lines += [ALL_MARK.strip() + f": analytic RMSE, {what} over the mixtures (best of each side per column in "
                  "bold)", ""]
        lines += full_table(rows, budgets, key, lambda v: f"{v:.2e}") + [""]
    if fid_screen:
        screened = sorted({r["budget"] for r in fid_screen})
        lines += [f"## All configurations: screen FID on {fid_settings['screen']} samples (best of each side per "
                  "column in bold)", ""]
        lines += full_table(fid_screen, screened, "fid", lambda v: f"{v:.2f}") + [""]
    return "\n".join(lines) + "\n"


def fid_markdown(screen, final, spread, budgets, settings):
    screened = sorted({r["budget"] for r in screen})
    lines = [f"## (b) FID on the digits demo model ({settings['final']:,} samples, digits-classifier features)", "",
             f"Screen: every configuration of both sides at NFE ≤ {', '.join(map(str, screened))} on the first "
             f"{settings['screen']} of the samples' noises; then the best {settings['k']} of each side by screen FID "
             f"(by analytic RMSE at budgets not screened), plus the paper's methods on the paper's grid, on all "
             f"{settings['final']:,}. The digits network's own floor: DDIM-1000 ≈ 3.9, real digits ≈ 2.1 "
             "(README).", "", "![FID against NFE](frontier_fid.png)", "",
             "| budget | best of ours | FID | best diffusers configuration | FID | ours / diffusers |",
             "|---|---|---|---|---|---|"]
    for b in budgets:
        o = min((r for r in final if r["budget"] == b and r["side"] == "ours"), key=lambda r: r["fid"], default=None)
        d = min((r for r in final if r["budget"] == b and r["side"] == "diffusers"), key=lambda r: r["fid"],
                default=None)
        if o and d:
            lines.append(f"| {b} | {o['name']} (NFE {o['nfe']}) | {o['fid']:.2f} | {d['name']} (NFE {d['nfe']}) | "
                         f"{d['fid']:.2f} | **{o['fid'] / d['fid']:.2f}×** |")
    lines += ["", "| budget | sampler | side | NFE | chosen by | screen FID | FID |", "|---|---|---|---|---|---|---|"]
    for r in final:
        screen_fid = f"{r['screen']:.2f}" if r["screen"] is not None else "—"
        lines.append(f"| {r['budget']} | {r['name']} | {r['side']} | {r['nfe']} | {r['chosen_by']} | {screen_fid} | "
                     f"{r['fid']:.2f} |")
    if spread:
        lines += ["", "### How much of that is the noise seed", "",
                  f"The best pair of each screened budget, re-scored on other noise seeds ({settings['final']:,} "
                  "samples each; seed 0 is the table above):", "",
                  "| budget | ours | diffusers | FID ours / diffusers per seed | ratio: mean over all seeds (range) |",
                  "|---|---|---|---|---|"]
        for b in sorted({r["budget"] for r in spread}):
            rs = [r for r in spread if r["budget"] == b]
            first = next(r for r in final if r["budget"] == b and r["side"] == "ours" and r["name"] == rs[0]["ours"])
            base = next(r for r in final if r["budget"] == b and r["side"] == "diffusers" and
                        r["name"] == rs[0]["diffusers"])
            ratios = [first["fid"] / base["fid"]] + [r["fid_ours"] / r["fid_diffusers"] for r in rs]
            cells = "; ".join(f"{r['fid_ours']:.2f} / {r['fid_diffusers']:.2f}" for r in rs)
            lines.append(f"| {b} | {rs[0]['ours']} | {rs[0]['diffusers']} | {cells} | {np.mean(ratios):.2f}× "
                         f"(range {min(ratios):.2f}–{max(ratios):.2f}) |")
    if screen:
        lines += ["", "### Screen: top 5 on each side", ""]
        for b in screened:
            def top(side):
                sel = sorted((r for r in screen if r["budget"] == b and r["side"] == side), key=lambda r: r["fid"])
                return "; ".join(f"{r['name']} {r['fid']:.2f}" for r in sel[:5])
            n = sum(r["budget"] == b for r in screen)
            lines += [f"**NFE ≤ {b}** ({n} configurations): ours — {top('ours')} · diffusers — {top('diffusers')}",
                      ""]
    return lines


def _style(ax, xlabel, ylabel):
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_fid(final, budgets, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for side, style in (("ours", "o-"), ("diffusers", "s--")):
        pts = [(b, min(r["fid"] for r in final if r["budget"] == b and r["side"] == side)) for b in budgets
               if any(r["budget"] == b and r["side"] == side for r in final)]
        ax.plot(*zip(*pts), style, label=f"best of {side}")
    for m, style in (("DDIM", "x:"), ("S-PNDM", "^:")):
        pts = [(r["budget"], r["fid"]) for r in final if r["name"] == m and r["side"] == "ours"]
        if pts:
            ax.plot(*zip(*sorted(pts)), style, color="gray", label=f"{m} (paper grid)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    _style(ax, "NFE budget", "FID (digits features)")
    _save(fig, path)


def plot(rows, budgets, path):
    """Mean and median RMSE against NFE: the best configuration of each side at each budget (its name at the
    point), and the paper's methods on the paper's grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for ax, key, what in ((axes[0], "rmse", "mean"), (axes[1], "median", "median")):
        for side, style in (("ours", "o-"), ("diffusers", "s--")):
            pts = [best(rows, side, b, key=key) for b in budgets]
            pts = [r[0] for r in pts if r]
            line, = ax.loglog([r["nfe"] for r in pts], [r[key] for r in pts], style, label=f"best of {side}")
            for r in pts:
                ax.annotate(r["name"].replace("Multistep", "").replace(", linspace", ""), (r["nfe"], r[key]),
                            fontsize=6, color=line.get_color(), xytext=(4, -10 if side == "ours" else 6),
                            textcoords="offset points")
        for m, style in (("DDIM", "x:"), ("S-PNDM", "^:"), ("F-PNDM", "v:")):
            pts = sorted((r["nfe"], r[key]) for r in rows if r["side"] == "ours" and r["name"] == m)
            ax.loglog(*zip(*pts), style, color="gray", label=f"{m} (paper grid)")
        ax.set_xticks(budgets, [str(b) for b in budgets])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(f"{what} over the mixtures", fontsize=10)
        _style(ax, "NFE", "RMSE to the exact flow endpoint")
    _save(fig, path)


class DigitsFID:
    """The digits demo model and its FID: one sampler configuration → FID of its samples from fixed noise."""

    def __init__(self, samples: int):
        from models import load_model
        from runners.config import load_config
        from runners.fid import build_extractor, load_stats
        from runners.sampling import initial_noise

        cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "digits.yml")
        self.schedule = NoiseSchedule.from_config(cfg["Schedule"])
        net = load_model(cfg, cfg["Model"]["ckpt"])
        self.model = lambda x, t: net(x, t)
        self.extractor = build_extractor(cfg, "cpu")
        self.reference = load_stats(cfg["FID"]["stats"])
        self.samples = samples
        self.x_T = initial_noise(range(samples), (1, 8, 8), 0)  # the same noise for every configuration
        self.factories = dict(diffusers_configs())

    def reseed(self, seed: int) -> None:
        from runners.sampling import initial_noise

        self.x_T = initial_noise(range(self.samples), (1, 8, 8), seed)

    def __call__(self, row, n=None) -> float:
        from runners.fid import fid_from_features
        from runners.images import to_uint8

        x_T = self.x_T if n is None else self.x_T[:n]
        with torch.no_grad():
            if row["side"] == "ours":
                x0 = sample(self.model, x_T, self.schedule, row["name"], steps=row["steps"])
            else:
                x0 = run_diffusers(self.factories[row["name"]], self.model, x_T, row["steps"])[0]
        if not torch.isfinite(x0).all():
            return math.inf
        return fid_from_features(self.extractor(to_uint8(x0)).numpy(), self.reference, self.extractor.name)


def fid_table(rows, budgets, screen_budgets, screen_samples, final_samples, k, extra_seeds):
    """(screen, final): every configuration of both sides at each screened budget on ``screen_samples`` digits
    (one fixed noise batch, so configurations differ only by the sampler); then the best ``k`` of each side by
    screen FID (by analytic RMSE where a budget is not screened), plus the paper's methods on the paper's grid,
    scored on ``final_samples``."""
    fid = DigitsFID(final_samples)
    screen = []
    for b in screen_budgets:
        started = time.time()
        for r in tqdm([r for r in rows if r["budget"] == b], desc=f"FID screen NFE≤{b}", unit="config",
                      dynamic_ncols=True):
            screen.append({**r, "fid": fid(r, screen_samples)})
        print(f"FID screen NFE≤{b}: {sum(r['budget'] == b for r in screen)} configurations on {screen_samples} "
              f"samples in {time.time() - started:.0f} s", flush=True)
    final = []
    for b in budgets:
        ranked = screen if b in screen_budgets else rows
        key = "fid" if b in screen_budgets else "rmse"
        paper = [r for r in rows if r["side"] == "ours" and r["budget"] == b and r["name"] in PAPER_METHODS]
        for side in ("ours", "diffusers"):
            chosen = sorted((r for r in ranked if r["side"] == side and r["budget"] == b),
                            key=lambda r: r[key])[:k]
            names = [r["name"] for r in chosen]
            chosen += [r for r in paper if side == "ours" and r["name"] not in names]
            for r in chosen:
                value = fid(r)
                final.append(dict(budget=b, name=r["name"], side=side, nfe=r["nfe"], fid=value,
                                  screen=r.get("fid"), chosen_by=key if r["name"] in names else "paper"))
                print(f"FID NFE≤{b} {side} {r['name']}: {value:.3f}", flush=True)
    # FID on 2,000 samples moves with the noise seed: re-score each screened budget's best pair on other seeds
    spread = []
    for b in screen_budgets:
        pair = [min((r for r in final if r["budget"] == b and r["side"] == side), key=lambda r: r["fid"])
                for side in ("ours", "diffusers")]
        for seed in extra_seeds:
            fid.reseed(seed)
            o, d = (fid(next(x for x in rows if x["budget"] == b and x["side"] == r["side"] and
                             x["name"] == r["name"])) for r in pair)
            spread.append(dict(budget=b, seed=seed, ours=pair[0]["name"], diffusers=pair[1]["name"], fid_ours=o,
                               fid_diffusers=d))
            print(f"FID NFE≤{b} seed {seed}: {o:.3f} vs {d:.3f}", flush=True)
        fid.reseed(0)
    return screen, final, spread


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budgets", type=budget_list, default="5,10,20,50", help="NFE budgets, comma-separated")
    p.add_argument("--mixtures", type=parse_seeds, default="0-63", help="mixture seeds, e.g. 0-63 or 0,1,2")
    p.add_argument("--batch", type=int, default=32, help="noise samples per mixture")
    p.add_argument("--schedule", choices=sorted(DIFFUSERS_BETAS), default="linear",
                   help="noise schedule of the analytic benchmark (the FID stage uses the digits model's, linear)")
    p.add_argument("--skip-fid", action="store_true", help="the analytic benchmark only (1.5 min instead of 11)")
    p.add_argument("--fid-top", type=int, default=2,
                   help="configurations per side and budget scored on all FID samples")
    p.add_argument("--fid-samples", type=int, default=2000, help="samples per FID of the final table")
    p.add_argument("--screen-samples", type=int, default=256,
                   help="samples per configuration in the FID screen")
    p.add_argument("--fid-seeds", type=int, default=5,
                   help="noise seeds (0 and up) on which the best pair of each screened budget is scored")
    p.add_argument("--screen-budgets", type=budget_list, default="5,10,20",
                   help="budgets at which every configuration is FID-screened ('' for none)")
    p.add_argument("--out", default="docs/FRONTIER.md",
                   help="the report; its plots go next to it, and its '## Reading' section is kept")
    args = p.parse_args()
    start = time.time()
    budgets = args.budgets
    if not budgets:
        p.error("--budgets needs at least one budget")
    mixtures = args.mixtures
    schedule = NoiseSchedule(args.schedule)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the analytic model's small ops are fastest single-threaded
    rows = analytic_table(budgets, mixtures, args.batch, schedule)
    torch.set_num_threads(threads)
    for b in budgets:
        for key in ("rmse", "median"):
            o, d = best(rows, "ours", b, key=key)[0], best(rows, "diffusers", b, key=key)[0]
            print(f"NFE ≤ {b} {'mean' if key == 'rmse' else key}: ours {o['name']} {o[key]:.3e} ({o['flips']} flips)"
                  f" | diffusers {d['name']} {d[key]:.3e} ({d['flips']} flips) | ratio {o[key] / d[key]:.2f}")
    screen_budgets = args.screen_budgets
    extra_seeds = range(1, args.fid_seeds)
    fid_screen, fid_final, fid_spread = ([], [], []) if args.skip_fid else fid_table(
        rows, budgets, screen_budgets, args.screen_samples, args.fid_samples, args.fid_top, extra_seeds)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot(rows, budgets, out.with_name("frontier.png"))
    if fid_final:
        plot_fid(fid_final, budgets, out.with_name("frontier_fid.png"))
    settings = dict(screen=args.screen_samples, final=args.fid_samples, k=args.fid_top)
    text = markdown(rows, budgets, mixtures, args.batch, schedule.kind, fid_screen, fid_final, fid_spread, settings,
                    time.time() - start)
    if out.exists() and "\n## Reading" in out.read_text():  # keep the hand-written interpretation, before the
        reading = out.read_text().split("\n## Reading", 1)[1].split(ALL_MARK, 1)[0]  # full tables
        before, mark, after = text.partition(ALL_MARK)
        text = before.rstrip("\n") + "\n\n## Reading" + reading.rstrip("\n") + "\n" + mark + after
    out.write_text(text)
    print(f"wrote {out} and {out.with_name('frontier.png')}")


if __name__ == "__main__":
    main()
