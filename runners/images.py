"""Image files: model output ↔ uint8, PNG files written atomically, the sample folder layout."""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from .files import write_atomic


def to_uint8(x: torch.Tensor, centered: bool = True) -> torch.Tensor:
    """Model space → uint8, rounding like torchvision's save_image: floor(255·(x+1)/2 + 0.5) for data in [-1, 1]
    (``centered``, every released network), floor(255·x + 0.5) for data in [0, 1] (score-SDE's ``centered: false``
    networks, which map their input to 2x − 1 themselves, so that their samples come out in [0, 1])."""
    x = x.float() if centered else x.float() * 2 - 1
    return ((x + 1) * 127.5 + 0.5).clamp_(0, 255).to(torch.uint8)


def sample_path(out_dir: Path, index: int, total: int) -> Path:
    """DIR/000123.png, or DIR/012/012345.png (subfolders of 1000) when there are more than 10,000 images."""
    name = f"{index:06d}.png"
    return out_dir / f"{index // 1000:03d}" / name if total > 10_000 else out_dir / name


def write_png(path: Path, image: torch.Tensor) -> None:
    """Write a CHW uint8 tensor as PNG, atomically: a killed run never leaves a truncated image behind."""
    array = image.permute(1, 2, 0).numpy()
    if array.shape[2] == 1:
        array = array[:, :, 0]
    write_atomic(Path(path), lambda fh: Image.fromarray(array).save(fh, format="PNG"))
