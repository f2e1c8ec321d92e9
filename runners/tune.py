"""``main.py tune-grid``: learn a time grid for one network and method at a given NFE, then compare it with every
fixed spacing of the same method on noise the tuning never saw, and write it as a grid file.

Noise: the tuning draws sample i from (seed, i, TUNE_STREAM) and the comparison from (seed, i, EVAL_STREAM) —
streams that ``main.py sample`` never uses (it draws from streams 0 and 1, runners/sampling.py), so a tuned grid is
never scored on the noise it was tuned on.
"""
from __future__ import annotations

import math
import time

import torch
from tqdm.auto import tqdm

from samplers import get_method, sample, search_timesteps, tune_timesteps
from samplers.grids import SPACINGS
from samplers.tuning import check_differentiable, teacher_solve

from .errors import ArgumentError, UserError
from .files import OutputLock, write_json_atomic
from .grid_files import FORMAT
from .jobs import TuneJob, is_centered
from .sampling import versions
from .seeds import derive_seed
from .setup import resolve_device

TUNE_STREAM, EVAL_STREAM = 2, 3


def stream_noise(count: int, shape: tuple, seed: int, stream: int) -> torch.Tensor:
    """``count`` noise images, image i from its own generator seeded by (seed, i, stream); float32 on the CPU."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(derive_seed(seed, i, stream)))
                        for i in range(count)])


def load_network(job: TuneJob, device: torch.device):
    """The checkpoint as a differentiable ε(x, t): fp32, eager, weights frozen (only the grid is learned)."""
    from models import CheckpointError, load_model

    try:
        model = load_model(job.config, job.model.checkpoint, trust_pickle=job.model.trust_checkpoint, device=device)
    except CheckpointError as e:
        raise UserError(str(e)) from None
    model.requires_grad_(False)
    return lambda x, t: model(x, t)


def teacher_of(eps, job, x: torch.Tensor) -> torch.Tensor:
    """The teacher's endpoints for the noises x, in chunks of the job's batch size."""
    with torch.no_grad():
        return torch.cat([teacher_solve(eps, job.schedule, chunk) for chunk in x.split(job.batch_size)])


def rms_per_sample(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """RMS distance of each sample to its reference (pixel units of the model's data, [-1, 1] for most)."""
    return ((x.double() - reference.double()) ** 2).flatten(1).mean(1).sqrt()


def summary(distances: torch.Tensor) -> dict:
    """The two numbers a grid is judged by: RMS over every pixel of every sample, and the median sample's RMS."""
    return {"rms": float(distances.pow(2).mean().sqrt()), "median_rms": float(distances.median())}


def fixed_spacings(method: str) -> list:
    """The method on the paper's grid and on every spacing: the fixed grids a tuned one must beat."""
    base = method.split("@")[0]
    return [f"{base}@{spacing}" for spacing in ("paper",) + SPACINGS]


def largest_steps(method: str, nfe: int, T: int) -> int:
    """The most steps of ``method`` within ``nfe`` evaluations and the schedule's T timesteps (0 when not even
    one step fits: F-PNDM's first step costs 4)."""
    m = get_method(method)
    return max((s for s in range(1, min(nfe, T) + 1) if m.nfe(s) <= nfe), default=0)


def compare(eps, job: TuneJob, grid: list, x_T: torch.Tensor, reference: torch.Tensor) -> dict:
    """The tuned grid and every fixed spacing of its method at the same NFE, on the comparison noise."""
    base = job.method.split("@")[0]

    def distances(**kwargs):
        with torch.no_grad():
            out = torch.cat([sample(eps, chunk, job.schedule, **kwargs) for chunk in x_T.split(job.batch_size)])
        return rms_per_sample(out, reference)

    fixed = {name: summary(distances(method=name, steps=largest_steps(name, job.nfe, job.schedule.T)))
             for name in fixed_spacings(job.method)}
    # judged by the median sample: the mean of squares is decided by the few samples that change mode at this
    # NFE (they land near another digit whatever the grid), which no grid fixes
    best = min(fixed, key=lambda name: fixed[name]["median_rms"])
    return {"samples": int(x_T.shape[0]), "tuned": summary(distances(method=base, timesteps=grid)),
            "fixed": fixed, "best_fixed": best}


def run_tune_job(job: TuneJob) -> dict:
    # two tunings into one file: the second is refused, not silently last
    with OutputLock.for_file(job.out):
        return _run_tune_job(job)


def tuning_inputs(job) -> tuple:
    """(device, differentiable ε, tuning noise, comparison noise) of a tune-grid or tune-solver job."""
    device = resolve_device(job.device)
    eps = load_network(job, device)
    x_T = stream_noise(job.num_samples, job.image_shape, job.seed, TUNE_STREAM).to(device)
    x_eval = stream_noise(job.eval_samples, job.image_shape, job.seed, EVAL_STREAM).to(device)
    return device, eps, x_T, x_eval


def _run_tune_job(job: TuneJob) -> dict:
    start = time.perf_counter()
    device, eps, x_T, x_eval = tuning_inputs(job)
    run = search_on_fid if job.objective == "fid" else tune_on_teacher
    grid, info, comparison, summary_line = run(job, eps, x_T, x_eval, device)
    tuning_seconds = info.seconds
    result = {
        "format": FORMAT, "timesteps": [float(t) for t in grid], "method": job.method.split("@")[0],
        "started_from": job.method, "nfe": get_method(job.method).nfe(len(grid) - 1), "nfe_budget": job.nfe,
        "steps": len(grid) - 1, "checkpoint": job.model.checkpoint, "checkpoint_sha256": job.model.checkpoint_sha256,
        "schedule": job.config.get("Schedule", {}), "seed": job.seed, "num_samples": job.num_samples,
        "objective": job.objective, ("search" if job.objective == "fid" else "loss"): info.as_dict(),
        "comparison": comparison, "seconds": {"tuning": tuning_seconds, "total": time.perf_counter() - start},
        "threads": torch.get_num_threads(),
        "config": job.config, "versions": versions(), "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_json_atomic(job.out, result)
    print(f"{result['method']} at NFE {result['nfe']}: tuned grid {', '.join(f'{t:.6g}' for t in grid)}")
    print(f"{summary_line}; tuning took {tuning_seconds:.0f} s → {job.out}")
    return result


def tune_on_teacher(job: TuneJob, eps, x_T, x_eval, device):
    """``samplers.tune_timesteps``; compared with the fixed spacings by median RMS to the teacher."""
    kwargs = dict(loss=job.loss, learn_first=job.learn_first, last=job.last)
    if job.iterations is not None:
        kwargs["iterations"] = job.iterations
    try:
        check_differentiable(eps, x_T, job.schedule.T)  # before the progress bar: its error is one line
    except ValueError as e:
        raise ArgumentError(str(e)) from None
    with tqdm(total=job.iterations, desc=f"tuning {job.method} at NFE {job.nfe}", unit="it",
              dynamic_ncols=True) as bar:
        def progress(state: dict) -> None:
            if state.get("iterations"):
                bar.total = state["iterations"]
            bar.set_postfix(train=f"{state['train_loss']:.3g}", held_out=f"{state['held_out_loss']:.3g}")
            bar.update(1)

        try:
            grid, info = tune_timesteps(eps, job.schedule, job.method, job.nfe, x_T, seed=job.seed,
                                        callback=progress, return_info=True, **kwargs)
        except ValueError as e:  # the library's checks of user input (method, NFE, a model without dt gradients)
            raise ArgumentError(str(e)) from None
    reference = teacher_of(eps, job, x_eval)
    comparison = compare(eps, job, grid, x_eval, reference)
    tuned, best = comparison["tuned"], comparison["fixed"][comparison["best_fixed"]]
    line = (f"on {comparison['samples']} noises not used for tuning, median RMS to the reference: tuned "
            f"{tuned['median_rms']:.4g}, best fixed spacing {comparison['best_fixed']} {best['median_rms']:.4g} "
            f"({tuned['median_rms'] / best['median_rms']:.2f}×; RMS over all samples {tuned['rms']:.4g} vs "
            f"{best['rms']:.4g})")
    return grid, info, comparison, line


def fid_of_grid(eps, job: TuneJob, extractor, x_T, **kwargs) -> float:
    """FID (against ``job.fid``'s statistics) of ``job.method``'s samples from x_T; inf when they are not finite
    (a grid the search must avoid, not an error)."""
    from .fid import fid_from_features
    from .images import to_uint8

    with torch.no_grad():
        x0 = torch.cat([sample(eps, chunk, job.schedule, **kwargs) for chunk in x_T.split(job.batch_size)])
    if not torch.isfinite(x0).all():
        return math.inf
    # the pixels `sample` writes: a score-SDE model with centered: false makes data in [0, 1]
    return fid_from_features(extractor(to_uint8(x0, is_centered(job.config))).numpy(), job.fid.reference,
                             extractor.name)


def search_on_fid(job: TuneJob, eps, x_T, x_eval, device):
    """``samplers.search_timesteps`` on the FID of the tuning noise's samples; compared with the fixed spacings by
    FID on the evaluation noise."""
    from .evaluate import load_extractor

    extractor = load_extractor(job.fid, device)
    base = job.method.split("@")[0]
    kwargs = {} if job.evaluations is None else {"evaluations": job.evaluations}
    with tqdm(desc=f"searching {job.method} at NFE {job.nfe} on FID", unit="FID", dynamic_ncols=True) as bar:
        def progress(state: dict) -> None:
            bar.total = state["evaluations"]
            bar.set_postfix(fid=f"{state['objective']:.3g}", best=f"{state['best']:.3g}")
            bar.update(1)

        try:
            grid, info = search_timesteps(lambda g: fid_of_grid(eps, job, extractor, x_T, method=base, timesteps=g),
                                          job.schedule, job.method, job.nfe, learn_first=job.learn_first,
                                          last=job.last, callback=progress, return_info=True, **kwargs)
        except ValueError as e:
            raise ArgumentError(str(e)) from None
    fixed = {name: {"fid": fid_of_grid(eps, job, extractor, x_eval, method=name,
                                       steps=largest_steps(name, job.nfe, job.schedule.T))}
             for name in fixed_spacings(job.method)}
    best = min(fixed, key=lambda name: fixed[name]["fid"])
    tuned = fid_of_grid(eps, job, extractor, x_eval, method=base, timesteps=grid)
    comparison = {"samples": int(x_eval.shape[0]), "tuned": {"fid": tuned}, "fixed": fixed, "best_fixed": best,
                  "extractor_sha256": extractor.weights_sha256, "stats_sha256": job.fid.stats_sha256}
    line = (f"on {comparison['samples']} noises not used for the search, FID: searched {tuned:.4g}, best fixed "
            f"spacing {best} {fixed[best]['fid']:.4g} ({tuned / fixed[best]['fid']:.2f}×)")
    return grid, info, comparison, line
