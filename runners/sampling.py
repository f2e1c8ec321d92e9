"""Sampling to a folder of PNG files: per-sample seeds, atomic writes, resume, sharding over torchrun ranks.

Sample i starts from noise drawn by its own generator seeded from (seed, i) — and, for stochastic samplers,
draws its per-step noise from a second generator seeded the same way — so an image depends on neither the batch
size, nor the number of processes, nor on where an interrupted run stopped.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from samplers import NoiseSchedule, get_method, sample

from .distributed import Dist
from .images import remove_stale_temporaries, sample_path, to_uint8, write_png

MANIFEST = "manifest.json"
NOISE_STREAM, SAMPLER_STREAM = 0, 1


def seed_for(seed: int, index: int, stream: int = NOISE_STREAM) -> int:
    """A well-mixed 63-bit seed for sample ``index`` of a run with ``seed`` (numpy's SeedSequence hashing)."""
    state = np.random.SeedSequence([seed, index, stream]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def initial_noise(indices, shape, seed: int) -> torch.Tensor:
    """x_T for the given sample indices, float32 on the CPU (identical on every machine and device)."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(seed_for(seed, i)))
                        for i in indices])


def sampler_generators(indices, seed: int) -> list:
    return [torch.Generator().manual_seed(seed_for(seed, i, SAMPLER_STREAM)) for i in indices]


def sha256_file(path: Optional[str]) -> Optional[str]:
    """sha256 of a file, or of a diffusers directory's files in name order."""
    if not path:
        return None
    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


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


@dataclass
class SampleJob:
    """Everything that determines the images (``identity``) plus how to produce them."""

    config: dict
    method: str
    steps: Optional[int]
    convention: str
    num_samples: int
    seed: int
    image_shape: tuple
    checkpoint: Optional[str] = None
    checkpoint_sha256: Optional[str] = None
    precision: str = "fp32"
    eta: Optional[float] = None
    batch_size: int = 64
    extra: dict = field(default_factory=dict)

    def identity(self) -> dict:
        """What must match for two runs to write the same images (batch size and sample count excluded)."""
        cfg = self.config
        return {
            "method": get_method(self.method).name, "steps": self.steps, "convention": self.convention,
            "eta": self.eta, "seed": self.seed, "precision": self.precision,
            "image_shape": list(self.image_shape), "checkpoint_sha256": self.checkpoint_sha256,
            "Schedule": cfg.get("Schedule", {}), "Model": {k: v for k, v in cfg.get("Model", {}).items()
                                                         if k != "ckpt"},
        }


def check_folder(out_dir: Path, job: SampleJob) -> None:
    """Refuse a folder that holds samples of another configuration, or more samples than asked for."""
    manifest = out_dir / MANIFEST
    if not manifest.exists():
        if out_dir.exists() and any(sample_path(out_dir, 0, job.num_samples).parent.glob("*.png")):
            raise ValueError(f"{out_dir} holds PNG files but no {MANIFEST}; choose an empty --out")
        return
    try:
        old = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError):
        raise ValueError(f"{manifest} is unreadable; choose another --out") from None
    mine = json.loads(json.dumps(job.identity()))
    if old.get("identity") != mine:
        diff = sorted(k for k in set(mine) | set(old.get("identity", {}))
                      if mine.get(k) != old.get("identity", {}).get(k))
        raise ValueError(f"{out_dir} holds samples from a different configuration (differs in: {', '.join(diff)}); "
                         f"choose another --out")
    if old.get("num_samples", 0) > job.num_samples:
        raise ValueError(f"{out_dir} holds {old['num_samples']} samples, more than --num-samples "
                         f"{job.num_samples}; choose another --out")


def write_manifest(out_dir: Path, job: SampleJob, nfe: Optional[int], status: str, seconds: float = 0.0) -> None:
    data = {
        "status": status, "identity": job.identity(), "method": get_method(job.method).name, "steps": job.steps,
        "convention": job.convention, "nfe": nfe, "num_samples": job.num_samples, "seed": job.seed,
        "checkpoint": job.checkpoint, "checkpoint_sha256": job.checkpoint_sha256, "precision": job.precision,
        "seconds": seconds, "config": job.config, "versions": versions(), "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **job.extra,
    }
    tmp = out_dir / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, out_dir / MANIFEST)


def run_sampling(job: SampleJob, eps: Callable, schedule: NoiseSchedule, out_dir: Path, dist: Dist,
                 progress: bool = True) -> dict:
    """Write images 0..num_samples−1 that are missing from ``out_dir``; returns the manifest data.

    Ranks take the indices i ≡ rank (mod world); a rerun of the same command skips finished images.
    """
    out_dir = Path(out_dir)
    if dist.is_main:
        check_folder(out_dir, job)
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out_dir)
        previous = _read_manifest(out_dir)
        write_manifest(out_dir, job, previous.get("nfe"), "running", previous.get("seconds", 0.0))
    dist.barrier()

    todo = [i for i in range(dist.rank, job.num_samples, dist.world)
            if not sample_path(out_dir, i, job.num_samples).exists()]
    stochastic = get_method(job.method).kind == "ancestral" or bool(job.eta)
    nfe = None
    start = time.perf_counter()
    with tqdm(total=len(todo), desc=f"{get_method(job.method).name} {job.steps or ''}".strip(), unit="img",
              disable=not (progress and dist.is_main), dynamic_ncols=True) as bar:
        for lo in range(0, len(todo), job.batch_size):
            batch = todo[lo:lo + job.batch_size]
            x_T = initial_noise(batch, job.image_shape, job.seed).to(dist.device)
            kwargs = dict(steps=job.steps) if get_method(job.method).kind != "ode" else {}
            x0, info = sample(eps, x_T, schedule, job.method, convention=job.convention, eta=job.eta,
                              generator=sampler_generators(batch, job.seed) if stochastic else None,
                              return_info=True, **kwargs)
            nfe = info.nfe
            for i, image in zip(batch, to_uint8(x0).cpu()):
                write_png(sample_path(out_dir, i, job.num_samples), image)
            bar.update(len(batch))
    elapsed = time.perf_counter() - start
    dist.barrier()

    if dist.is_main:
        previous = _read_manifest(out_dir)
        missing = [i for i in range(job.num_samples) if not sample_path(out_dir, i, job.num_samples).exists()]
        if missing:
            raise RuntimeError(f"{len(missing)} samples are missing after sampling (first: {missing[0]})")
        nfe = nfe if nfe is not None else previous.get("nfe")
        write_manifest(out_dir, job, nfe, "complete", previous.get("seconds", 0.0) + elapsed)
    dist.barrier()
    return _read_manifest(out_dir)


def _read_manifest(out_dir: Path) -> dict:
    try:
        return json.loads((out_dir / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
