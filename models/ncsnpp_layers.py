"""The blocks that only NCSN++ / DDPM++ has (score-SDE's `layerspp.py`): FIR resampling, BigGAN's residual block,
the Gaussian Fourier embedding and the input pyramid's `Combine`. The blocks it shares with score-SDE's DDPM
(DDPM's residual block, attention, NIN, plain resampling, the initialiser) are in `models.scoresde_layers`.

Every block names its layers after the Flax originals (`GroupNorm_0`, `Conv_0`, `Dense_0`, `Conv2d_0`, ...) and
registers them in the order the forward pass uses them: the state-dict keys are those of the released
checkpoints, and the order of `parameters()` is the order in which score-SDE's EMA stores its shadow list.
Layers without parameters (activations, dropout, resamplers without a convolution) add no keys.

Numerical details that trained weights depend on (each one changes the output if altered):
- GroupNorm has min(C/4, 32) groups and eps = 1e-6;
- with `skip_rescale` every residual sum (blocks, attention, residual pyramids) is divided by √2;
- the Gaussian Fourier embedding of log σ is [sin 2πWx | cos 2πWx] with fixed (not trained) frequencies W;
- BigGAN blocks resample both branches inside the block: FIR (`models.upfirdn`) or, without `fir`,
  nearest-neighbour repetition and 2×2 averaging.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from .scoresde_layers import (
    AttnBlock, Downsample, ResnetBlockBase, Upsample, conv1x1, default_init_, downsample_avg, skip_sum,
    upsample_nearest,
)
from .upfirdn import conv_downsample_2d, downsample_2d, fir_kernel, upsample_2d, upsample_conv_2d

# score-SDE's name for the attention block in `layerspp.py`: the shared block with NCSN++'s defaults (min(C/4, 32)
# groups; skip_rescale and init_scale as the network passes them).
AttnBlockpp = AttnBlock


def _register_fir(module: nn.Module, taps: Sequence[float]) -> None:
    """The normalised 2-D FIR kernel as a non-persistent buffer: it follows `.to(device/dtype)` and deep copies
    but is not a checkpoint key (the released weights have none)."""
    module.register_buffer("resample_kernel", fir_kernel(taps), persistent=False)


class GaussianFourierProjection(nn.Module):
    """Random Fourier features of a scalar: [sin 2πWx | cos 2πWx], W ~ N(0, scale²) drawn once and frozen.

    NCSN++ feeds it log σ. The embedding is computed in float32 (the released outputs depend on it) whatever
    the dtype of W; the caller casts it to the network's dtype.
    """

    def __init__(self, embedding_size: int, scale: float = 1.0):
        super().__init__()
        self.W = nn.Parameter(torch.randn(embedding_size) * scale, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Multiplied in the original's order (x·W, then ·2, then ·π) so float32 rounding matches it.
        proj = x.float()[:, None] * self.W.float()[None, :] * 2 * math.pi
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


class Combine(nn.Module):
    """Merge the input pyramid into the encoder: a 1×1 conv of the pyramid, then concatenated before (`cat`) or
    added to (`sum`) the features."""

    def __init__(self, dim1: int, dim2: int, method: str = "cat"):
        super().__init__()
        if method not in ("cat", "sum"):
            raise ValueError(f"combine_method must be 'cat' or 'sum', got {method!r}")
        self.Conv_0 = conv1x1(dim1, dim2)
        self.method = method

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.Conv_0(x)
        return torch.cat([h, y], dim=1) if self.method == "cat" else h + y


class FIRConv2d(nn.Module):
    """A k×k convolution fused with FIR upsampling (`up`) or downsampling (`down`) by 2 (StyleGAN2's `Conv2d`);
    its parameters are `weight` (out, in, k, k) and `bias`, as in the released checkpoints."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, *, up: bool = False, down: bool = False,
                 resample_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        if up == down:
            raise ValueError("FIRConv2d resamples: exactly one of up and down")
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"the convolution kernel size must be odd, got {kernel}")
        self.weight = nn.Parameter(default_init_(torch.empty(out_ch, in_ch, kernel, kernel)))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.up = up
        _register_fir(self, resample_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        resample = upsample_conv_2d if self.up else conv_downsample_2d
        return resample(x, self.weight, self.resample_kernel) + self.bias.reshape(1, -1, 1, 1)


class FIRResample(nn.Module):
    """×2 FIR upsampling (`up`) or ×1/2 FIR downsampling, optionally fused with a 3×3 convolution `Conv2d_0` (to
    `out_ch`: the residual pyramids change the channels). Without the convolution it has no parameters."""

    def __init__(self, in_ch: int, out_ch: int | None = None, *, up: bool, with_conv: bool,
                 fir_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        self.up = up
        if with_conv:
            self.Conv2d_0 = FIRConv2d(in_ch, out_ch or in_ch, 3, up=up, down=not up, resample_kernel=fir_kernel)
        else:
            _register_fir(self, fir_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "Conv2d_0"):
            return self.Conv2d_0(x)
        return (upsample_2d if self.up else downsample_2d)(x, self.resample_kernel)


def resampler(in_ch: int, out_ch: int | None = None, *, up: bool, with_conv: bool, fir: bool,
              fir_kernel: Sequence[float] = (1, 3, 3, 1)) -> nn.Module:
    """NCSN++'s ×2 upsampler (`up`) or ×1/2 downsampler: FIR with `fir`, otherwise the plain one that score-SDE's
    DDPM uses too (nearest / 2×2 averaging, or a 3×3 `Conv_0`, strided with TensorFlow "SAME" padding when
    downsampling)."""
    if fir:
        return FIRResample(in_ch, out_ch, up=up, with_conv=with_conv, fir_kernel=fir_kernel)
    return (Upsample if up else Downsample)(in_ch, out_ch, with_conv=with_conv)


class ResnetBlockBigGANpp(ResnetBlockBase):
    """BigGAN's residual block (`resblock_type: biggan`), which also does the resampling: with `up`/`down`
    both branches are resampled after the first activation, and a 1×1 `Conv_2` shortcut is used whenever the
    channels or the size change. The other keywords are `ResnetBlockBase`'s."""

    def __init__(self, in_ch: int, out_ch: int | None = None, *, up: bool = False, down: bool = False,
                 fir: bool = False, fir_kernel: Sequence[float] = (1, 3, 3, 1), **branch: Any):
        out_ch = out_ch or in_ch
        super().__init__(in_ch, out_ch, **branch)
        if in_ch != out_ch or up or down:
            self.Conv_2 = conv1x1(in_ch, out_ch)
        self.up = up
        self.down = down
        self.fir = fir
        if fir and (up or down):
            _register_fir(self, fir_kernel)

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.up or self.down):
            return x
        if self.fir:
            return (upsample_2d if self.up else downsample_2d)(x, self.resample_kernel)
        return upsample_nearest(x) if self.up else downsample_avg(x)

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        h = self._finish_branch(self.Conv_0(self._resample(self.act(self.GroupNorm_0(x)))), temb)
        x = self._resample(x)
        if hasattr(self, "Conv_2"):
            x = self.Conv_2(x)
        return skip_sum(x, h, self.skip_rescale)
