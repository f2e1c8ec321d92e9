"""FID on the digits demo model: one configuration of either side → FID of its samples from fixed noise
(``DigitsFID``), and the frontier's screen → final → seed-spread procedure (``fid_table``)."""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from samplers import NoiseSchedule, sample

from .diffusers_side import diffusers_configs, run_diffusers
from .ours_side import PAPER_METHODS

DIGITS_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "digits.yml"
DIGITS_SHAPE = (1, 8, 8)
FID_SIDES = ("ours", "diffusers")


class DigitsFID:
    """The digits demo model and its FID: one sampler configuration → FID of its samples from fixed noise."""

    def __init__(self, samples: int, config: Path = DIGITS_CONFIG):
        from models import load_model
        from runners.config import load_config
        from runners.features import build_extractor
        from runners.fid import load_stats
        from runners.sampling import initial_noise

        cfg = load_config(config)
        self.schedule = NoiseSchedule.from_config(cfg["Schedule"])
        net = load_model(cfg, cfg["Model"]["ckpt"])
        self.model = lambda x, t: net(x, t)
        self.extractor = build_extractor(cfg["FID"]["extractor"], cfg["FID"]["extractor_weights"], "cpu")
        self.reference = load_stats(cfg["FID"]["stats"])
        self.samples = samples
        self.x_T = initial_noise(range(samples), DIGITS_SHAPE, 0)  # the same noise for every configuration
        self.factories = dict(diffusers_configs())

    def reseed(self, seed: int) -> None:
        from runners.sampling import initial_noise

        self.x_T = initial_noise(range(self.samples), DIGITS_SHAPE, seed)

    def __call__(self, row, n=None) -> float:
        """FID of ``row`` (dict(side, name, steps)) on the first ``n`` noises (all by default); inf when the
        samples are not finite."""
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
    """(screen, final, spread): every configuration of both sides at each screened budget on ``screen_samples``
    digits (one fixed noise batch, so configurations differ only by the sampler); then the best ``k`` of each side
    by screen FID (by analytic RMSE where a budget is not screened), plus the paper's methods on the paper's grid,
    scored on ``final_samples``; then each screened budget's best pair re-scored on the noise seeds
    ``extra_seeds``. Only the fixed rows of both sides take part: a tuned row's grids were learned for each
    analytic mixture, not for the digits model (scripts/bench_tuned_fid.py tunes and scores grids on it)."""
    rows = [r for r in rows if r["side"] in FID_SIDES]
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
        for side in FID_SIDES:
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
                for side in FID_SIDES]
        for seed in extra_seeds:
            fid.reseed(seed)
            o, d = (fid(next(x for x in rows if x["budget"] == b and x["side"] == r["side"] and
                             x["name"] == r["name"])) for r in pair)
            spread.append(dict(budget=b, seed=seed, ours=pair[0]["name"], diffusers=pair[1]["name"], fid_ours=o,
                               fid_diffusers=d))
            print(f"FID NFE≤{b} seed {seed}: {o:.3f} vs {d:.3f}", flush=True)
        fid.reseed(0)
    return screen, final, spread
