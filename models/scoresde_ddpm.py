"""score-SDE's DDPM network (Song et al. 2021), as the PNDM release runs it under `struc: PF`.

It is Ho et al.'s UNet rewritten in score-SDE's module layout: every layer sits in one flat `all_modules` list in
the order the forward pass first uses it, and residual/attention blocks name their layers after the Flax
originals (`GroupNorm_0`, `Conv_0`, `Dense_0`, `NIN_0`, ...). The state-dict keys (`all_modules.N.…`) are
therefore positional: a module without parameters (a resampler without convolution) still takes an index, and
the list must be built in exactly this order for the release's checkpoints to load with strict=True. Inside each
block the layers are registered in the order they run, which is also the order of `parameters()` that
score-SDE's EMA stores its shadow list in. The blocks are those NCSN++ is built from too
(`models.scoresde_layers`), taken with DDPM's settings: 32 groups, no skip rescaling, output layers at zero.

Numerical details that the released weights depend on (each one changes the output if altered):
- the label (continuous VP time × 999, or an integer timestep) is embedded as [sin | cos] with frequencies
  10000^(−i/(half−1)), computed in float32 (the same embedding as the DDPM UNet);
- `centered: false` means the network was trained on images in [0, 1]: it maps its input to 2x − 1 itself;
- GroupNorm uses 32 groups and eps = 1e-6;
- the 1×1 projections are score-SDE's `NIN` layers, a weight `W` stored as (in, out) — the transpose of a
  convolution's — and a bias `b`;
- attention is single-head with scale C^(−1/2); in the upsampling path it comes once per level, after all of
  that level's residual blocks (Ho et al. attend after each one);
- the strided downsampling convolution pads only the right and bottom edge (TensorFlow "SAME" padding).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .ddpm_unet import ddpm_timestep_embedding
from .scoresde_layers import (
    AttnBlock, Downsample, ResnetBlockDDPM, Upsample, activation, conv3x3, dense, group_norm, network_inputs,
    section_kwargs, temb_mlp,
)

# The Model-section keys, in the order of the released config (config/pf_cifar10.yml).
PF_CONFIG_KEYS = (
    "image_size", "num_channels", "nf", "ch_mult", "num_res_blocks", "attn_resolutions", "dropout",
    "nonlinearity", "resamp_with_conv", "conditional", "centered",
)
# Keys without a default: `centered` has none because a wrong guess silently shifts every input.
PF_REQUIRED_KEYS = ("image_size", "nf", "ch_mult", "num_res_blocks", "attn_resolutions", "centered")
# Keys of score-SDE's model config that do not change this network; accepted so its configs load as they are.
_IGNORED_KEYS = ("struc", "var_type", "ema", "ema_rate", "sigma_min", "sigma_max", "num_scales", "beta_min",
                 "beta_max")

# score-SDE's DDPM normalises with 32 groups (NCSN++ with min(C/4, 32)).
_GROUPS = 32


class ScoreSDEDDPM(nn.Module):
    """ε-prediction UNet of score-SDE (`struc: PF`): `model(x, t)` with x (B, C, H, W) and t a tensor (B,) of
    labels — continuous VP time × 999 as the release's PF sampler passes it, or integer timesteps.

    The network runs in the dtype of its weights (x must have it too); t may be of any dtype.
    Build it from the released config's Model section with `ScoreSDEDDPM.from_config(section)`.
    """

    def __init__(
        self,
        *,
        image_size: int,
        num_channels: int = 3,
        nf: int,
        ch_mult: Sequence[int],
        num_res_blocks: int,
        attn_resolutions: Sequence[int],
        dropout: float = 0.0,
        nonlinearity: str = "swish",
        resamp_with_conv: bool = True,
        conditional: bool = True,
        centered: bool,
    ):
        super().__init__()
        if not conditional:
            # score-SDE conditions on the label whatever this flag says; the release's copy has no modules at
            # all without it (it fails to build), so there is no layout to reproduce.
            raise ValueError("conditional: false is not supported: neither score-SDE nor the PNDM release builds "
                             "an unconditional DDPM network")
        self.config = {
            "image_size": image_size, "num_channels": num_channels, "nf": nf, "ch_mult": list(ch_mult),
            "num_res_blocks": num_res_blocks, "attn_resolutions": list(attn_resolutions), "dropout": dropout,
            "nonlinearity": nonlinearity, "resamp_with_conv": resamp_with_conv, "conditional": conditional,
            "centered": centered,
        }
        self.nf = nf
        self.image_size = image_size
        self.num_res_blocks = num_res_blocks
        self.num_levels = len(ch_mult)
        self.centered = centered
        self.act = act = activation(nonlinearity)
        # Attention is decided per level from the construction-time resolution (score-SDE checks the runtime
        # width, which is the same thing for the image size that forward accepts).
        self.attn_levels = frozenset(level for level in range(self.num_levels)
                                     if image_size // 2 ** level in attn_resolutions)

        def block(in_ch: int, out_ch: int | None = None) -> ResnetBlockDDPM:
            return ResnetBlockDDPM(in_ch, out_ch, act=act, temb_dim=4 * nf, dropout=dropout, num_groups=_GROUPS)

        def attention(channels: int) -> AttnBlock:
            return AttnBlock(channels, num_groups=_GROUPS)

        modules: list[nn.Module] = [dense(nf, 4 * nf), dense(4 * nf, 4 * nf), conv3x3(num_channels, nf)]
        # Encoder. `skip_channels` records the channels of every tensor pushed onto the skip stack.
        skip_channels = [nf]
        in_ch = nf
        for level, mult in enumerate(ch_mult):
            for _ in range(num_res_blocks):
                modules.append(block(in_ch, nf * mult))
                in_ch = nf * mult
                if level in self.attn_levels:
                    modules.append(attention(in_ch))
                skip_channels.append(in_ch)
            if level != self.num_levels - 1:
                modules.append(Downsample(in_ch, with_conv=resamp_with_conv))
                skip_channels.append(in_ch)

        modules += [block(in_ch), attention(in_ch), block(in_ch)]

        # Decoder: one more block per level than the encoder, each taking a skip; attention once per level.
        for level in reversed(range(self.num_levels)):
            for _ in range(num_res_blocks + 1):
                modules.append(block(in_ch + skip_channels.pop(), nf * ch_mult[level]))
                in_ch = nf * ch_mult[level]
            if level in self.attn_levels:
                modules.append(attention(in_ch))
            if level != 0:
                modules.append(Upsample(in_ch, with_conv=resamp_with_conv))
        assert not skip_channels

        modules += [group_norm(in_ch, _GROUPS), conv3x3(in_ch, num_channels, init_scale=0.0)]
        self.all_modules = nn.ModuleList(modules)

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> "ScoreSDEDDPM":
        """Build from a Model-section dict; unknown keys are an error, so typos do not pass silently.

        score-SDE's SDE parameters (beta_min, sigma_max, ...) are accepted and ignored: they describe the noise
        process, not the network. `scale_by_sigma` must be false (the release fixes it so) and `normalization`
        GroupNorm, the only values this network has.
        """
        kwargs = section_kwargs(section, keys=PF_CONFIG_KEYS, required=PF_REQUIRED_KEYS,
                                ignored=_IGNORED_KEYS + ("scale_by_sigma", "normalization"),
                                network="score-SDE DDPM (struc PF)")
        if section.get("scale_by_sigma", False):
            raise ValueError("scale_by_sigma: true is not supported by the PF network (the release fixes it false)")
        if str(section.get("normalization", "GroupNorm")) != "GroupNorm":
            raise ValueError(f"normalization {section['normalization']!r} is not supported; the PF network uses "
                             "GroupNorm")
        return cls(**kwargs)

    def forward(self, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        h, t = network_inputs(x, t, image_size=self.image_size, centered=self.centered, network="ScoreSDEDDPM")
        layers = iter(self.all_modules)  # walked in the order it was built
        temb = temb_mlp(ddpm_timestep_embedding(t, self.nf), next(layers), next(layers), self.act)
        skips = [next(layers)(h)]
        for level in range(self.num_levels):
            for _ in range(self.num_res_blocks):
                h = next(layers)(skips[-1], temb)
                if level in self.attn_levels:
                    h = next(layers)(h)
                skips.append(h)
            if level != self.num_levels - 1:
                skips.append(next(layers)(skips[-1]))

        h = next(layers)(skips[-1], temb)
        h = next(layers)(h)
        h = next(layers)(h, temb)

        for level in reversed(range(self.num_levels)):
            for _ in range(self.num_res_blocks + 1):
                h = next(layers)(torch.cat([h, skips.pop()], dim=1), temb)
            if level in self.attn_levels:
                h = next(layers)(h)
            if level != 0:
                h = next(layers)(h)

        norm_out, conv_out = next(layers), next(layers)
        return conv_out(self.act(norm_out(h)))
