"""The inference fast path: ε(x, t) with fused attention, channels-last memory, reduced precision, torch.compile.

`prepare_for_inference` leaves the caller's model untouched and returns a plain function, so samplers keep their
single `model(x, t)` signature and tests can compare the fast path against the model it came from.

Reduced precision uses autocast: the weights stay float32 and each matmul/convolution runs in bf16 or fp16, while
PyTorch's reduced-precision GroupNorm and softmax kernels accumulate in float32. Measured on the golden DDPM
model, bf16 changes ε by about 1.4% (relative L2 norm) and fp16 by about 0.2%; keeping GroupNorm entirely in
float32 made no measurable difference, so it is not done.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .fast_group_norm import use_channels_last_group_norm

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

Eps = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def precision_supported(precision: str, device: torch.device | str) -> bool:
    """Whether autocast can run convolutions and attention in this precision on this device."""
    device = torch.device(device)
    if precision == "fp32":
        return True
    if device.type == "cuda" and precision == "bf16":
        return torch.cuda.is_bf16_supported()
    try:  # the honest test elsewhere: run the ops the UNets use
        with torch.autocast(device.type, dtype=PRECISIONS[precision]):
            x = torch.randn(1, 2, 4, 4, device=device)
            y = F.conv2d(x, torch.randn(2, 2, 3, 3, device=device), padding=1)
            q = y.flatten(2).transpose(1, 2)[:, None]
            F.scaled_dot_product_attention(q, q, q)
        return y.dtype == PRECISIONS[precision]
    except (RuntimeError, TypeError, NotImplementedError):
        return False


def prepare_for_inference(model: nn.Module, precision: str = "fp32", compile: bool = False,
                          channels_last: bool | None = None) -> Eps:
    """A function eps(x, t) computing `model(x, t)` faster; the model itself is not modified.

    - fused `scaled_dot_product_attention` in the attention blocks (their `use_sdpa` default; the model's
      own setting is kept, so a model switched to explicit attention stays a reference);
    - channels-last memory layout for the convolutions, with GroupNorm computed on the channels-last view
      (`fast_group_norm`); `channels_last=None` picks it where it was measured to help: on the CPU (1.4× in
      fp32 for the digits UNet at batch 1000, docs/PERFORMANCE.md) but not on CUDA, where GroupNorm on channels-last tensors made the
      CIFAR-10 UNet 0.83× as fast eagerly (H200, batch 256; docs/PERFORMANCE.md);
    - `precision` 'bf16' or 'fp16': autocast; the result is returned in x's dtype;
      a precision the model's device cannot run raises ValueError;
    - `compile=True`: torch.compile the network (the first call pays the compilation).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    device = next(model.parameters()).device
    if not precision_supported(precision, device):
        raise ValueError(f"{precision} is not supported on {device} by this PyTorch build; use fp32"
                         + ("" if precision == "bf16" or device.type != "cpu" else " or bf16"))

    fast = copy.deepcopy(model).eval()
    layout = torch.channels_last if (device.type == "cpu" if channels_last is None else channels_last) \
        else torch.contiguous_format
    fast = fast.to(memory_format=layout)
    if layout is torch.channels_last:  # PyTorch's GroupNorm is slow on channels-last CPU tensors
        use_channels_last_group_norm(fast)
    network = torch.compile(fast) if compile else fast
    dtype = PRECISIONS[precision]

    def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=precision != "fp32"):
            out = network(x.contiguous(memory_format=layout), t)
        return out.to(x.dtype).contiguous()

    eps.model = fast  # the prepared network, for inspection
    eps.precision = precision
    eps.channels_last = layout is torch.channels_last
    return eps
