"""plan(): every argument error of sample() before any work, and what a run will do; every method name returns
finite samples; SampleInfo says the NFE and the first model timestep for every method, PF included."""
import dataclasses

import pytest
import torch

from models import GaussianMixture
from samplers import Grid, NoiseSchedule, Plan, available, expected_nfe, get_method, plan, sample, uniform_grid
from samplers.grids import spaced_grid
from samplers.multistep import linear_multistep
from samplers.stochastic import generalized_ddim

SCHEDULE = NoiseSchedule("linear")


@pytest.fixture(scope="module")
def model():
    return GaussianMixture.random(3, (2, 4, 4), seed=0, schedule=SCHEDULE)


def noise(n, dtype=torch.float32):
    return torch.randn(n, 2, 4, 4, generator=torch.Generator().manual_seed(0), dtype=dtype)


# ----------------------------------------------------------------------------------------------------------------
# every name runs

@pytest.mark.parametrize("name", available())
def test_every_name_returns_finite_samples_of_the_inputs_shape_and_dtype(model, name):
    runs = [({}, torch.float32), ({}, torch.float64)] if get_method(name).adaptive else \
        [({"steps": s}, dtype) for s in (1, 3, 10) for dtype in (torch.float32, torch.float64)]
    for kwargs, dtype in runs:
        x_T = noise(2, dtype)
        x0, info = sample(model, x_T, SCHEDULE, name, generator=torch.Generator().manual_seed(1), return_info=True,
                          **kwargs)
        where = f"{name} {kwargs} {dtype}"
        assert x0.shape == x_T.shape and x0.dtype == dtype, where
        assert torch.isfinite(x0).all(), where
        assert info.nfe == len(info.model_timesteps) > 0, where
        assert info.t_start == info.model_timesteps[0], where
        if kwargs:
            assert info.nfe == plan(name, SCHEDULE, **kwargs).nfe, where


# ----------------------------------------------------------------------------------------------------------------
# what plan() returns

def test_plan_of_the_paper_grid():
    p = plan("F-PNDM", SCHEDULE, 50)
    assert isinstance(p, Plan) and isinstance(p.grid, Grid)
    assert p.method == get_method("F-PNDM") and p.convention == "standard" and p.eta is None
    assert p.grid.timesteps == tuple(uniform_grid(SCHEDULE, 50)) and p.grid.steps == 50
    assert p.grid.alpha_bars == tuple(SCHEDULE.alpha_bar(t) for t in p.grid.timesteps)
    assert p.grid.alpha_bar(417.5) == float(SCHEDULE.alphas_cumprod[417])  # floored, as the released code reads
    assert p.nfe == 59 and p.t_start == 980.0


def test_plan_of_the_official_convention_reads_one_entry_later():
    p = plan("FON", SCHEDULE, 33, "official")
    assert p.convention == "official" and p.grid.steps == 34 and p.nfe == 43 and p.t_start == 990.0
    assert p.grid.alpha_bars[-1] == float(SCHEDULE.alphas_cumprod[0])
    assert p.grid.alpha_bar(89.5) == float(SCHEDULE.alphas_cumprod[90])


@pytest.mark.parametrize("name, spacing", [("iPNDM", "quadratic"), ("DPM-Solver++(2M)", "logsnr"),
                                           ("F-PNDM@karras", "karras")])
def test_plan_of_a_spaced_grid_interpolates(name, spacing):
    p = plan(name, SCHEDULE, 8)
    assert p.grid.timesteps == tuple(spaced_grid(SCHEDULE, 8, spacing)) and p.t_start == 999.0
    assert p.grid.alpha_bars == tuple(SCHEDULE.alpha_bar_lerp(t) for t in p.grid.timesteps)
    assert p.grid.alpha_bars[-1] == 1.0
    assert p.grid.alpha_bar(417.5) == SCHEDULE.alpha_bar_lerp(417.5)
    assert p.nfe == expected_nfe(name, 8, SCHEDULE)


def test_plan_of_own_timesteps():
    p = plan("S-PNDM", SCHEDULE, timesteps=[700, 350.5, 0, -1])
    assert p.grid.timesteps == (700.0, 350.5, 0.0, -1.0) and p.t_start == 700.0 and p.nfe == 4
    assert p.grid.alpha_bars[1] == SCHEDULE.alpha_bar_lerp(350.5)


def test_plan_of_pf_has_no_grid_and_no_nfe():
    p = plan("pf", SCHEDULE)
    assert p.method.name == "PF" and p.method.adaptive
    assert (p.grid, p.nfe, p.convention, p.eta, p.t_start) == (None, None, "standard", None, 999.0)
    assert [n for n in available() if get_method(n).adaptive] == ["PF"]


def test_plan_says_which_runs_draw_noise():
    assert plan("DDIM", SCHEDULE, 10).eta is None and plan("DDIM", SCHEDULE, 10, eta=0.0).eta == 0.0
    assert plan("DDIM", SCHEDULE, 10, eta=0.0).method.engine is linear_multistep  # η = 0 is the DDIM step
    stochastic = plan("DDIM@karras", SCHEDULE, 10, eta=0.3)
    assert stochastic.eta == 0.3 and stochastic.method.engine is generalized_ddim
    assert stochastic.method.name == "DDIM@karras" and stochastic.nfe == 10
    assert plan("DDPM", SCHEDULE, 10).eta == 1.0 and plan("F-PNDM", SCHEDULE, 10).eta is None


def test_plan_and_methods_are_read_only():
    p = plan("UniPC-3(bh2)", SCHEDULE, 10)
    assert dict(p.method.options) == {"order": 3, "variant": "bh2"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.nfe = 3
    with pytest.raises(TypeError):
        p.method.options["order"] = 2


def test_expected_nfe_is_the_plans_for_every_name():
    for name in available():
        if not get_method(name).adaptive:
            assert expected_nfe(name, 7, SCHEDULE) == plan(name, SCHEDULE, 7).nfe, name
    with pytest.raises(ValueError, match="PF is adaptive: its NFE is known only after solving"):
        expected_nfe("PF", None, SCHEDULE)


# ----------------------------------------------------------------------------------------------------------------
# plan() raises what sample() raises

BAD = [
    dict(method="RK45", steps=10),
    dict(method="DDIM", steps=10, convention="ddim"),
    dict(method="DDIM", steps=0),
    dict(method="DDIM", steps=1001),
    dict(method="DDIM", steps=2.5),
    dict(method="DDIM", steps=True),
    dict(method="DDIM"),
    dict(method="PF", steps=10),
    dict(method="PF", timesteps=[999, -1]),
    dict(method="PF", eta=0.1),
    dict(method="F-PNDM", steps=10, eta=0.5),
    dict(method="DDPM", steps=10, eta=0.5),
    dict(method="DDIM", steps=10, eta=-1.0),
    dict(method="DDIM", steps=10, eta=float("nan")),
    dict(method="DDIM", steps=10, eta="0.5"),  # a TypeError from a comparison before
    dict(method="DDIM", steps=10, eta=True),  # was taken as η = 1
    dict(method="DDIM@", steps=10),
    dict(method="DDIM", steps=1000, convention="official"),
    dict(method="S-PNDM@paper", steps=333, convention="official"),
    dict(method="iPNDM@cosine", steps=5),
    dict(method="PF@karras"),
    dict(method="DDIM@karras", steps=5, convention="official"),
    dict(method="iPNDM", steps=5, convention="official"),
    dict(method="DDIM", timesteps=[999, 999, -1]),
    dict(method="DDIM", timesteps=[1000, 500, -1]),
    dict(method="DDIM", timesteps=[999, -1, -2]),
    dict(method="DDIM", timesteps=[999]),
    dict(method="DDIM", timesteps=[999, float("nan"), -1]),
    dict(method="DDIM", timesteps="abc"),
    dict(method="DDIM", timesteps=[999, -1], steps=1),
    dict(method="DDIM@karras", timesteps=[999, -1]),
    dict(method="DDIM", timesteps=[999, -1], convention="official"),
    dict(method="DDIM", steps=0, eta=-1.0),  # several errors: the first that sample() reports
    dict(method="F-PNDM", steps=0, convention="bogus"),
]


def _error(f, **kwargs):
    with pytest.raises(Exception) as caught:
        f(**kwargs)
    return type(caught.value), str(caught.value)


@pytest.mark.parametrize("kwargs", BAD, ids=repr)
def test_plan_raises_what_sample_raises(kwargs):
    def never_called(x, t):
        raise AssertionError("no model call for bad arguments")

    from_sample = _error(sample, model=never_called, x_T=noise(1), schedule=SCHEDULE, **kwargs)
    from_plan = _error(plan, schedule=SCHEDULE, **kwargs)
    assert from_plan == from_sample
    assert from_plan[0] is ValueError


def test_plan_rejects_a_non_schedule():
    with pytest.raises(TypeError, match="schedule must be a samplers.NoiseSchedule, got str"):
        plan("DDIM", "linear", 10)


# ----------------------------------------------------------------------------------------------------------------
# SampleInfo

def test_sample_info_of_pf_has_nfe_and_t_start(model):
    seen = []
    _, info = sample(model, noise(2), SCHEDULE, "PF", rtol=1e-3, atol=1e-3, return_info=True,
                     callback=lambda s: seen.append(s["nfe"]))
    assert info.nfe == len(info.model_timesteps) == len(seen) > 10 and seen[-1] == info.nfe
    assert info.t_start == 999.0 == info.model_timesteps[0]
    assert (info.method, info.convention, info.timesteps) == ("PF", "standard", None)


@pytest.mark.parametrize("name, steps, convention, t_start", [("DDIM", 10, "standard", 900.0),
                                                                ("F-PNDM", 33, "official", 990.0),
                                                                ("UniPC-3(bh2)", 10, "standard", 999.0)])
def test_sample_info_t_start_is_the_plans(model, name, steps, convention, t_start):
    _, info = sample(model, noise(1), SCHEDULE, name, steps, convention, return_info=True)
    p = plan(name, SCHEDULE, steps, convention)
    assert info.t_start == p.t_start == t_start == info.model_timesteps[0]
    assert info.nfe == p.nfe and info.timesteps == list(p.grid.timesteps)


def test_expected_nfe_takes_a_learned_solver_as_plan_and_sample_do():
    from samplers import LearnedSolver

    solver = LearnedSolver.start([999.0, 600.0, 300.0, 100.0, -1.0])
    assert expected_nfe(solver, None, SCHEDULE) == plan(solver, SCHEDULE).nfe == 4
