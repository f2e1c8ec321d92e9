"""``main.py fid`` and ``main.py stats``: features of image files → statistics → FID.

``fid_of_sample_folder`` is the one way a folder of samples becomes a FID: ``sample --fid``, ``fid`` and every
ablation cell go through it.
"""
from __future__ import annotations

from pathlib import Path

from .errors import OutputError, UserError
from .features import build_extractor, extract_features, image_features, list_images
from .fid import check_compatible, save_stats, score_images, write_fid_json
from .files import OutputLock, read_json
from .images import sample_path
from .jobs import FidJob, FidSpec, StatsJob
from .setup import resolve_device


def load_extractor(spec: FidSpec, device):
    """The feature network of ``spec``, checked against its statistics before any sampling starts."""
    extractor = build_extractor(spec.extractor, spec.extractor_weights, device)
    check_compatible(spec.reference, extractor.name, extractor.dims)
    return extractor


def sample_files(folder: Path) -> list:
    """The images a folder's FID is computed from: exactly the manifest's samples when there is one."""
    manifest_path = folder / "manifest.json"
    if manifest_path.exists():
        manifest = read_json(manifest_path)
        if manifest.get("status") != "complete":
            raise UserError(f"{folder} is an unfinished sampling run: rerun its 'sample' command first")
        num = int(manifest["num_samples"])
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
                         progress: bool = True) -> dict:
    """FID of the samples in ``folder`` against ``spec``'s statistics; with ``write``, printed and saved to
    fid.json (the number is printed before the file is written, so it survives a failed write)."""
    result = score_images(sample_files(folder), extractor, spec.reference, image_shape[0], image_shape[1],
                          spec.batch_size, progress)
    if write:
        write_fid_json(folder, result)
    return result


def run_fid_job(job: FidJob) -> dict:
    extractor = load_extractor(job.fid, resolve_device(job.device))
    return fid_of_sample_folder(job.samples, job.fid, extractor, job.image_shape, write=True)


def run_stats_job(job: StatsJob) -> None:
    """Statistics of an image folder or of the config's dataset split, written atomically to ``job.out``."""
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
    extractor = build_extractor(job.extractor, job.extractor_weights, device)
    with OutputLock.for_file(job.out):
        if data is None:
            features = image_features(paths, extractor, channels, size, job.batch_size)
        else:
            loader = DataLoader(data, batch_size=job.batch_size, shuffle=False, num_workers=0)
            features = extract_features(extractor, (x for x, _ in loader), len(data))
        try:
            save_stats(job.out, features, extractor.name, label)
        except OSError as e:
            raise OutputError(f"cannot write {job.out}: {e.strerror}") from None
    print(f"statistics of {features.shape[0]} images ({extractor.name}, {features.shape[1]}-d) → {job.out}")
