"""The building blocks that score-SDE's two networks share: its DDPM (`models.scoresde_ddpm`, `struc: PF`) and
NCSN++ / DDPM++ (`models.ncsnpp`, `struc: PF_deep`).

score-SDE wrote these twice (`layers.py` for DDPM, `layerspp.py` for NCSN++); they are the same computation, so
here they are written once and each network passes what differs:
- GroupNorm: score-SDE's DDPM uses 32 groups, NCSN++ min(C/4, 32) (`num_groups=None`); eps is 1e-6 in both;
- skip rescaling: NCSN++ can divide every residual sum by √2 (`skip_rescale`), DDPM never does;
- the initial scale of the last layer of a residual branch (`init_scale`): DDPM's is 0, NCSN++'s is configurable.
Layers are named after the Flax originals (`GroupNorm_0`, `Conv_0`, `Dense_0`, `NIN_0`, ...) and registered in
the order the forward pass uses them: the state-dict keys are those of the released checkpoints, and the order
of `parameters()` is the order of score-SDE's EMA shadow list. Nothing here may be renamed or reordered.

Initialisation (training from scratch) is DDPM's variance scaling: uniform with variance scale / fan_avg, zero
biases; a zero scale means 1e-10, so output layers start almost (not exactly) at zero.

Nothing here depends on the FIR resampling (`models.upfirdn`), which only NCSN++ uses: importing `models` (and
with it the PF network) does not import the NCSN++ modules.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .ddpm_unet import pixel_attention

SQRT2 = math.sqrt(2.0)

# score-SDE's `nonlinearity` names (matched without case).
_ACTIVATIONS = {"swish": nn.SiLU, "elu": nn.ELU, "relu": nn.ReLU, "lrelu": lambda: nn.LeakyReLU(0.2)}


def activation(name: str) -> nn.Module:
    """The activation that score-SDE's `nonlinearity` names: swish (SiLU), elu, relu, lrelu (slope 0.2)."""
    factory = _ACTIVATIONS.get(str(name).lower())
    if factory is None:
        raise ValueError(f"unknown nonlinearity {name!r}; score-SDE has {sorted(_ACTIVATIONS)}")
    return factory()


def default_init_(weight: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """DDPM's initialiser, in place: uniform with variance scale / fan_avg, the fans taken from the first two
    axes times the receptive field. A zero scale means 1e-10. The bound is √(3·scale/fan_avg) with a correctly
    rounded square root, as score-SDE's `np.sqrt`."""
    shape = weight.shape
    fan_avg = (shape[0] + shape[1]) * math.prod(shape[2:]) / 2
    bound = math.sqrt(3 * (scale or 1e-10) / fan_avg)
    with torch.no_grad():
        return weight.uniform_(-bound, bound)


def dense(in_features: int, out_features: int) -> nn.Linear:
    layer = nn.Linear(in_features, out_features)
    default_init_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def conv3x3(in_ch: int, out_ch: int, *, stride: int = 1, padding: int = 1, init_scale: float = 1.0) -> nn.Conv2d:
    conv = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=padding)
    default_init_(conv.weight, init_scale)
    nn.init.zeros_(conv.bias)
    return conv


def conv1x1(in_ch: int, out_ch: int, *, init_scale: float = 1.0) -> nn.Conv2d:
    conv = nn.Conv2d(in_ch, out_ch, 1)
    default_init_(conv.weight, init_scale)
    nn.init.zeros_(conv.bias)
    return conv


def group_norm(channels: int, num_groups: int | None = None) -> nn.GroupNorm:
    """score-SDE's GroupNorm (eps 1e-6): `num_groups` groups (DDPM: 32), or by default NCSN++'s min(C/4, 32),
    which also lets narrow test networks build."""
    groups = min(channels // 4, 32) if num_groups is None else num_groups
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6)


def skip_sum(x: torch.Tensor, h: torch.Tensor, skip_rescale: bool) -> torch.Tensor:
    """A residual sum, divided by √2 with `skip_rescale` (NCSN++ keeps the variance of the skip path constant
    through its very deep networks so)."""
    return (x + h) / SQRT2 if skip_rescale else x + h


def upsample_nearest(x: torch.Tensor) -> torch.Tensor:
    """×2 by nearest-neighbour repetition: the resampling of every block that does not use FIR."""
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


def downsample_avg(x: torch.Tensor) -> torch.Tensor:
    """×1/2 by 2×2 averaging: the resampling of every block that does not use FIR."""
    return F.avg_pool2d(x, kernel_size=2, stride=2)


def temb_mlp(embedding: torch.Tensor, dense_0: nn.Module, dense_1: nn.Module, act: nn.Module) -> torch.Tensor:
    """The two dense layers over a noise-level embedding: dense, act, dense.

    The embedding (sinusoidal or Fourier) comes in float32 — the released outputs depend on computing it so —
    and is cast here to the dense layers' dtype, so that a network runs in its weights' dtype (float64, bf16)
    whatever the dtype of t.
    """
    return dense_1(act(dense_0(embedding.to(dense_0.weight.dtype))))


class NIN(nn.Module):
    """score-SDE's per-pixel dense layer ("network in network"): y = x·W + b over the channel axis.

    `W` is stored (in, out), the Flax kernel layout — the transpose of a convolution's. It runs as a 1×1
    convolution with Wᵀ, which is the same sum and keeps channels-last inputs and autocast on the convolution
    fast path; Wᵀ is copied contiguous because the transposed view sends the CPU to its slow convolution.
    """

    def __init__(self, in_dim: int, num_units: int, init_scale: float = 0.1):
        super().__init__()
        self.W = nn.Parameter(default_init_(torch.empty(in_dim, num_units), init_scale))
        self.b = nn.Parameter(torch.zeros(num_units))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.W.t().contiguous()[:, :, None, None], self.b)


class AttnBlock(nn.Module):
    """Single-head self-attention over all pixels with a residual connection (score-SDE's `AttnBlock` and
    `AttnBlockpp`): q, k, v and the output projection are NIN layers, the output one scaled by `init_scale`.

    `use_sdpa` selects torch's fused `scaled_dot_product_attention`; the explicit softmax(QKᵀ/√C)V path is kept
    as the plain reference that the fused one is tested against (`models.ddpm_unet.pixel_attention`).
    """

    def __init__(self, channels: int, *, num_groups: int | None = None, skip_rescale: bool = False,
                 init_scale: float = 0.0, use_sdpa: bool = True):
        super().__init__()
        self.GroupNorm_0 = group_norm(channels, num_groups)
        self.NIN_0 = NIN(channels, channels)
        self.NIN_1 = NIN(channels, channels)
        self.NIN_2 = NIN(channels, channels)
        self.NIN_3 = NIN(channels, channels, init_scale=init_scale)
        self.skip_rescale = skip_rescale
        self.use_sdpa = use_sdpa

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.GroupNorm_0(x)
        h = pixel_attention(self.NIN_0(h), self.NIN_1(h), self.NIN_2(h), self.use_sdpa)
        return skip_sum(x, self.NIN_3(h), self.skip_rescale)


class ResnetBlockBase(nn.Module):
    """The residual branch that DDPM's and BigGAN's blocks share: GroupNorm_0 → act → (resampling, BigGAN
    only) → Conv_0, + Dense_0(act(temb)), GroupNorm_1 → act → Dropout_0 → Conv_1 (scaled by `init_scale`, so a
    block starts as almost the identity). Subclasses add their shortcut after these layers and write forward;
    `Dense_0` exists even when the network is unconditional, as in score-SDE."""

    def __init__(self, in_ch: int, out_ch: int, *, act: nn.Module, temb_dim: int, dropout: float,
                 skip_rescale: bool = False, init_scale: float = 0.0, num_groups: int | None = None):
        super().__init__()
        self.GroupNorm_0 = group_norm(in_ch, num_groups)
        self.Conv_0 = conv3x3(in_ch, out_ch)
        self.Dense_0 = dense(temb_dim, out_ch)
        self.GroupNorm_1 = group_norm(out_ch, num_groups)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv3x3(out_ch, out_ch, init_scale=init_scale)
        self.act = act
        self.skip_rescale = skip_rescale

    def _finish_branch(self, h: torch.Tensor, temb: torch.Tensor | None) -> torch.Tensor:
        """From the output of Conv_0 on: add the embedding, then norm, act, dropout, Conv_1."""
        if temb is not None:
            h = h + self.Dense_0(self.act(temb))[:, :, None, None]
        return self.Conv_1(self.Dropout_0(self.act(self.GroupNorm_1(h))))


class ResnetBlockDDPM(ResnetBlockBase):
    """DDPM's residual block (score-SDE's `ResnetBlockDDPM` and `ResnetBlockDDPMpp`, `resblock_type: ddpm`); a
    `NIN_0` shortcut when the channels change. Keywords as `ResnetBlockBase`."""

    def __init__(self, in_ch: int, out_ch: int | None = None, **branch: Any):
        out_ch = out_ch or in_ch
        super().__init__(in_ch, out_ch, **branch)
        if in_ch != out_ch:
            self.NIN_0 = NIN(in_ch, out_ch)

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        h = self._finish_branch(self.Conv_0(self.act(self.GroupNorm_0(x))), temb)
        if hasattr(self, "NIN_0"):
            x = self.NIN_0(x)
        return skip_sum(x, h, self.skip_rescale)


class Upsample(nn.Module):
    """×2 nearest-neighbour upsampling, optionally followed by a 3×3 `Conv_0` (to `out_ch`: NCSN++'s residual
    output pyramid changes the channels). Without the convolution it has no parameters but still takes its place
    in a network's `all_modules`."""

    def __init__(self, in_ch: int, out_ch: int | None = None, *, with_conv: bool):
        super().__init__()
        if with_conv:
            self.Conv_0 = conv3x3(in_ch, out_ch or in_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = upsample_nearest(x)
        return self.Conv_0(h) if hasattr(self, "Conv_0") else h


class Downsample(nn.Module):
    """×1/2 downsampling: a stride-2 3×3 `Conv_0` padded on the right and bottom only (TensorFlow "SAME"), or
    2×2 averaging (no parameters, but it still takes its place in a network's `all_modules`)."""

    def __init__(self, in_ch: int, out_ch: int | None = None, *, with_conv: bool):
        super().__init__()
        if with_conv:
            self.Conv_0 = conv3x3(in_ch, out_ch or in_ch, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "Conv_0"):
            return self.Conv_0(F.pad(x, (0, 1, 0, 1)))
        return downsample_avg(x)


def network_inputs(x: torch.Tensor, t: torch.Tensor | float, *, image_size: int, centered: bool,
                   network: str) -> tuple[torch.Tensor, torch.Tensor]:
    """What both networks do with their inputs before any layer: refuse another image size (where attention
    runs was decided from `image_size` when the network was built), broadcast a scalar t over the batch, and map
    images in [0, 1] to 2x − 1 for a network trained uncentered (`centered: false`)."""
    if x.shape[-2:] != (image_size, image_size):
        raise ValueError(f"{network} expects {image_size}×{image_size} inputs (attention resolutions depend on "
                         f"it), got {tuple(x.shape[-2:])}")
    t = torch.as_tensor(t, device=x.device)
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    return (x if centered else 2 * x - 1.0), t


def section_kwargs(section: Mapping[str, Any], *, keys: Sequence[str], required: Sequence[str],
                   ignored: Sequence[str], network: str) -> dict[str, Any]:
    """The constructor keywords in a Model section. Unknown keys are an error, so that typos do not pass
    silently; `ignored` keys (checkpoint paths, EMA and SDE settings) do not change the network."""
    unknown = sorted(set(section) - set(keys) - set(ignored))
    if unknown:
        raise ValueError(f"unknown {network} config keys {unknown}; expected {list(keys)}")
    missing = [k for k in required if k not in section]
    if missing:
        raise ValueError(f"{network} config lacks {missing}")
    return {k: section[k] for k in keys if k in section}
