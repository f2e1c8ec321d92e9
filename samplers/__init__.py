"""Diffusion samplers as pure functions: the noise schedule, the transfer φ, the pseudo numerical methods of
PNDM (Liu et al., ICLR 2022), their classical baselines, and one ``sample()`` entry point.

    from samplers import NoiseSchedule, sample, available, plan
    x0 = sample(model, x_T, NoiseSchedule('linear'), method='F-PNDM', steps=50)
    plan('F-PNDM', NoiseSchedule('linear'), 50).nfe  # 59, validated without running
"""
from .api import Method, Plan, SampleInfo, available, expected_nfe, get_method, plan, sample
from .grids import Grid, uniform_grid
from .schedule import CONVENTIONS, KINDS, NoiseSchedule
from .transfer import transfer

__all__ = [
    "CONVENTIONS", "KINDS", "Grid", "Method", "NoiseSchedule", "Plan", "SampleInfo", "available", "expected_nfe",
    "get_method", "plan", "sample", "transfer", "uniform_grid",
]
