"""``main.py tune-solver``: learn a solver (grid, coefficients, network times) for one network at a given NFE, compare
it on noise the learning never saw with the tuned grid it starts from and with every fixed spacing of the compared
methods, and write it as a solver file (runners/solver_files.py).

Noise: the same streams as ``tune-grid`` (runners/tune.py, ``tuning_inputs``): tuning from TUNE_STREAM, the
comparison from EVAL_STREAM, neither of which ``main.py sample`` draws from.
"""
from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from samplers import learn_solver, sample, tune_timesteps
from samplers.learned import BASE
from samplers.solver_tuning import grid_stage_holdout
from samplers.tuning import check_differentiable

from .errors import ArgumentError
from .files import OutputLock, write_json_atomic
from .jobs import TuneSolverJob
from .sampling import versions
from .solver_files import FORMAT
from .tune import fixed_spacings, largest_steps, rms_per_sample, summary, teacher_of, tuning_inputs


def run_tune_solver_job(job: TuneSolverJob) -> dict:
    # two runs into one file: the second is refused, not silently last
    with OutputLock.for_file(job.out):
        return _run(job)


def _bar(desc: str, total: int):
    bar = tqdm(total=total, desc=desc, unit="it", dynamic_ncols=True)

    def progress(state: dict) -> None:
        if state["iteration"] == 1 and bar.n:  # learning started again with smaller steps (learn_solver)
            bar.reset()
        bar.set_postfix(held_out=f"{state['held_out_loss']:.3g}")
        bar.update(1)
    return bar, progress


def _run(job: TuneSolverJob) -> dict:
    start = time.perf_counter()
    _, eps, x_T, x_eval = tuning_inputs(job)
    try:
        check_differentiable(eps, x_T, job.schedule.T)  # before any progress bar: its error is one line
    except ValueError as e:
        raise ArgumentError(str(e)) from None
    reference = teacher_of(eps, job, x_T)
    bar, progress = _bar(f"tuning the {BASE} grid at NFE {job.nfe}", 40)
    with bar:
        grid, grid_info = tune_timesteps(eps, job.schedule, BASE, job.nfe, x_T, reference=reference, seed=job.seed,
                                         holdout=grid_stage_holdout(len(x_T), job.holdout), callback=progress,
                                         return_info=True)
    bar, progress = _bar(f"learning the solver at NFE {job.nfe}", job.iterations)
    with bar:
        solver, info = learn_solver(eps, job.schedule, job.nfe, x_T, reference=reference, grid=grid,
                                    iterations=job.iterations, history=job.history, affine=job.affine,
                                    holdout=job.holdout, seed=job.seed, callback=progress, return_info=True)
    learning_seconds = time.perf_counter() - start
    comparison = compare(eps, job, solver, grid, x_eval, teacher_of(eps, job, x_eval))
    result = {
        "format": FORMAT, "solver": solver.as_dict(), "nfe": solver.nfe, "checkpoint": job.model.checkpoint,
        "checkpoint_sha256": job.model.checkpoint_sha256, "schedule": job.config.get("Schedule", {}),
        "seed": job.seed, "num_samples": job.num_samples, "affine": job.affine, "history": job.history,
        "grid_tuning": grid_info.as_dict(), "learning": info.as_dict(), "comparison": comparison,
        "seconds": {"learning": learning_seconds, "total": time.perf_counter() - start},
        "threads": torch.get_num_threads(),
        "config": job.config, "versions": versions(), "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_json_atomic(job.out, result)
    learned, best = comparison["learned"], comparison["fixed"][comparison["best_fixed"]]
    print(f"learned solver at NFE {solver.nfe}: grid {', '.join(f'{t:.6g}' for t in solver.timesteps)}")
    print(f"on {comparison['samples']} noises not used for learning, median RMS to the reference: learned "
          f"{learned['median_rms']:.4g}, tuned grid ({BASE}) {comparison['tuned_grid']['median_rms']:.4g}, best "
          f"fixed spacing {comparison['best_fixed']} {best['median_rms']:.4g} "
          f"({learned['median_rms'] / best['median_rms']:.2f}×); learning took {learning_seconds:.0f} s → {job.out}")
    return result


def compare(eps, job: TuneSolverJob, solver, grid: list, x_T: torch.Tensor, reference: torch.Tensor) -> dict:
    """The learned solver, the tuned grid it started from, and every fixed spacing of ``job.compare`` at the
    same NFE, by RMS to the teacher on the comparison noise; the best fixed one by the median sample."""

    def distances(**kwargs):
        with torch.no_grad():
            out = torch.cat([sample(eps, chunk, job.schedule, **kwargs) for chunk in x_T.split(job.batch_size)])
        return rms_per_sample(out, reference)

    fixed = {}
    for method in job.compare:
        steps = largest_steps(method, job.nfe, job.schedule.T)
        if steps >= 1:
            fixed.update({name: summary(distances(method=name, steps=steps)) for name in fixed_spacings(method)})
    best = min(fixed, key=lambda name: fixed[name]["median_rms"])
    return {"samples": int(x_T.shape[0]), "learned": summary(distances(method=solver)),
            "tuned_grid": summary(distances(method=BASE, timesteps=grid)), "fixed": fixed, "best_fixed": best}
