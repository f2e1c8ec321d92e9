#!/usr/bin/env python
"""Experiment (not a library feature): how far past a learned time grid do learned solver coefficients go?

Issue #14 asks, on the digits demo network, for a median RMS distance to the high-accuracy solution of ≤ 0.5× the
best fixed spacing of any method at NFE 5 and 10; a tuned grid alone reaches 0.99× / 0.73× (docs/TUNING.md). This
script adds, on top of the grid ``tune_timesteps`` finds for DPM-Solver++(2M), per-step learned coefficients and
trains them together with the grid (and optionally a learned network time per evaluation) on the same teacher
loss, then scores on noise not used for tuning.

The learned scheme (one model evaluation per step; m_i = x̂0 at grid point i, h_i = λ_{i+1} − λ_i,
g_i = 1 − e^(−h_i); ``history`` K data predictions, newest first):

    predictor  x_{i+1} = (σ_{i+1}/σ_i)·x_i + α_{i+1}·g_i·(b_i + Σ_{j=1}^{K−1} p_ij·(m_{i−j} − m_i))
    corrector  x_{i+1} ← x_{i+1} + α_{i+1}·g_i·Σ_{j} c_ij·(n_j − m_i),  n = (m_{i+1}, m_{i−1}, …, m_{i−K+1})
    final      x_N = e + Σ_{j=1}^{K−1} p_{N−1,j}·(m_{N−1−j} − m_{N−1})   (the step to ā = 1)

with b_i and e the DPM-Solver++(2M) update (b_i = m_i + (m_i − m_{i−1})/(2 r_i), e the extrapolation of the last
two data predictions to σ = 0, as ``samplers.exponential``) and m_{i+1} evaluated at the predicted point and reused
(as UniPC does; before the final step the corrected offset is carried into m_{N−1} likewise). With p = c = 0 and
no time shift this *is* DPM-Solver++(2M) on the grid — the test checks it against the library — so training starts
from the tuned grid's own result. The differences (m_k − m_i) keep the scheme consistent for every value of the
coefficients (a constant data prediction is integrated exactly; the network-time shifts are the one deliberate
departure: ε is then read at another noise level than the data prediction assumes). This is the family S4S (Frankel et al. 2025) and
similar learned-solver work optimise; here it measures what the grid leaves on the table, on this network only.

``--affine`` also learns two scales per step, giving up consistency on purpose: the weight on x_i becomes
(σ_{i+1}/σ_i)·(1 + a_i) and the data-prediction update is multiplied by (1 + s_i) (the final step returns
(1 + s)·x̂0 + a·x/α) — a per-step affine correction of the network's estimate, as DPM-Solver-v3's empirical
model statistics are, learned from the teacher rather than estimated from data.

    python scripts/experiment_learned_solver.py --nfe 5,10                 # ~20 min on 2 busy cores
    python scripts/experiment_learned_solver.py --nfe 10 --iterations 600 --no-shift
    python scripts/experiment_learned_solver.py --nfe 5 --affine --iterations 600
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from torch import Tensor  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from samplers import NoiseSchedule, sample, tune_timesteps  # noqa: E402
from samplers.tuning import LogSNRGrid, TensorTimeModel, teacher_solve  # noqa: E402

BASE = "DPM-Solver++(2M)"
SHIFT_UNIT = 10.0  # one unit of a learned network-time shift, in timesteps (Adam's steps are ~lr units)


@dataclass
class Coefficients:
    """The learned corrections for an N-evaluation grid (all zero: DPM-Solver++(2M))."""
    predictor: Tensor  # (N, K−1)
    corrector: Tensor  # (N, K); row N−1 unused (no corrector after the final step)
    shift: Tensor  # (N,), network time offsets in SHIFT_UNIT timesteps
    x_scale: Tensor  # (N,), relative change of the weight on x_i (--affine; breaks consistency)
    m_scale: Tensor  # (N,), relative change of the weight on the data-prediction update (--affine)

    @classmethod
    def zeros(cls, evaluations: int, history: int) -> "Coefficients":
        def z(*shape):
            return torch.zeros(*shape, dtype=torch.float64, requires_grad=True)
        return cls(z(evaluations, history - 1), z(evaluations, history), z(evaluations), z(evaluations),
                   z(evaluations))

    def tensors(self) -> list:
        return [self.predictor, self.corrector, self.shift, self.x_scale, self.m_scale]


def _weighted(base: Tensor, anchor: Tensor, weights: Tensor, nodes: list) -> Tensor:
    """base + Σ_j weights_j·(nodes_j − anchor) over the nodes present."""
    out = base
    for w, n in zip(weights, nodes):
        out = out + w * (n - anchor)
    return out


def learned_solve(model, schedule: NoiseSchedule, timesteps: list, coef: Coefficients, x: Tensor, *,
                  use_shift: bool = True, use_corrector: bool = True, use_affine: bool = False) -> Tensor:
    """The scheme of the module docstring from x over ``timesteps`` (floats or 0-dim tensors, ending at −1),
    differentiable in the tensor timesteps and in ``coef``."""
    eps = TensorTimeModel(model)
    ts = [t if isinstance(t, Tensor) else torch.tensor(float(t), dtype=torch.float64) for t in timesteps[:-1]]
    n = len(ts)
    ab = torch.stack([schedule.alpha_bar_lerp_torch(t) for t in ts])
    alpha, sigma = ab.sqrt(), (1 - ab).sqrt()
    lam = 0.5 * (ab.log() - torch.log1p(-ab))
    history: list = []  # data predictions, newest first
    k = coef.corrector.shape[1]
    predicted = None  # x_i as the predictor left it, before its correction
    for i in range(n):
        t_net = ts[i] + SHIFT_UNIT * coef.shift[i] if use_shift else ts[i]
        m = (x - sigma[i] * eps(x, t_net.clamp(0.0, schedule.T - 1))) / alpha[i]
        if i > 0 and use_corrector:
            h = lam[i] - lam[i - 1]
            nodes = [m] + history[1:k]
            x = x + alpha[i] * (-torch.expm1(-h)) * _weighted(0, history[0], coef.corrector[i - 1], nodes)
        history.insert(0, m)
        del history[k:]
        if i == n - 1:
            m_last = history[0] + (x - predicted) / alpha[i] if predicted is not None and use_corrector else history[0]
            if len(history) == 1:
                end = m_last
            else:  # Lagrange extrapolation in u = ρ² of the last two data predictions to u = 0
                u0, u1 = (sigma[i] / alpha[i]) ** 2, (sigma[i - 1] / alpha[i - 1]) ** 2
                end = m_last * (u1 / (u1 - u0)) + history[1] * (u0 / (u0 - u1))
            out = _weighted(end, history[0], coef.predictor[i], history[1:])
            if use_affine:  # x̂0 ← (1 + s)·x̂0 + a·x/α: a per-step affine correction of the network's estimate
                out = (1 + coef.m_scale[i]) * out + coef.x_scale[i] * x / alpha[i]
            return out
        h = lam[i + 1] - lam[i]
        g = -torch.expm1(-h)
        if len(history) == 1:
            b = history[0]
        else:
            r = (lam[i] - lam[i - 1]) / h
            b = history[0] + (history[0] - history[1]) / (2 * r)
        update = _weighted(b, history[0], coef.predictor[i], history[1:])
        # without --affine the scales stay out of the graph (else Adam would move them, and the scheme with them)
        kx, km = (1 + coef.x_scale[i], 1 + coef.m_scale[i]) if use_affine else (1.0, 1.0)
        x = (sigma[i + 1] / sigma[i]) * kx * x + alpha[i + 1] * g * km * update
        predicted = x
    raise ValueError("timesteps needs at least two entries")


def log_loss(x: Tensor, ref: Tensor) -> Tensor:
    """The mean over samples of log MSE (``tune_timesteps``'s default loss)."""
    return (x.double() - ref.double()).pow(2).flatten(1).mean(1).clamp_min(1e-300).log().mean()


def train(model, schedule, grid: list, x_tune: Tensor, ref_tune: Tensor, *, iterations: int, lr: float,
          grid_lr: float, history: int, batch_size: int, holdout: int, eval_every: int, seed: int,
          use_shift: bool, use_corrector: bool, use_affine: bool = False):
    """(timesteps as floats, Coefficients) of the lowest held-out loss seen (the start included)."""
    grid_p = LogSNRGrid.from_grid(schedule, grid)
    coef = Coefficients.zeros(len(grid) - 1, history)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x_tune), generator=gen)
    held, fit = order[:holdout], order[holdout:]
    opt = torch.optim.Adam([{"params": coef.tensors(), "lr": lr}, {"params": [grid_p.logits], "lr": grid_lr}])
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(iterations, 1))
    kw = dict(use_shift=use_shift, use_corrector=use_corrector, use_affine=use_affine)

    def held_out() -> float:
        with torch.no_grad():
            return log_loss(learned_solve(model, schedule, grid_p.timesteps(), coef, x_tune[held], **kw),
                            ref_tune[held]).item()

    def snapshot():
        return grid_p.floats(), Coefficients(*(t.detach().clone() for t in coef.tensors()))

    best = (held_out(), snapshot())
    bar = tqdm(range(iterations), desc="learned solver", leave=False)
    for it in bar:
        idx = fit[torch.randperm(len(fit), generator=gen)[:batch_size]]
        loss = log_loss(learned_solve(model, schedule, grid_p.timesteps(), coef, x_tune[idx], **kw), ref_tune[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        decay.step()
        if (it + 1) % eval_every == 0 or it + 1 == iterations:
            value = held_out()
            bar.set_postfix(held_out_rms=f"{math.exp(value / 2):.3e}")
            if value < best[0]:
                best = (value, snapshot())
    return best[1]


def digits_setup(n_tune: int, n_test: int, seed: int):
    """The digits network, its schedule, tuning/test noise and teacher endpoints as scripts/bench_tuning.py has them."""
    from bench_tuned_fid import digits_network
    from runners.config import load_config
    from runners.frontier.fid_screen import DIGITS_CONFIG

    net = digits_network()
    schedule = NoiseSchedule.from_config(load_config(DIGITS_CONFIG)["Schedule"])
    x_tune = torch.randn(n_tune, 1, 8, 8, generator=torch.Generator().manual_seed(seed + 1))
    x_test = torch.randn(n_test, 1, 8, 8, generator=torch.Generator().manual_seed(seed + 2))
    return net, schedule, x_tune, x_test, teacher_solve(net, schedule, x_tune), teacher_solve(net, schedule, x_test)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nfe", default="5,10", help="comma-separated model-evaluation budgets")
    p.add_argument("--iterations", type=int, default=300, help="Adam steps (cosine-decayed learning rates)")
    p.add_argument("--lr", type=float, default=0.03, help="learning rate of the coefficients and shifts")
    p.add_argument("--grid-lr", type=float, default=0.02, help="learning rate of the grid's logits")
    p.add_argument("--history", type=int, default=3, help="data predictions each step combines (K ≥ 2)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--holdout", type=int, default=64, help="tuning noises held out to select the iterate")
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--n-tune", type=int, default=256)
    p.add_argument("--n-test", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-shift", action="store_true", help="no learned network time")
    p.add_argument("--no-corrector", action="store_true", help="predictor coefficients only")
    p.add_argument("--affine", action="store_true",
                   help="also learn per-step scales of x_i and of the data-prediction update (not consistent)")
    p.add_argument("--any-methods", default="all",
                   help="methods whose fixed spacings form 'best fixed of any method' (default: every one)")
    args = p.parse_args(argv)
    try:
        budgets = [int(v) for v in args.nfe.split(",") if v.strip()]
    except ValueError:
        p.error(f"--nfe must be comma-separated integers, got {args.nfe!r}")
    if args.history < 2 or args.iterations < 0 or not 0 < args.holdout < args.n_tune:
        p.error("need --history >= 2, --iterations >= 0 and 0 < --holdout < --n-tune")
    if args.threads:
        torch.set_num_threads(args.threads)
    from bench_tuning import fixed_table, median_rms, tunable_methods

    net, schedule, x_tune, x_test, ref_tune, ref_test = digits_setup(args.n_tune, args.n_test, args.seed)
    pool = tunable_methods() if args.any_methods == "all" else [m.strip() for m in args.any_methods.split(",")]
    print("| NFE | best fixed of any method | tuned grid (DPM-Solver++(2M)) | + learned coefficients | "
          "learned / best fixed | time |")
    print("|---|---|---|---|---|---|")
    for nfe in budgets:
        fixed = fixed_table(net, schedule, pool, nfe, x_test, ref_test)
        best_any = min(fixed, key=fixed.get)
        t0 = time.perf_counter()
        grid = tune_timesteps(net, schedule, BASE, nfe, x_tune, reference=ref_tune, seed=args.seed)
        tuned = median_rms(sample(net, x_test, schedule, BASE, timesteps=grid), ref_test)
        timesteps, coef = train(net, schedule, grid, x_tune, ref_tune, iterations=args.iterations, lr=args.lr,
                                grid_lr=args.grid_lr, history=args.history, batch_size=args.batch_size,
                                holdout=args.holdout, eval_every=args.eval_every, seed=args.seed,
                                use_shift=not args.no_shift, use_corrector=not args.no_corrector,
                                use_affine=args.affine)
        with torch.no_grad():
            out = torch.cat([learned_solve(net, schedule, timesteps, coef, x, use_shift=not args.no_shift,
                                           use_corrector=not args.no_corrector, use_affine=args.affine)
                               for x in x_test.split(128)])
        learned = median_rms(out, ref_test)
        print(f"| {nfe} | {best_any[0]}@{best_any[1]} {fixed[best_any]:.2e} | {tuned:.2e} | {learned:.2e} | "
              f"{learned / fixed[best_any]:.2f} | {time.perf_counter() - t0:.0f} s |", flush=True)
        print(f"  grid {[round(t, 1) for t in timesteps]}; network-time shifts (timesteps) "
              f"{[round(SHIFT_UNIT * float(s), 1) for s in coef.shift]}", flush=True)


if __name__ == "__main__":
    main()
