"""Image files: model output ↔ uint8, PNG files written atomically, the sample folder layout."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] model space → uint8, rounding like torchvision's save_image: floor(255·(x+1)/2 + 0.5)."""
    return ((x.float() + 1) * 127.5 + 0.5).clamp_(0, 255).to(torch.uint8)


def sample_path(out_dir: Path, index: int, total: int) -> Path:
    """DIR/000123.png, or DIR/012/012345.png (subfolders of 1000) when there are more than 10,000 images."""
    name = f"{index:06d}.png"
    return out_dir / f"{index // 1000:03d}" / name if total > 10_000 else out_dir / name


def write_png(path: Path, image: torch.Tensor) -> None:
    """Write a CHW uint8 tensor as PNG under a temporary name, then rename: a killed run never leaves a
    truncated image behind."""
    array = image.permute(1, 2, 0).numpy()
    if array.shape[2] == 1:
        array = array[:, :, 0]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp")
    Image.fromarray(array).save(tmp, format="PNG")
    os.replace(tmp, path)


def remove_stale_temporaries(out_dir: Path) -> None:
    for tmp in out_dir.rglob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and
                  not p.name.startswith("."))


def read_image(path: Path, channels: int) -> np.ndarray:
    """An image file as a CHW uint8 array with ``channels`` channels (1 = grayscale, 3 = RGB)."""
    with Image.open(path) as im:
        im = im.convert("L" if channels == 1 else "RGB")
        array = np.asarray(im, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
