"""Diffusion samplers as pure functions: the noise schedule, the transfer φ, the pseudo numerical methods of
PNDM (Liu et al., ICLR 2022), their classical baselines, and one ``sample()`` entry point.

    from samplers import NoiseSchedule, sample, available, plan
    x0 = sample(model, x_T, NoiseSchedule('linear'), method='F-PNDM', steps=50)
    plan('F-PNDM', NoiseSchedule('linear'), 50).nfe  # 59, validated without running
    grid = tune_timesteps(network, schedule, 'UniPC-3(bh2)', nfe=10, x_T=noise)  # a learned 10-NFE grid
    x0 = sample(network, x_T, schedule, 'UniPC-3(bh2)', timesteps=grid)
    grid = search_timesteps(fid_on_other_noise, schedule, 'DPM-Solver++(2M)', nfe=3, learn_first=True, last=0.0)
    solver = learn_solver(network, schedule, nfe=5, x_T=noise)  # grid, coefficients and network times learned
    x0 = sample(network, x_T, schedule, solver)
"""
from .api import Method, Plan, SampleInfo, available, expected_nfe, get_method, plan, sample
from .grids import Grid, uniform_grid
from .learned import LearnedSolver
from .schedule import CONVENTIONS, KINDS, NoiseSchedule
from .search import SearchInfo, search_timesteps
from .solver_tuning import LearnedSolverInfo, learn_solver
from .transfer import transfer
from .tuning import TuningInfo, tune_timesteps

__all__ = [
    "CONVENTIONS", "KINDS", "Grid", "LearnedSolver", "LearnedSolverInfo", "Method", "NoiseSchedule", "Plan",
    "SampleInfo", "available", "expected_nfe", "get_method", "learn_solver", "plan", "sample", "SearchInfo",
    "search_timesteps", "transfer", "TuningInfo", "tune_timesteps", "uniform_grid",
]
