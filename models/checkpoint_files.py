"""From a weights file (or diffusers directory) to a UNet in eval mode, with errors that say what went wrong.

Formats recognised (detected from the content, not the file name):
- a plain state dict (.ckpt/.pth/.pt/.bin or .safetensors) — the pytorch_diffusion and PNDM releases;
- DDIM's training list `[state_dict, optimizer, epoch, step, ema_shadow]` (its CelebA file) — the EMA shadow
  is used when present;
- this project's training dict `{'model': sd, 'ema': sd, ...}` — 'ema' preferred;
- score-SDE's `checkpoint_N.pth` `{'model': sd, 'ema': {'decay', 'num_updates', 'shadow_params'}, 'optimizer',
  'step'}` — the EMA shadow is a list of tensors in the order of the network's trainable parameters, so it is
  named only once the model is built (`Checkpoint.ema_shadow`, resolved in `load_model`); its unused `sigmas`
  buffer is dropped;
- a diffusers `UNet2DModel` directory (config.json + diffusion_pytorch_model.safetensors / .bin), or a
  pipeline directory holding one under `unet/`; diffusers-named keys in a plain file are translated too.
Prefixes left by DataParallel/DDP (`module.`) and torch.compile (`_orig_mod.`) are stripped.
The layouts known are those of configs/*.yml: the DDPM UNet, the iDDPM UNet and score-SDE's networks (PF).

Files are read with `torch.load(weights_only=True)` (or safetensors): nothing is unpickled that could run code.
A file that needs full unpickling is refused unless the caller passes `trust_pickle=True`. Whatever a file
holds — garbage, text, a truncated download — the caller gets a one-line CheckpointError naming it, never the
unpickler's own exception.

When a checkpoint does not fit the configured model, the message lists the differing keys and names the known
layout (`configs/*.yml`) that the checkpoint has, which is usually the config that should have been used.
"""
from __future__ import annotations

import functools
import pickle
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import numpy as np
import torch
from torch import nn

from samplers import NoiseSchedule

from .diffusers_format import (
    diffusers_to_ddpm_state_dict,
    diffusers_weights_file,
    find_diffusers_dir,
    is_diffusers_config,
    looks_like_diffusers,
    read_diffusers_config,
)
from .errors import CheckpointError, CheckpointNotFoundError, UntrustedCheckpointError
from .factory import build_model, known_model_configs, model_section

__all__ = ["Checkpoint", "CheckpointError", "CheckpointNotFoundError", "UntrustedCheckpointError",
           "identify_layout", "load_model", "read_checkpoint"]

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_SHOWN_KEYS = 3
_REASON_CHARS = 200


# ---------------------------------------------------------------------------------------------------------------
# Reading


def _reason(err: BaseException) -> str:
    """The first line of an exception's message, shortened: torch's own messages run to several paragraphs,
    and ours must stay on one line."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    return text if len(text) <= _REASON_CHARS else text[:_REASON_CHARS - 1] + "…"


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _unreadable(path: Path, err: BaseException) -> CheckpointError:
    # torch raises assorted errors (KeyError, RuntimeError, EOFError, IndexError) on garbage
    reason = _reason(err)
    return CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}"
                           + (f": {reason})" if reason else ")"))


def _load_file(path: Path, weights_only: bool) -> Any:
    # through an open file: torch.load given a path ending in .safetensors reads it as safetensors
    with open(path, "rb") as fh:
        return torch.load(fh, map_location="cpu", weights_only=weights_only)


def _torch_load(path: Path, trust_pickle: bool) -> Any:
    try:
        return _load_file(path, weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" not in str(err).lower():
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_reason(err)})") from None
        if not _looks_pickled(path):  # text, random bytes: no point in suggesting trust
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (neither a zip archive nor a "
                                  "pickle)") from None
        if not trust_pickle:
            raise UntrustedCheckpointError(
                f"{path} holds pickled Python objects besides tensors and loading it could run arbitrary code; "
                "if you trust its source, load it with trust_pickle=True (main.py: --trust-checkpoint)") from None
    except Exception as err:
        raise _unreadable(path, err) from None
    try:  # the weights-only reader also refuses plain garbage, which the full unpickler then chokes on
        return _load_file(path, weights_only=False)
    except Exception as err:
        raise _unreadable(path, err) from None


def _looks_pickled(path: Path) -> bool:
    """Whether the file could be a checkpoint at all: torch's zip format, or a pickle (protocol 2+ starts with 0x80)."""
    import zipfile

    try:
        with open(path, "rb") as fh:
            first = fh.read(1)
    except OSError:
        return False
    return first == b"\x80" or zipfile.is_zipfile(path)


def _looks_safetensors(path: Path) -> bool:
    """Whether the file has safetensors' layout: an 8-byte little-endian header length, then a JSON object."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
        size = path.stat().st_size
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= size - 8


def _read_weights_file(path: Path, trust_pickle: bool) -> Any:
    # by content, not by name: a safetensors file saved as .ckpt is one, a torch file named .safetensors is not
    if _looks_safetensors(path) or (path.suffix == ".safetensors" and not _looks_pickled(path)):
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:
            raise CheckpointError(f"{path}: not a readable safetensors file ({_reason(err)})") from None
    return _torch_load(path, trust_pickle)


class Checkpoint(NamedTuple):
    """What a checkpoint file holds: the weights by key, a description of the format, and — for score-SDE's
    training checkpoint only — the EMA shadow as the unnamed list it stores (`state` then holds the raw
    weights, which supply the names, the buffers and any parameter that is not trained)."""

    state: dict[str, torch.Tensor]
    format: str
    ema_shadow: list[torch.Tensor] | None = None
    config: Mapping[str, Any] | None = None  # the config a training dict records (this project's train job)


def _score_sde_shadow(obj: Any) -> list[torch.Tensor] | None:
    """The EMA `shadow_params` list of a score-SDE training checkpoint, or None when `obj` is not one."""
    if not (isinstance(obj, Mapping) and _is_tensor_dict(obj.get("model")) and isinstance(obj.get("ema"), Mapping)):
        return None
    shadow = obj["ema"].get("shadow_params")
    if isinstance(shadow, (list, tuple)) and shadow and all(isinstance(t, torch.Tensor) for t in shadow):
        return list(shadow)
    return None


def _unwrap(obj: Any, source: Path, ema: bool = True) -> Checkpoint:
    """The weights inside a loaded object, and a description of the container they came from: the EMA weights
    where the container has both, or with ``ema=False`` (a config's ``Model.ema: false``, as in DDIM) the raw ones."""
    if _is_tensor_dict(obj):
        return Checkpoint(obj, "state dict")
    if isinstance(obj, (list, tuple)) and obj and _is_tensor_dict(obj[0]):
        if len(obj) >= 5 and _is_tensor_dict(obj[4]):
            if ema:
                return Checkpoint(obj[4], "DDIM training list, EMA shadow (item 4)")
            return Checkpoint(obj[0], "DDIM training list, raw weights (item 0; Model.ema: false)")
        return Checkpoint(obj[0], f"DDIM training list of {len(obj)} items without an EMA shadow, raw weights "
                                  "(item 0)")
    shadow = _score_sde_shadow(obj)
    if shadow is not None:
        if not ema:
            return Checkpoint(obj["model"], "score-SDE training checkpoint, raw 'model' weights (Model.ema: false)")
        return Checkpoint(obj["model"], f"score-SDE training checkpoint, EMA shadow_params ({len(shadow)} "
                                        "tensors)", shadow)
    if isinstance(obj, Mapping):
        choices = (("ema", "training dict, 'ema' weights"),
                   ("model", "training dict, 'model' weights (no 'ema' entry)"),
                   ("state_dict", "dict with a 'state_dict' entry"))
        if not ema:
            choices = (("model", "training dict, raw 'model' weights (Model.ema: false)"),) + choices[2:]
        for key, desc in choices:
            if _is_tensor_dict(obj.get(key)):
                return Checkpoint(obj[key], desc)
        if not ema and _is_tensor_dict(obj.get("ema")):
            raise CheckpointError(f"{source}: the checkpoint holds only EMA weights ('ema'), and the config's "
                                  "Model.ema: false asks for the raw ones")
        keys = ", ".join(map(str, list(obj)[:8]))
        raise CheckpointError(f"{source}: unrecognised checkpoint: a dict with keys [{keys}] and no state dict "
                              "under 'ema', 'model' or 'state_dict'")
    raise CheckpointError(f"{source}: unrecognised checkpoint: a {type(obj).__name__}, not a state dict, a DDIM "
                          "training list or a training dict")


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


def _drop_unused_sigmas(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """score-SDE's networks register their noise levels as a `sigmas` buffer; the release's copies (and ours)
    do not use it, so it is dropped from a score-SDE layout (keys `all_modules.N.…`)."""
    if "sigmas" in state and any(k.startswith("all_modules.") for k in state):
        return {k: v for k, v in state.items() if k != "sigmas"}
    return state


def read_checkpoint(path: str | Path, trust_pickle: bool = False, *, ema: bool = True) -> Checkpoint:
    """The model weights in a checkpoint file or diffusers directory, in this project's key layout, and a
    description of the format found (`Checkpoint(state, format, ema_shadow, config)`; `ema_shadow` is score-SDE's
    unnamed EMA list, see `ema_state`). Where a training checkpoint has both, the EMA weights, or the raw ones
    with ``ema=False``. Raises CheckpointError (or its subclasses) with one clear line."""
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        found = find_diffusers_dir(path)
        if found is None:
            raise CheckpointError(f"{path} is a directory but not a diffusers UNet2DModel folder (config.json + "
                                  "diffusion_pytorch_model.safetensors or .bin)")
        weights = diffusers_weights_file(found)
        read_diffusers_config(found)  # refuse what DDPM cannot do
        state = _unwrap(_read_weights_file(weights, trust_pickle), weights).state
        fmt, shadow, recorded = f"diffusers UNet2DModel directory ({weights.name})", None, None
    else:
        obj = _read_weights_file(path, trust_pickle)
        state, fmt, shadow, _ = _unwrap(obj, path, ema)
        recorded = obj.get("config") if isinstance(obj, Mapping) else None
    state = _drop_unused_sigmas(_strip_wrapper_prefixes(state))
    if looks_like_diffusers(state):
        state = diffusers_to_ddpm_state_dict(state)
        if not path.is_dir():
            fmt += ", diffusers key names"
            if is_diffusers_config(path.parent / "config.json"):
                # the weights file of a diffusers folder: its config.json decides ε through settings the weights
                # do not show (time embedding flip and shift, downsampling padding, norm eps)
                read_diffusers_config(path.parent)
                fmt += f", checked against {path.parent / 'config.json'}"
    return Checkpoint(state, fmt, shadow, recorded if isinstance(recorded, Mapping) else None)


# NoiseSchedule's fields by the config keys that set them, for the message
_SCHEDULE_KEYS = {"type": "kind", "beta_start": "beta_start", "beta_end": "beta_end", "diffusion_step": "num_timesteps"}


def _schedule_of(section: Any) -> NoiseSchedule | None:
    """The schedule a config's Schedule section describes, with the configs' defaults; None if it is not one."""
    if not isinstance(section, Mapping):
        return None
    try:
        return NoiseSchedule.from_config(section)
    except (TypeError, ValueError):
        return None


def schedule_mismatch(path: Path, recorded: Mapping[str, Any] | None, cfg: Mapping[str, Any] | None) -> str | None:
    """A one-line error when the checkpoint records the noise schedule it was trained under (this project's
    training dicts do) and ``cfg``'s Schedule section gives another ā table: a network sampled under another ā
    than it was trained for gives plausible-looking, wrong samples. None when the tables agree (the same schedule
    spelt otherwise, or a cosine schedule's unused betas) or either is not known."""
    theirs = _schedule_of((recorded or {}).get("Schedule"))
    mine = _schedule_of((cfg or {}).get("Schedule"))
    if theirs is None or mine is None or np.array_equal(theirs.alphas_cumprod, mine.alphas_cumprod):
        return None
    diff = ", ".join(f"{key} {getattr(theirs, field)} vs {getattr(mine, field)}"
                     for key, field in _SCHEDULE_KEYS.items() if getattr(theirs, field) != getattr(mine, field))
    return (f"checkpoint {path} was trained under another noise schedule than the config's ({diff}; checkpoint "
            f"vs config): set the config's Schedule section to the checkpoint's")


def ema_state(path: Path, checkpoint: Checkpoint, model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict to load into `model`: the checkpoint's weights, with score-SDE's EMA shadow list (when
    there is one) put in place of the trained parameters.

    score-SDE keeps the shadow of `p for p in model.parameters() if p.requires_grad`, in that order, so the
    list is named by the built model's trainable parameters; buffers and parameters that are not trained (the
    Fourier projection of NCSN++) keep their values from 'model'. A list of another length, or a tensor of
    another shape than the parameter it lands on, is a CheckpointError.
    """
    state = dict(checkpoint.state)
    shadow = checkpoint.ema_shadow
    if shadow is None:
        return state
    names = [name for name, param in model.named_parameters() if param.requires_grad]
    if len(names) != len(shadow):
        raise CheckpointError(f"checkpoint {path} ({checkpoint.format}): the EMA holds {len(shadow)} tensors but "
                              f"the {type(model).__name__} has {len(names)} trainable parameters")
    wrong = [name for name, tensor in zip(names, shadow) if tuple(tensor.shape) != tuple(state[name].shape)]
    if wrong:
        raise CheckpointError(f"checkpoint {path} ({checkpoint.format}): the EMA list is not in the order of the "
                              f"{type(model).__name__}'s parameters ({len(wrong)} shapes differ, first "
                              f"{wrong[0]}: EMA {list(shadow[names.index(wrong[0])].shape)} vs "
                              f"{list(state[wrong[0]].shape)})")
    state.update(zip(names, shadow))
    return state


# ---------------------------------------------------------------------------------------------------------------
# Diagnostics: which known layout a checkpoint has


def _shapes(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


@functools.lru_cache(maxsize=None)
def _known_layouts() -> dict[str, dict[str, tuple[int, ...]]]:
    """Key → shape of every known layout, built on the meta device (no memory is allocated)."""
    with torch.device("meta"):
        return {name: _shapes(build_model(cfg).state_dict()) for name, cfg in known_model_configs().items()}


def identify_layout(shapes: Mapping[str, tuple[int, ...]]) -> tuple[list[str], tuple[str, int, int] | None]:
    """Which known layouts these key shapes are exactly; and the closest one (name, agreeing, total)."""
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


def _describe(section: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in section.items() if k not in ("dropout", "type", "dims",
                                                                          "use_checkpoint"))


def _some(keys: list[str], show=lambda k: k) -> str:
    more = f", … (+{len(keys) - _SHOWN_KEYS})" if len(keys) > _SHOWN_KEYS else ""
    return ", ".join(show(k) for k in keys[:_SHOWN_KEYS]) + more


def _differences(expected: Mapping[str, tuple], got: Mapping[str, tuple]) -> list[str]:
    """'N missing (...)', 'N unexpected (...)', 'N with other shapes (...)': whichever apply."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    mismatched = [k for k in expected if k in got and got[k] != expected[k]]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({_some(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({_some(unexpected)})")
    if mismatched:
        parts.append(f"{len(mismatched)} with other shapes "
                     f"({_some(mismatched, lambda k: f'{k}: checkpoint {list(got[k])} vs model {list(expected[k])}')})")
    return parts


# The network family that a state dict's key names betray, whatever its sizes: (first-key prefixes, family).
_FAMILIES = (
    (("all_modules.",), "score-SDE's networks (struc PF or PF_deep)"),
    (("input_blocks.", "time_embed."), "the improved-diffusion UNet (struc iDDPM)"),
    (("temb.dense.", "down.0.block."), "the DDPM UNet (struc DDIM)"),
)


def _family(keys) -> str | None:
    """Which network family the key names belong to, for a checkpoint that matches no known layout exactly."""
    for prefixes, family in _FAMILIES:
        if any(k.startswith(prefixes) for k in keys):
            return family
    return None


def _layout_hint(got: Mapping[str, tuple], expected: Mapping[str, tuple]) -> str:
    """Which known layout the checkpoint has, or the closest one: usually the config that should be used.
    ``expected``: the configured model's layout, named instead when it is closer than every released one."""
    known = known_model_configs()
    exact, closest = identify_layout(got)
    if exact:
        return (f"The checkpoint has the layout of the released {' / '.join(exact)} model "
                f"(Model: {_describe(known[exact[0]])}); use that config.")
    family = _family(got)
    keys = f" Its keys are those of {family}." if family else ""
    agree = sum(1 for k, shape in got.items() if expected.get(k) == shape)
    total = max(len(got), len(expected))
    if closest is None or agree * closest[2] > closest[1] * total:
        return (f"It matches none of the released layouts; closest is the configured model itself ({agree} of "
                f"{total} keys agree).{keys}")
    if closest and closest[1] >= closest[2] // 2:
        return (f"It matches none of the released layouts exactly; closest is {closest[0]} "
                f"({closest[1]} of {closest[2]} keys agree).{keys}")
    return f"It matches none of the released layouts ({', '.join(known)}).{keys}"


def _fit_error(path: Path, fmt: str, model: nn.Module, state: Mapping[str, torch.Tensor]) -> str | None:
    """None when `state` loads strictly into `model`; otherwise the message naming what differs."""
    got, expected = _shapes(state), _shapes(model.state_dict())
    parts = _differences(expected, got)
    if not parts:
        return None
    return (f"checkpoint {path} ({fmt}) does not fit the {type(model).__name__} built from the config "
            f"({_describe(model.config)}). {_layout_hint(got, expected)} Differences: " + "; ".join(parts) + ".")


def _infer_section(path: Path, checkpoint: Checkpoint) -> dict[str, Any]:
    """A Model section for a checkpoint given without a config: from diffusers' config.json or a known layout."""
    found = find_diffusers_dir(path) if path.is_dir() else None
    if found is not None:
        return read_diffusers_config(found)
    if path.is_file() and checkpoint.format.endswith("config.json"):  # a diffusers folder's weights file
        return read_diffusers_config(path.parent)
    exact, _ = identify_layout(_shapes(checkpoint.state))
    if exact:
        return dict(known_model_configs()[exact[0]])
    raise CheckpointError(f"{path}: no config given and the checkpoint matches none of the released layouts "
                          f"({', '.join(known_model_configs())}); pass the config it was trained with")


# ---------------------------------------------------------------------------------------------------------------
# Loading


def load_model(cfg: Mapping[str, Any] | None, path: str | Path, trust_pickle: bool = False, *,
               device: str | torch.device | None = None, eps_only: bool = True) -> nn.Module:
    """Build the model that `cfg` describes, load the checkpoint at `path` strictly, return it in eval mode.

    `cfg` is the full config (with a 'Model' section) or the Model section alone; with None the architecture is
    taken from a diffusers config.json or recognised from the known layouts. The weights are the EMA ones
    wherever the file has both, unless the Model section says ``ema: false`` (DDIM's switch). Raises
    CheckpointError (a ValueError) when the file cannot be read or does not fit, naming the differing keys and
    the known layout the checkpoint looks like.
    """
    path = Path(path)
    ema = True if cfg is None else model_section(cfg).get("ema", True)
    if not isinstance(ema, bool):
        raise CheckpointError(f"Model.ema must be true or false, got {ema!r}")
    checkpoint = read_checkpoint(path, trust_pickle, ema=ema)
    if cfg is None:
        cfg = _infer_section(path, checkpoint)
    model = build_model(cfg, eps_only=eps_only)
    message = (schedule_mismatch(path, checkpoint.config, cfg) or
               _fit_error(path, checkpoint.format, model, checkpoint.state))
    if message:
        raise CheckpointError(message)
    model.load_state_dict(ema_state(path, checkpoint, model), strict=True)
    if device is not None:
        model.to(device)
    return model.eval()
