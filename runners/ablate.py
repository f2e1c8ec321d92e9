"""``main.py ablate``: sampler settings × seeds, each cell sampled, scored and cached; tables and a plot.

Every method starts from the same noise for a given seed (sample i's x_T depends only on (seed, i)), so the
differences between methods are paired. Besides FID each cell reports its RMS distance to a high-accuracy solution
from the same noise and the same start time t0: iPNDM (4th-order pseudo multistep) over every integer timestep
t0, t0−1, …, 0. It is deterministic and keeps separating methods after FID has saturated. The reference never
queries the network between integer timesteps: a DDPM trained on integer t has a sinusoidal time embedding whose
fastest component turns by a radian per step, so its output between integers is not to be trusted, and an
adaptive ODE solver would land there.

A cell is reused only when everything that changes its numbers is unchanged: the samples' identity (checkpoint,
method, steps, convention, precision, schedule, model, seed, count) and the score's (statistics file, feature
network and its weights, reference solution and its sample count). Samples made under other settings are refused
with the settings that differ; a changed score setting rescores the existing samples.

Each cell is one pass (``sampling.OnePass``): its images go to the feature network as they are sampled, and the
float samples its RMS needs are the ones the pass just made; only a cell resumed from an interrupted run reads
its earlier PNGs back, or re-samples its first ``reference_samples`` images.
"""
from __future__ import annotations

import contextlib
import math

import torch

from samplers import get_method, plan, sample

from .distributed import main_owns, session
from .evaluate import fid_of_sample_folder, load_extractor
from .files import as_json, read_json, write_json_atomic
from .jobs import AblateJob, Sampling, is_centered
from .sampling import OnePass, check_folder, initial_noise, sample_into
from .setup import load_eps
from .tables import write_results

CELL_FILE = "cell.json"
REFERENCE = "iPNDM over every integer timestep from the cell's start"


def cell_identity(job: AblateJob, cell: Sampling, seed: int) -> dict:
    """Everything that changes a cell's numbers."""
    return as_json({
        "samples": {**job.sample_job(cell, seed).identity(), "num_samples": job.num_samples},
        "score": {**job.fid.identity(), "reference": REFERENCE, "reference_samples": job.reference_samples,
                  # RMS of a centered: false model in [-1, 1] units since 2026-12-02: its cached cells are rescored
                  **({} if is_centered(job.config) else {"rms_units": "[-1, 1]"})},
    })


def run_ablation(job: AblateJob) -> list:
    """Sample and score every missing cell, then write the tables; returns the rows (on rank 0)."""
    with session(job.device) as dist, contextlib.ExitStack() as stack:
        extractor = load_extractor(job.fid, dist.device)  # before any sampling; every rank streams features

        def start(own) -> None:  # refuse folders of other settings before any work
            for seed in job.seeds:
                for cell in job.cells:
                    check_folder(job.cell_dir(cell, seed), job.sample_job(cell, seed))

        own = main_owns(dist, stack, job.out, start=start)
        eps = load_eps(job.model, job.config, dist.device)
        rows = []
        for seed in job.seeds:
            references = References(job, seed, eps, dist.device, [
                cell for cell in job.cells
                if read_json(job.cell_dir(cell, seed) / CELL_FILE).get("identity") != cell_identity(job, cell, seed)])
            for cell in job.cells:
                folder, identity = job.cell_dir(cell, seed), cell_identity(job, cell, seed)
                row = read_json(folder / CELL_FILE)
                if row.get("identity") != identity:
                    one_pass = OnePass(extractor, keep=min(job.num_samples, job.reference_samples))
                    manifest = sample_into(job.sample_job(cell, seed), eps, dist, one_pass=one_pass)
                    stats = one_pass.statistics(dist)
                    if dist.is_main:
                        row = score_cell(job, cell, seed, manifest, eps, extractor, references, dist.device,
                                         stats, one_pass)
                        row["identity"] = identity
                        write_json_atomic(folder / CELL_FILE, row)
                own.keep = True
                if dist.is_main:
                    rows.append(row)
                    print(f"seed {seed} {cell.label:>7} {cell.steps or '':>4}: NFE {row['nfe']}, "
                          f"FID {row['fid']:.3f}, RMS to reference {row['rms']:.4g}")
        if dist.is_main:
            floors = noise_floor(job, extractor) if job.noise_floor_split else []
            write_results(job.out, rows, floors)
    return rows


def score_cell(job: AblateJob, cell: Sampling, seed: int, manifest: dict, eps, extractor, references: "References",
               device, stats=None, one_pass: OnePass = None) -> dict:
    folder = job.cell_dir(cell, seed)
    fid = fid_of_sample_folder(folder, job.fid, extractor, job.image_shape, write=False, stats=stats)["fid"]
    rms = distance_to_reference(job, cell, seed, eps, references, device, one_pass)
    return {"method": cell.label, "steps": cell.steps, "nfe": manifest["nfe"], "seed": seed, "fid": fid,
            "rms": rms, "seconds": manifest["seconds"], "num_samples": job.num_samples,
            "checkpoint_sha256": job.model.checkpoint_sha256, "reference": REFERENCE}


def distance_to_reference(job: AblateJob, cell: Sampling, seed: int, eps, references: "References", device,
                          one_pass: OnePass = None) -> float:
    """RMS (in [-1, 1] pixel units) between the cell's first ``reference_samples`` samples (float) and the
    high-accuracy ODE solution from the same noise and start time. NaN for stochastic methods, and for the
    released code's convention, whose grids read ā one step later and end at ā[0], not at the data the reference
    reaches: the distance would measure the convention, not the solver (0.0038 against 0.0021 for F-PNDM-200).

    The samples are the ones this run's sampling pass made (same noise, same code); they are re-sampled when the
    pass did not make them all (a resumed cell, a torchrun rank's share) and always for the adaptive PF, whose
    step control sees the whole batch, so that its RMS does not depend on the batch size."""
    if get_method(cell.method).eta or cell.eta or cell.convention == "official":
        return float("nan")
    kept = one_pass.kept_samples() if one_pass is not None and not get_method(cell.method).adaptive else None
    if kept is not None:
        x0, t0 = kept.to(device), one_pass.t_start
    else:
        runs = [sample(eps, chunk, job.schedule, **cell.sample_kwargs(), return_info=True)
                for chunk in references.x_T.split(256)]
        x0, t0 = torch.cat([x for x, _ in runs]), runs[0][1].t_start
    # in [-1, 1] units whatever the model's range: data in [0, 1] (centered: false) count twice, like their pixels
    scale = 1.0 if is_centered(job.config) else 2.0
    return scale * float(((x0.double() - references.get(t0).double()) ** 2).mean().sqrt())


class References:
    """A seed's high-accuracy solutions, one per start time t0, solved together when the first is needed.

    Each is iPNDM over every integer timestep from t0 (steps = t0 + 1 > T/2 makes the standard grid t0, t0−1, …,
    0), from the seed's first ``reference_samples`` noises. The default cells start at four times (800, 900, 950,
    980: 3,634 network calls of 64 samples one after another); solved together (``solve_together``) they take
    981 calls of up to 256, each solve getting the numbers it gets alone (a network's output for a sample does not
    depend on the other samples in the batch: checked bit for bit by tests/runners/test_streamed_fid.py)."""

    def __init__(self, job: AblateJob, seed: int, eps, device, cells=()):
        self.job, self.eps = job, eps
        self.x_T = initial_noise(range(min(job.num_samples, job.reference_samples)), job.image_shape, seed).to(device)
        self.expected = {t for t in map(self._start, cells) if t is not None}
        self.solved: dict = {}

    def _start(self, cell: Sampling):
        """The cell's first model timestep when it has an RMS (deterministic grid methods), else None."""
        if getattr(cell, "timesteps", None) is not None:  # a tuned grid starts where its file says: asked later
            return None
        try:
            p = plan(cell.method, self.job.schedule, cell.steps, cell.convention, eta=cell.eta)
        except (ValueError, TypeError):  # a setting plan() alone cannot place: solved when the cell asks
            return None
        return None if p.eta or p.method.adaptive else p.t_start

    def get(self, t0: float) -> torch.Tensor:
        if t0 not in self.solved:
            starts = sorted({t0} | self.expected - set(self.solved))
            solves = [lambda model, t=t: torch.cat([sample(model, chunk, self.job.schedule, **reference_grid(t))
                                                    for chunk in self.x_T.split(256)])
                      for t in starts]
            self.solved.update(zip(starts, solve_together(self.eps, solves)))
        return self.solved[t0]


def reference_grid(t0: float) -> dict:
    """``sample`` keywords of the high-accuracy solve from t0: iPNDM over unit steps t0, t0−1, …, t0 − ⌊t0⌋, then
    to −1 — for an integer t0 every integer timestep down to 0 (the paper's grid of t0 + 1 steps when t0 ≥ T/2);
    from a fractional t0 (a tuned grid file's start) the flow from that start, not from ⌊t0⌋."""
    return {"method": "iPNDM", "timesteps": [float(t0) - k for k in range(math.floor(t0) + 1)] + [-1.0]}


def solve_together(eps, solves: list) -> list:
    """Run ``solves`` (each a function of a model that it calls one batch at a time) on threads, answering their
    model calls together: every round waits for one call from each unfinished solve and makes one network call of
    all of them, in solve order. Returns the solves' results in order; the first error of any solve is raised."""
    import queue
    import threading

    requests: queue.Queue = queue.Queue()
    results: list = [None] * len(solves)

    def run(j: int) -> None:
        reply: queue.Queue = queue.Queue(maxsize=1)

        def model(x, t):
            requests.put(("call", j, (x, t), reply))
            answer = reply.get()
            if isinstance(answer, BaseException):
                raise answer
            return answer

        try:
            results[j] = solves[j](model)
            requests.put(("done", j, None, None))
        except BaseException as e:  # reported to the caller's thread, which raises it
            requests.put(("error", j, e, None))

    threads = [threading.Thread(target=run, args=(j,), daemon=True, name=f"reference-{j}")
               for j in range(len(solves))]
    for thread in threads:
        thread.start()
    active, waiting, error = len(solves), {}, None
    while active:
        kind, j, payload, reply = requests.get()
        if kind == "call":
            waiting[j] = (payload, reply)
        else:
            active -= 1
            error = error or (payload if kind == "error" else None)
        if active and len(waiting) == active:
            order = sorted(waiting)
            if error is not None:  # stop the others: their next model call raises
                for k in order:
                    waiting[k][1].put(RuntimeError("stopped: another reference solve failed"))
            else:
                x = torch.cat([waiting[k][0][0] for k in order])
                t = torch.cat([waiting[k][0][1] for k in order])
                for k, out in zip(order, eps(x, t).split([len(waiting[k][0][0]) for k in order])):
                    waiting[k][1].put(out)
            waiting = {}
    for thread in threads:
        thread.join()
    if error is not None:
        raise error
    return results


def noise_floor(job: AblateJob, extractor) -> list:
    """FID of ``num_samples`` real training images drawn with replacement (one draw per seed) against the
    reference statistics: the best FID a perfect sampler could get at this sample count."""
    from .datasets import image_dataset
    from .fid import batch_stats, fid_from_stats

    data = image_dataset(job.config, job.noise_floor_split)
    num, floors = job.num_samples, []
    for seed in job.seeds:
        idx = torch.randint(len(data), (num,), generator=torch.Generator().manual_seed(seed)).tolist()
        batches = (torch.stack([data[i][0] for i in idx[lo:lo + 1000]]) for lo in range(0, num, 1000))
        floors.append(fid_from_stats(batch_stats(extractor, batches, num, progress=False), job.fid.reference,
                                     extractor.name))
    print(f"noise floor (real vs real, {num} images): " + ", ".join(f"{f:.3f}" for f in floors))
    return floors
