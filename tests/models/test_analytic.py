"""The analytic model against independent computations: autograd of the mixture's log-density, and the
closed-form probability-flow map of a single Gaussian."""
import math

import numpy as np
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from models import GaussianMixture, MixtureBank
from samplers import NoiseSchedule


def test_eps_is_scaled_score_of_the_noisy_marginal():
    gm = GaussianMixture.random(3, (2, 3), seed=0)
    x = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for ab in (0.02, 0.5, 0.97):
        std = torch.sqrt(ab * gm.variances + 1 - ab)[:, None].expand(-1, 6)
        marginal = MixtureSameFamily(Categorical(logits=gm.log_weights),
                                     Independent(Normal(math.sqrt(ab) * gm.means, std), 1))
        xr = x.reshape(5, 6).clone().requires_grad_(True)
        (score,) = torch.autograd.grad(marginal.log_prob(xr).sum(), xr)
        expected = -math.sqrt(1 - ab) * score
        torch.testing.assert_close(gm.eps_at(x, ab).reshape(5, 6), expected, atol=1e-10, rtol=1e-9)


def test_model_call_uses_interpolated_schedule():
    s = NoiseSchedule("linear")
    gm = GaussianMixture.random(2, (4,), seed=3, schedule=s)
    x = torch.randn(2, 4, dtype=torch.float64)
    t = torch.tensor([417.5, 417.5])
    torch.testing.assert_close(gm(x, t), gm.eps_at(x, float(s.alpha_bar_lerp_clamped(417.5))))
    assert gm(x.float(), t).dtype == torch.float32


def test_flow_endpoint_matches_gaussian_closed_form():
    """For N(mu, s² I) data the flow keeps z = (x − sqrt(ā)·mu)/sqrt(ā·s² + 1 − ā) fixed."""
    mu, s2 = np.array([[0.5, -1.0, 2.0]]), 0.04
    gm = GaussianMixture(mu, s2)
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    mu_t = torch.from_numpy(mu)
    for ab0, ab1 in ((1e-4, 1.0), (0.3, 0.9)):
        z = (x - math.sqrt(ab0) * mu_t) / math.sqrt(ab0 * s2 + 1 - ab0)
        expected = math.sqrt(ab1) * mu_t + math.sqrt(ab1 * s2 + 1 - ab1) * z
        torch.testing.assert_close(gm.flow_endpoint(x, ab0, ab1), expected, atol=1e-7, rtol=0)


def test_sample_data_moments():
    gm = GaussianMixture(np.array([[2.0, -2.0]]), 0.25)
    x = gm.sample_data(20000, torch.Generator().manual_seed(0))
    torch.testing.assert_close(x.mean(0), torch.tensor([2.0, -2.0], dtype=torch.float64), atol=0.02, rtol=0)
    torch.testing.assert_close(x.var(0), torch.tensor([0.25, 0.25], dtype=torch.float64), atol=0.01, rtol=0)


def test_mixture_bank_is_each_mixture_on_its_own_block():
    """A bank of mixtures gives every block of the batch its own mixture's ε, flow endpoint and sampler run."""
    import pytest

    from samplers import sample

    s = NoiseSchedule("linear")
    mixtures = [GaussianMixture.random(4, (2, 3), seed=seed, schedule=s) for seed in (0, 1, 2)]
    bank = MixtureBank(mixtures)
    x = torch.randn(6, 2, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    per_sample_ab = torch.linspace(0.1, 0.9, 6, dtype=torch.float64)
    expected = torch.cat([m.eps_at(b, a) for m, b, a in zip(mixtures, x.split(2), per_sample_ab.split(2))])
    torch.testing.assert_close(bank.eps_at(x, per_sample_ab), expected, atol=1e-14, rtol=1e-12)
    t = torch.full((6,), 600.0)
    torch.testing.assert_close(bank(x, t), torch.cat([m(b, t[:2]) for m, b in zip(mixtures, x.split(2))]))
    run = sample(bank, x, s, "UniPC-3(bh1)", steps=7)
    torch.testing.assert_close(run, torch.cat([sample(m, b, s, "UniPC-3(bh1)", steps=7)
                                               for m, b in zip(mixtures, x.split(2))]), atol=1e-12, rtol=1e-10)
    end = bank.flow_endpoint(x, s.alpha_bar(999))
    torch.testing.assert_close(end, torch.cat([m.flow_endpoint(b, s.alpha_bar(999)) for m, b in
                                               zip(mixtures, x.split(2))]))
    with pytest.raises(ValueError, match="equal blocks"):
        bank(x[:5], t[:5])
    with pytest.raises(ValueError, match="share"):
        MixtureBank([mixtures[0], GaussianMixture.random(3, (2, 3), seed=9, schedule=s)])
