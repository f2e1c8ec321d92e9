"""search_timesteps: a derivative-free grid search on any objective of the whole grid (samplers/search.py)."""
import math

import pytest
import torch

from models import GaussianMixture
from samplers import NoiseSchedule, SearchInfo, sample, search_timesteps
from samplers.grids import SPACINGS, spaced_grid

SCHEDULE = NoiseSchedule("linear")
T = SCHEDULE.T


def distance_to(target):
    """A smooth objective with a known minimum: squared distance (in timesteps) to a valid grid."""
    return lambda grid: sum((a - b) ** 2 for a, b in zip(grid, target))


@pytest.mark.parametrize("method, nfe, learn_first, last", [
    ("DDIM", 4, False, None), ("DPM-Solver++(2M)", 3, True, 0.0), ("iPNDM", 4, True, 0.0), ("S-PNDM", 5, False, 0.0),
])
def test_the_search_finds_a_known_minimum_and_returns_a_valid_grid(method, nfe, learn_first, last):
    steps = {"S-PNDM": nfe - 1}.get(method, nfe)
    target = spaced_grid(SCHEDULE, steps, "quadratic")
    if learn_first:
        target[0] = 850.0
    if last is not None:
        target[-2] = last
    calls = []
    grid, info = search_timesteps(distance_to(target), SCHEDULE, f"{method}@uniform", nfe, evaluations=150,
                                  learn_first=learn_first, last=last, callback=calls.append, return_info=True)
    assert isinstance(info, SearchInfo) and info.steps == steps and len(grid) == steps + 1
    assert grid[-1] == -1 and all(a > b for a, b in zip(grid, grid[1:]))
    assert grid[0] == (grid[0] if learn_first else T - 1) and (last is None or grid[-2] == last)
    start = distance_to(target)(info.start)
    assert info.objective == distance_to(target)(grid) and info.objective_start == start
    assert info.objective < 1e-3 * start  # from the uniform spacing to within a fraction of a timestep
    assert max(abs(a - b) for a, b in zip(grid, target)) < 0.05 * (T / steps)
    # the budget is exact: one call per start candidate, then `evaluations`; the best is reported as it goes
    assert len(calls) == info.evaluations == 1 + 150 and [c["evaluation"] for c in calls] == list(range(1, 152))
    assert calls[-1]["best"] == info.objective == min(c["objective"] for c in calls)


def test_the_start_wins_ties_and_zero_evaluations_pick_the_best_start():
    flat = search_timesteps(lambda g: 1.0, SCHEDULE, "DDIM", 5, evaluations=20, return_info=True)[1]
    first_spacing = next(iter(flat.start_objectives))
    assert flat.start_spacing == first_spacing and flat.grid == flat.start and flat.evaluations == len(
        flat.start_objectives) + 20
    target = spaced_grid(SCHEDULE, 5, "logsnr")
    grid, info = search_timesteps(distance_to(target), SCHEDULE, "DDIM", 5, evaluations=0, return_info=True)
    assert grid == target and info.start_spacing == "logsnr" and info.objective == 0.0
    assert info.evaluations == len(info.start_objectives) and set(info.start_objectives) == set(SPACINGS)


def test_unusable_grids_are_inf_and_the_search_goes_on():
    target = spaced_grid(SCHEDULE, 4, "quadratic")
    objective = lambda g: math.inf if g[1] < 500 else distance_to(target)(g)  # noqa: E731
    grid, info = search_timesteps(objective, SCHEDULE, "DDIM@uniform", 4, evaluations=60, return_info=True)
    assert math.isfinite(info.objective) and info.objective <= info.objective_start and grid[1] >= 500


def test_a_real_objective_improves_on_its_start():
    """The search on a mixture's mean squared error to the exact flow (other noise than the check's)."""
    mixture = GaussianMixture.random(3, (2, 4), seed=4, schedule=SCHEDULE)
    end = float(SCHEDULE.alphas_cumprod[-1])

    def mse_on(seed):
        x = torch.randn(64, 2, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        exact = mixture.flow_endpoint(x, end, 1.0)
        return lambda g: float((sample(mixture, x, SCHEDULE, "DDIM", timesteps=g) - exact).pow(2).mean())

    grid, info = search_timesteps(mse_on(1), SCHEDULE, "DDIM@uniform", 5, evaluations=30, return_info=True)
    assert info.objective < 0.8 * info.objective_start
    held_out = mse_on(2)
    assert held_out(grid) < held_out(info.start)  # DDIM's uniform grid is poor on the linear schedule


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(method="DDPM"), ValueError, "stochastic"),
    (dict(method="PF"), ValueError, "adaptive"),
    (dict(nfe=1), ValueError, "too small"),
    (dict(evaluations=-1), ValueError, "evaluations must be >= 0"),
    (dict(last=T), ValueError, "last must be a timestep"),
    (dict(nfe=2, last=0.0), ValueError, "no timestep is left to learn"),
    (dict(objective=lambda g: float("nan")), ValueError, "objective returned NaN"),
    (dict(objective=lambda g: "low"), TypeError, "objective must return a float"),
    (dict(objective=3.0), TypeError, "objective must be a callable"),
    (dict(schedule="linear"), TypeError, "schedule must be a samplers.NoiseSchedule"),
])
def test_bad_inputs_are_one_line_errors(kwargs, error, message):
    args = dict(objective=lambda g: 0.0, schedule=SCHEDULE, method="DDIM", nfe=4) | kwargs
    with pytest.raises(error) as e:
        search_timesteps(args.pop("objective"), args.pop("schedule"), args.pop("method"), args.pop("nfe"), **args)
    assert message in str(e.value) and "\n" not in str(e.value)
