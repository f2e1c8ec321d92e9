"""From a config and a weights file to a UNet in eval mode; and the DDPM ↔ diffusers UNet2DModel key map.

Formats recognised (detected from the content, not the file name):
- a plain state dict (.ckpt/.pth/.pt/.bin or .safetensors) — the pytorch_diffusion and PNDM releases;
- DDIM's training list `[state_dict, optimizer, epoch, step, ema_shadow]` (its CelebA file) — the EMA shadow
  is used when present;
- this project's training dict `{'model': sd, 'ema': sd, ...}` — 'ema' preferred;
- a diffusers `UNet2DModel` directory (config.json + diffusion_pytorch_model.safetensors / .bin), or a
  pipeline directory holding one under `unet/`; diffusers-named keys in a plain file are translated too.
Prefixes left by DataParallel/DDP (`module.`) and torch.compile (`_orig_mod.`) are stripped.

Files are read with `torch.load(weights_only=True)` (or safetensors): nothing is unpickled that could run code.
A file that needs full unpickling is refused unless the caller passes `trust_pickle=True`.

The diffusers key map is written out here rather than taken from diffusers' conversion script, whose renaming
of `nin_shortcut` is known to be wrong; tests check it both ways against diffusers' own UNet2DModel.
"""
from __future__ import annotations

import functools
import json
import pickle
import re
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .ddpm_unet import DDPMUNet
from .iddpm_unet import IDDPMUNet


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model that the config describes."""


class UntrustedCheckpointError(CheckpointError):
    """The file holds Python objects beyond tensors and containers; reading it means running its pickle."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint path does not exist."""


# Model sections of the released checkpoints (the PNDM configs): used to name the layout of a checkpoint that
# does not fit, and to build a model when no config is given. Their layouts are tested against the shapes of the
# released files.
KNOWN_MODEL_CONFIGS: dict[str, dict[str, Any]] = {
    "cifar10": {"ch": 128, "out_ch": 3, "ch_mult": [1, 2, 2, 2], "num_res_blocks": 2, "attn_resolutions": [16],
                "dropout": 0.1, "in_channels": 3, "image_size": 32, "resamp_with_conv": True, "type": "simple"},
    "celeba": {"ch": 128, "out_ch": 3, "ch_mult": [1, 2, 2, 2, 4], "num_res_blocks": 2, "attn_resolutions": [16],
               "dropout": 0.1, "in_channels": 3, "image_size": 64, "resamp_with_conv": True, "type": "simple"},
    "lsun_church": {"ch": 128, "out_ch": 3, "ch_mult": [1, 1, 2, 2, 4, 4], "num_res_blocks": 2,
                    "attn_resolutions": [16], "dropout": 0.0, "in_channels": 3, "image_size": 256,
                    "resamp_with_conv": True, "type": "simple"},
    "lsun_bedroom": {"ch": 128, "out_ch": 3, "ch_mult": [1, 1, 2, 2, 4, 4], "num_res_blocks": 2,
                     "attn_resolutions": [16], "dropout": 0.0, "in_channels": 3, "image_size": 256,
                     "resamp_with_conv": True, "type": "simple"},
    "cifar10_iddpm": {"struc": "iDDPM", "in_channels": 3, "model_channels": 128, "out_channels": 6,
                      "num_res_blocks": 3, "attention_resolutions": [2, 4], "dropout": 0.3,
                      "channel_mult": [1, 2, 2, 2], "dims": 2, "conv_resample": True, "use_scale_shift_norm": True,
                      "use_checkpoint": False, "num_heads": 4, "num_heads_upsample": 4, "image_size": 32},
}

_DDPM_STRUCS = {None, "DDIM", "DDPM", "ddim", "ddpm"}
_IDDPM_STRUCS = {"iDDPM", "iddpm", "IDDPM"}
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_SHOWN_KEYS = 3


# ---------------------------------------------------------------------------------------------------------------
# Building


# Model-section keys that say where the weights are, not what the network is.
RUNNER_KEYS = ("ckpt",)


def model_section(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The Model section of a full config, or the dict itself when it already is one (without RUNNER_KEYS)."""
    if not isinstance(cfg, Mapping):
        raise TypeError(f"expected a config dict, got {type(cfg).__name__}")
    section = cfg.get("Model", cfg)
    if not isinstance(section, Mapping):
        raise ValueError("config 'Model' section is not a mapping")
    return {k: v for k, v in section.items() if k not in RUNNER_KEYS}


def _timestep_scale(cfg: Mapping[str, Any]) -> float:
    """1000/T when the Schedule section says the model was trained on rescaled timesteps, else 1.

    improved-diffusion's `rescale_timesteps` feeds a T-step model t·1000/T; the PNDM configs record it, with T,
    as `Schedule.rescale_timesteps` and `Schedule.diffusion_step`.
    """
    schedule = (cfg.get("Schedule") or {}) if "Model" in cfg else {}
    steps = schedule.get("diffusion_step")
    if schedule.get("rescale_timesteps") and steps:
        return 1000.0 / float(steps)
    return 1.0


def build_model(cfg: Mapping[str, Any], *, eps_only: bool = True) -> nn.Module:
    """The UNet that the config's Model section describes, with freshly initialised weights.

    `struc` absent or 'DDIM' → `DDPMUNet`; 'iDDPM' → `IDDPMUNet`. For a learned-σ iDDPM model `eps_only`
    (default) makes the forward return ε only, which is what samplers call; training wants `eps_only=False`.
    """
    section = model_section(cfg)
    struc = section.get("struc")
    if struc in _IDDPM_STRUCS:
        return IDDPMUNet.from_config(section, eps_only=eps_only, timestep_scale=_timestep_scale(cfg))
    if struc in _DDPM_STRUCS:
        return DDPMUNet.from_config(section)
    raise ValueError(f"unsupported Model.struc {struc!r}; this project has 'DDIM' (DDPM UNet) and 'iDDPM'")


def _layout(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@functools.lru_cache(maxsize=None)
def _known_layouts() -> dict[str, dict[str, tuple[int, ...]]]:
    """Key → shape of every released layout, built on the meta device (no memory is allocated)."""
    with torch.device("meta"):
        return {name: _layout(build_model(cfg)) for name, cfg in KNOWN_MODEL_CONFIGS.items()}


def identify_layout(shapes: Mapping[str, tuple[int, ...]]) -> tuple[list[str], tuple[str, int, int] | None]:
    """Which released layouts these key shapes are exactly; and the closest one (name, agreeing, total)."""
    shapes = {k: tuple(s) for k, s in shapes.items()}
    exact, best = [], None
    for name, layout in _known_layouts().items():
        if shapes == layout:
            exact.append(name)
        agree = sum(1 for k, s in shapes.items() if layout.get(k) == s)
        total = max(len(shapes), len(layout))
        if best is None or agree / total > best[1] / best[2]:
            best = (name, agree, total)
    return exact, best


# ---------------------------------------------------------------------------------------------------------------
# DDPM ↔ diffusers UNet2DModel


_RESNET_TO_DIFFUSERS = {"norm1": "norm1", "conv1": "conv1", "temb_proj": "time_emb_proj", "norm2": "norm2",
                        "conv2": "conv2", "nin_shortcut": "conv_shortcut"}
_ATTN_TO_DIFFUSERS = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_PART_TO_DIFFUSERS = {"resnet": _RESNET_TO_DIFFUSERS, "attn": _ATTN_TO_DIFFUSERS, "resample": {"conv": "conv"}}
_PART_FROM_DIFFUSERS = {kind: {v: k for k, v in table.items()} for kind, table in _PART_TO_DIFFUSERS.items()}
# Names of diffusers' attention before 0.14 (`AttentionBlock`) are accepted on the way in.
_PART_FROM_DIFFUSERS["attn"].update({"query": "q", "key": "k", "value": "v", "proj_attn": "proj_out"})
_TOP_TO_DIFFUSERS = {"temb.dense.0": "time_embedding.linear_1", "temb.dense.1": "time_embedding.linear_2",
                     "conv_in": "conv_in", "norm_out": "conv_norm_out", "conv_out": "conv_out"}
_TOP_FROM_DIFFUSERS = {v: k for k, v in _TOP_TO_DIFFUSERS.items()}
_MID_TO_DIFFUSERS = {"mid.block_1": ("mid_block.resnets.0", "resnet"),
                     "mid.block_2": ("mid_block.resnets.1", "resnet"),
                     "mid.attn_1": ("mid_block.attentions.0", "attn")}
_MID_FROM_DIFFUSERS = {v[0]: (k, v[1]) for k, v in _MID_TO_DIFFUSERS.items()}

_DDPM_CONTAINER = re.compile(r"^(?P<side>down|up)\.(?P<level>\d+)\."
                             r"(?:(?P<kind>block|attn)\.(?P<idx>\d+)|(?P<resample>downsample|upsample))$")
_DIFFUSERS_STEM = re.compile(r"^(?P<side>down_blocks|up_blocks)\.(?P<level>\d+)\."
                             r"(?:(?P<kind>resnets|attentions)\.(?P<idx>\d+)|(?P<resample>downsamplers|upsamplers)\.0)"
                             r"\.(?P<part>.+)$")


def _is_attention_matrix(ddpm_key: str) -> bool:
    """q/k/v/proj_out weights: 1×1 convs in the DDPM layout, linear layers in diffusers'."""
    return bool(re.search(r"(^|\.)(attn\.\d+|attn_1)\.(q|k|v|proj_out)\.weight$", ddpm_key))


def ddpm_key_to_diffusers(key: str, num_levels: int) -> str:
    """The diffusers name of a DDPM parameter.

    Decoder levels are renumbered: DDPM's `up.{i}` is indexed by resolution (`up.0` is full resolution) while
    diffusers' `up_blocks` are in execution order, so `up.{i}` ↔ `up_blocks.{num_levels − 1 − i}`.
    """
    stem, _, param = key.rpartition(".")
    if stem in _TOP_TO_DIFFUSERS:
        return f"{_TOP_TO_DIFFUSERS[stem]}.{param}"
    container, _, part = stem.rpartition(".")
    if container in _MID_TO_DIFFUSERS:
        new_container, kind = _MID_TO_DIFFUSERS[container]
    elif (m := _DDPM_CONTAINER.match(container)) is not None:
        level = int(m["level"]) if m["side"] == "down" else num_levels - 1 - int(m["level"])
        side = "down_blocks" if m["side"] == "down" else "up_blocks"
        if m["resample"]:
            new_container, kind = f"{side}.{level}.{m['resample']}rs.0", "resample"
        elif m["kind"] == "block":
            new_container, kind = f"{side}.{level}.resnets.{m['idx']}", "resnet"
        else:
            new_container, kind = f"{side}.{level}.attentions.{m['idx']}", "attn"
    else:
        raise CheckpointError(f"DDPM key {key!r} has no diffusers UNet2DModel counterpart")
    if part not in _PART_TO_DIFFUSERS[kind]:
        raise CheckpointError(f"DDPM key {key!r} has no diffusers UNet2DModel counterpart")
    return f"{new_container}.{_PART_TO_DIFFUSERS[kind][part]}.{param}"


def diffusers_key_to_ddpm(key: str, num_levels: int) -> str:
    """The DDPM name of a diffusers UNet2DModel parameter (the inverse of `ddpm_key_to_diffusers`)."""
    stem, _, param = key.rpartition(".")
    if stem in _TOP_FROM_DIFFUSERS:
        return f"{_TOP_FROM_DIFFUSERS[stem]}.{param}"
    mid = next((c for c in _MID_FROM_DIFFUSERS if stem.startswith(c + ".")), None)
    if mid is not None:
        (new_container, kind), part = _MID_FROM_DIFFUSERS[mid], stem[len(mid) + 1:]
    elif (m := _DIFFUSERS_STEM.match(stem)) is not None:
        level = int(m["level"]) if m["side"] == "down_blocks" else num_levels - 1 - int(m["level"])
        side, part = ("down" if m["side"] == "down_blocks" else "up"), m["part"]
        if m["resample"]:
            new_container, kind = f"{side}.{level}.{m['resample'][:-2]}", "resample"
        elif m["kind"] == "resnets":
            new_container, kind = f"{side}.{level}.block.{m['idx']}", "resnet"
        else:
            new_container, kind = f"{side}.{level}.attn.{m['idx']}", "attn"
    else:
        raise CheckpointError(f"diffusers key {key!r} has no DDPM UNet counterpart")
    if part not in _PART_FROM_DIFFUSERS[kind]:
        raise CheckpointError(f"diffusers key {key!r} has no DDPM UNet counterpart")
    return f"{new_container}.{_PART_FROM_DIFFUSERS[kind][part]}.{param}"


def _diffusers_num_levels(keys) -> int:
    levels = {int(m[1]) for k in keys if (m := re.match(r"^down_blocks\.(\d+)\.", k))}
    if not levels:
        raise CheckpointError("diffusers state dict has no down_blocks")
    return max(levels) + 1


def ddpm_to_diffusers_state_dict(state_dict: Mapping[str, torch.Tensor], num_levels: int) -> dict[str, torch.Tensor]:
    """Rename every DDPM parameter to diffusers' name, turning attention 1×1 conv weights into matrices."""
    out = {}
    for key, value in state_dict.items():
        if _is_attention_matrix(key):
            value = value.reshape(value.shape[0], value.shape[1])
        out[ddpm_key_to_diffusers(key, num_levels)] = value
    return out


def diffusers_to_ddpm_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename every diffusers UNet2DModel parameter to the DDPM layout (attention matrices → 1×1 convs)."""
    num_levels = _diffusers_num_levels(state_dict)
    out = {}
    for key, value in state_dict.items():
        new_key = diffusers_key_to_ddpm(key, num_levels)
        if _is_attention_matrix(new_key) and value.ndim == 2:
            value = value[:, :, None, None]
        out[new_key] = value
    return out


def _looks_like_diffusers(keys) -> bool:
    return any(k.startswith(("time_embedding.", "down_blocks.", "mid_block.")) for k in keys)


def diffusers_config(section: Mapping[str, Any]) -> dict[str, Any]:
    """The diffusers UNet2DModel config equivalent to a DDPM Model section (google/ddpm-cifar10-32 style)."""
    section = model_section(section)
    if section.get("struc") not in _DDPM_STRUCS:
        raise ValueError(f"only the DDPM UNet (struc DDIM) converts to diffusers, not {section.get('struc')!r}")
    if not section.get("resamp_with_conv", True):
        raise ValueError("diffusers' UNet2DModel always resamples with convolutions; resamp_with_conv: false "
                         "has no equivalent")
    ch, mults, size = section["ch"], list(section["ch_mult"]), section["image_size"]
    has_attn = [size // 2 ** level in section["attn_resolutions"] for level in range(len(mults))]
    return {
        "_class_name": "UNet2DModel",
        "sample_size": size,
        "in_channels": section.get("in_channels", 3),
        "out_channels": section["out_ch"],
        "center_input_sample": False,
        "time_embedding_type": "positional",
        "flip_sin_to_cos": False,  # DDPM's embedding is [sin | cos]
        "freq_shift": 1,  # frequencies 10000^(−i/(half−1))
        "down_block_types": ["AttnDownBlock2D" if a else "DownBlock2D" for a in has_attn],
        "up_block_types": ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(has_attn)],
        "block_out_channels": [ch * m for m in mults],
        "layers_per_block": section["num_res_blocks"],
        "mid_block_scale_factor": 1,
        "downsample_padding": 0,  # right/bottom padding before the stride-2 conv
        "downsample_type": "conv",
        "upsample_type": "conv",
        "dropout": section.get("dropout", 0.0),
        "act_fn": "silu",
        "attention_head_dim": None,  # one head spanning all channels
        "norm_num_groups": 32,
        "norm_eps": 1e-6,
        "resnet_time_scale_shift": "default",
        "add_attention": True,
    }


# What UNet2DModel assumes for a key missing from config.json, for the keys that decide DDPM equivalence.
_DIFFUSERS_DEFAULTS = {"center_input_sample": False, "time_embedding_type": "positional", "freq_shift": 0,
                       "flip_sin_to_cos": True, "downsample_padding": 1, "downsample_type": "conv",
                       "upsample_type": "conv", "act_fn": "silu", "attention_head_dim": 8, "norm_num_groups": 32,
                       "norm_eps": 1e-5, "resnet_time_scale_shift": "default", "add_attention": True,
                       "mid_block_scale_factor": 1, "class_embed_type": None, "num_class_embeds": None,
                       "mid_block_type": "UNetMidBlock2D", "time_embedding_dim": None,
                       "attn_norm_num_groups": None}


def ddpm_config_from_diffusers(config: Mapping[str, Any]) -> dict[str, Any]:
    """The DDPM Model section equivalent to a diffusers UNet2DModel config.json, or a CheckpointError saying
    which setting the DDPM UNet cannot reproduce."""
    if config.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise CheckpointError(f"diffusers model class {config.get('_class_name')!r} is not a UNet2DModel")
    full = {**_DIFFUSERS_DEFAULTS, **config}
    boc = list(full["block_out_channels"])
    required = {"center_input_sample": False, "time_embedding_type": "positional", "flip_sin_to_cos": False,
                "freq_shift": 1, "downsample_padding": 0, "downsample_type": "conv", "upsample_type": "conv",
                "act_fn": "silu", "norm_num_groups": 32, "norm_eps": 1e-6, "resnet_time_scale_shift": "default",
                "add_attention": True, "mid_block_scale_factor": 1, "class_embed_type": None,
                "num_class_embeds": None, "mid_block_type": "UNetMidBlock2D", "time_embedding_dim": None,
                "attn_norm_num_groups": None}
    for key, want in required.items():
        if full[key] != want:
            raise CheckpointError(f"diffusers config has {key}={full[key]!r}; the DDPM UNet needs {want!r}")
    head_dim = full["attention_head_dim"]
    down, up = list(full["down_block_types"]), list(full["up_block_types"])
    has_attn = [t == "AttnDownBlock2D" for t in down]
    if set(down) - {"DownBlock2D", "AttnDownBlock2D"} or up != ["AttnUpBlock2D" if a else "UpBlock2D"
                                                             for a in reversed(has_attn)]:
        raise CheckpointError(f"diffusers block types {down} / {up} have no DDPM UNet equivalent")
    attn_channels = [c for c, a in zip(boc, has_attn) if a] + [boc[-1]]
    if head_dim is not None and any(c != head_dim for c in attn_channels):
        raise CheckpointError(f"diffusers attention_head_dim={head_dim} means several heads; DDPM attention is "
                              "single-head")
    ch = boc[0]
    if any(c % ch for c in boc):
        raise CheckpointError(f"block_out_channels {boc} are not multiples of the first")
    size = full.get("sample_size")
    if not isinstance(size, int):
        raise CheckpointError(f"diffusers sample_size {size!r} is not a square image size")
    return {"ch": ch, "out_ch": full.get("out_channels", 3), "ch_mult": [c // ch for c in boc],
            "num_res_blocks": full.get("layers_per_block", 2),
            "attn_resolutions": [size // 2 ** i for i, a in enumerate(has_attn) if a],
            "dropout": full.get("dropout", 0.0), "in_channels": full.get("in_channels", 3), "image_size": size,
            "resamp_with_conv": True, "type": "simple"}


def export_diffusers(model: nn.Module, cfg: Mapping[str, Any] | None, out_dir: str | Path) -> Path:
    """Write `model` (a DDPM UNet) as a diffusers UNet2DModel directory: config.json + safetensors weights.

    `UNet2DModel.from_pretrained(out_dir)` then computes the same ε(x, t). `cfg` (full config or Model section)
    defaults to the config the model was built from.
    """
    from safetensors.torch import save_file

    if not isinstance(model, DDPMUNet):
        raise ValueError(f"export_diffusers handles the DDPM UNet only, not {type(model).__name__}")
    section = model_section(cfg) if cfg is not None else dict(model.config)
    config = diffusers_config(section)
    try:
        from importlib.metadata import version

        config["_diffusers_version"] = version("diffusers")
    except Exception:  # diffusers is optional for writing; the key is informational
        pass
    state = ddpm_to_diffusers_state_dict(model.state_dict(), len(section["ch_mult"]))
    state = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    save_file(state, str(out_dir / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})
    return out_dir


# ---------------------------------------------------------------------------------------------------------------
# Reading


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _torch_load(path: Path, trust_pickle: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" not in str(err).lower():
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({err})") from None
        if not trust_pickle:
            raise UntrustedCheckpointError(
                f"{path} holds pickled Python objects besides tensors and loading it could run arbitrary code; "
                "if you trust its source, load it with trust_pickle=True") from None
    except Exception as err:  # torch raises assorted errors (KeyError, RuntimeError, EOFError) on garbage
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: {err})") from None
    return torch.load(path, map_location="cpu", weights_only=False)


def _read_weights_file(path: Path, trust_pickle: bool) -> Any:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:
            raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from None
    return _torch_load(path, trust_pickle)


def _diffusers_dir(path: Path) -> Path | None:
    for candidate in (path, path / "unet"):
        if (candidate / "config.json").is_file() and any(
                (candidate / f"diffusion_pytorch_model.{ext}").is_file() for ext in ("safetensors", "bin")):
            return candidate
    return None


def _unwrap(obj: Any) -> tuple[Mapping[str, torch.Tensor], str]:
    """The weights inside a loaded object, and a description of the container they came from."""
    if _is_tensor_dict(obj):
        return obj, "state dict"
    if isinstance(obj, (list, tuple)) and obj and _is_tensor_dict(obj[0]):
        if len(obj) >= 5 and _is_tensor_dict(obj[4]):
            return obj[4], "DDIM training list, EMA shadow (item 4)"
        return obj[0], f"DDIM training list of {len(obj)} items without an EMA shadow, raw weights (item 0)"
    if isinstance(obj, Mapping):
        for key, desc in (("ema", "training dict, 'ema' weights"),
                          ("model", "training dict, 'model' weights (no 'ema' entry)"),
                          ("state_dict", "dict with a 'state_dict' entry")):
            if _is_tensor_dict(obj.get(key)):
                return obj[key], desc
        keys = ", ".join(map(str, list(obj)[:8]))
        raise CheckpointError(f"unrecognised checkpoint: a dict with keys [{keys}] and no state dict under "
                              "'ema', 'model' or 'state_dict'")
    raise CheckpointError(f"unrecognised checkpoint: a {type(obj).__name__}, not a state dict, a DDIM training "
                          "list or a training dict")


def _strip_wrapper_prefixes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = dict(state_dict)
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if state and all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def read_checkpoint(path: str | Path, trust_pickle: bool = False) -> tuple[dict[str, torch.Tensor], str]:
    """The model weights in a checkpoint file or diffusers directory, in the DDPM/iDDPM key layout, and a
    description of the format found. Raises CheckpointError (or its subclasses) with one clear line."""
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        found = _diffusers_dir(path)
        if found is None:
            raise CheckpointError(f"{path} is a directory but not a diffusers UNet2DModel folder (config.json + "
                                  "diffusion_pytorch_model.safetensors or .bin)")
        weights = found / "diffusion_pytorch_model.safetensors"
        if not weights.is_file():
            weights = found / "diffusion_pytorch_model.bin"
        ddpm_config_from_diffusers(json.loads((found / "config.json").read_text()))  # refuse what DDPM cannot do
        state, fmt = _unwrap(_read_weights_file(weights, trust_pickle))
        fmt = f"diffusers UNet2DModel directory ({weights.name})"
    else:
        state, fmt = _unwrap(_read_weights_file(path, trust_pickle))
    state = _strip_wrapper_prefixes(state)
    if _looks_like_diffusers(state):
        state = diffusers_to_ddpm_state_dict(state)
        if not path.is_dir():
            fmt += ", diffusers key names"
    return state, fmt


# ---------------------------------------------------------------------------------------------------------------
# Loading


def _describe(section: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in section.items() if k not in ("dropout", "type", "dims",
                                                                          "use_checkpoint"))


def _fit_error(path: Path, fmt: str, model: nn.Module, state: Mapping[str, torch.Tensor]) -> str | None:
    """None when `state` loads strictly into `model`; otherwise the message naming what differs."""
    expected = _layout(model)
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    mismatched = [k for k in expected if k in got and got[k] != expected[k]]
    if not (missing or unexpected or mismatched):
        return None

    def some(keys, show=lambda k: k):
        more = f", … (+{len(keys) - _SHOWN_KEYS})" if len(keys) > _SHOWN_KEYS else ""
        return ", ".join(show(k) for k in keys[:_SHOWN_KEYS]) + more

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({some(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({some(unexpected)})")
    if mismatched:
        parts.append(f"{len(mismatched)} with other shapes "
                     f"({some(mismatched, lambda k: f'{k}: checkpoint {list(got[k])} vs model {list(expected[k])}')})")
    exact, closest = identify_layout(got)
    if exact:
        names = " / ".join(exact)
        hint = (f"The checkpoint has the layout of the released {names} model "
                f"(Model: {_describe(KNOWN_MODEL_CONFIGS[exact[0]])}); use that config.")
    elif closest and closest[1] >= closest[2] // 2:
        hint = (f"It matches none of the released layouts exactly; closest is {closest[0]} "
                f"({closest[1]} of {closest[2]} keys agree).")
    else:
        hint = f"It matches none of the released layouts ({', '.join(KNOWN_MODEL_CONFIGS)})."
    return (f"checkpoint {path} ({fmt}) does not fit the {type(model).__name__} built from the config "
            f"({_describe(model.config)}). {hint} Differences: " + "; ".join(parts) + ".")


def _infer_section(path: Path, state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """A Model section for a checkpoint given without a config: from diffusers' config.json or a released layout."""
    found = _diffusers_dir(path) if path.is_dir() else None
    if found is not None:
        return ddpm_config_from_diffusers(json.loads((found / "config.json").read_text()))
    exact, _ = identify_layout({k: tuple(v.shape) for k, v in state.items()})
    if exact:
        return dict(KNOWN_MODEL_CONFIGS[exact[0]])
    raise CheckpointError(f"{path}: no config given and the checkpoint matches none of the released layouts "
                          f"({', '.join(KNOWN_MODEL_CONFIGS)}); pass the config it was trained with")


def load_model(cfg: Mapping[str, Any] | None, path: str | Path, trust_pickle: bool = False, *,
               device: str | torch.device | None = None, eps_only: bool = True) -> nn.Module:
    """Build the model that `cfg` describes, load the checkpoint at `path` strictly, return it in eval mode.

    `cfg` is the full config (with a 'Model' section) or the Model section alone; with None the architecture is
    taken from a diffusers config.json or recognised from the released layouts. The weights are the EMA ones
    wherever the file has both. Raises CheckpointError (a ValueError) when the file cannot be read or does not
    fit, naming the differing keys and the released layout the checkpoint looks like.
    """
    path = Path(path)
    state, fmt = read_checkpoint(path, trust_pickle)
    if cfg is None:
        cfg = _infer_section(path, state)
    model = build_model(cfg, eps_only=eps_only)
    message = _fit_error(path, fmt, model, state)
    if message:
        raise CheckpointError(message)
    model.load_state_dict(state, strict=True)
    model.source_format = fmt  # recorded for manifests: which weights were used
    if device is not None:
        model.to(device)
    return model.eval()
