"""Exponential moving average of a model's weights (the "EMA" checkpoints that DDPM, DDIM and PNDM sample from).

After every optimiser step, shadow ← rate · shadow + (1 − rate) · weights (Ho et al. 2020 use rate 0.9999 for
CIFAR-10). Buffers, which are not trained, are copied as they are. The shadow is kept as a state dict with the
model's own key names (a DDP/compile wrapper is looked through), so ``state_dict()`` is a plain state dict that
``model.load_state_dict`` — and ``models.load_model`` — accept directly.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


class EMA:
    """The moving average of ``model``'s weights, starting from their current values."""

    def __init__(self, model: nn.Module, rate: float):
        rate = float(rate)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"EMA rate must lie in [0, 1), got {rate}")
        self.rate = rate
        model = unwrap(model)
        self._params = {name for name, _ in model.named_parameters()}
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the model's current weights into the average (call once after each optimiser step)."""
        model = unwrap(model)
        for name, value in model.state_dict().items():
            target = self.shadow[name]
            if name in self._params and target.is_floating_point():
                target.lerp_(value.detach(), 1.0 - self.rate)  # shadow + (1 − rate)·(w − shadow)
            else:
                target.copy_(value)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into ``model`` (e.g. a separate copy used for sampling)."""
        unwrap(model).load_state_dict(self.shadow, strict=True)

    def to(self, device: torch.device | str) -> "EMA":
        self.shadow = {k: v.to(device) for k, v in self.shadow.items()}
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights as a plain model state dict (detached copies on the CPU)."""
        return {k: v.detach().to("cpu", copy=True) for k, v in self.shadow.items()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        missing = sorted(set(self.shadow) - set(state))
        unexpected = sorted(set(state) - set(self.shadow))
        if missing or unexpected:
            raise ValueError(f"EMA state does not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
        for k, v in state.items():
            if tuple(v.shape) != tuple(self.shadow[k].shape):
                raise ValueError(f"EMA state {k} has shape {tuple(v.shape)}, the model {tuple(self.shadow[k].shape)}")
            self.shadow[k].copy_(v)
