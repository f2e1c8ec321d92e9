"""The same algorithm in diffusers, on the same grid, gives the same samples (an independent implementation).

diffusers' DDIMScheduler / PNDMScheduler(skip_prk_steps=False) / DDPMScheduler with set_alpha_to_one=True,
steps_offset=0 and 'leading' spacing are DDIM, F-PNDM and DDPM under our standard convention. (F-PNDM only when
T // steps is even: diffusers evaluates the Runge–Kutta midpoints at the integer T // steps // 2, the released
code — and we — at the float midpoint, so for an odd skip they differ by ~1e-3.)
"""
import pytest
import torch

from models import GaussianMixture
from runners.frontier.diffusers_side import run_scheduler
from samplers import NoiseSchedule, sample

SCHEDULE = NoiseSchedule("linear")


def run_diffusers(scheduler, model, x, steps, **step_kwargs):
    """x0 of the shared diffusers driver (runners.frontier.diffusers_side.run_scheduler)."""
    return run_scheduler(scheduler, model, x, steps, **step_kwargs)[0]


@pytest.fixture(scope="module")
def model():
    return GaussianMixture.random(3, (3, 4, 4), seed=2, schedule=SCHEDULE)


def x_T(n=4):
    return torch.randn(n, 3, 4, 4, generator=torch.Generator().manual_seed(11))


@pytest.mark.parametrize("steps", [10, 50])
def test_ddim_matches_diffusers(model, steps):
    from diffusers import DDIMScheduler

    theirs = run_diffusers(DDIMScheduler(clip_sample=False), model, x_T(), steps)
    ours = sample(model, x_T(), SCHEDULE, method="DDIM", steps=steps)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


def test_ddim_eta_matches_diffusers(model):
    from diffusers import DDIMScheduler

    theirs = run_diffusers(DDIMScheduler(clip_sample=False), model, x_T(), 20,
                           generator=torch.Generator().manual_seed(3), eta=0.6)
    ours = sample(model, x_T(), SCHEDULE, method="DDIM", steps=20, eta=0.6,
                  generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


@pytest.mark.parametrize("steps", [10, 50])
def test_f_pndm_matches_diffusers_pndm_with_prk(model, steps):
    from diffusers import PNDMScheduler

    theirs = run_diffusers(PNDMScheduler(skip_prk_steps=False, set_alpha_to_one=True), model, x_T(), steps)
    ours = sample(model, x_T(), SCHEDULE, method="F-PNDM", steps=steps)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


def test_ddpm_matches_diffusers(model):
    from diffusers import DDPMScheduler

    theirs = run_diffusers(DDPMScheduler(clip_sample=False), model, x_T(), 1000,
                           generator=torch.Generator().manual_seed(4))
    ours = sample(model, x_T(), SCHEDULE, method="DDPM", steps=1000, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
