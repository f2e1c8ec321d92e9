"""FIR resampling (StyleGAN2's `upfirdn2d` and the resamplers built on it) in plain PyTorch, no compiled op.

`upfirdn2d(x, kernel, up, down, pad)` is defined as four steps on every channel separately:
1. upsample by zero insertion: each pixel is followed by `up − 1` zeros along both axes;
2. zero-pad by `pad` (negative values crop);
3. correlate with the kernel flipped in both axes — that is, convolve with the kernel (valid mode);
4. keep every `down`-th sample, starting with the first.

Steps 3 and 4 are one depthwise `conv2d` with stride `down`, which runs on any device and dtype, follows the input's
memory layout, and works under autocast and torch.compile. The released PNDM code ships a CUDA extension compiled
at import (and calls the module where it means the function); this file replaces both.

The resamplers below are those NCSN++ uses (score-SDE's `up_or_down_sampling.py`, ported from StyleGAN2). Their
kernels come from `fir_kernel(taps)`: the outer product of the taps with themselves, normalised to sum 1 so that
a constant image keeps its value. An upsampler multiplies the kernel by factor² because zero insertion leaves
only one pixel in factor² non-zero.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

Pad = Sequence[int]


def fir_kernel(taps: Sequence[float] | np.ndarray) -> torch.Tensor:
    """The 2-D resampling kernel for 1-D taps (outer product) or a square 2-D kernel, normalised to sum 1.

    Computed in float32 as the original does (`[1, 3, 3, 1]` gives k/64 with k ∈ {1, 3, 9}, exact in any
    dtype), returned as a float32 tensor for the caller to move to the data's device and dtype.
    """
    k = np.asarray(taps, dtype=np.float32)
    if k.ndim == 1:
        k = np.outer(k, k)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"a FIR kernel is 1-D taps or a square 2-D array, got shape {k.shape}")
    k = k / np.sum(k)
    return torch.tensor(k, dtype=torch.float32)  # on the default device (meta, when building a layout)


def _pads(pad: Pad) -> tuple[int, int, int, int]:
    """(x0, x1, y0, y1) from (before, after) for both axes or from the four values."""
    pad = tuple(int(p) for p in pad)
    if len(pad) == 2:
        return pad[0], pad[1], pad[0], pad[1]
    if len(pad) == 4:
        return pad
    raise ValueError(f"pad is (before, after) or (x0, x1, y0, y1), got {pad}")


def zero_insert(x: torch.Tensor, factor: int) -> torch.Tensor:
    """(N, C, H, W) → (N, C, H·factor, W·factor): each pixel at the top-left of a factor×factor block of zeros."""
    if factor == 1:
        return x
    n, c, h, w = x.shape
    blocks = F.pad(x[:, :, :, None, :, None], (0, factor - 1, 0, 0, 0, factor - 1))
    return blocks.reshape(n, c, h * factor, w * factor)


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad: Pad = (0, 0)) -> torch.Tensor:
    """Upsample (zero insertion), pad, FIR-filter and downsample every channel of x (N, C, H, W) alike.

    `kernel` is a 2-D tensor, used in x's dtype. The output is
    ((H·up + y0 + y1 − kh) // down + 1) × ((W·up + x0 + x1 − kw) // down + 1).
    """
    if up < 1 or down < 1:
        raise ValueError(f"up and down are positive integers, got up={up}, down={down}")
    x0, x1, y0, y1 = _pads(pad)
    channels = x.shape[1]
    h = F.pad(zero_insert(x, up), (x0, x1, y0, y1))
    # conv2d correlates; correlating with the flipped kernel convolves with the kernel itself.
    weight = torch.flip(kernel.to(device=x.device, dtype=x.dtype), (0, 1))
    weight = weight[None, None].expand(channels, 1, *kernel.shape)
    return F.conv2d(h, weight, stride=down, groups=channels)


def upsample_2d(x: torch.Tensor, kernel: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Upsample by `factor` with the (normalised) FIR kernel: output exactly factor× the input size.

    The padding centres the kernel on the inserted zeros: (p+1)//2 + factor − 1 before, p//2 after,
    p = taps − factor.
    """
    p = kernel.shape[0] - factor
    return upfirdn2d(x, kernel * factor ** 2, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def downsample_2d(x: torch.Tensor, kernel: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Filter with the (normalised) FIR kernel and keep every factor-th pixel: output 1/factor the input size.

    Padded (p+1)//2 before and p//2 after, p = taps − factor.
    """
    p = kernel.shape[0] - factor
    return upfirdn2d(x, kernel, down=factor, pad=((p + 1) // 2, p // 2))


def upsample_conv_2d(x: torch.Tensor, weight: torch.Tensor, kernel: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """`upsample_2d` followed by a 'same' convolution with `weight` (out, in, k, k), fused as StyleGAN2 does.

    A transposed convolution with stride `factor` does the zero insertion and applies the weight in one step (it
    convolves, so it is given the weight flipped to correlate like conv2d), then the FIR filter runs once on the
    larger image. The kernel is padded (p+1)//2 + factor − 1 before and p//2 + 1 after, p = taps − factor −
    (k − 1). The result equals the unfused pair computed on the image surrounded by zeros, with no crop between
    the two steps (tested); it differs from the cropped pair only within the kernel's reach of the border.

    The released code cannot run this path (it slices a tensor with a negative step); this is the computation its
    StyleGAN2 original performs.
    """
    conv_k = weight.shape[-1]
    p = (kernel.shape[0] - factor) - (conv_k - 1)
    transposed = torch.flip(weight, (2, 3)).transpose(0, 1)
    h = F.conv_transpose2d(x, transposed, stride=factor)
    return upfirdn2d(h, kernel * factor ** 2, pad=((p + 1) // 2 + factor - 1, p // 2 + 1))


def conv_downsample_2d(x: torch.Tensor, weight: torch.Tensor, kernel: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """A 'same' convolution with `weight` followed by `downsample_2d`, fused: the FIR filter runs first (padded
    (p+1)//2 and p//2, p = taps − factor + k − 1) and a stride-`factor` valid convolution does the rest. Like
    `upsample_conv_2d` it equals the unfused pair without the crop in between."""
    conv_k = weight.shape[-1]
    p = (kernel.shape[0] - factor) + (conv_k - 1)
    h = upfirdn2d(x, kernel, pad=((p + 1) // 2, p // 2))
    return F.conv2d(h, weight, stride=factor)
