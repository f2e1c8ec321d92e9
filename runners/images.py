"""Image files: model output ↔ uint8, PNG files written atomically (on background threads while sampling goes on),
the sample folder layout."""
from __future__ import annotations

import collections
import contextlib
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import torch
from PIL import Image

from .errors import OutputError
from .files import write_atomic

def to_uint8(x: torch.Tensor, centered: bool = True) -> torch.Tensor:
    """Model space → uint8, rounding like torchvision's save_image: floor(255·(x+1)/2 + 0.5) for data in [-1, 1]
    (``centered``, every released network), floor(255·x + 0.5) for data in [0, 1] (score-SDE's ``centered: false``
    networks, which map their input to 2x − 1 themselves, so that their samples come out in [0, 1])."""
    x = x.float() if centered else x.float() * 2 - 1
    return ((x + 1) * 127.5 + 0.5).clamp_(0, 255).to(torch.uint8)


FLAT_LIMIT = 10_000  # more images than this go into subfolders of 1000


def sample_path(out_dir: Path, index: int, total: int) -> Path:
    """DIR/000123.png, or DIR/012/012345.png (subfolders of 1000) when there are more than FLAT_LIMIT images."""
    name = f"{index:06d}.png"
    return out_dir / f"{index // 1000:03d}" / name if total > FLAT_LIMIT else out_dir / name


def image_indices(out_dir: Path) -> list[int]:
    """The sample indices whose PNGs are in ``out_dir``, in either layout (files named as ``sample_path`` names
    them)."""
    return [int(p.stem) for p in Path(out_dir).rglob("*.png") if p.stem.isdigit() and len(p.stem) >= 6]


def move_to_layout(out_dir: Path, old_total: int, new_total: int) -> int:
    """Move the samples 0..old_total−1 of a folder laid out for ``old_total`` images to where ``sample_path`` puts
    them for ``new_total`` (a run grown past FLAT_LIMIT images goes into subfolders: its flat files are moved there,
    not sampled again). Each move is one rename, so an interrupted call leaves every image at one of its two
    places and a rerun finishes it. Returns the number of files moved."""
    moved = 0
    for i in range(old_total):
        src, dst = sample_path(out_dir, i, old_total), sample_path(out_dir, i, new_total)
        if src == dst or not src.exists():
            continue
        try:
            dst.parent.mkdir(exist_ok=True)
            os.replace(src, dst)
        except OSError as e:
            raise OutputError(f"cannot move {src} to {dst}: {e.strerror or e}") from None
        moved += 1
    if old_total > FLAT_LIMIT >= new_total:  # the subfolders the images left (a folder shrunk back to flat)
        for sub in {sample_path(out_dir, i, old_total).parent for i in range(0, old_total, 1000)}:
            with contextlib.suppress(OSError):
                sub.rmdir()  # only if empty
    return moved


def write_png(path: Path, image: torch.Tensor) -> None:
    """Write a CHW uint8 tensor as PNG, atomically: a killed run never leaves a truncated image behind."""
    array = image.permute(1, 2, 0).numpy()
    if array.shape[2] == 1:
        array = array[:, :, 0]
    # PIL's default zlib level: at 8×8 and 32×32 pixels the level does not change the encoding time (measured,
    # docs/PERFORMANCE.md); the file system calls of the atomic write cost as much as the encoding
    write_atomic(Path(path), lambda fh: Image.fromarray(array).save(fh, format="PNG"))


def _write_all(items: list) -> tuple[int, float]:
    """One background task: a batch's images, in order; a failing file system is a one-line OutputError.
    Returns the count and the seconds it took."""
    started = time.perf_counter()
    for path, image in items:
        try:
            write_png(path, image)
        except OSError as e:
            raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
    return len(items), time.perf_counter() - started


class PngWriter:
    """PNG files written by a few background threads while the caller samples the next batch.

    Each ``submit`` is one task (a batch's images); at most ``max_pending`` tasks wait, so memory stays bounded
    when the disk is slower than the sampler. A writer's error is raised in the caller's thread by the next
    ``submit`` or by ``close``, which waits for every file: after a clean ``close`` every submitted PNG is on disk.
    Leaving the block on an exception still waits for the files already submitted (each write is atomic, so
    they are finished images that a rerun keeps), without raising over the exception in flight. ``busy``: the
    writer threads' seconds; ``waited``: the caller's seconds blocked on them.
    """

    def __init__(self, workers: Optional[int] = None, max_pending: int = 8):
        self.pool = ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1),
                                       thread_name_prefix="png-writer")
        self.pending: collections.deque[Future] = collections.deque()
        self.max_pending, self.written, self.busy, self.waited = max_pending, 0, 0.0, 0.0

    def submit(self, paths: list, images: torch.Tensor) -> None:
        while self.pending and self.pending[0].done():
            self._count(self.pending.popleft().result())  # re-raises a writer's exception here
        started = time.perf_counter()
        while len(self.pending) >= self.max_pending:
            self._count(self.pending.popleft().result())
        self.waited += time.perf_counter() - started
        self.pending.append(self.pool.submit(_write_all, list(zip(paths, images))))

    def _count(self, done: tuple[int, float]) -> None:
        self.written += done[0]
        self.busy += done[1]

    def close(self) -> None:
        """Wait for every submitted file; raise the first writer error."""
        error = self._finish()
        if error is not None:
            raise error

    def _finish(self) -> Optional[BaseException]:
        started = time.perf_counter()
        self.pool.shutdown(wait=True)
        self.waited += time.perf_counter() - started
        first = None
        for future in self.pending:
            if future.exception() is None:
                self._count(future.result())
            elif first is None:
                first = future.exception()
        self.pending.clear()
        return first

    def __enter__(self) -> "PngWriter":
        return self

    def __exit__(self, kind, error, tb) -> None:
        if kind is None:
            self.close()
        else:
            self._finish()  # the files already submitted finish (each is atomic); the exception in flight wins
