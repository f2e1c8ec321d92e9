"""The DDPM UNet ↔ diffusers `UNet2DModel`: parameter names, configs, and writing a diffusers directory.

The key map is written out here rather than taken from diffusers' conversion script, whose renaming of
`nin_shortcut` is known to be wrong; tests check it both ways against diffusers' own UNet2DModel. diffusers
itself is needed only to run the result, never to convert.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .ddpm_unet import DDPMUNet
from .errors import CheckpointError
from .factory import DDPM_STRUCS, model_section

WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")

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
    """How many resolution levels a diffusers state dict has: the decoder renumbering needs it."""
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


def looks_like_diffusers(keys) -> bool:
    """Whether state-dict keys use diffusers' names (a UNet2DModel saved as a plain file)."""
    return any(k.startswith(("time_embedding.", "down_blocks.", "mid_block.")) for k in keys)


def find_diffusers_dir(path: Path) -> Path | None:
    """The UNet2DModel folder at `path` or, for a whole pipeline, at `path/unet`; None when neither is one."""
    for candidate in (path, path / "unet"):
        if (candidate / "config.json").is_file() and any((candidate / name).is_file() for name in WEIGHT_FILES):
            return candidate
    return None


def diffusers_weights_file(folder: Path) -> Path:
    """The weights of a UNet2DModel folder: safetensors when present, else the legacy .bin."""
    return next(folder / name for name in WEIGHT_FILES if (folder / name).is_file())


def read_diffusers_config(folder: Path) -> dict[str, Any]:
    """The DDPM Model section equivalent to `folder/config.json`; CheckpointError when it is unreadable or
    describes a network the DDPM UNet cannot reproduce."""
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: not a readable diffusers config ({type(err).__name__})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: not a diffusers config (a JSON {type(config).__name__}, not an object)")
    try:
        return ddpm_config_from_diffusers(config)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None


def is_diffusers_config(path: Path) -> bool:
    """Whether ``path`` is a config.json that diffusers wrote (it names ``_class_name`` or ``_diffusers_version``),
    not some other tool's file of that name."""
    try:
        config = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(config, dict) and ("_class_name" in config or "_diffusers_version" in config)


def diffusers_config(section: Mapping[str, Any]) -> dict[str, Any]:
    """The diffusers UNet2DModel config equivalent to a DDPM Model section (google/ddpm-cifar10-32 style)."""
    section = model_section(section)
    if section.get("struc") not in DDPM_STRUCS:
        raise ValueError(f"only the DDPM UNet (struc DDIM) converts to diffusers, not {section.get('struc')!r}")
    if not section.get("resamp_with_conv", True):
        raise ValueError("diffusers' UNet2DModel always resamples with convolutions; resamp_with_conv: false "
                         "has no equivalent")
    ch, mults, size = section["ch"], list(section["ch_mult"]), section["image_size"]
    if mults[0] != 1:  # diffusers' conv_in and time embedding are sized by block_out_channels[0], DDPM's by ch
        raise ValueError(f"diffusers' UNet2DModel has ch × ch_mult[0] channels after its first convolution where "
                         f"this network has ch; ch_mult {mults} (first entry not 1) has no equivalent")
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
    boc = _positive_ints(full, "block_out_channels")
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
    down, up = _names(full, "down_block_types"), _names(full, "up_block_types")
    has_attn = [t == "AttnDownBlock2D" for t in down]
    if (len(down) != len(boc) or set(down) - {"DownBlock2D", "AttnDownBlock2D"}
            or up != ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(has_attn)]):
        raise CheckpointError(f"diffusers block types {down} / {up} (block_out_channels {boc}) have no DDPM UNet "
                              "equivalent")
    attn_channels = [c for c, a in zip(boc, has_attn) if a] + [boc[-1]]
    if head_dim is not None and any(c != head_dim for c in attn_channels):
        raise CheckpointError(f"diffusers attention_head_dim={head_dim} means several heads; DDPM attention is "
                              "single-head")
    ch = boc[0]
    if any(c % ch for c in boc):
        raise CheckpointError(f"block_out_channels {boc} are not multiples of the first")
    size = full.get("sample_size")
    if isinstance(size, (list, tuple)) and len(size) == 2 and size[0] == size[1]:
        size = size[0]  # diffusers takes an int or (height, width)
    if not _positive_int(size):
        raise CheckpointError(f"diffusers sample_size {size!r} is not a square image size")
    counts = {key: full.get(key, default) for key, default in
              (("in_channels", 3), ("out_channels", 3), ("layers_per_block", 2))}
    for key, value in counts.items():
        if not _positive_int(value):
            raise CheckpointError(f"diffusers config has {key}={value!r}; expected a positive integer")
    dropout = full.get("dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise CheckpointError(f"diffusers config has dropout={dropout!r}; expected a number in [0, 1)")
    return {"ch": ch, "out_ch": counts["out_channels"], "ch_mult": [c // ch for c in boc],
            "num_res_blocks": counts["layers_per_block"],
            "attn_resolutions": [size // 2 ** i for i, a in enumerate(has_attn) if a],
            "dropout": dropout, "in_channels": counts["in_channels"], "image_size": size,
            "resamp_with_conv": True, "type": "simple"}


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _positive_ints(config: Mapping[str, Any], key: str) -> list[int]:
    value = config.get(key)
    if not (isinstance(value, (list, tuple)) and value and all(_positive_int(c) for c in value)):
        raise CheckpointError(f"diffusers config has {key}={value!r}; expected a non-empty list of positive "
                              "integers")
    return list(value)


def _names(config: Mapping[str, Any], key: str) -> list[str]:
    value = config.get(key)
    if not (isinstance(value, (list, tuple)) and value and all(isinstance(c, str) for c in value)):
        raise CheckpointError(f"diffusers config has {key}={value!r}; expected a list of block type names")
    return list(value)


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
