"""Diffusion samplers as pure functions: the noise schedule, the transfer φ, the pseudo numerical methods of
PNDM (Liu et al., ICLR 2022), their classical baselines, and one ``sample()`` entry point.

    from samplers import NoiseSchedule, sample, available
    x0 = sample(model, x_T, NoiseSchedule('linear'), method='F-PNDM', steps=50)
"""
from .api import Method, SampleInfo, available, expected_nfe, get_method, sample
from .grids import uniform_grid
from .schedule import CONVENTIONS, KINDS, NoiseSchedule
from .transfer import transfer

__all__ = [
    "CONVENTIONS", "KINDS", "Method", "NoiseSchedule", "SampleInfo", "available", "expected_nfe", "get_method",
    "sample", "transfer", "uniform_grid",
]
