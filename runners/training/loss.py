"""The objective of Ho et al. 2020, Algorithm 1, as the released DDIM/PNDM code computes it, and the lr schedule.

Each optimiser step draws t ~ U{0, …, T−1} and ε ~ N(0, I), forms x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε and minimises
‖ε_θ(x_t, t) − ε‖ summed over pixels and averaged over the batch: the L1 norm for ``Train.loss_type: linear``
(the released code's default), its square for ``square``.
"""
from __future__ import annotations

import torch
from torch import nn


def step_draws(x0: torch.Tensor, gen: torch.Generator, T: int, random_flip: bool) -> tuple[torch.Tensor, ...]:
    """(x0, t, ε) of one step: the batch, horizontally flipped at random if asked, its timesteps and its noise,
    all drawn from ``gen`` (seeded from the step and the rank) in this order."""
    b, device = x0.shape[0], x0.device
    if random_flip:
        flip = torch.rand(b, generator=gen, device=device) < 0.5
        x0 = torch.where(flip.view(-1, 1, 1, 1), x0.flip(-1), x0)
    t = torch.randint(0, T, (b,), generator=gen, device=device)
    noise = torch.randn(x0.shape, generator=gen, device=device)
    return x0, t, noise


def diffusion_loss(model: nn.Module, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                   alphas_cumprod: torch.Tensor, loss_type: str = "linear") -> torch.Tensor:
    """‖ε_θ(√ᾱ_t x0 + √(1−ᾱ_t) ε, t) − ε‖ per image (L1 for 'linear', squared L2 for 'square'), summed over pixels
    and averaged over the batch — the released code's ``noise_estimation_loss``."""
    a = alphas_cumprod.index_select(0, t).view(-1, *([1] * (x0.ndim - 1)))
    x_t = x0 * a.sqrt() + noise * (1.0 - a).sqrt()
    err = model(x_t, t.float()) - noise
    per_pixel = err.abs() if loss_type == "linear" else err.square()
    return per_pixel.flatten(1).sum(dim=1).mean(dim=0)


def lr_at(step: int, lr: float, warmup: int) -> float:
    """Learning rate of optimiser step ``step`` (0-based): linear warm-up over ``warmup`` steps, then constant."""
    return lr * min(1.0, (step + 1) / warmup) if warmup > 0 else lr
