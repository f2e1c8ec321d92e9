"""The DDPM UNet of Ho et al. (2020), in the module layout of the DDIM and PNDM releases (`type: simple`).

The parameter names and shapes are those of the released checkpoints (pytorch_diffusion / DDIM / PNDM), so a
plain `load_state_dict(strict=True)` accepts them: `temb.dense.{0,1}`, `down.{level}.block.{i}`,
`down.{level}.attn.{i}`, `down.{level}.downsample.conv`, `mid.block_1/attn_1/block_2`, `up.{level}...` (indexed
by resolution level, not by execution order), `norm_out`, `conv_out`. Attention keeps its q/k/v/proj_out as
1×1 convolutions for the same reason.

Numerical details that the released weights depend on (each one changes the output if altered):
- the timestep embedding is [sin, cos] with frequencies 10000^(−i/(half−1)) and accepts float timesteps;
- GroupNorm uses 32 groups and eps = 1e-6;
- the strided downsampling convolution pads only the right and bottom edge (TensorFlow "SAME" padding);
- the attention is single-head with scale C^(−1/2).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

DDPM_CONFIG_KEYS = (
    "ch", "out_ch", "ch_mult", "num_res_blocks", "attn_resolutions", "dropout", "in_channels", "image_size",
    "resamp_with_conv",
)


def ddpm_timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, shape (B,) → (B, dim), as [sin | cos].

    The frequencies are exp(−i·log(10000)/(half−1)), i = 0..half−1, computed in float32 in the same order as
    the original TensorFlow code, so that the embedding of t = 999 matches the released model to the last ulp.
    """
    half = dim // 2
    step = math.log(10000) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device) * -step)
    args = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1))
    return emb


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """Two 3×3 convolutions with the timestep added in between; a 1×1 `nin_shortcut` when channels change."""

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, dropout: float):
        super().__init__()
        self.norm1 = _group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.temb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = _group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)
        else:
            self.nin_shortcut = None

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        shortcut = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return shortcut + h


def pixel_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, use_sdpa: bool) -> torch.Tensor:
    """Single-head attention among the pixels: softmax(QKᵀ/√C)V with one token per pixel, for queries, keys and
    values of shape (B, C, H, W); returns (B, C, H, W).

    The core of this UNet's `AttnBlock` and of score-SDE's (`models.scoresde_layers`), which differ only in their
    projections. `use_sdpa` selects torch's fused `scaled_dot_product_attention`; the explicit path is kept as the
    plain reference that the fused one is tested against.
    """
    b, c, height, width = q.shape
    # (B, C, H, W) → (B, HW, C): one token per pixel.
    q, k, v = (x.flatten(2).transpose(1, 2) for x in (q, k, v))
    if use_sdpa:
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
    else:
        weights = torch.softmax(torch.bmm(q, k.transpose(1, 2)) * c ** -0.5, dim=-1)
        out = torch.bmm(weights, v)
    return out.transpose(1, 2).reshape(b, c, height, width)


class AttnBlock(nn.Module):
    """Single-head self-attention over all pixels (`pixel_attention`), with a residual connection; q, k, v and
    proj_out are 1×1 convolutions, as in the released checkpoints. `use_sdpa` selects the fused attention.
    """

    def __init__(self, channels: int, use_sdpa: bool = True):
        super().__init__()
        self.norm = _group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)
        self.use_sdpa = use_sdpa

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        return x + self.proj_out(pixel_attention(self.q(h), self.k(h), self.v(h), self.use_sdpa))


class Downsample(nn.Module):
    """Halve the resolution: a stride-2 3×3 conv padded on the right/bottom only, or 2×2 average pooling."""

    def __init__(self, channels: int, with_conv: bool):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0) if with_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is None:
            return F.avg_pool2d(x, kernel_size=2, stride=2)
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Double the resolution by nearest-neighbour repetition, optionally followed by a 3×3 conv."""

    def __init__(self, channels: int, with_conv: bool):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1) if with_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return x if self.conv is None else self.conv(x)


class _Level(nn.Module):
    """One resolution level: its residual blocks, the attention after each (if any), and the resampler."""

    def __init__(self, blocks: Sequence[nn.Module], attns: Sequence[nn.Module]):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attns)


class _TimeEmbedding(nn.Module):
    """Two dense layers on the sinusoidal embedding; kept as a module so its keys read `temb.dense.{0,1}`."""

    def __init__(self, ch: int, temb_ch: int):
        super().__init__()
        self.dense = nn.ModuleList([nn.Linear(ch, temb_ch), nn.Linear(temb_ch, temb_ch)])

    def forward(self, t: torch.Tensor, ch: int) -> torch.Tensor:
        # The embedding is always computed in float32 (the released outputs depend on it) and then handed to
        # the dense layers in their own dtype, so a float64 or bf16 network runs whatever dtype t comes in.
        temb = ddpm_timestep_embedding(t, ch).to(self.dense[0].weight.dtype)
        return self.dense[1](F.silu(self.dense[0](temb)))


class _Middle(nn.Module):
    def __init__(self, channels: int, temb_ch: int, dropout: float):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, temb_ch, dropout)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels, temb_ch, dropout)

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(h, temb)), temb)


class DDPMUNet(nn.Module):
    """ε-prediction UNet: `model(x, t)` with x (B, C, H, W) and t a tensor (B,) of model timesteps.

    The network runs in the dtype of its weights (x must have it too); t may be of any dtype.

    Build it from the released configs' Model section with `DDPMUNet.from_config(section)`; the keyword
    arguments are those keys. `type` ('simple') is accepted and ignored.
    """

    def __init__(
        self,
        *,
        ch: int,
        out_ch: int,
        ch_mult: Sequence[int],
        num_res_blocks: int,
        attn_resolutions: Sequence[int],
        dropout: float = 0.0,
        in_channels: int = 3,
        image_size: int,
        resamp_with_conv: bool = True,
        type: str = "simple",  # noqa: A002 — the released configs' key name
    ):
        super().__init__()
        self.config = {
            "ch": ch, "out_ch": out_ch, "ch_mult": list(ch_mult), "num_res_blocks": num_res_blocks,
            "attn_resolutions": list(attn_resolutions), "dropout": dropout, "in_channels": in_channels,
            "image_size": image_size, "resamp_with_conv": resamp_with_conv, "type": type,
        }
        self.ch = ch
        self.image_size = image_size
        self.num_res_blocks = num_res_blocks
        temb_ch = 4 * ch
        mults = list(ch_mult)
        num_levels = len(mults)

        self.temb = _TimeEmbedding(ch, temb_ch)
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)

        # Encoder. `skip_channels` records the channels of every tensor pushed onto the skip stack.
        self.down = nn.ModuleList()
        skip_channels = [ch]
        resolution = image_size
        block_in = ch
        for level, mult in enumerate(mults):
            block_out = ch * mult
            blocks, attns = [], []
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(block_in, block_out, temb_ch, dropout))
                block_in = block_out
                if resolution in attn_resolutions:
                    attns.append(AttnBlock(block_in))
                skip_channels.append(block_in)
            down = _Level(blocks, attns)
            if level != num_levels - 1:
                down.downsample = Downsample(block_in, resamp_with_conv)
                skip_channels.append(block_in)
                resolution //= 2
            self.down.append(down)

        self.mid = _Middle(block_in, temb_ch, dropout)

        # Decoder, built from the lowest resolution up but stored by level so that `up.0` is full resolution.
        ups: list[_Level] = []
        for level in reversed(range(num_levels)):
            block_out = ch * mults[level]
            blocks, attns = [], []
            for _ in range(num_res_blocks + 1):
                blocks.append(ResnetBlock(block_in + skip_channels.pop(), block_out, temb_ch, dropout))
                block_in = block_out
                if resolution in attn_resolutions:
                    attns.append(AttnBlock(block_in))
            up = _Level(blocks, attns)
            if level != 0:
                up.upsample = Upsample(block_in, resamp_with_conv)
                resolution *= 2
            ups.insert(0, up)
        self.up = nn.ModuleList(ups)

        self.norm_out = _group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, out_ch, 3, padding=1)

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> "DDPMUNet":
        """Build from a Model-section dict; unknown keys are an error, so typos do not pass silently."""
        allowed = set(DDPM_CONFIG_KEYS) | {"type", "struc", "var_type", "ema_rate", "ema"}
        unknown = sorted(set(section) - allowed)
        if unknown:
            raise ValueError(f"unknown DDPM UNet config keys {unknown}; expected {list(DDPM_CONFIG_KEYS)}")
        missing = [k for k in ("ch", "out_ch", "ch_mult", "num_res_blocks", "attn_resolutions", "image_size")
                   if k not in section]
        if missing:
            raise ValueError(f"DDPM UNet config lacks {missing}")
        kwargs = {k: section[k] for k in DDPM_CONFIG_KEYS + ("type",) if k in section}
        return cls(**kwargs)

    def forward(self, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"DDPMUNet expects {self.image_size}×{self.image_size} inputs (attention resolutions "
                             f"depend on it), got {tuple(x.shape[-2:])}")
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        temb = self.temb(t, self.ch)

        skips = [self.conv_in(x)]
        for down in self.down:
            for i, block in enumerate(down.block):
                h = block(skips[-1], temb)
                if len(down.attn) > 0:
                    h = down.attn[i](h)
                skips.append(h)
            if hasattr(down, "downsample"):
                skips.append(down.downsample(skips[-1]))

        h = self.mid(skips[-1], temb)

        for up in reversed(self.up):
            for i, block in enumerate(up.block):
                h = block(torch.cat([h, skips.pop()], dim=1), temb)
                if len(up.attn) > 0:
                    h = up.attn[i](h)
            if hasattr(up, "upsample"):
                h = up.upsample(h)

        return self.conv_out(F.silu(self.norm_out(h)))
