"""FID: statistics files, pytorch-fid's Fréchet distance, and the one path from image files to a score.

A statistic that is not finite, or has the wrong shape, is an error and is never written or used: a FID computed
from it would be a wrong number printed with exit 0.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
from pytorch_fid.fid_score import calculate_frechet_distance
from scipy.linalg import LinAlgWarning

from .errors import OutputError, StatsError
from .features import INCEPTION, image_features
from .files import write_atomic, write_json_atomic


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (unbiased, as pytorch-fid computes them); refuses what would give NaN."""
    if features.ndim != 2 or features.shape[0] < 2:
        raise StatsError(f"statistics need at least 2 images, got {features.shape[0] if features.ndim else 0}")
    if not np.isfinite(features).all():
        raise StatsError("the feature network returned non-finite features (check its weights)")
    return np.mean(features, axis=0), np.cov(features, rowvar=False)


def save_stats(path: Path, features: np.ndarray, extractor_name: str, source: str) -> None:
    mu, sigma = statistics(features)
    write_atomic(Path(path), lambda fh: np.savez(
        fh, mu=mu, sigma=sigma, extractor=np.array(extractor_name), dims=np.array(features.shape[1]),
        num_images=np.array(features.shape[0]), source=np.array(str(source))))


def load_stats(path: Path) -> dict:
    """mu, sigma and provenance, validated. Files from pytorch-fid or the released code (mu and sigma only) are
    taken to be pytorch-fid Inception statistics, as they are."""
    path = Path(path)
    if path.is_dir():
        raise StatsError(f"statistics {path} is a folder, not an .npz file")
    if not path.is_file():
        raise StatsError(f"statistics file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except Exception as e:  # numpy raises OSError, ValueError, BadZipFile, EOFError … on a bad file
        raise StatsError(f"cannot read statistics {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") \
            from None
    if "mu" not in data or "sigma" not in data:
        raise StatsError(f"{path} has no 'mu'/'sigma' arrays; not an FID statistics file")
    mu, sigma = data["mu"], data["sigma"]
    if mu.dtype.kind not in "fiu" or sigma.dtype.kind not in "fiu":
        raise StatsError(f"{path}: mu and sigma must be numeric arrays, got {mu.dtype} and {sigma.dtype}")
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise StatsError(f"{path}: mu must be a vector and sigma its square covariance, got shapes "
                         f"{tuple(mu.shape)} and {tuple(sigma.shape)}")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise StatsError(f"{path}: mu or sigma holds NaN or infinite values")
    try:
        meta = {"extractor": str(data.get("extractor", INCEPTION)), "dims": int(data.get("dims", mu.shape[0])),
                "num_images": int(data.get("num_images", -1)), "source": str(data.get("source", path))}
    except (TypeError, ValueError):
        raise StatsError(f"{path}: malformed extractor/dims/num_images/source entries") from None
    if meta["dims"] != mu.shape[0]:
        raise StatsError(f"{path}: dims={meta['dims']} but mu has {mu.shape[0]} entries")
    return {"mu": mu.astype(np.float64), "sigma": sigma.astype(np.float64), **meta}


def check_compatible(reference: dict, extractor_name: str, dims: Optional[int] = None) -> None:
    """Refuse statistics of another feature network: FIDs across feature networks are not comparable."""
    if reference["extractor"] != extractor_name or (dims is not None and reference["dims"] != dims):
        shown = f"{extractor_name} ({dims}-d)" if dims is not None else extractor_name
        raise StatsError(f"reference statistics come from {reference['extractor']} ({reference['dims']}-d) but "
                         f"the samples use {shown}: FIDs across feature networks are not comparable")


def fid_from_features(features: np.ndarray, reference: dict, extractor_name: str) -> float:
    """Fréchet distance between the features' statistics and reference statistics of the same extractor."""
    check_compatible(reference, extractor_name, features.shape[1])
    if features.shape[0] < features.shape[1]:
        warnings.warn(f"only {features.shape[0]} samples for {features.shape[1]}-d features: the covariance is "
                      f"singular and the FID is biased upwards; use at least {features.shape[1]}", stacklevel=2)
    mu, sigma = statistics(features)
    with warnings.catch_warnings():
        # pytorch-fid detects a singular covariance product itself and regularises it (printing a note);
        # scipy's own warnings about the same product only repeat that
        warnings.filterwarnings("ignore", category=LinAlgWarning)
        warnings.filterwarnings("ignore", message=".*disp.*", category=DeprecationWarning)
        fid = float(calculate_frechet_distance(mu, sigma, reference["mu"], reference["sigma"]))
    if not np.isfinite(fid):
        raise StatsError(f"the FID came out {fid}: the statistics are degenerate")
    return fid


def score_images(paths: list, extractor, reference: dict, channels: int, size: Optional[int],
                 batch_size: int, progress: bool = True) -> dict:
    """The one FID path: features of the image files at ``paths`` (uint8, as written) against ``reference``."""
    features = image_features(paths, extractor, channels, size, batch_size, progress)
    fid = fid_from_features(features, reference, extractor.name)
    return {"fid": fid, "num_samples": int(features.shape[0]), "extractor": extractor.name,
            "stats": reference["source"], "stats_num_images": reference["num_images"],
            "written": time.strftime("%Y-%m-%dT%H:%M:%S")}


def write_fid_json(folder: Path, result: dict) -> None:
    """Print the FID, then write fid.json: a number that was computed is never lost to a write failure."""
    print(f"FID {result['fid']:.4f} ({result['num_samples']} samples, {result['extractor']})", flush=True)
    try:
        write_json_atomic(Path(folder) / "fid.json", result)
    except OSError as e:
        raise OutputError(f"could not write {Path(folder) / 'fid.json'} ({e.strerror}); the FID above is "
                          "not saved") from None
