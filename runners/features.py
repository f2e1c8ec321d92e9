"""Feature networks for FID and reading images for them.

Features are computed from uint8 images exactly as the PNG files hold them. Two extractors: pytorch-fid's
InceptionV3 (the TF-FID weights, 2048-d pool3, the paper's FID) and the digits demo's classifier (128-d). Statistics
record which extractor produced them (and the sha256 of its weights), and FIDs across extractors are refused: they
are not comparable numbers.

An image's features depend on the image alone, not on how callers batch: CPU kernels pick other code paths for
small batches (the digits classifier's features of one image differ by 8e-6 between batches of 1 and 64 on this
project's CPU), so the network always sees chunks of exactly ``FEATURE_CHUNK`` images, the last one padded with
black images. At that fixed size, measured here, an image's features do not depend on its position in the chunk
or on the other images in it. They do depend on torch's CPU thread count on some CPUs (8.6e-6 between 1 and 2
threads on an AVX-512 Xeon, none on an AVX2 EPYC), and ``--threads``' default follows the machine's load, so the
network always runs with ``FEATURE_THREADS`` threads (``fixed_threads``), one per core the process may use: the
same FID whatever the load or ``--threads``, for a given machine and core allocation. On a GPU the network runs with TF32 off (``tf32_policy``):
TF32 rounds the Inception convolutions' inputs to 10 mantissa bits, which is not the FID anyone else computes.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import DatasetError, MissingFileError, UserError

INCEPTION = "inception-v3-pool3"
DIGITS = "digits-classifier-128"
FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
EXTRACTORS = {"inception": INCEPTION, "digits": DIGITS}  # config name → the name statistics record
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
# one chunk size for every extractor and device: a fixed shape is what makes features independent of the caller's
# batch size (64 is the smallest size at which the digits features match those of larger batches here, and
# large enough to keep a GPU busy with Inception at 299×299)
FEATURE_CHUNK = 64
def _usable_cores() -> int:
    """The cores this process may run on (its affinity: a SLURM or taskset job's share, not the whole machine)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity API (macOS, Windows)
        return max(1, os.cpu_count() or 1)


FEATURE_THREADS = _usable_cores()  # every usable core: a count that does not depend on the load


@contextlib.contextmanager
def fixed_threads(threads: int = FEATURE_THREADS):
    """torch's CPU intra-op threads set to ``threads`` inside the block, restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def tf32_policy(allow: bool):
    """TF32 for CUDA matmuls and cuDNN convolutions on (``allow``) or off inside the block; the previous settings
    are restored afterwards, so the sampling network keeps whatever the user chose."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    before = matmul.allow_tf32, cudnn.allow_tf32
    matmul.allow_tf32 = cudnn.allow_tf32 = allow
    try:
        yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = before


class _Extractor:
    """uint8 NCHW images in any number → float64 features on the CPU, computed in padded chunks of
    ``FEATURE_CHUNK`` under the TF32 policy ``allow_tf32`` (off unless a benchmark turns it on)."""

    name: str
    dims: int
    chunk = FEATURE_CHUNK
    allow_tf32 = False
    weights_sha256: Optional[str] = None

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        out = []
        with tf32_policy(self.allow_tf32), fixed_threads():
            for lo in range(0, images.shape[0], self.chunk):
                piece = images[lo:lo + self.chunk]
                n = piece.shape[0]
                if n < self.chunk:
                    piece = torch.cat([piece, piece.new_zeros((self.chunk - n, *piece.shape[1:]))])
                out.append(self._features(piece)[:n].double().cpu())
        if not out:
            return torch.empty((0, self.dims), dtype=torch.float64)
        return torch.cat(out)


class InceptionExtractor(_Extractor):
    """pytorch-fid's InceptionV3 (the TF-FID weights), 2048-d pool3 features; uint8 NCHW in, float64 out."""

    name, dims = INCEPTION, 2048

    def __init__(self, device="cpu", weights: Optional[str] = None):
        from pytorch_fid.inception import InceptionV3

        with _hub_dir_holding(weights):
            try:
                self.net = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).to(device).eval()
            except Exception as e:  # torch.load / load_state_dict on a file that is not these weights
                raise UserError(f"cannot load the FID Inception weights {weights or inception_weights_path()}: "
                                f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
        self.device = device

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device).float() / 255.0
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        return self.net(x)[0].flatten(1)


class DigitsExtractor(_Extractor):
    """The digits demo's classifier (models/digits_classifier.py), 128-d penultimate features."""

    name, dims = DIGITS, 128

    def __init__(self, device="cpu", weights: Optional[str] = None):
        from models.digits_classifier import DigitsClassifier

        self.net = DigitsClassifier()
        try:
            self.net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        except Exception as e:
            raise UserError(f"cannot load the digits classifier weights {weights}: {type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}") from None
        self.net.to(device).eval()
        self.device = device

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1:] != (1, 8, 8):
            raise DatasetError(f"the digits extractor takes 1×8×8 images, got {tuple(images.shape[1:])}")
        return self.net.features(images.to(self.device))


def inception_weights_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_FILE


def extractor_weights(name: str, weights: Optional[str]) -> Optional[str]:
    """The weights file extractor ``name`` will load, checked to exist (before any long job starts)."""
    if name not in EXTRACTORS:
        from .errors import ConfigError

        raise ConfigError(f"unknown FID.extractor {name!r}; choose one of {', '.join(EXTRACTORS)}")
    if name == "inception":
        if weights is None:
            if not inception_weights_path().is_file():
                raise MissingFileError(
                    f"the FID Inception weights are not available offline: put {FID_WEIGHTS_FILE} (from "
                    f"pytorch-fid's release 'fid_weights') at {inception_weights_path()}, or pass "
                    f"--inception-weights PATH")
            return str(inception_weights_path())
        if not Path(weights).is_file():
            raise MissingFileError(f"Inception weights not found: {weights}")
        return str(weights)
    if weights is None or not Path(weights).is_file():
        raise MissingFileError(f"digits classifier weights not found: {weights} (set FID.extractor_weights; "
                               f"scripts/train_digits_classifier.py makes them)")
    return str(weights)


def build_extractor(name: str, weights: Optional[str], device, sha256: Optional[str] = None):
    """The feature network ``name`` ('inception' or 'digits') with ``weights`` (checked by extractor_weights);
    ``weights_sha256`` is ``sha256`` when the caller already hashed the file, else hashed here."""
    from .setup import sha256_file

    weights = extractor_weights(name, weights)
    if name == "inception":
        cached = weights == str(inception_weights_path())
        extractor = InceptionExtractor(device, None if cached else weights)
    else:
        extractor = DigitsExtractor(device, weights)
    extractor.weights_sha256 = sha256 or sha256_file(weights)
    return extractor


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


# ---------------------------------------------------------------------------------------------------------------
# images


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and
                  not p.name.startswith("."))


# PIL modes that convert to the config's 8-bit channels without changing a value ('1': bilevel, 'P': a palette of
# RGB colours; grey into RGB is replicated, as every RGB pipeline reads the odd grayscale file of a photo dataset);
# any other conversion would change the pixels the FID sees (16-bit values clipped at 255, colour averaged to
# grey, alpha dropped), so such a file is refused rather than silently converted
_EXACT_MODES = {1: ("L", "1"), 3: ("RGB", "P", "L", "1")}
_MODE_WORDS = {"L": "an 8-bit grayscale image", "1": "a bilevel image", "RGB": "an 8-bit RGB image",
               "P": "a palette image", "RGBA": "an RGB image with alpha", "LA": "a grayscale image with alpha",
               "I;16": "a 16-bit grayscale image", "I;16B": "a 16-bit grayscale image", "I": "a 32-bit integer image",
               "F": "a floating-point image", "CMYK": "a CMYK image", "YCbCr": "a YCbCr image"}


def read_image(path: Path, channels: int, size: Optional[int] = None) -> np.ndarray:
    """An image file as a CHW uint8 array with ``channels`` channels (1 = grayscale, 3 = RGB); a file that is not a
    readable image, holds other channels or bit depth (``_EXACT_MODES``), or is not ``size``×``size``, is a
    DatasetError naming it."""
    exact = _EXACT_MODES.get(channels)
    if exact is None:
        raise DatasetError(f"images have 1 (grayscale) or 3 (RGB) channels, not {channels}")
    try:
        with Image.open(path) as im:
            mode = im.mode
            array = np.asarray(im.convert(exact[0]), dtype=np.uint8) if mode in exact else None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DatasetError(f"cannot read image {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") \
            from None
    if array is None:
        raise DatasetError(f"{path} is {_MODE_WORDS.get(mode, f'a {mode} image')}; the config (Dataset.channels "
                           f"{channels}) needs {_MODE_WORDS[exact[0]]}")
    if size is not None and array.shape[:2] != (size, size):
        raise DatasetError(f"{path} is {array.shape[1]}×{array.shape[0]} pixels; the config's images are "
                           f"{size}×{size}")
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
