"""An analytic diffusion model: Gaussian-mixture data, with the exact ε at every noise level and the exact
probability-flow endpoint. It is the yardstick for sampler accuracy, convergence order and overhead.

Data x0 ~ Σ_k w_k N(μ_k, s_k² I). Under x_t = sqrt(ā)·x0 + sqrt(1−ā)·z the marginal is the mixture of
N(sqrt(ā)·μ_k, v_k I) with v_k = ā·s_k² + 1 − ā, so the optimal noise prediction is

    ε(x, ā) = −sqrt(1−ā)·∇log p_ā(x) = sqrt(1−ā) · Σ_k r_k(x)·(x − sqrt(ā)·μ_k) / v_k

with r_k(x) the posterior responsibilities. With one component this is exactly the model of
../shared/reference (eps = (x − sqrt(a)·mu)·sqrt(1−a) / (a·s2 + 1 − a)).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torch import Tensor


def mixture_eps(x: Tensor, alpha_bar: Tensor, means: Tensor, variances: Tensor, log_weights: Tensor) -> Tensor:
    """ε of M mixtures at once: x (M, B, D), alpha_bar (M or 1, B or 1, 1), means (M, K, D), variances and
    log_weights (M, K); sample b of block m is scored under mixture m. Float64 in, float64 out.

    Written with matrix products (|x − aμ|² = |x|² − 2a·x·μ + a²|μ|², Σ_k c_k (x − aμ_k) = x Σ_k c_k − a Σ_k c_k μ_k)
    so that no (M, B, K, D) tensor is formed: the frontier benchmark runs 64 mixtures × 32 samples in one batch.
    """
    means, variances, log_weights = (v.to(x.device) for v in (means, variances, log_weights))
    a = alpha_bar.sqrt()
    var = alpha_bar * variances[:, None, :] + (1 - alpha_bar)  # (M, B, K)
    x_mu = torch.bmm(x, means.transpose(1, 2))  # (M, B, K)
    sq = (x * x).sum(-1, keepdim=True) - 2 * a * x_mu + alpha_bar * (means * means).sum(-1)[:, None, :]
    log_lik = log_weights[:, None, :] - 0.5 * x.shape[-1] * torch.log(var) - 0.5 * sq / var
    c = torch.softmax(log_lik, dim=-1) / var  # posterior responsibility r_k(x) over v_k
    return (1 - alpha_bar).sqrt() * (x * c.sum(-1, keepdim=True) - a * torch.bmm(c, means))


class _TimestepModel:
    """``model(x, t)`` for a class with ``eps_at(x, alpha_bar)`` and a ``schedule``: ā is the schedule's table
    linearly interpolated at the (float) timesteps t.

    ε is differentiable in x, and in t when t requires grad (learned time grids, ``samplers.tune_timesteps``):
    then ā comes from the torch version of the same interpolation, equal to the numpy one up to rounding.
    """

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        if self.schedule is None:
            raise ValueError(f"{type(self).__name__} needs a schedule to map timesteps to noise levels")
        if isinstance(t, Tensor) and t.requires_grad:
            ab = self.schedule.alpha_bar_lerp_torch(t.clamp(0, self.schedule.T - 1))
        else:
            ab = self.schedule.alpha_bar_lerp_clamped(torch.as_tensor(t).detach().cpu().double().numpy())
        return self.eps_at(x, ab)


class GaussianMixture(_TimestepModel):
    """ε-model of Gaussian-mixture data on a given ``NoiseSchedule``.

    Called as ``model(x, t)`` with float timesteps t of shape (B,): alpha_bar is the schedule's table linearly
    interpolated at t (clamped to [0, T−1]). Computes in float64 and returns the input's dtype.
    """

    def __init__(self, means, variances, weights: Optional[Sequence[float]] = None, schedule=None):
        means = torch.as_tensor(np.asarray(means), dtype=torch.float64)
        if means.ndim < 2:
            raise ValueError("means must have shape (K, *data_shape)")
        k = means.shape[0]
        variances = torch.as_tensor(np.broadcast_to(np.asarray(variances, dtype=np.float64), (k,)).copy())
        weights = torch.full((k,), 1.0 / k, dtype=torch.float64) if weights is None else \
            torch.as_tensor(np.asarray(weights, dtype=np.float64))
        if not (torch.all(variances > 0) and torch.all(weights > 0)):
            raise ValueError("variances and weights must be positive")
        self.means = means.reshape(k, -1)
        self.data_shape = tuple(means.shape[1:])
        self.variances = variances
        self.log_weights = torch.log(weights / weights.sum())
        self.schedule = schedule

    @classmethod
    def random(cls, num_components: int, data_shape: Sequence[int], seed: int = 0, spread: float = 1.0,
               variance_range=(0.02, 0.2), schedule=None) -> "GaussianMixture":
        """A reproducible random mixture: means ~ N(0, spread²), variances log-uniform in ``variance_range``."""
        rng = np.random.default_rng(seed)
        means = rng.normal(0.0, spread, size=(num_components, *data_shape))
        lo, hi = np.log(variance_range[0]), np.log(variance_range[1])
        variances = np.exp(rng.uniform(lo, hi, size=num_components))
        weights = rng.dirichlet(np.full(num_components, 5.0))
        return cls(means, variances, weights, schedule)

    # ----------------------------------------------------------------------------------------------------------
    def eps_at(self, x: Tensor, alpha_bar) -> Tensor:
        """Exact ε at noise level ``alpha_bar`` (a scalar or one value per sample)."""
        xb = x.to(torch.float64).reshape(1, x.shape[0], -1)
        ab = torch.as_tensor(alpha_bar, dtype=torch.float64, device=xb.device).reshape(1, -1, 1)  # (1, B or 1, 1)
        eps = mixture_eps(xb, ab, self.means[None], self.variances[None], self.log_weights[None])
        return eps.reshape(x.shape).to(x.dtype)

    def sample_data(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """n draws of x0 (float64)."""
        k = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)
        z = torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)
        x = self.means[k] + self.variances[k].sqrt()[:, None] * z
        return x.reshape(n, *self.data_shape)

    # ----------------------------------------------------------------------------------------------------------
    def flow_endpoint(self, x: Tensor, alpha_bar_start: float, alpha_bar_end: float = 1.0,
                      rtol: float = 1e-10, atol: float = 1e-10) -> Tensor:
        """The exact probability-flow ODE solution from noise level ``alpha_bar_start`` to ``alpha_bar_end``.

        In DDIM's variables x̄ = x/sqrt(ā), σ = sqrt((1−ā)/ā) the ODE is dx̄/dσ = ε(x̄·sqrt(ā(σ)), ā(σ)) with
        ā(σ) = 1/(1+σ²); solved with scipy's DOP853 at tight tolerances, in float64.
        """
        def sigma(ab):
            return math.sqrt((1 - ab) / ab)

        shape = x.shape
        s0, s1 = sigma(alpha_bar_start), sigma(alpha_bar_end)

        def rhs(s, y):
            ab = 1.0 / (1.0 + s * s)
            xt = torch.from_numpy(y).reshape(shape) * math.sqrt(ab)
            return self.eps_at(xt, ab).reshape(-1).numpy()

        y0 = (x.detach().cpu().double() / math.sqrt(alpha_bar_start)).reshape(-1).numpy()
        sol = solve_ivp(rhs, (s0, s1), y0, method="DOP853", rtol=rtol, atol=atol)
        if not sol.success:
            raise RuntimeError(f"exact flow solve failed: {sol.message}")
        return (torch.from_numpy(sol.y[:, -1]).reshape(shape) * math.sqrt(alpha_bar_end)).to(x.dtype)


class MixtureBank(_TimestepModel):
    """Many ``GaussianMixture`` models evaluated as one ε-model, so that a sampler runs all of them in one batch.

    The batch is split into ``len(mixtures)`` equal contiguous blocks: sample i belongs to mixture
    i // (batch / len(mixtures)). The mixtures must share the number of components, the data shape and the
    schedule. Each sample's ε is exactly its own mixture's (the samples do not interact), so a benchmark over the
    bank equals one over each mixture in turn, at a fraction of the Python overhead.
    """

    def __init__(self, mixtures: Sequence[GaussianMixture]):
        mixtures = list(mixtures)
        if not mixtures:
            raise ValueError("MixtureBank needs at least one mixture")
        first = mixtures[0]
        for m in mixtures[1:]:
            if m.means.shape != first.means.shape or m.data_shape != first.data_shape:
                raise ValueError("the mixtures of a MixtureBank must share component count and data shape")
            if m.schedule is not first.schedule:
                raise ValueError("the mixtures of a MixtureBank must share one schedule")
        self.mixtures = mixtures
        self.schedule = first.schedule
        self.data_shape = first.data_shape
        self.means = torch.stack([m.means for m in mixtures])  # (M, K, D)
        self.variances = torch.stack([m.variances for m in mixtures])  # (M, K)
        self.log_weights = torch.stack([m.log_weights for m in mixtures])  # (M, K)

    def _blocks(self, x: Tensor) -> Tensor:
        n = len(self.mixtures)
        if x.shape[0] % n:
            raise ValueError(f"a batch of {x.shape[0]} does not split into {n} equal blocks, one per mixture")
        return x.to(torch.float64).reshape(n, x.shape[0] // n, -1)

    def eps_at(self, x: Tensor, alpha_bar) -> Tensor:
        xb = self._blocks(x)
        ab = torch.as_tensor(alpha_bar, dtype=torch.float64, device=xb.device).reshape(-1)
        ab = ab.reshape(1, 1, 1) if ab.numel() == 1 else ab.reshape(xb.shape[0], xb.shape[1], 1)
        eps = mixture_eps(xb, ab, self.means, self.variances, self.log_weights)
        return eps.reshape(x.shape).to(x.dtype)

    def flow_endpoint(self, x: Tensor, alpha_bar_start: float, alpha_bar_end: float = 1.0) -> Tensor:
        """Each block's exact probability-flow endpoint, solved per mixture (``GaussianMixture.flow_endpoint``)."""
        n = len(self.mixtures)
        self._blocks(x)  # checks the split
        blocks = x.reshape(n, x.shape[0] // n, *x.shape[1:])
        return torch.cat([m.flow_endpoint(b, alpha_bar_start, alpha_bar_end) for m, b in zip(self.mixtures, blocks)])
