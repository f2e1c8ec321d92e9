"""Order of convergence on the analytic Gaussian-mixture model, against its exact probability-flow solution
started from the sampler's own first timestep (standard convention, linear schedule).

Findings these tests pin down:
* DDIM is first order, S-PNDM second order, all the way to the data (Property 3.2 of the paper).
* F-PNDM is second order or better while t stays away from 0; its last two steps (to t = 0 and to ā = 1) hit the
  sqrt(t)-like behaviour of the noise level near t = 0, where a multistep formula on a grid uniform in t loses
  order, so over the whole trajectory it is only asserted to beat S-PNDM.
* FON converges to the 1000-step DDIM chain, not to the continuous ODE (its derivative is a one-unit finite
  difference of the DDIM step), so its error stalls near that chain's own error.
"""
import numpy as np
import pytest
import torch

from models import GaussianMixture
from samplers import NoiseSchedule, sample, uniform_grid

STEPS = (50, 100, 250)  # even skips, so Runge-Kutta midpoints fall on integer timesteps
T_CHECK = 100.0  # an intermediate time on every grid above


def _slope(steps, errors):
    return -np.polyfit(np.log(steps), np.log(errors), 1)[0]


@pytest.fixture(scope="module")
def errors():
    """{(method, where): [rmse for each of STEPS]} with where in {'mid', 'end'}."""
    schedule = NoiseSchedule("linear")
    model = GaussianMixture.random(4, (3, 4, 4), seed=1, schedule=schedule)
    x_T = torch.randn(16, 3, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = {}
    for steps in STEPS:
        grid = uniform_grid(schedule, steps)
        ab0 = schedule.alpha_bar(grid[0])
        exact_mid = model.flow_endpoint(x_T, ab0, schedule.alpha_bar(T_CHECK))
        exact_end = model.flow_endpoint(x_T, ab0, 1.0)
        for method in ("DDIM", "S-PNDM", "F-PNDM", "FON"):
            states = {}
            x0 = sample(model, x_T, schedule, method, steps=steps,
                        callback=lambda s: states.__setitem__(s["t_next"], s["x"]))
            rmse = lambda a, b: ((a - b) ** 2).mean().sqrt().item()
            out.setdefault((method, "mid"), []).append(rmse(states[T_CHECK], exact_mid))
            out.setdefault((method, "end"), []).append(rmse(x0, exact_end))
    return out


def test_ddim_first_order(errors):
    for where in ("mid", "end"):
        assert 0.85 < _slope(STEPS, errors["DDIM", where]) < 1.2


def test_s_pndm_second_order(errors):
    for where in ("mid", "end"):
        assert _slope(STEPS, errors["S-PNDM", where]) > 1.7


def test_f_pndm_second_order_away_from_t0(errors):
    assert _slope(STEPS, errors["F-PNDM", "mid"]) > 1.9


def test_f_pndm_beats_s_pndm_and_ddim(errors):
    for where in ("mid", "end"):
        f, s, d = (np.array(errors[m, where]) for m in ("F-PNDM", "S-PNDM", "DDIM"))
        assert np.all(f < s) and np.all(s < d / 2)


def test_fon_stalls_at_the_ddim_chain(errors):
    fon = errors["FON", "mid"]
    assert fon[-1] > 0.5 * fon[1]  # no longer converging to the ODE solution
    assert fon[-1] < 0.5 * errors["DDIM", "mid"][0]  # but accurate to the 1000-step chain's level
