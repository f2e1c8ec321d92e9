"""Datasets as uint8 CHW image tensors: CIFAR-10, CelebA 64 (DDIM's crop), LSUN, an image folder, and
scikit-learn's 8×8 digits. Training converts them to [-1, 1]; FID statistics use them as they are.

Nothing is downloaded unless ``Dataset.download`` is true; a missing dataset is one error that says where it was
looked for and how to get it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import DatasetError
from .features import list_images, read_image


class TensorImages(Dataset):
    """A uint8 (N, C, H, W) tensor as a dataset of (image, 0)."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], 0


class _Mapped(Dataset):
    """A torchvision dataset of PIL images, mapped to uint8 tensors by ``transform``."""

    def __init__(self, base, transform):
        self.base, self.transform = base, transform

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        image = self.base[i][0]
        return self.transform(image), 0


class FolderImages(Dataset):
    def __init__(self, root: Path, channels: int, image_size: Optional[int]):
        self.paths = list_images(root)
        if not self.paths:
            raise DatasetError(f"no images found under {root}")
        self.channels, self.image_size = channels, image_size

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        # a copy: PIL's buffer is read-only, which torch.from_numpy warns about on every image
        return torch.tensor(read_image(self.paths[i], self.channels, self.image_size)), 0


def digits_images() -> torch.Tensor:
    """scikit-learn's 1,797 handwritten digits (8×8, intensities 0..16) as uint8 (1797, 1, 8, 8) in 0..255."""
    from sklearn.datasets import load_digits

    x = load_digits().images  # float64 in [0, 16]
    return torch.from_numpy(np.rint(x * (255.0 / 16.0)).astype(np.uint8))[:, None]


def _pil_to_uint8(transform=None):
    from torchvision.transforms.functional import pil_to_tensor

    def f(image):
        if transform is not None:
            image = transform(image)
        return pil_to_tensor(image.convert("RGB"))

    return f


# the splits each dataset has; DIGITS and FOLDER are one split holding every image
SPLITS = {"CIFAR10": ("train", "test"), "CELEBA": ("train", "valid", "test", "all"), "LSUN": ("train", "val"),
          "DIGITS": ("train",), "FOLDER": ("train",)}


def _check_split(name: str, split: str) -> None:
    """Refuse a split the dataset does not have (silently reading another split would give wrong statistics)."""
    splits = SPLITS.get("LSUN" if name.startswith("LSUN") else name)
    if splits is not None and split not in splits:
        raise DatasetError(f"Dataset {name} has no split {split!r}; choose one of {', '.join(splits)}")


def image_dataset(cfg: dict, split: str = "train") -> Dataset:
    """The config's dataset as uint8 images. ``split`` is 'train' or 'test' (CelebA also 'valid')."""
    from torchvision import transforms

    section = cfg.get("Dataset", {})
    name = str(section.get("dataset", "")).upper()
    root = Path(section.get("root") or f"data/{name.lower()}")
    download = bool(section.get("download", False))
    size = section.get("image_size")
    hint = "set Dataset.root to the folder that holds it, or --set Dataset.download=true to fetch it"
    _check_split(name, split)
    if name == "DIGITS":
        return TensorImages(digits_images())
    if name == "FOLDER":
        return FolderImages(root, int(section.get("channels", 3)), size)
    if name == "CIFAR10":
        from torchvision.datasets import CIFAR10

        try:
            base = CIFAR10(str(root), train=split == "train", download=download)
        except RuntimeError:
            raise DatasetError(f"CIFAR-10 not found in {root} (looked for cifar-10-batches-py); {hint}") from None
        except OSError as e:  # download=true without a network (URLError), or a root that cannot be written
            raise DatasetError(f"CIFAR-10 could not be fetched into {root}: {getattr(e, 'reason', None) or e}") \
                from None
        return _Mapped(base, _pil_to_uint8())
    if name == "CELEBA":
        from torchvision.datasets import CelebA

        # DDIM's crop: the 128×128 square at rows 57..184, columns 25..152, then resized
        crop = transforms.Compose([transforms.Lambda(lambda im: im.crop((25, 57, 25 + 128, 57 + 128))),
                                  transforms.Resize(size or 64)])
        try:
            base = CelebA(str(root), split=split, download=download)
        except (RuntimeError, FileNotFoundError):
            raise DatasetError(f"CelebA not found in {root} (torchvision layout: {root}/celeba/img_align_celeba); "
                               f"{hint}") from None
        return _Mapped(base, _pil_to_uint8(crop))
    if name.startswith("LSUN"):
        from torchvision.datasets import LSUN

        category = section.get("category") or (name.split("_", 1)[1].lower() if "_" in name else "church_outdoor")
        category = {"church": "church_outdoor"}.get(category, category)
        resize = transforms.Compose([transforms.Resize(size or 256), transforms.CenterCrop(size or 256)])
        try:
            base = LSUN(str(root), classes=[f"{category}_{split}"])
        except ValueError as e:  # torchvision's check of the category name
            raise DatasetError(f"LSUN: {str(e).splitlines()[0] if str(e) else 'unknown category'} "
                               f"(Dataset.category {category!r})") from None
        except ImportError:
            raise DatasetError("LSUN needs the optional 'lmdb' package: pip install lmdb") from None
        except Exception:
            raise DatasetError(f"LSUN {category} lmdb not found in {root}; download it with the LSUN tools and "
                               f"set Dataset.root") from None
        return _Mapped(base, _pil_to_uint8(resize))
    raise DatasetError(f"unknown Dataset.dataset {section.get('dataset')!r}; choose CIFAR10, CELEBA, LSUN_church, "
                       f"LSUN_bedroom, FOLDER or DIGITS")
