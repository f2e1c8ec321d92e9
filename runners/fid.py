"""FID: streamed feature statistics, statistics files, pytorch-fid's Fréchet distance.

Every FID and every statistics file here comes from the same accumulation (``FeatureStats``): Σf, Σffᵀ and the
count in float64, as EDM's fid.py keeps them, fed by ``FeatureStream`` in the images' index order. Whether the
images arrive straight from the sampler, from PNG files an interrupted run left, or all from the files of a
finished folder, the same uint8 pixels give the same features in the same order, hence bit-identical statistics
and the same FID.

A statistic that is not finite, or has the wrong shape, is an error and is never written or used: a FID computed
from it would be a wrong number printed with exit 0.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np
import torch
from pytorch_fid.fid_score import calculate_frechet_distance
from scipy.linalg import LinAlgWarning
from tqdm.auto import tqdm

from .errors import DatasetError, OutputError, StatsError
from .features import INCEPTION, read_image
from .files import write_atomic, write_json_atomic

# rows per partial sum: the sums depend on the rows and their order only, not on how callers group them
STATS_BLOCK = 1000


class FeatureStats:
    """Streamed first and second moments of feature vectors: 50,000 Inception features (800 MB in float64) are
    never held at once, and the sums of several processes add up (``Dist.sum``)."""

    def __init__(self, dims: int):
        self.dims, self.count = int(dims), 0
        self.total = np.zeros(self.dims)
        self.outer = np.zeros((self.dims, self.dims))
        self._rows: list = []
        self._held = 0

    @classmethod
    def of(cls, features: np.ndarray) -> "FeatureStats":
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2:
            raise StatsError(f"features must be a matrix (images × dims), got shape {features.shape}")
        return cls(features.shape[1]).add(features)

    def add(self, features: np.ndarray) -> "FeatureStats":
        features = np.asarray(features, dtype=np.float64)
        if features.shape[1:] != (self.dims,):
            raise StatsError(f"expected {self.dims}-d features, got shape {features.shape}")
        if not np.isfinite(features).all():
            raise StatsError("the feature network returned non-finite features (check its weights)")
        self._rows.append(features)
        self._held += features.shape[0]
        while self._held >= STATS_BLOCK:
            self._sum_block(STATS_BLOCK)
        return self

    def _sum_block(self, n: int) -> None:
        rows = np.concatenate(self._rows) if len(self._rows) > 1 else self._rows[0]
        block, rest = rows[:n], rows[n:]
        self.total += block.sum(axis=0)
        self.outer += block.T @ block
        self.count += block.shape[0]
        self._rows, self._held = ([rest] if rest.shape[0] else []), rest.shape[0]

    def flush(self) -> "FeatureStats":
        """Sum the rows of the last, partial block (at the end of the stream)."""
        if self._held:
            self._sum_block(self._held)
        return self

    def all_reduce(self, dist) -> "FeatureStats":
        """Every rank's sums added up (``distributed.Dist.sum``), on every rank; one process: unchanged."""
        self.flush()
        if dist.world > 1:
            packed = dist.sum(np.concatenate([[float(self.count)], self.total, self.outer.ravel()]))
            self.count = int(round(packed[0]))
            self.total, self.outer = packed[1:1 + self.dims], packed[1 + self.dims:].reshape(self.dims, self.dims)
        return self

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and unbiased covariance (as pytorch-fid's np.cov); refuses what would give NaN."""
        self.flush()
        n = self.count
        if n < 2:
            raise StatsError(f"statistics need at least 2 images, got {n}")
        mu = self.total / n
        # n·μμᵀ is exactly symmetric; so is Σffᵀ (BLAS computes f_ki·f_kj and f_kj·f_ki alike)
        sigma = (self.outer - n * np.outer(mu, mu)) / (n - 1)
        if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
            raise StatsError("the feature statistics are not finite")
        return mu, sigma


class FeatureStream:
    """Statistics of the images ``indices`` (in that order), fed with ``put`` in any order and grouping; an index
    that is not among ``fed`` is read from the file ``path_of(index)`` when its turn comes (the PNGs an
    interrupted run left, or every file of a finished folder).

    Images go to the extractor in groups of ``extractor.chunk`` consecutive entries of ``indices`` and their
    features to ``FeatureStats`` in order, so the result is the same however the images arrive; at most one
    chunk and the images fed ahead of their turn are held.
    """

    def __init__(self, extractor, indices: Iterable[int], fed: Iterable[int] = (),
                 path_of: Optional[Callable[[int], Path]] = None, channels: int = 3, size: Optional[int] = None,
                 progress: bool = False, desc: str = "features"):
        self.extractor, self.order = extractor, list(indices)
        self.fed, self.path_of, self.channels, self.size = set(fed), path_of, channels, size
        self.stats = FeatureStats(extractor.dims)
        self.held: dict = {}
        self.pos, self.read = 0, 0  # images consumed, of which read from files
        self.bar = tqdm(total=len(self.order), desc=desc, unit="img", disable=not progress, dynamic_ncols=True)

    def put(self, indices, images: torch.Tensor) -> None:
        """Images (uint8 NCHW, as written to the PNGs) of ``indices``, which must be among ``fed``."""
        for i, image in zip(indices, images):
            if i not in self.fed:
                raise AssertionError(f"image {i} was not announced as fed")
            self.held[i] = image
        self._drain(final=False)

    def finish(self) -> FeatureStats:
        self._drain(final=True)
        self.bar.close()
        if self.pos != len(self.order) or self.held:
            raise RuntimeError(f"{len(self.order) - self.pos} images never reached the feature network")
        return self.stats.flush()

    def _drain(self, final: bool) -> None:
        try:
            self._extract_ready(final)
        except BaseException:
            self.bar.close()  # ends the progress line, so that the error is a line of its own
            raise

    def _extract_ready(self, final: bool) -> None:
        chunk = self.extractor.chunk
        while self.pos < len(self.order):
            group = self.order[self.pos:self.pos + chunk]
            if len(group) < chunk and not final:
                return
            if any(i in self.fed and i not in self.held for i in group):
                if final:
                    raise RuntimeError(f"image {next(i for i in group if i not in self.held)} was never fed")
                return
            images = torch.stack([self.held.pop(i) if i in self.fed else self._read(i) for i in group])
            self.stats.add(self.extractor(images).numpy())
            self.pos += len(group)
            self.bar.update(len(group))

    def _read(self, index: int) -> torch.Tensor:
        if self.path_of is None:
            raise AssertionError(f"image {index} is neither fed nor on disk")
        self.read += 1
        return torch.from_numpy(read_image(self.path_of(index), self.channels, self.size).copy())  # writable


def file_stats(paths: list, extractor, channels: int, size: Optional[int] = None,
               progress: bool = True) -> FeatureStats:
    """Statistics of the image files at ``paths``, read as the files hold them (uint8)."""
    if not paths:
        raise DatasetError("no images to read")
    stream = FeatureStream(extractor, range(len(paths)), path_of=paths.__getitem__, channels=channels, size=size,
                           progress=progress)
    return stream.finish()


def batch_stats(extractor, batches: Iterable[torch.Tensor], total: int, progress: bool = True) -> FeatureStats:
    """Statistics of ``total`` uint8 images arriving in batches (a dataset split, real images for the noise floor)."""
    if not total:
        raise DatasetError("no images to compute features of")
    stream, seen = FeatureStream(extractor, range(total), fed=range(total), progress=progress), 0
    for batch in batches:
        stream.put(range(seen, seen + len(batch)), batch)
        seen += len(batch)
    if seen != total:
        raise DatasetError(f"expected {total} images, got {seen}")
    return stream.finish()


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of stacked features, accumulated exactly as the streamed path does."""
    return FeatureStats.of(features).mean_cov()


def save_stats(path: Path, stats: FeatureStats, extractor_name: str, source: str,
               extractor_sha256: Optional[str] = None) -> None:
    """mu, sigma and their provenance; ``extractor_sha256`` (the feature network's weights) when known."""
    mu, sigma = stats.mean_cov()
    extra = {} if extractor_sha256 is None else {"extractor_sha256": np.array(extractor_sha256)}
    write_atomic(Path(path), lambda fh: np.savez(
        fh, mu=mu, sigma=sigma, extractor=np.array(extractor_name), dims=np.array(stats.dims),
        num_images=np.array(stats.count), source=np.array(str(source)), **extra))


def load_stats(path: Path) -> dict:
    """mu, sigma and provenance, validated. Files from pytorch-fid or the released code (mu and sigma only) are
    taken to be pytorch-fid Inception statistics, as they are; files written before the weights' sha256 was
    recorded have ``extractor_sha256`` None."""
    path = Path(path)
    if path.is_dir():
        raise StatsError(f"statistics {path} is a folder, not an .npz file")
    if not path.is_file():
        raise StatsError(f"statistics file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except Exception as e:  # numpy raises OSError, ValueError, BadZipFile, EOFError … on a bad file
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "allow_pickle" in why:  # numpy's guess for any file that is neither .npy nor .npz (JSON, text, …)
            why = "not an .npz file (mu and sigma arrays)"
        raise StatsError(f"cannot read statistics {path}: {why}") from None
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
    # a covariance is symmetric with a non-negative diagonal; the tolerance covers float32 storage of one
    scale = max(float(np.abs(sigma).max()), np.finfo(np.float64).tiny)
    asymmetry = float(np.abs(sigma - sigma.T).max()) / scale
    if asymmetry > 1e-5 or float(np.diag(sigma).min()) < -1e-5 * scale:
        raise StatsError(f"{path}: sigma is not a covariance matrix (" +
                         (f"asymmetric by {asymmetry:.1e} of its largest entry)" if asymmetry > 1e-5 else
                          "a negative variance on its diagonal)"))
    try:
        meta = {"extractor": str(data.get("extractor", INCEPTION)), "dims": int(data.get("dims", mu.shape[0])),
                "num_images": int(data.get("num_images", -1)), "source": str(data.get("source", path)),
                "extractor_sha256": str(data["extractor_sha256"]) if "extractor_sha256" in data else None}
    except (TypeError, ValueError):
        raise StatsError(f"{path}: malformed extractor/dims/num_images/source entries") from None
    if meta["dims"] != mu.shape[0]:
        raise StatsError(f"{path}: dims={meta['dims']} but mu has {mu.shape[0]} entries")
    return {"mu": mu.astype(np.float64), "sigma": sigma.astype(np.float64), **meta}


def is_stats_file(path) -> bool:
    """Whether ``path`` holds FID statistics (``load_stats`` reads it)."""
    try:
        load_stats(path)
    except StatsError:
        return False
    return True


def check_compatible(reference: dict, extractor_name: str, dims: Optional[int] = None,
                     sha256: Optional[str] = None) -> None:
    """Refuse statistics of another feature network: FIDs across feature networks are not comparable. Weights
    are compared when both the statistics and the caller know their sha256."""
    if reference["extractor"] != extractor_name or (dims is not None and reference["dims"] != dims):
        shown = f"{extractor_name} ({dims}-d)" if dims is not None else extractor_name
        raise StatsError(f"reference statistics come from {reference['extractor']} ({reference['dims']}-d) but "
                         f"the samples use {shown}: FIDs across feature networks are not comparable")
    theirs = reference.get("extractor_sha256")
    if theirs and sha256 and theirs != sha256:
        raise StatsError(f"reference statistics come from other {extractor_name} weights (sha256 {theirs[:12]}… "
                         f"vs {sha256[:12]}…): FIDs across feature networks are not comparable")


def fid_from_stats(stats: FeatureStats, reference: dict, extractor_name: str) -> float:
    """Fréchet distance between streamed statistics and reference statistics of the same extractor."""
    check_compatible(reference, extractor_name, stats.dims)
    mu, sigma = stats.mean_cov()
    if stats.count < stats.dims:
        warnings.warn(f"only {stats.count} samples for {stats.dims}-d features: the covariance is singular and "
                      f"the FID is biased upwards; use at least {stats.dims}", stacklevel=2)
    with warnings.catch_warnings():
        # pytorch-fid detects a singular covariance product itself and regularises it (printing a note);
        # scipy's own warnings about the same product only repeat that
        warnings.filterwarnings("ignore", category=LinAlgWarning)
        warnings.filterwarnings("ignore", message=".*disp.*", category=DeprecationWarning)
        try:
            fid = float(calculate_frechet_distance(mu, sigma, reference["mu"], reference["sigma"]))
        except ValueError as e:  # pytorch-fid: "Imaginary component …" of the covariance product's square root
            why = (f"too few samples ({stats.count}) for {stats.dims}-d features?" if stats.count <= stats.dims else
                   f"the reference statistics' sigma ({reference['source']}) is not positive semi-definite?")
            raise StatsError(f"the FID cannot be computed ({e}): the covariances are too degenerate, {why}") from None
    if not np.isfinite(fid):
        raise StatsError(f"the FID came out {fid}: the statistics are degenerate")
    return fid


def fid_from_features(features: np.ndarray, reference: dict, extractor_name: str) -> float:
    """Fréchet distance of stacked features (accumulated as the streamed path does) against reference statistics."""
    features = np.asarray(features, dtype=np.float64)
    check_compatible(reference, extractor_name, features.shape[1] if features.ndim == 2 else None)
    return fid_from_stats(FeatureStats.of(features), reference, extractor_name)


def fid_result(stats: FeatureStats, reference: dict, extractor, source: str) -> dict:
    """The FID of ``stats`` and what it was computed with (fid.json's content); ``source`` says where the
    features came from ('sampling' for the one pass, 'files')."""
    fid = fid_from_stats(stats, reference, extractor.name)
    return {"fid": fid, "num_samples": int(stats.count), "extractor": extractor.name,
            "extractor_sha256": extractor.weights_sha256, "stats": reference["source"],
            "stats_num_images": reference["num_images"], "stats_extractor_sha256": reference.get("extractor_sha256"),
            "features_from": source, "written": time.strftime("%Y-%m-%dT%H:%M:%S")}


def write_fid_json(folder: Path, result: dict) -> None:
    """Print the FID, then write fid.json: a number that was computed is never lost to a write failure."""
    print(f"FID {result['fid']:.4f} ({result['num_samples']} samples, {result['extractor']})", flush=True)
    try:
        write_json_atomic(Path(folder) / "fid.json", result)
    except OSError as e:
        raise OutputError(f"could not write {Path(folder) / 'fid.json'} ({e.strerror}); the FID above is "
                          "not saved") from None
    except OutputError as e:  # write_atomic's own refusal, e.g. a folder in the way
        raise OutputError(f"{e}; the FID above is not saved") from None
