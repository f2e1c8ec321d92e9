"""The improved-diffusion UNet (Nichol & Dhariwal, 2021) as the PNDM release uses it (`struc: iDDPM`).

The parameter names and shapes follow the improved-diffusion checkpoints (`time_embed.{0,2}`,
`input_blocks.{i}.{j}`, `middle_block.{0,1,2}`, `output_blocks.{i}.{j}`, `out.{0,2}`), so the released CIFAR-10
cosine model loads with strict=True. What distinguishes it from the DDPM UNet, and what the weights depend on:
- the timestep embedding is [cos | sin] with frequencies 10000^(−i/half);
- residual blocks may inject the timestep as a scale and shift of the second GroupNorm
  (`use_scale_shift_norm`: h ← norm(h)·(1 + scale) + shift);
- GroupNorm has eps = 1e-5 and is always evaluated in float32;
- attention is multi-head, with the fused qkv projection laid out head by head ([q₀ k₀ v₀ q₁ k₁ v₁ …], the
  "legacy" order of improved-diffusion), stored as 1-D convolutions;
- downsampling is a stride-2 3×3 conv with symmetric padding;
- with learned σ the network has 2·C output channels: ε first, then the variance interpolation values.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

IDDPM_CONFIG_KEYS = (
    "in_channels", "model_channels", "out_channels", "num_res_blocks", "attention_resolutions", "dropout",
    "channel_mult", "dims", "conv_resample", "use_scale_shift_norm", "use_checkpoint", "num_heads",
    "num_heads_upsample",
)


def iddpm_timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (B,) → (B, dim) as [cos | sin], frequencies exp(−log(max_period)·i/half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1))
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm(32, C) computed in at least float32 whatever the input dtype (the statistics are unstable in
    fp16); a float64 network keeps float64. The affine parameters are cast along, so weights in any dtype work."""

    def __init__(self, channels: int):
        super().__init__(num_groups=32, num_channels=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = torch.promote_types(x.dtype, torch.float32)
        out = F.group_norm(x.to(dtype), self.num_groups, self.weight.to(dtype), self.bias.to(dtype), self.eps)
        return out.to(x.dtype)


class TimestepBlock(nn.Module):
    """A block whose forward also takes the timestep embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class TimestepEmbedSequential(nn.Sequential):
    """Sequential that hands the timestep embedding to the children that take one (the residual blocks)."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


def _maybe_checkpoint(module: nn.Module, fn, *args):
    """Recompute activations in the backward pass when the block asked for gradient checkpointing."""
    if module.use_checkpoint and module.training and torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


class ResBlock(TimestepBlock):
    """GroupNorm–SiLU–conv twice, with the timestep added (or applied as scale/shift) before the second conv."""

    def __init__(self, channels: int, emb_channels: int, dropout: float, out_channels: int | None = None,
                 use_scale_shift_norm: bool = False, use_checkpoint: bool = False):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.use_checkpoint = use_checkpoint
        self.in_layers = nn.Sequential(GroupNorm32(channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels))
        self.out_layers = nn.Sequential(GroupNorm32(out_channels), nn.SiLU(), nn.Dropout(p=dropout),
                                        nn.Conv2d(out_channels, out_channels, 3, padding=1))
        if out_channels == channels:
            self.skip_connection: nn.Module = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return _maybe_checkpoint(self, self._forward, x, emb)

    def _forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        emb_out = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        if self.use_scale_shift_norm:
            norm, rest = self.out_layers[0], self.out_layers[1:]
            scale, shift = emb_out.chunk(2, dim=1)
            h = rest(norm(h) * (1 + scale) + shift)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all pixels with the legacy head-major qkv layout, plus a residual.

    Each head h owns qkv channels [3·h·d, 3·(h+1)·d) split as q, k, v (d = C / num_heads); the score scale is
    d^(−1/2). `use_sdpa` selects torch's fused attention; the explicit softmax path is the plain reference.
    """

    def __init__(self, channels: int, num_heads: int = 1, use_checkpoint: bool = False, use_sdpa: bool = True):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"attention channels {channels} not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.use_checkpoint = use_checkpoint
        self.use_sdpa = use_sdpa
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _maybe_checkpoint(self, self._forward, x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))
        # (B, heads·3·d, T) → three (B, heads, T, d) tensors.
        qkv = qkv.reshape(b, self.num_heads, 3 * (c // self.num_heads), -1).transpose(2, 3)
        q, k, v = qkv.chunk(3, dim=-1)
        if self.use_sdpa:
            h = F.scaled_dot_product_attention(q, k, v)
        else:
            weights = torch.softmax((q @ k.transpose(-1, -2)).float() * q.shape[-1] ** -0.5, dim=-1)
            h = weights.to(v.dtype) @ v
        h = h.transpose(2, 3).reshape(b, c, -1)
        return (x + self.proj_out(h)).reshape(b, c, *spatial)


class Downsample(nn.Module):
    """Halve the resolution: stride-2 3×3 conv with padding 1 (key `op`), or 2×2 average pooling."""

    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Double the resolution by nearest-neighbour repetition, optionally followed by a 3×3 conv."""

    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1) if use_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return x if self.conv is None else self.conv(x)


class IDDPMUNet(nn.Module):
    """improved-diffusion UNet: `model(x, t)` with x (B, C, H, W) and t a tensor (B,) of any dtype; the network
    runs in the dtype of its weights (x must have it too).

    - `eps_only`: with learned σ (out_channels == 2·in_channels) return only ε, the first half of the output
      channels, as the PNDM release does; otherwise return every channel (training needs the σ half too).
    - `timestep_scale`: multiply t by this before embedding. improved-diffusion's `rescale_timesteps` trains
      a T-step model on t·1000/T, so a model trained that way with T ≠ 1000 needs timestep_scale = 1000/T
      when the sampler passes indices 0..T−1.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        num_res_blocks: int,
        attention_resolutions: Sequence[int],
        dropout: float = 0.0,
        channel_mult: Sequence[int] = (1, 2, 4, 8),
        dims: int = 2,
        conv_resample: bool = True,
        use_scale_shift_norm: bool = False,
        use_checkpoint: bool = False,
        num_heads: int = 1,
        num_heads_upsample: int = -1,
        image_size: int | None = None,
        eps_only: bool = False,
        timestep_scale: float = 1.0,
    ):
        super().__init__()
        if dims != 2:
            raise ValueError(f"only 2-D images are supported (dims: 2), got dims: {dims}")
        if num_heads_upsample == -1:
            num_heads_upsample = num_heads
        self.config = {
            "in_channels": in_channels, "model_channels": model_channels, "out_channels": out_channels,
            "num_res_blocks": num_res_blocks, "attention_resolutions": list(attention_resolutions),
            "dropout": dropout, "channel_mult": list(channel_mult), "dims": dims, "conv_resample": conv_resample,
            "use_scale_shift_norm": use_scale_shift_norm, "use_checkpoint": use_checkpoint,
            "num_heads": num_heads, "num_heads_upsample": num_heads_upsample, "image_size": image_size,
        }
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.out_channels = out_channels
        self.image_size = image_size
        self.eps_only = eps_only
        self.timestep_scale = float(timestep_scale)

        emb_dim = 4 * model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        def res_block(ch_in: int, ch_out: int) -> ResBlock:
            return ResBlock(ch_in, emb_dim, dropout, ch_out, use_scale_shift_norm, use_checkpoint)

        # Encoder; `skip_channels` tracks every tensor that the decoder will concatenate back.
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(in_channels, model_channels, 3,
                                                                             padding=1))])
        skip_channels = [model_channels]
        ch = model_channels
        rate = 1  # downsampling rate of the current level: attention_resolutions lists these
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [res_block(ch, mult * model_channels)]
                ch = mult * model_channels
                if rate in attention_resolutions:
                    layers.append(AttentionBlock(ch, num_heads, use_checkpoint))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_channels.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(Downsample(ch, conv_resample)))
                skip_channels.append(ch)
                rate *= 2

        self.middle_block = TimestepEmbedSequential(
            res_block(ch, ch), AttentionBlock(ch, num_heads, use_checkpoint), res_block(ch, ch))

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [res_block(ch + skip_channels.pop(), model_channels * mult)]
                ch = model_channels * mult
                if rate in attention_resolutions:
                    layers.append(AttentionBlock(ch, num_heads_upsample, use_checkpoint))
                if level and i == num_res_blocks:
                    layers.append(Upsample(ch, conv_resample))
                    rate //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(), nn.Conv2d(model_channels, out_channels, 3, padding=1))

    @classmethod
    def from_config(cls, section: Mapping[str, Any], *, eps_only: bool = False,
                    timestep_scale: float = 1.0) -> "IDDPMUNet":
        """Build from a Model-section dict (`struc` and `image_size` allowed); unknown keys are an error."""
        allowed = set(IDDPM_CONFIG_KEYS) | {"struc", "image_size"}
        unknown = sorted(set(section) - allowed)
        if unknown:
            raise ValueError(f"unknown iDDPM UNet config keys {unknown}; expected {list(IDDPM_CONFIG_KEYS)}")
        missing = [k for k in ("in_channels", "model_channels", "out_channels", "num_res_blocks",
                               "attention_resolutions") if k not in section]
        if missing:
            raise ValueError(f"iDDPM UNet config lacks {missing}")
        kwargs = {k: section[k] for k in IDDPM_CONFIG_KEYS + ("image_size",) if k in section}
        return cls(**kwargs, eps_only=eps_only, timestep_scale=timestep_scale)

    @property
    def learns_sigma(self) -> bool:
        return self.out_channels == 2 * self.in_channels

    def forward(self, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        # Embedded in float32 (as improved-diffusion does), then run in the dtype of the network's weights.
        emb = iddpm_timestep_embedding(t.float() * self.timestep_scale, self.model_channels)
        emb = self.time_embed(emb.to(self.time_embed[0].weight.dtype))

        skips = []
        h = x
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        out = self.out(h)

        if self.eps_only and self.learns_sigma:
            return out[:, : self.in_channels]
        return out
