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
"""
from __future__ import annotations

import contextlib

import torch

from samplers import get_method, sample

from .distributed import main_owns, session
from .evaluate import fid_of_sample_folder, load_extractor
from .files import as_json, read_json, write_json_atomic
from .jobs import AblateJob, Sampling
from .sampling import check_folder, initial_noise, sample_into
from .setup import load_eps
from .tables import write_results

CELL_FILE = "cell.json"
REFERENCE = "iPNDM over every integer timestep from the cell's start"


def cell_identity(job: AblateJob, cell: Sampling, seed: int) -> dict:
    """Everything that changes a cell's numbers."""
    return as_json({
        "samples": {**job.sample_job(cell, seed).identity(), "num_samples": job.num_samples},
        "score": {**job.fid.identity(), "reference": REFERENCE, "reference_samples": job.reference_samples},
    })


def run_ablation(job: AblateJob) -> list:
    """Sample and score every missing cell, then write the tables; returns the rows (on rank 0)."""
    with session(job.device) as dist, contextlib.ExitStack() as stack:
        extractor = load_extractor(job.fid, dist.device) if dist.is_main else None  # before any sampling

        def start(own) -> None:  # refuse folders of other settings before any work
            for seed in job.seeds:
                for cell in job.cells:
                    check_folder(job.cell_dir(cell, seed), job.sample_job(cell, seed))

        own = main_owns(dist, stack, job.out, start=start)
        eps = load_eps(job.model, job.config, dist.device)
        rows = []
        for seed in job.seeds:
            references = {}
            for cell in job.cells:
                folder, identity = job.cell_dir(cell, seed), cell_identity(job, cell, seed)
                row = read_json(folder / CELL_FILE)
                if row.get("identity") != identity:
                    sample_job = job.sample_job(cell, seed)
                    manifest = sample_into(sample_job, eps, dist)
                    if dist.is_main:
                        row = score_cell(job, cell, seed, manifest, eps, extractor, references, dist.device)
                        row["identity"] = identity
                        write_json_atomic(folder / CELL_FILE, row)
                own.keep = True
                if dist.is_main:
                    rows.append(row)
                    print(f"seed {seed} {cell.method:>7} {cell.steps or '':>4}: NFE {row['nfe']}, "
                          f"FID {row['fid']:.3f}, RMS to reference {row['rms']:.4g}")
        if dist.is_main:
            floors = noise_floor(job, extractor) if job.noise_floor_split else []
            write_results(job.out, rows, floors)
    return rows


def score_cell(job: AblateJob, cell: Sampling, seed: int, manifest: dict, eps, extractor, references: dict,
               device) -> dict:
    folder = job.cell_dir(cell, seed)
    fid = fid_of_sample_folder(folder, job.fid, extractor, job.image_shape, write=False)["fid"]
    rms = distance_to_reference(job, cell, seed, eps, references, device)
    return {"method": cell.method, "steps": cell.steps, "nfe": manifest["nfe"], "seed": seed, "fid": fid,
            "rms": rms, "seconds": manifest["seconds"], "num_samples": job.num_samples,
            "checkpoint_sha256": job.model.checkpoint_sha256, "reference": REFERENCE}


def distance_to_reference(job: AblateJob, cell: Sampling, seed: int, eps, references: dict, device) -> float:
    """RMS (in [-1, 1] pixel units) between the cell's first ``reference_samples`` samples (float, re-sampled) and
    the high-accuracy ODE solution from the same noise and start time. NaN for stochastic methods."""
    if get_method(cell.method).eta or cell.eta:
        return float("nan")
    n = min(job.num_samples, job.reference_samples)
    x_T = initial_noise(range(n), job.image_shape, seed).to(device)
    runs = [sample(eps, chunk, job.schedule, cell.method, cell.steps, cell.convention, return_info=True)
            for chunk in x_T.split(256)]
    x0, t0 = torch.cat([x for x, _ in runs]), runs[0][1].t_start
    if t0 not in references:
        # steps = t0 + 1 > T/2 makes the standard grid t0, t0−1, …, 0 (skip 1), starting where the cell starts
        references[t0] = torch.cat([sample(eps, chunk, job.schedule, "iPNDM@paper", steps=int(t0) + 1)
                                    for chunk in x_T.split(256)])
    return float(((x0.double() - references[t0].double()) ** 2).mean().sqrt())


def noise_floor(job: AblateJob, extractor) -> list:
    """FID of ``num_samples`` real training images drawn with replacement (one draw per seed) against the
    reference statistics: the best FID a perfect sampler could get at this sample count."""
    from .datasets import image_dataset
    from .features import extract_features
    from .fid import fid_from_features

    data = image_dataset(job.config, job.noise_floor_split)
    num, floors = job.num_samples, []
    for seed in job.seeds:
        idx = torch.randint(len(data), (num,), generator=torch.Generator().manual_seed(seed)).tolist()
        batches = (torch.stack([data[i][0] for i in idx[lo:lo + 1000]]) for lo in range(0, num, 1000))
        features = extract_features(extractor, batches, num, progress=False)
        floors.append(fid_from_features(features, job.fid.reference, extractor.name))
    print(f"noise floor (real vs real, {num} images): " + ", ".join(f"{f:.3f}" for f in floors))
    return floors

