"""Scoring a block of analytic-mixture samples against their exact endpoints: per-mixture RMSE, its mean and
median, and the flips; shared by the fixed rows (``analytic``) and the tuned rows (``tuned``)."""
from __future__ import annotations

import numpy as np
import torch

FLIP = 0.5  # a sample whose RMSE exceeds this ended in another mixture component (component means are ~1.4 apart)


def summarise(x0: torch.Tensor, exact: torch.Tensor, n_mixtures: int, batch: int) -> dict:
    """``MixtureSet.errors`` of ``n_mixtures`` consecutive blocks of ``batch`` samples."""
    per_sample = ((x0 - exact) ** 2).flatten(1).mean(1).reshape(n_mixtures, batch)  # squared errors
    per_mixture = per_sample.mean(1).sqrt().numpy()
    return dict(rmse=float(np.mean(per_mixture)), median=float(np.median(per_mixture)),
                flips=int((per_sample.sqrt() > FLIP).sum()), per_mixture=[float(v) for v in per_mixture])
