"""NCSN++ / DDPM++ (Song et al. 2021, score-SDE), as the PNDM release runs it under `struc: PF_deep`.

One class covers score-SDE's whole option space: residual blocks from DDPM or BigGAN (`resblock_type`), optional
output and input pyramids (`progressive`, `progressive_input`), positional or Gaussian Fourier noise embeddings,
FIR resampling (`fir`, `fir_kernel`) and √2 skip rescaling. The release's `config/pf_deep_cifar10.yml` is
score-SDE's VP "DDPM++ cont. (deep)": BigGAN blocks, 8 per level, no pyramids, positional embedding, no FIR.

As in score-SDE every layer sits in one flat `all_modules` list in the order the forward pass first uses it, so
the state-dict keys (`all_modules.N.…`) are positional: the list must be built in exactly this order for the
release's checkpoints to load with strict=True. The resamplers of the pyramids that have no convolution are
kept outside the list (`pyramid_upsample`, `pyramid_downsample`), as score-SDE keeps them; they have no weights.

`model(x, t)` returns what the network was trained to output — ε for the release's VP models:
- with the positional embedding `t` is the label, continuous VP time × 999 (the release's PF sampler passes
  s·(T−1)); it is embedded as [sin | cos] with frequencies 10000^(−i/(half−1)) in float32, as in the DDPM UNet;
- with the Fourier embedding `t` is σ and the network embeds log σ itself;
- `centered: false` means the network was trained on images in [0, 1]: it maps its input to 2x − 1 itself.
The network computes in the dtype of its weights whatever the dtype of `t` (embeddings are computed in float32
and then cast). Decisions that depend on the resolution (where attention runs) are taken when the network is
built, so inputs must be `image_size` × `image_size`.

score-SDE's `scale_by_sigma` divides the output by σ (its VE models output the score). With the Fourier
embedding σ is the input and this is supported; with the positional embedding score-SDE looks σ up in a table of
VE noise levels (`sigma_min`, `sigma_max`, `num_scales`) that the PF configs do not have, so it is refused.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from .ddpm_unet import ddpm_timestep_embedding
from .ncsnpp_layers import AttnBlockpp, Combine, GaussianFourierProjection, ResnetBlockBigGANpp, resampler
from .scoresde_layers import (
    ResnetBlockDDPM, activation, conv3x3, dense, group_norm, network_inputs, section_kwargs, skip_sum, temb_mlp,
)

# The Model-section keys, in the order of the released config (config/pf_deep_cifar10.yml).
NCSNPP_CONFIG_KEYS = (
    "image_size", "num_channels", "nf", "ch_mult", "num_res_blocks", "attn_resolutions", "dropout",
    "nonlinearity", "resamp_with_conv", "conditional", "skip_rescale", "resblock_type", "progressive",
    "progressive_input", "embedding_type", "init_scale", "combine_method", "fir", "fir_kernel", "continuous",
    "centered", "fourier_scale", "scale_by_sigma",
)
# Keys without a default: `centered` has none because a wrong guess silently shifts every input.
NCSNPP_REQUIRED_KEYS = ("image_size", "nf", "ch_mult", "num_res_blocks", "attn_resolutions", "centered")
# Keys of the PNDM and score-SDE model configs that do not change this network; accepted so their configs load.
_IGNORED_KEYS = ("struc", "ckpt", "var_type", "ema", "ema_rate", "name", "sigma_min", "sigma_max", "num_scales",
                 "beta_min", "beta_max")
# score-SDE keys that name a variant this network does not implement: accepted only with their one value.
_FIXED_KEYS = {"normalization": "groupnorm", "attention_type": "ddpm", "conv_size": 3}

RESBLOCK_TYPES = ("ddpm", "biggan")
PROGRESSIVE = ("none", "output_skip", "residual")
PROGRESSIVE_INPUT = ("none", "input_skip", "residual")
EMBEDDING_TYPES = ("positional", "fourier")
COMBINE_METHODS = ("sum", "cat")


def _choice(name: str, value: Any, allowed: Sequence[str]) -> str:
    value = str(value).lower()
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value


class NCSNpp(nn.Module):
    """NCSN++: `model(x, t)` with x (B, C, H, W) in the weights' dtype and t (B,) or a scalar (see the module
    docstring for what t is). Build it from a Model section with `NCSNpp.from_config(section)`; the keyword
    arguments are those keys, and their defaults are the release's `pf_deep_cifar10.yml` values."""

    def __init__(
        self,
        *,
        image_size: int,
        num_channels: int = 3,
        nf: int,
        ch_mult: Sequence[int],
        num_res_blocks: int,
        attn_resolutions: Sequence[int],
        dropout: float = 0.1,
        nonlinearity: str = "swish",
        resamp_with_conv: bool = True,
        conditional: bool = True,
        skip_rescale: bool = True,
        resblock_type: str = "biggan",
        progressive: str = "none",
        progressive_input: str = "none",
        embedding_type: str = "positional",
        init_scale: float = 0.0,
        combine_method: str = "sum",
        fir: bool = False,
        fir_kernel: Sequence[float] = (1, 3, 3, 1),
        continuous: bool = True,
        centered: bool,
        fourier_scale: float = 16.0,
        scale_by_sigma: bool = False,
    ):
        super().__init__()
        resblock_type = _choice("resblock_type", resblock_type, RESBLOCK_TYPES)
        progressive = _choice("progressive", progressive, PROGRESSIVE)
        progressive_input = _choice("progressive_input", progressive_input, PROGRESSIVE_INPUT)
        embedding_type = _choice("embedding_type", embedding_type, EMBEDDING_TYPES)
        combine_method = _choice("combine_method", combine_method, COMBINE_METHODS)
        if embedding_type == "fourier" and not continuous:
            raise ValueError("the Fourier embedding takes a continuous noise level σ: it needs continuous: true")
        if scale_by_sigma and embedding_type == "positional":
            raise ValueError("scale_by_sigma with the positional embedding needs score-SDE's table of VE noise "
                             "levels (sigma_min, sigma_max, num_scales), which this config does not define; "
                             "set scale_by_sigma: false (the release's VP models do not use it)")
        num_levels = len(ch_mult)
        if image_size % 2 ** (num_levels - 1):
            raise ValueError(f"image_size {image_size} cannot be halved {num_levels - 1} times")
        self.config = {
            "struc": "PF_deep", "image_size": image_size, "num_channels": num_channels, "nf": nf,
            "ch_mult": list(ch_mult), "num_res_blocks": num_res_blocks, "attn_resolutions": list(attn_resolutions),
            "dropout": dropout, "nonlinearity": nonlinearity, "resamp_with_conv": resamp_with_conv,
            "conditional": conditional, "skip_rescale": skip_rescale, "resblock_type": resblock_type,
            "progressive": progressive, "progressive_input": progressive_input, "embedding_type": embedding_type,
            "init_scale": init_scale, "combine_method": combine_method, "fir": fir, "fir_kernel": list(fir_kernel),
            "continuous": continuous, "centered": centered, "fourier_scale": fourier_scale,
            "scale_by_sigma": scale_by_sigma,
        }
        # The options forward reads, as attributes: taken from the config so that the two cannot disagree.
        for key in ("image_size", "nf", "num_res_blocks", "conditional", "centered", "skip_rescale", "resblock_type",
                    "progressive", "progressive_input", "embedding_type", "scale_by_sigma"):
            setattr(self, key, self.config[key])
        self.num_levels = num_levels
        resolutions = [image_size // 2 ** level for level in range(num_levels)]
        self.attn_levels = [res in attn_resolutions for res in resolutions]

        self.act = act = activation(nonlinearity)
        temb_dim = 4 * nf
        block_kwargs = dict(act=act, temb_dim=temb_dim, dropout=dropout, skip_rescale=skip_rescale,
                            init_scale=init_scale)
        if resblock_type == "biggan":
            block_kwargs.update(fir=fir, fir_kernel=fir_kernel)
        Block = ResnetBlockBigGANpp if resblock_type == "biggan" else ResnetBlockDDPM

        def attention(channels: int) -> AttnBlockpp:
            return AttnBlockpp(channels, skip_rescale=skip_rescale, init_scale=init_scale)

        def output_conv(in_ch: int) -> nn.Conv2d:
            return conv3x3(in_ch, num_channels, init_scale=init_scale)

        resample = functools.partial(resampler, fir=fir, fir_kernel=fir_kernel)
        if progressive == "output_skip":
            self.pyramid_upsample = resample(num_channels, up=True, with_conv=False)
        if progressive_input == "input_skip":
            self.pyramid_downsample = resample(num_channels, up=False, with_conv=False)

        modules: list[nn.Module] = []
        # Noise-level embedding, then two dense layers (the latter only for a conditional network).
        if embedding_type == "fourier":
            modules.append(GaussianFourierProjection(nf, scale=fourier_scale))
            embed_dim = 2 * nf
        else:
            embed_dim = nf
        if conditional:
            modules += [dense(embed_dim, temb_dim), dense(temb_dim, temb_dim)]

        # Encoder. `skip_channels` records the channels of every tensor pushed onto the skip stack.
        modules.append(conv3x3(num_channels, nf))
        skip_channels = [nf]
        in_ch = nf
        pyramid_ch = num_channels
        for level in range(num_levels):
            out_ch = nf * ch_mult[level]
            for _ in range(num_res_blocks):
                modules.append(Block(in_ch, out_ch, **block_kwargs))
                in_ch = out_ch
                if self.attn_levels[level]:
                    modules.append(attention(in_ch))
                skip_channels.append(in_ch)
            if level == num_levels - 1:
                break
            if resblock_type == "ddpm":
                modules.append(resample(in_ch, up=False, with_conv=resamp_with_conv))
            else:
                modules.append(Block(in_ch, down=True, **block_kwargs))
            if progressive_input == "input_skip":
                modules.append(Combine(pyramid_ch, in_ch, method=combine_method))
                if combine_method == "cat":
                    in_ch *= 2
            elif progressive_input == "residual":
                modules.append(resample(pyramid_ch, in_ch, up=False, with_conv=True))
                pyramid_ch = in_ch
            skip_channels.append(in_ch)

        in_ch = skip_channels[-1]
        modules += [Block(in_ch, **block_kwargs), attention(in_ch), Block(in_ch, **block_kwargs)]

        # Decoder: one more block per level than the encoder, each taking a skip; attention once per level.
        for level in reversed(range(num_levels)):
            out_ch = nf * ch_mult[level]
            for _ in range(num_res_blocks + 1):
                modules.append(Block(in_ch + skip_channels.pop(), out_ch, **block_kwargs))
                in_ch = out_ch
            if self.attn_levels[level]:
                modules.append(attention(in_ch))
            if progressive == "output_skip":
                # An image at every level: norm, act, conv to the image channels, added to the upsampled one.
                modules += [group_norm(in_ch), output_conv(in_ch)]
            elif progressive == "residual":
                if level == num_levels - 1:
                    modules += [group_norm(in_ch), conv3x3(in_ch, in_ch)]
                else:
                    modules.append(resample(pyramid_ch, in_ch, up=True, with_conv=True))
                pyramid_ch = in_ch
            if level != 0:
                if resblock_type == "ddpm":
                    modules.append(resample(in_ch, up=True, with_conv=resamp_with_conv))
                else:
                    modules.append(Block(in_ch, up=True, **block_kwargs))
        assert not skip_channels

        if progressive != "output_skip":
            modules += [group_norm(in_ch), output_conv(in_ch)]
        self.all_modules = nn.ModuleList(modules)

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> "NCSNpp":
        """Build from a Model-section dict. Keys that are not architecture (`ckpt`, `ema_rate`, `struc`, score-SDE's
        SDE parameters, ...) are ignored; unknown keys are an error, so typos do not pass silently."""
        kwargs = section_kwargs(section, keys=NCSNPP_CONFIG_KEYS, required=NCSNPP_REQUIRED_KEYS,
                                ignored=_IGNORED_KEYS + tuple(_FIXED_KEYS), network="NCSN++ (PF_deep)")
        for key, value in _FIXED_KEYS.items():
            if key in section and str(section[key]).lower() != str(value):
                raise ValueError(f"{key}: {section[key]!r} is not implemented; NCSN++ here has {key}: {value}")
        return cls(**kwargs)

    def _embed(self, t: torch.Tensor, take: Callable[[], nn.Module]) -> torch.Tensor | None:
        """The noise-level embedding after the dense layers, in the weights' dtype (None if unconditional);
        `take` hands out the modules of `all_modules` in order."""
        if self.embedding_type == "fourier":
            temb = take()(torch.log(t.float()))
        else:
            temb = ddpm_timestep_embedding(t, self.nf)
        if not self.conditional:
            return None
        return temb_mlp(temb, take(), take(), self.act)

    def forward(self, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        x, t = network_inputs(x, t, image_size=self.image_size, centered=self.centered, network="NCSNpp")
        modules = iter(self.all_modules)
        take = modules.__next__  # every module is used exactly once, in list order
        temb = self._embed(t, take)
        pyramid = x if self.progressive_input != "none" else None

        # Encoder.
        hs = [take()(x)]
        for level in range(self.num_levels):
            for _ in range(self.num_res_blocks):
                h = take()(hs[-1], temb)
                if self.attn_levels[level]:
                    h = take()(h)
                hs.append(h)
            if level == self.num_levels - 1:
                break
            h = take()(hs[-1]) if self.resblock_type == "ddpm" else take()(hs[-1], temb)
            if self.progressive_input == "input_skip":
                pyramid = self.pyramid_downsample(pyramid)
                h = take()(pyramid, h)
            elif self.progressive_input == "residual":
                pyramid = skip_sum(take()(pyramid), h, self.skip_rescale)
                h = pyramid
            hs.append(h)

        h = hs[-1]
        h = take()(h, temb)
        h = take()(h)
        h = take()(h, temb)

        # Decoder.
        pyramid = None
        for level in reversed(range(self.num_levels)):
            for _ in range(self.num_res_blocks + 1):
                h = take()(torch.cat([h, hs.pop()], dim=1), temb)
            if self.attn_levels[level]:
                h = take()(h)
            if self.progressive == "output_skip":
                image = self._norm_act_conv(h, take)
                pyramid = image if pyramid is None else self.pyramid_upsample(pyramid) + image
            elif self.progressive == "residual":
                if level == self.num_levels - 1:
                    pyramid = self._norm_act_conv(h, take)
                else:
                    pyramid = skip_sum(take()(pyramid), h, self.skip_rescale)
                    h = pyramid
            if level != 0:
                h = take()(h) if self.resblock_type == "ddpm" else take()(h, temb)

        if self.progressive == "output_skip":
            h = pyramid
        else:
            h = self._norm_act_conv(h, take)

        assert next(modules, None) is None, "all_modules was built in a different order than the forward uses it"

        if self.scale_by_sigma:  # Fourier embedding only: t is σ
            h = h / t.to(h.dtype).reshape(-1, *([1] * (h.ndim - 1)))
        return h

    def _norm_act_conv(self, h: torch.Tensor, take: Callable[[], nn.Module]) -> torch.Tensor:
        """GroupNorm, activation, convolution: the next two modules (an output head)."""
        norm = take()
        conv = take()
        return conv(self.act(norm(h)))
