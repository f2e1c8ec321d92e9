"""FID in-process: feature extractors, statistics files, and pytorch-fid's Fréchet distance.

Features are computed from uint8 images exactly as the PNG files hold them. Statistics record which extractor
and dimension produced them, and ``fid`` refuses to compare statistics from different extractors: FIDs from
different feature networks are not comparable numbers.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np
import torch
from pytorch_fid.fid_score import calculate_frechet_distance
from scipy.linalg import LinAlgWarning
from tqdm.auto import tqdm

from .images import list_images, read_image

INCEPTION = "inception-v3-pool3"
FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"


class StatsError(ValueError):
    pass


class InceptionExtractor:
    """pytorch-fid's InceptionV3 (the TF-FID weights), 2048-d pool3 features; uint8 NCHW in, float64 out."""

    name, dims = INCEPTION, 2048

    def __init__(self, device="cpu", weights: Optional[str] = None):
        from pytorch_fid.inception import InceptionV3

        cached = Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_FILE
        if weights is None and not cached.is_file():
            raise FileNotFoundError(
                f"the FID Inception weights are not available offline: put {FID_WEIGHTS_FILE} (from pytorch-fid's "
                f"release 'fid_weights') at {cached}, or pass --inception-weights PATH")
        if weights is not None and not Path(weights).is_file():
            raise FileNotFoundError(f"Inception weights not found: {weights}")
        with _hub_dir_holding(weights):
            self.net = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).to(device).eval()
        self.device = device

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device).float() / 255.0
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        return self.net(x)[0].flatten(1).double().cpu()


class DigitsExtractor:
    """The digits demo's classifier (models/digits_classifier.py), 128-d penultimate features."""

    name, dims = "digits-classifier-128", 128

    def __init__(self, device="cpu", weights: Optional[str] = None):
        from models.digits_classifier import DigitsClassifier

        if weights is None or not Path(weights).is_file():
            raise FileNotFoundError(f"digits classifier weights not found: {weights} (set FID.extractor_weights; "
                                    f"scripts/train_digits_classifier.py makes them)")
        self.net = DigitsClassifier()
        self.net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        self.net.to(device).eval()
        self.device = device

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1:] != (1, 8, 8):
            raise ValueError(f"the digits extractor takes 1×8×8 images, got {tuple(images.shape[1:])}")
        return self.net.features(images.to(self.device)).double().cpu()


class _hub_dir_holding:
    """Point torch.hub at a temporary folder whose checkpoint is the user's weights file (pytorch-fid loads
    its weights through torch.hub); restore the previous folder afterwards."""

    def __init__(self, weights: Optional[str]):
        self.weights, self.old, self.tmp = weights, None, None

    def __enter__(self):
        if self.weights is not None:
            self.old = torch.hub.get_dir()
            self.tmp = tempfile.TemporaryDirectory()
            (Path(self.tmp.name) / "checkpoints").mkdir()
            os.symlink(Path(self.weights).resolve(), Path(self.tmp.name) / "checkpoints" / FID_WEIGHTS_FILE)
            torch.hub.set_dir(self.tmp.name)

    def __exit__(self, *exc):
        if self.tmp is not None:
            torch.hub.set_dir(self.old)
            self.tmp.cleanup()


def extract_features(extractor: Callable, batches: Iterable[torch.Tensor], total: Optional[int] = None,
                     progress: bool = True) -> np.ndarray:
    feats = []
    with tqdm(total=total, desc="features", unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for batch in batches:
            feats.append(extractor(batch).numpy())
            bar.update(len(batch))
    return np.concatenate(feats).astype(np.float64)


def folder_batches(paths: list, channels: int, batch_size: int):
    for lo in range(0, len(paths), batch_size):
        yield torch.from_numpy(np.stack([read_image(p, channels) for p in paths[lo:lo + batch_size]]))


def image_features(paths: list, extractor, channels: int, batch_size: int = 200, progress: bool = True) -> np.ndarray:
    """Features of the image files at ``paths``, read as the files hold them (uint8)."""
    if not paths:
        raise FileNotFoundError("no images to read")
    return extract_features(extractor, folder_batches(paths, channels, batch_size), len(paths), progress)


def folder_features(folder: Path, extractor, channels: int, batch_size: int = 200, progress: bool = True) -> np.ndarray:
    paths = list_images(folder)
    if not paths:
        raise FileNotFoundError(f"no images in {folder}")
    return image_features(paths, extractor, channels, batch_size, progress)


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (unbiased, as pytorch-fid computes them)."""
    return np.mean(features, axis=0), np.cov(features, rowvar=False)


def save_stats(path: Path, features: np.ndarray, extractor_name: str, source: str) -> None:
    mu, sigma = statistics(features)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(tmp, mu=mu, sigma=sigma, extractor=np.array(extractor_name), dims=np.array(features.shape[1]),
             num_images=np.array(features.shape[0]), source=np.array(str(source)))
    os.replace(tmp, path)


def load_stats(path: Path) -> dict:
    """mu, sigma and provenance; files from pytorch-fid or the released code (mu and sigma only) are taken to be
    pytorch-fid Inception statistics, as they are."""
    path = Path(path)
    if not path.is_file():
        raise StatsError(f"statistics file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise StatsError(f"cannot read statistics {path}: {e}") from None
    if "mu" not in data or "sigma" not in data:
        raise StatsError(f"{path} has no 'mu'/'sigma' arrays; not an FID statistics file")
    mu, sigma = data["mu"], data["sigma"]
    return {"mu": mu, "sigma": sigma, "extractor": str(data.get("extractor", INCEPTION)),
            "dims": int(data.get("dims", mu.shape[0])), "num_images": int(data.get("num_images", -1)),
            "source": str(data.get("source", path))}


def fid_from_features(features: np.ndarray, reference: dict, extractor_name: str) -> float:
    """Fréchet distance between the features' statistics and reference statistics of the same extractor."""
    if reference["extractor"] != extractor_name or reference["dims"] != features.shape[1]:
        raise StatsError(f"reference statistics come from {reference['extractor']} ({reference['dims']}-d) but "
                         f"the samples use {extractor_name} ({features.shape[1]}-d): FIDs across feature "
                         f"networks are not comparable")
    if features.shape[0] < features.shape[1]:
        warnings.warn(f"only {features.shape[0]} samples for {features.shape[1]}-d features: the covariance is "
                      f"singular and the FID is biased upwards; use at least {features.shape[1]}", stacklevel=2)
    mu, sigma = statistics(features)
    with warnings.catch_warnings():
        # pytorch-fid detects a singular covariance product itself and regularises it (printing a note);
        # scipy's own warnings about the same product only repeat that
        warnings.filterwarnings("ignore", category=LinAlgWarning)
        warnings.filterwarnings("ignore", message=".*disp.*", category=DeprecationWarning)
        return float(calculate_frechet_distance(mu, sigma, reference["mu"], reference["sigma"]))


EXTRACTORS = ("inception", "digits")


def build_extractor(cfg: dict, device, weights: Optional[str] = None):
    """The config's feature extractor (FID.extractor): 'inception' (pytorch-fid, default) or 'digits' (the
    small classifier of the digits demo). ``weights`` overrides FID.extractor_weights."""
    section = cfg.get("FID", {})
    name = section.get("extractor", "inception")
    weights = weights or section.get("extractor_weights")
    if name == "inception":
        return InceptionExtractor(device, weights)
    if name == "digits":
        return DigitsExtractor(device, weights)
    raise StatsError(f"unknown FID.extractor {name!r}; choose one of {', '.join(EXTRACTORS)}")
