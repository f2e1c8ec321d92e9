"""The ``logsnr-ends`` spacing (samplers/grids.py): equal steps in λ with a long first step (3 intervals) and a long
final jump to data (round(√N) intervals), against the plain ``logsnr`` grid and a grid that evaluates σ_min (t = 0,
as diffusers' exponential sigmas do) before its final step."""
import math

import numpy as np
import pytest
import torch

from models import GaussianMixture, MixtureBank
from samplers import NoiseSchedule, available, sample
from samplers.grids import ENDS_FIRST_STEP, SPACINGS, ends_positions, make_spaced_grid, spaced_grid

SCHEDULE = NoiseSchedule("linear")


def lam(schedule, t):
    ab = schedule.alpha_bar_lerp(t)
    return 0.5 * math.log(ab / (1 - ab))


def test_ends_positions_exact():
    # steps = 4: b = 2, M = 4 - 2 + 3 + 2 = 7 intervals; keep 0, then 3/7, 4/7, 5/7 (the jump spans 2/7)
    np.testing.assert_allclose(ends_positions(4), [0, 3 / 7, 4 / 7, 5 / 7], rtol=0, atol=1e-15)
    # steps = 20: b = 4, M = 25
    np.testing.assert_allclose(ends_positions(20), [0] + [(3 + i) / 25 for i in range(19)], rtol=0, atol=1e-15)
    assert ends_positions(1).tolist() == [0.0]
    assert ENDS_FIRST_STEP == 3 and "logsnr-ends" in SPACINGS


def test_small_schedule_grid_values():
    """On a 10-step schedule, 4 steps: the points' λ are λ(9) + (3/7, 4/7, 5/7)·(λ(0) − λ(9)), each inverted
    through the linearly interpolated ā; checked against values computed by hand from the table."""
    s = NoiseSchedule("linear", num_timesteps=10)
    grid = spaced_grid(s, 4, "logsnr-ends")
    ab = s.alphas_cumprod.astype(np.float64)
    ls = 0.5 * np.log((1 - ab) / ab)
    expected = [9.0]
    for u in (3 / 7, 4 / 7, 5 / 7):
        target = 1 / (1 + np.exp(2 * (ls[-1] + u * (ls[0] - ls[-1]))))
        i = int(np.searchsorted(-ab, -target))  # first table entry with ā < target: t lies in [i − 1, i]
        expected.append(i - 1 + (ab[i - 1] - target) / (ab[i - 1] - ab[i]))
    np.testing.assert_allclose(grid[:-1], expected, rtol=0, atol=1e-9)
    assert grid[-1] == -1.0
    np.testing.assert_allclose(grid, [9.0, 1.649633, 0.813537, 0.273648, -1.0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("steps", [1, 2, 5, 10, 20, 50, 200])
def test_grid_is_strictly_decreasing_with_the_stated_lambda_steps(steps):
    grid = spaced_grid(SCHEDULE, steps, "logsnr-ends")
    assert len(grid) == steps + 1 and grid[0] == 999.0 and grid[-1] == -1.0
    assert all(b < a for a, b in zip(grid, grid[1:])) and grid[-2] > 0
    if steps < 2:
        return
    b = max(1, round(math.sqrt(steps)))
    h = (lam(SCHEDULE, 0) - lam(SCHEDULE, 999)) / (steps - 2 + ENDS_FIRST_STEP + b)
    lams = [lam(SCHEDULE, t) for t in grid[:-1]]
    np.testing.assert_allclose(lams[1] - lams[0], ENDS_FIRST_STEP * h, rtol=1e-6)
    np.testing.assert_allclose(np.diff(lams[1:]), h, rtol=1e-6)
    np.testing.assert_allclose(lam(SCHEDULE, 0) - lams[-1], b * h, rtol=1e-6)


def test_accepted_by_sample_as_a_spacing_and_as_timesteps():
    gm = GaussianMixture.random(3, (2, 2, 2), seed=0, schedule=SCHEDULE)
    x = torch.randn(3, 2, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grid = spaced_grid(SCHEDULE, 12, "logsnr-ends")
    by_name, info = sample(gm, x, SCHEDULE, "UniPC-3(bh2)@logsnr-ends", steps=12, return_info=True)
    by_list = sample(gm, x, SCHEDULE, "UniPC-3(bh2)", timesteps=grid)
    assert info.timesteps == grid and info.nfe == 12
    assert torch.equal(by_name, by_list)
    assert make_spaced_grid(SCHEDULE, 12, "logsnr-ends").timesteps == tuple(grid)
    assert "iPNDM@logsnr-ends" in available() and "DDIM@logsnr-ends" in available()


def test_long_ends_beat_sigma_min_and_plain_logsnr_on_the_analytic_mixtures():
    """20-step UniPC-3(bh2) on 4 mixtures × 8 samples: the long ends are more accurate than plain logsnr and than
    the same λ-spacing evaluated down to σ_min (t = 0) before the final step, diffusers' exponential-sigma grid.
    Measured: RMSE 1.24e-3 against 1.85e-3 (logsnr) and 2.38e-3 (σ_min), on every one of the 4 mixtures."""
    torch.set_num_threads(1)
    mixtures = [GaussianMixture.random(8, (3, 8, 8), seed=s, schedule=SCHEDULE) for s in range(4)]
    bank = MixtureBank(mixtures)
    x = torch.cat([torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(1000 + s), dtype=torch.float64)
                   for s in range(4)])
    exact = bank.flow_endpoint(x, SCHEDULE.alpha_bar(999))

    def rmse(x0):  # per mixture
        return ((x0 - exact) ** 2).flatten(1).mean(1).reshape(4, 8).mean(1).sqrt().numpy()

    ab = SCHEDULE.alphas_cumprod.astype(np.float64)
    ls = 0.5 * np.log((1 - ab) / ab)
    sigma_min_grid = np.interp(1 / (1 + np.exp(2 * np.linspace(ls[-1], ls[0], 20))), ab[::-1],
                               np.arange(1000.0)[::-1]).tolist()
    sigma_min_grid[0], sigma_min_grid[-1] = 999.0, 0.0  # 20 evaluations, the last at σ_min, then data
    ends = rmse(sample(bank, x, SCHEDULE, "UniPC-3(bh2)@logsnr-ends", steps=20))
    plain = rmse(sample(bank, x, SCHEDULE, "UniPC-3(bh2)@logsnr", steps=20))
    at_sigma_min = rmse(sample(bank, x, SCHEDULE, "UniPC-3(bh2)", timesteps=sigma_min_grid + [-1.0]))
    assert np.all(ends < plain) and np.all(ends < at_sigma_min)
    assert ends.mean() < 0.8 * plain.mean() and ends.mean() < 0.65 * at_sigma_min.mean()
