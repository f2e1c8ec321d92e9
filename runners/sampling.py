"""``main.py sample``: images to a folder of PNG files — per-sample seeds, atomic writes, resume, torchrun shards.

Sample i starts from noise drawn by its own generator seeded from (seed, i) — and, for stochastic samplers,
draws its per-step noise from a second generator seeded the same way — so an image depends on neither the batch
size, nor the number of processes, nor on where an interrupted run stopped.

One pass (``OnePass``): with ``--fid`` (and in every ablation cell) each finished batch goes, as the exact uint8
images written to the PNGs, straight to the feature network while background threads write the files; the FID is
computed from the statistics streamed that way, and images an interrupted run left on disk are read from their
files. No image is read back from disk that this run made.
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
from .images import PngWriter, image_indices, move_to_layout, sample_path, to_uint8
from .jobs import SampleJob
from .seeds import derive_seed
from .setup import load_eps

MANIFEST = "manifest.json"
FID_JSON = "fid.json"
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

    from importlib.metadata import PackageNotFoundError, version

    try:
        fid_version = version("pytorch-fid")  # computes every Inception FID
    except PackageNotFoundError:
        fid_version = None
    commit, dirty = _git_state()
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "scipy": scipy.__version__, "pytorch_fid": fid_version, "commit": commit, "uncommitted_changes": dirty}


def _git_state(root: Path = Path(__file__).resolve().parents[1]) -> tuple[Optional[str], Optional[bool]]:
    """The commit of the checkout at ``root`` (this code's) and whether tracked files differ from it, by asking
    git (packed refs, worktrees and detached heads included; ``safe.directory`` for a checkout another user owns,
    as a bind-mounted repository in a container is); without git, the commit read from .git's files and the
    changes unknown; (None, None) outside a git checkout."""
    import subprocess

    git = ["git", "-c", f"safe.directory={root}", "-C", str(root)]
    try:
        head = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode == 0:
            diff = subprocess.run(git + ["diff", "--quiet", "HEAD", "--"], capture_output=True, timeout=30)
            return head.stdout.strip(), {0: False, 1: True}.get(diff.returncode)
    except (OSError, subprocess.SubprocessError):
        pass
    return _commit_from_files(root / ".git"), None


def _commit_from_files(git_dir: Path) -> Optional[str]:
    """HEAD's commit from a .git folder's files: a detached hash, or its branch's loose or packed ref."""
    try:
        ref = (git_dir / "HEAD").read_text().strip()
        if not ref.startswith("ref: "):
            return ref or None
        name = ref[5:]
        if (git_dir / name).is_file():
            return (git_dir / name).read_text().strip()
        for line in (git_dir / "packed-refs").read_text().splitlines():
            sha, _, packed = line.partition(" ")
            if packed == name:
                return sha
    except OSError:
        pass
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
    # what is on disk decides, not the manifest's count: a run asked for more and interrupted early holds fewer
    beyond = [i for i in image_indices(out_dir) if i >= job.num_samples]
    if present and beyond:
        raise OutputError(f"{out_dir} holds samples up to index {max(beyond)}, more than --num-samples "
                          f"{job.num_samples}; ask for at least {max(beyond) + 1} or choose another --out")
    return present


def drop_stale_fid(out_dir: Path, num_samples: int) -> None:
    """Remove a fid.json that is not the FID of the ``num_samples`` images this run leaves (it was computed before
    the folder grew, or for a run that left no samples): a number next to the images must be theirs."""
    path = out_dir / FID_JSON
    if not path.exists():
        return
    recorded = read_json(path).get("num_samples")
    if recorded != num_samples:
        path.unlink()
        print(f"removed {path}: it was the FID of {recorded} samples, this run leaves {num_samples}", flush=True)


def effective_config(job: SampleJob) -> dict:
    """The config as this run used it: the file's, with every setting the command line can override replaced by
    the value that ran (a manifest must not show the file's steps for a --steps run), so that the config fed back
    to ``sample`` makes the same images: Sample's method, steps, convention, η, seed, count, batch size,
    precision, compile and the tuned grid or learned solver file (``Sampling.file``),
    the checkpoint, and with --fid the statistics and feature weights. One gap: a tuned grid run with --method
    naming another method than the grid file's records that method, but `sample` takes a grid file's own method
    unless --method is given (the fed-back run's manifest then says so)."""
    s, cfg = job.sampling, job.config
    ran = {"method": s.method, "steps": s.steps, "convention": s.convention, "total_num": job.num_samples,
           "seed": job.seed, "batch_size": job.batch_size, "precision": job.model.precision,
           "compile": job.model.compile,
           # the file this setting came from, and none other (an ablation cell of a plain method has neither)
           "timesteps_file": s.file if s.solver is None and s.timesteps is not None else None,
           "solver_file": s.file if s.solver is not None else None}
    if s.eta is not None:
        ran["eta"] = s.eta
    if s.steps is None:  # an adaptive method has none; the file's own (unused) steps stay
        del ran["steps"]
    # absolute paths: a config's relative paths are read against its own folder, a flag's against the cwd
    out = {**cfg, "Sample": {**cfg.get("Sample", {}), **ran},
           "Model": {**cfg.get("Model", {}), "ckpt": str(Path(job.model.checkpoint).resolve())}}
    if job.fid is not None:
        fid = {"stats": str(Path(job.fid.stats_path).resolve()), "extractor": job.fid.extractor}
        if job.fid.extractor_weights is not None:
            fid["extractor_weights"] = str(Path(job.fid.extractor_weights).resolve())
        out["FID"] = {**cfg.get("FID", {}), **fid}
    return out


def write_manifest(out_dir: Path, job: SampleJob, nfe, status: str, seconds: float = 0.0,
                   nfe_images: Optional[int] = None) -> None:
    """``nfe``: the method's (fixed-step), or for an adaptive one the mean over images of their batch's NFE,
    over the ``nfe_images`` images whose NFE this folder's runs recorded (``NfeTally``)."""
    s = job.sampling
    extra = {} if nfe_images is None else {"nfe_images": nfe_images}
    write_json_atomic(out_dir / MANIFEST, {
        "status": status, "identity": job.identity(), "method": s.method, "steps": s.steps,
        "convention": s.convention, "nfe": nfe, **extra, "num_samples": job.num_samples, "seed": job.seed,
        "checkpoint": job.model.checkpoint, "checkpoint_sha256": job.model.checkpoint_sha256,
        "precision": job.model.precision, "seconds": seconds, "config": effective_config(job),
        "versions": versions(),
        "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })


class NfeTally:
    """An adaptive solver's NFE differs between batches (PF's step control sees the whole batch): the manifest
    records the mean over images of their batch's NFE, combined with what earlier runs into the folder recorded,
    not the last batch's."""

    def __init__(self, previous: dict, present: int = 0):
        """``previous``: the folder's manifest; ``present``: images already in the folder. A manifest written before
        ``nfe_images`` existed recorded one NFE for the folder: its images count with that NFE. Under torchrun an
        interrupted run records rank 0's images only (the others' are not known there), so ``nfe_images`` can
        then fall short of the images present."""
        count, nfe = previous.get("nfe_images"), previous.get("nfe")
        known = isinstance(nfe, (int, float)) and not isinstance(nfe, bool)
        self.count = int(count) if isinstance(count, int) else present if known else 0
        self.total = float(nfe) * self.count if known else 0.0

    def add(self, nfe: int, images: int) -> None:
        self.total += nfe * images
        self.count += images

    def mean(self) -> Optional[float]:
        return round(self.total / self.count, 1) if self.count else None


class OnePass:
    """What each sampled batch is handed to besides the PNG writers: the feature stream of ``extractor`` (FID in
    the same pass) and the float samples of indices below ``keep`` (the ablation's distance to its reference).
    ``start`` is called once the run knows which of its images are missing."""

    def __init__(self, extractor=None, keep: int = 0):
        self.extractor, self.keep = extractor, keep
        self.stream, self.kept, self.t_start, self.source = None, {}, None, None
        # where the time went: the sampler (network included), the feature network (reading earlier PNGs
        # included), the PNG writer threads, and the sampler's wait for them
        self.seconds = {"sampling": 0.0, "features": 0.0, "png_threads": 0.0, "png_wait": 0.0}

    def start(self, job: SampleJob, indices: list, todo: list) -> None:
        from .evaluate import sample_stream

        if self.extractor is not None:
            self.stream = sample_stream(self.extractor, Path(job.out), job.num_samples, indices, todo,
                                        job.image_shape)

    def put(self, indices: list, x0: torch.Tensor, images: torch.Tensor, info) -> None:
        self.t_start = info.t_start
        for i, x in zip(indices, x0):
            if i < self.keep:
                self.kept[i] = x.clone()  # not a view: the batch it came from can go
        if self.stream is not None:
            started = time.perf_counter()
            self.stream.put(indices, images)
            self.seconds["features"] += time.perf_counter() - started

    def kept_samples(self) -> Optional[torch.Tensor]:
        """x0 of samples 0..keep−1 when this process sampled all of them in this run, else None."""
        if self.keep and all(i in self.kept for i in range(self.keep)):
            return torch.stack([self.kept[i] for i in range(self.keep)])
        return None

    def statistics(self, dist: Dist):
        """The streamed statistics of every rank's images (reads the files an earlier run left; collective);
        ``source`` says where the features came from, for fid.json."""
        started = time.perf_counter()
        stats = self.stream.finish().all_reduce(dist)
        total, read = dist.sum(np.array([len(self.stream.order), self.stream.read], dtype=np.float64))
        self.source = ("sampling" if not read else "files" if read == total else
                       f"sampling ({int(read)} read from the PNGs of an earlier run)")
        self.seconds["features"] += time.perf_counter() - started
        return stats


def sample_into(job: SampleJob, eps: Callable, dist: Dist, progress: bool = True,
                one_pass: Optional[OnePass] = None) -> dict:
    """Write the images 0..num_samples−1 that are missing from ``job.out``; returns the manifest.

    Ranks take the indices i ≡ rank (mod world); a rerun of the same command skips finished images. Rank 0 owns
    the folder (a lock) while the job runs; a run that fails before writing an image leaves nothing behind. The
    manifest says 'complete' only after every PNG is on disk.
    """
    out_dir = Path(job.out)

    def start(own) -> None:
        # images already there stay, with their manifest, also when check_folder refuses this run: the command
        # that made them must still be able to resume or extend them
        own.keep = samples_present(out_dir)
        own.keep = check_folder(out_dir, job)
        previous = read_json(out_dir / MANIFEST) if own.keep else {}
        if own.keep:
            move_to_layout(out_dir, int(previous.get("num_samples", job.num_samples)), job.num_samples)
        drop_stale_fid(out_dir, job.num_samples)
        write_manifest(out_dir, job, previous.get("nfe", job.sampling.nfe), "running", previous.get("seconds", 0.0),
                       previous.get("nfe_images"))

    with contextlib.ExitStack() as stack:
        own = main_owns(dist, stack, out_dir, (MANIFEST,), start)
        started = time.perf_counter()
        adaptive = job.sampling.nfe is None
        tally = NfeTally(read_json(out_dir / MANIFEST), len(image_indices(out_dir))) if dist.is_main and adaptive \
            else NfeTally({})
        try:
            nfe, elapsed = _write_images(job, eps, dist, own, progress, one_pass or OnePass(), tally)
        except BaseException:
            if dist.is_main and own.keep:  # the manifest's seconds count interrupted attempts too
                with contextlib.suppress(Exception):
                    previous = read_json(out_dir / MANIFEST)
                    write_manifest(out_dir, job, tally.mean() if adaptive else previous.get("nfe"), "running",
                                   previous.get("seconds", 0.0) + time.perf_counter() - started,
                                   tally.count if adaptive else None)
            raise
        if adaptive:  # every rank's batches (a collective: all ranks call it)
            total, count = dist.sum(np.array([tally.total, tally.count], dtype=np.float64))
            tally.total, tally.count = float(total), int(count)
        dist.barrier()
        if dist.is_main:
            previous = read_json(out_dir / MANIFEST)
            missing = [i for i in range(job.num_samples) if not sample_path(out_dir, i, job.num_samples).exists()]
            if missing:
                raise RuntimeError(f"{len(missing)} samples are missing after sampling (first: {missing[0]})")
            nfe = tally.mean() if adaptive else nfe if nfe is not None else previous.get("nfe")
            write_manifest(out_dir, job, nfe, "complete", previous.get("seconds", 0.0) + elapsed,
                           tally.count if adaptive else None)
        dist.barrier()
    return read_json(out_dir / MANIFEST)


def _write_images(job: SampleJob, eps: Callable, dist: Dist, own, progress: bool,
                  one_pass: OnePass, tally: NfeTally) -> tuple[Optional[int], float]:
    s, out_dir = job.sampling, Path(job.out)
    mine = list(range(dist.rank, job.num_samples, dist.world))
    todo = [i for i in mine if not sample_path(out_dir, i, job.num_samples).exists()]
    one_pass.start(job, mine, todo)
    nfe = None
    start = time.perf_counter()
    writer = PngWriter()
    try:
        with writer, tqdm(total=len(todo), desc=f"{s.label} {s.steps or ''}".strip(), unit="img",
                          disable=not (progress and dist.is_main), dynamic_ncols=True) as bar:
            for lo in range(0, len(todo), job.batch_size):
                batch = todo[lo:lo + job.batch_size]
                started = time.perf_counter()
                x_T = initial_noise(batch, job.image_shape, job.seed).to(dist.device)
                try:
                    x0, info = sample(eps, x_T, job.schedule, **s.sample_kwargs(),
                                      generator=sampler_generators(batch, job.seed), return_info=True)
                except FloatingPointError as e:
                    raise ModelOutputError(f"{e} — sampling {s.method} with this checkpoint and schedule "
                                           f"diverges") from None
                nfe = info.nfe
                tally.add(info.nfe, len(batch))
                images = to_uint8(x0, job.centered).cpu()  # waits for the device: the batch is finished
                one_pass.seconds["sampling"] += time.perf_counter() - started
                writer.submit([sample_path(out_dir, i, job.num_samples) for i in batch], images)
                one_pass.put(batch, x0, images, info)  # features while the writers write
                own.keep = own.keep or writer.written > 0
                bar.update(len(batch))
    finally:
        own.keep = own.keep or writer.written > 0  # images on disk are kept for a rerun, whatever failed
        one_pass.seconds["png_threads"] += writer.busy
        one_pass.seconds["png_wait"] += writer.waited
    return nfe, time.perf_counter() - start


def run_sample_job(job: SampleJob) -> dict:
    """``main.py sample``: the extractor and statistics (with --fid) and the network are loaded before the
    output folder is touched, so that a failure that can be known early is reported before any sampling. With
    --fid the images go to the feature network as they are made (one pass, every rank its own share)."""
    from .evaluate import fid_of_sample_folder, load_extractor

    with session(job.device) as dist:
        extractor = load_extractor(job.fid, dist.device) if job.fid is not None else None
        eps = load_eps(job.model, job.config, dist.device)
        one_pass = OnePass(extractor)
        manifest = sample_into(job, eps, dist, one_pass=one_pass)
        stats = one_pass.statistics(dist) if extractor is not None else None
        if dist.is_main:
            s = job.sampling
            ran = s.label if s.steps is None else f"{s.label}, {s.steps} steps"
            nfe = manifest["nfe"] if s.nfe is not None else f"{manifest['nfe']} on average"
            print(f"{manifest['num_samples']} samples in {job.out} ({ran}, NFE {nfe})")
            if job.fid is not None:
                started = time.perf_counter()
                fid_of_sample_folder(Path(job.out), job.fid, extractor, job.image_shape, write=True, stats=stats,
                                     source=one_pass.source)
                t = {**one_pass.seconds, "fid": time.perf_counter() - started}
                print(f"seconds: sampling {t['sampling']:.1f}, features {t['features']:.1f}, PNG writing "
                      f"{t['png_threads']:.1f} on background threads (sampling waited {t['png_wait']:.1f} for "
                      f"them), FID {t['fid']:.1f}")
    return manifest
