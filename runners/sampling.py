"""``main.py sample``: images to a folder of PNG files — per-sample seeds, atomic writes, resume, torchrun shards.

Sample i starts from noise drawn by its own generator seeded from (seed, i) — and, for stochastic samplers,
draws its per-step noise from a second generator seeded the same way — so an image depends on neither the batch
size, nor the number of processes, nor on where an interrupted run stopped.
"""
from __future__ import annotations

import contextlib
import platform
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from samplers import sample

from .distributed import Dist, main_owns, session
from .errors import ModelOutputError, OutputError
from .features import list_images
from .files import as_json, read_json, write_json_atomic
from .images import sample_path, to_uint8, write_png
from .jobs import SampleJob
from .seeds import derive_seed
from .setup import load_eps

MANIFEST = "manifest.json"
NOISE_STREAM, SAMPLER_STREAM = 0, 1


def initial_noise(indices, shape, seed: int) -> torch.Tensor:
    """x_T for the given sample indices, float32 on the CPU (identical on every machine and device)."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(derive_seed(seed, i, NOISE_STREAM)))
                        for i in indices])


def sampler_generators(indices, seed: int) -> list:
    """One generator per sample for a stochastic sampler's per-step noise."""
    return [torch.Generator().manual_seed(derive_seed(seed, i, SAMPLER_STREAM)) for i in indices]


def versions() -> dict:
    import scipy

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "scipy": scipy.__version__, "commit": _git_commit()}


def _git_commit() -> Optional[str]:
    head = Path(__file__).resolve().parents[1] / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            return (head.parent / ref[5:]).read_text().strip()
        return ref
    except OSError:
        return None


def samples_present(out_dir: Path) -> bool:
    return any(list_images(out_dir)) if out_dir.is_dir() else False


def check_folder(out_dir: Path, job: SampleJob) -> bool:
    """Refuse a folder that holds samples of another configuration, or more samples than asked for; returns
    whether it holds samples this run continues. A manifest without samples (a run that never wrote one) is
    simply replaced."""
    manifest = out_dir / MANIFEST
    present = samples_present(out_dir)
    if not manifest.exists():
        if present:
            raise OutputError(f"{out_dir} holds images but no {MANIFEST}; choose an empty --out")
        return False
    old = read_json(manifest)
    if not old:
        if present:
            raise OutputError(f"{manifest} is unreadable; choose another --out")
        return False
    mine = as_json(job.identity())
    theirs = old.get("identity", {})
    if theirs != mine and present:
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        raise OutputError(f"{out_dir} holds samples from a different configuration (differs in: {', '.join(diff)}); "
                          f"choose another --out")
    if present and old.get("num_samples", 0) > job.num_samples:
        raise OutputError(f"{out_dir} holds {old['num_samples']} samples, more than --num-samples "
                          f"{job.num_samples}; choose another --out")
    return present


def write_manifest(out_dir: Path, job: SampleJob, nfe: Optional[int], status: str, seconds: float = 0.0) -> None:
    s = job.sampling
    write_json_atomic(out_dir / MANIFEST, {
        "status": status, "identity": job.identity(), "method": s.method, "steps": s.steps,
        "convention": s.convention, "nfe": nfe, "num_samples": job.num_samples, "seed": job.seed,
        "checkpoint": job.model.checkpoint, "checkpoint_sha256": job.model.checkpoint_sha256,
        "precision": job.model.precision, "seconds": seconds, "config": job.config, "versions": versions(),
        "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })


def sample_into(job: SampleJob, eps: Callable, dist: Dist, progress: bool = True) -> dict:
    """Write the images 0..num_samples−1 that are missing from ``job.out``; returns the manifest.

    Ranks take the indices i ≡ rank (mod world); a rerun of the same command skips finished images. Rank 0 owns
    the folder (a lock) while the job runs; a run that fails before writing an image leaves nothing behind.
    """
    out_dir = Path(job.out)

    def start(own) -> None:
        own.keep = check_folder(out_dir, job)
        previous = read_json(out_dir / MANIFEST) if own.keep else {}
        write_manifest(out_dir, job, previous.get("nfe", job.sampling.nfe), "running", previous.get("seconds", 0.0))

    with contextlib.ExitStack() as stack:
        own = main_owns(dist, stack, out_dir, (MANIFEST,), start)
        nfe, elapsed = _write_images(job, eps, dist, own, progress)
        dist.barrier()
        if dist.is_main:
            previous = read_json(out_dir / MANIFEST)
            missing = [i for i in range(job.num_samples) if not sample_path(out_dir, i, job.num_samples).exists()]
            if missing:
                raise RuntimeError(f"{len(missing)} samples are missing after sampling (first: {missing[0]})")
            nfe = nfe if nfe is not None else previous.get("nfe")
            write_manifest(out_dir, job, nfe, "complete", previous.get("seconds", 0.0) + elapsed)
        dist.barrier()
    return read_json(out_dir / MANIFEST)


def _write_images(job: SampleJob, eps: Callable, dist: Dist, own, progress: bool) -> tuple[Optional[int], float]:
    s, out_dir = job.sampling, Path(job.out)
    todo = [i for i in range(dist.rank, job.num_samples, dist.world)
            if not sample_path(out_dir, i, job.num_samples).exists()]
    nfe = None
    start = time.perf_counter()
    with tqdm(total=len(todo), desc=f"{s.method} {s.steps or ''}".strip(), unit="img",
              disable=not (progress and dist.is_main), dynamic_ncols=True) as bar:
        for lo in range(0, len(todo), job.batch_size):
            batch = todo[lo:lo + job.batch_size]
            x_T = initial_noise(batch, job.image_shape, job.seed).to(dist.device)
            try:
                x0, info = sample(eps, x_T, job.schedule, s.method, s.steps, s.convention, eta=s.eta,
                                  generator=sampler_generators(batch, job.seed), return_info=True)
            except FloatingPointError as e:
                raise ModelOutputError(f"{e} — sampling {s.method} with this checkpoint and schedule diverges") \
                    from None
            nfe = info.nfe
            for i, image in zip(batch, to_uint8(x0, job.centered).cpu()):
                write_png(sample_path(out_dir, i, job.num_samples), image)
            own.keep = True
            bar.update(len(batch))
    return nfe, time.perf_counter() - start


def run_sample_job(job: SampleJob) -> dict:
    """``main.py sample``: the extractor and statistics (with --fid) and the network are loaded before the
    output folder is touched, so that a failure that can be known early is reported before any sampling."""
    from .evaluate import fid_of_sample_folder, load_extractor

    with session(job.device) as dist:
        extractor = load_extractor(job.fid, dist.device) if job.fid is not None and dist.is_main else None
        eps = load_eps(job.model, job.config, dist.device)
        manifest = sample_into(job, eps, dist)
        if dist.is_main:
            s = job.sampling
            print(f"{manifest['num_samples']} samples in {job.out} ({s.method}, {s.steps} steps, "
                  f"NFE {manifest['nfe']})")
            if job.fid is not None:
                fid_of_sample_folder(Path(job.out), job.fid, extractor, job.image_shape, write=True)
    return manifest
