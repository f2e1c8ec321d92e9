"""GroupNorm for channels-last tensors on the CPU, for the inference fast path.

PyTorch's CPU GroupNorm kernel is fast on NCHW-contiguous tensors but 3–8× slower on channels-last ones (torch
2.14, 2-core EPYC: 12.4 ms against 1.5 ms for a 1000×32×8×8 batch), while the convolutions gain 1.3–3× from
channels-last. Converting the layout around every norm costs two copies. Instead, on the NHWC view the statistics
are plain reductions over the pixel axis followed by a mean over each group's channels, and the normalisation is
one fused multiply-add that keeps the channels-last layout.

The result equals `F.group_norm` up to float rounding (the sums run in another order: max |Δ| ≈ 2e-6 on
unit-variance inputs, the size of the difference channels-last convolutions already make).
"""
from __future__ import annotations

import torch
from torch import nn


def group_norm_nhwc(x: torch.Tensor, groups: int, weight: torch.Tensor | None, bias: torch.Tensor | None,
                    eps: float) -> torch.Tensor:
    """GroupNorm of a (B, C, H, W) tensor stored channels-last; the result is channels-last too."""
    b, c, h, w = x.shape
    per_group = c // groups
    y = x.permute(0, 2, 3, 1).reshape(b, h * w, c)  # a view: NHWC memory is (B, HW, C) row-major

    def group_mean(values: torch.Tensor) -> torch.Tensor:  # (B, HW, C) -> (B, C), each group's mean repeated
        means = values.mean(dim=1).view(b, groups, per_group).mean(dim=2)
        return means.repeat_interleave(per_group, dim=1)

    out = y - group_mean(y)[:, None, :]
    scale = torch.rsqrt(group_mean(out.square()) + eps)  # two-pass variance: no cancellation
    if weight is not None:
        scale = scale * weight
    out.mul_(scale[:, None, :])  # in place: one fewer batch-sized allocation per norm
    if bias is not None:
        out.add_(bias)
    return out.view(b, h, w, c).permute(0, 3, 1, 2)


def _channels_last_only(x: torch.Tensor) -> bool:
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


class ChannelsLastGroupNorm(nn.Module):
    """Wraps a GroupNorm module (nn.GroupNorm or a subclass): float32 channels-last CPU inputs take
    `group_norm_nhwc`, everything else the wrapped module's own forward (so subclasses keep their dtype rules)."""

    def __init__(self, norm: nn.GroupNorm):
        super().__init__()
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.norm
        fast = (x.device.type == "cpu" and x.dtype == torch.float32 and _channels_last_only(x)
                and (n.weight is None or n.weight.dtype == torch.float32) and n.num_channels % n.num_groups == 0)
        if not fast:
            return n(x)
        return group_norm_nhwc(x, n.num_groups, n.weight, n.bias, n.eps)


def use_channels_last_group_norm(model: nn.Module) -> nn.Module:
    """Wrap every GroupNorm of `model` (in place) in `ChannelsLastGroupNorm`; returns the model."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.GroupNorm):
                setattr(parent, name, ChannelsLastGroupNorm(child))
    return model


__all__ = ["group_norm_nhwc", "ChannelsLastGroupNorm", "use_channels_last_group_norm"]
