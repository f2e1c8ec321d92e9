"""The training data: the dataset checked against the model, and the batches of each step.

The data order of epoch e is a permutation drawn from (seed, e); each step takes the next ``batch × world``
indices of it (the last incomplete block is dropped) and rank r the r-th ``batch`` of them, so the ranks see
disjoint shards and a resume needs only the epoch and the position in its permutation.
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from ..config import get
from ..errors import ConfigError
from ..seeds import derive_seed
from .rng import DATA


def training_dataset(cfg: dict, channels: int, size: int) -> Dataset:
    """The config's training split, refused (ConfigError/DatasetError) when empty or of the wrong image shape."""
    from ..datasets import image_dataset

    split = get(cfg, "Dataset", "split", "train")
    if split != "train":  # stats and the noise floor read other splits; training on one would be a mistake
        raise ConfigError(f"Dataset.split is {split!r}: training reads the train split (set Dataset.split=train "
                          f"or leave it out)")
    dataset = image_dataset(cfg, "train")
    name = get(cfg, "Dataset", "dataset")
    if len(dataset) == 0:
        raise ConfigError(f"Dataset {name} is empty")
    first = dataset[0][0]
    if tuple(first.shape) != (channels, size, size):
        raise ConfigError(f"Dataset {name} gives images of shape {tuple(first.shape)} but the Model expects "
                          f"{(channels, size, size)} (Model.in_channels, Model.image_size)")
    return dataset


def epoch_permutation(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The data order of ``epoch``: a permutation of range(n), the same on every rank and every run."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(seed, DATA, epoch)))


def rank_batches(perm: torch.Tensor, position: int, batch: int, world: int, rank: int) -> list[list[int]]:
    """The batches of ``rank`` for the rest of the epoch, from ``position`` (images of ``perm`` consumed).

    Each step consumes the next ``batch × world`` indices; rank r takes the r-th block of ``batch``. A final
    block shorter than ``batch × world`` is dropped (every step has the same number of images).
    """
    step = batch * world
    out = []
    for start in range(position, len(perm) - step + 1, step):
        lo = start + rank * batch
        out.append(perm[lo:lo + batch].tolist())
    return out


def epoch_loader(dataset: Dataset, *, seed: int, epoch: int, position: int, batch: int, world: int, rank: int,
                 num_workers: int, pin_memory: bool) -> DataLoader:
    """The rest of ``epoch`` for ``rank``, from ``position``. The loader has its own generator: by default it
    would draw its workers' base seed from the global generator, which carries the dropout stream."""
    batches = rank_batches(epoch_permutation(seed, epoch, len(dataset)), position, batch, world, rank)
    return DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, pin_memory=pin_memory,
                      generator=torch.Generator().manual_seed(derive_seed(seed, DATA, epoch, rank, position)))


def to_model_space(images: torch.Tensor) -> torch.Tensor:
    """uint8 images → float32 in [-1, 1] (x/127.5 − 1)."""
    return images.float() / 127.5 - 1.0
