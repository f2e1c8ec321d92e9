"""``main.py fid`` and ``main.py stats``: image features → streamed statistics → FID.

``fid_of_sample_folder`` is the one place a folder of samples becomes a FID: ``sample --fid``, ``fid`` and every
ablation cell go through it. ``sample --fid`` and the ablation hand it the statistics they streamed while
sampling (``sample_stream``: the exact uint8 images written to the PNGs, plus the files an interrupted run left);
``fid`` computes them from the files through the same ``FeatureStream``, so both give the same number.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from .errors import DatasetError, OutputError, UserError
from .features import build_extractor, list_images
from .fid import FeatureStats, FeatureStream, batch_stats, check_compatible, fid_result, file_stats, save_stats, \
    write_fid_json
from .files import OutputLock, read_json
from .images import sample_path
from .jobs import FidJob, FidSpec, StatsJob
from .setup import resolve_device


def load_extractor(spec: FidSpec, device):
    """The feature network of ``spec``, checked against its statistics (name, dims and, where the statistics
    record it, the weights' sha256) before any sampling starts."""
    extractor = build_extractor(spec.extractor, spec.extractor_weights, device, sha256=spec.extractor_sha256)
    check_compatible(spec.reference, extractor.name, extractor.dims, extractor.weights_sha256)
    return extractor


def sample_stream(extractor, folder: Path, num_samples: int, indices, todo, image_shape: tuple) -> FeatureStream:
    """The stream of a sampling run's images ``indices`` (this process's share, ascending): those in ``todo``
    are fed by the sampler as it makes them, the others are read from the PNGs an earlier run wrote."""
    return FeatureStream(extractor, indices, fed=todo, path_of=lambda i: sample_path(folder, i, num_samples),
                         channels=image_shape[0], size=image_shape[1])


def sample_files(folder: Path) -> list:
    """The images a folder's FID is computed from: exactly the manifest's samples when there is one."""
    manifest_path = folder / "manifest.json"
    manifest = read_json(manifest_path) if manifest_path.is_file() else {}
    if manifest_path.is_file() and not manifest:
        raise UserError(f"{manifest_path} is not a readable JSON object: a sampling run's manifest is damaged (or "
                        f"another tool's file has that name; move it away to score the folder's images)")
    if "identity" in manifest:  # a sampling run's (runners.sampling.write_manifest); another tool's file is not
        if manifest.get("status") != "complete":
            raise UserError(f"{folder} is an unfinished sampling run: rerun its 'sample' command first")
        num = manifest.get("num_samples")
        if not isinstance(num, int) or num < 1:
            raise UserError(f"{manifest_path} records no sample count (num_samples: {num!r}); rerun its 'sample' "
                            f"command")
        paths = [sample_path(folder, i, num) for i in range(num)]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise UserError(f"{folder}: {len(missing)} of the manifest's {num} samples are missing (first: "
                            f"{missing[0].name}); rerun its 'sample' command")
        return paths
    paths = list_images(folder)
    if not paths:
        raise UserError(f"no images in {folder}")
    return paths


def fid_of_sample_folder(folder: Path, spec: FidSpec, extractor, image_shape: tuple, write: bool,
                         progress: bool = True, stats: Optional[FeatureStats] = None,
                         source: Optional[str] = None) -> dict:
    """FID of the samples in ``folder`` against ``spec``'s statistics; with ``write``, printed and saved to
    fid.json (the number is printed before the file is written, so it survives a failed write). ``stats``: the
    folder's statistics streamed while sampling (one pass; ``source`` says how); without them the files are
    read."""
    paths = sample_files(folder)
    if stats is None:
        stats, source = file_stats(paths, extractor, image_shape[0], image_shape[1], progress), "files"
    else:
        source = source or "sampling"
        if stats.count != len(paths):
            raise RuntimeError(f"streamed statistics of {stats.count} images for a folder of {len(paths)}")
    result = fid_result(stats, spec.reference, extractor, source)
    if write:
        write_fid_json(folder, result)
    return result


def run_fid_job(job: FidJob) -> dict:
    extractor = load_extractor(job.fid, resolve_device(job.device))
    return fid_of_sample_folder(job.samples, job.fid, extractor, job.image_shape, write=True)


def run_stats_job(job: StatsJob) -> None:
    """Statistics of an image folder or of the config's dataset split, written atomically to ``job.out`` with
    the sha256 of the feature network's weights."""
    from torch.utils.data import DataLoader

    from .datasets import image_dataset

    device = resolve_device(job.device)
    channels, size = job.image_shape[0], job.image_shape[1]
    if job.source is not None:
        paths = list_images(job.source)
        if not paths:
            raise UserError(f"no images in {job.source}")
        data, label = None, str(job.source)
    else:
        data = image_dataset({"Dataset": job.dataset}, job.split)
        label = f"{job.dataset.get('dataset')}:{job.split}"
        # the statistics are compared with samples of the config's shape: a dataset that yields another shape
        # (CIFAR-10 is 32×32 RGB whatever Dataset.image_size/channels say) would be scored as if it matched
        shape = tuple(data[0][0].shape) if len(data) else None
        if shape is not None and (shape[0] != channels or (size is not None and shape[1:] != (size, size))):
            want = f"{channels}×{size}×{size}" if size is not None else f"{channels} channels"
            raise DatasetError(f"{label} gives {'×'.join(map(str, shape))} images but the config's are {want} "
                               f"(Dataset.image_size/channels, Model.image_size/in_channels)")
    extractor = build_extractor(job.extractor, job.extractor_weights, device)
    with OutputLock.for_file(job.out):
        if data is None:
            stats = file_stats(paths, extractor, channels, size)
        else:
            loader = DataLoader(data, batch_size=job.batch_size, shuffle=False, num_workers=0)
            stats = batch_stats(extractor, (x for x, _ in loader), len(data))
        try:
            save_stats(job.out, stats, extractor.name, label, extractor.weights_sha256)
        except OSError as e:
            raise OutputError(f"cannot write {job.out}: {e.strerror}") from None
    print(f"statistics of {stats.count} images ({extractor.name}, {stats.dims}-d) → {job.out}")
