"""From a config to a freshly initialised UNet, and the model layouts of the configs that ship with the repo.

The known layouts are read from `configs/*.yml` rather than written out a second time here, so a config added
or changed there is what the checkpoint diagnostics compare against and what `load_model(None, ...)` can build.
Each layout is named by its file stem (`cifar10`, `lsun_church`, ...) and holds only the keys that decide the
architecture, in the order the network class takes them, so it reads the same in error messages whatever order
or extra keys (`ckpt`, `var_type`, `ema`, ...) the YAML file has.
"""
from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any, Mapping

import yaml
from torch import nn

from .ddpm_unet import DDPM_CONFIG_KEYS, DDPMUNet
from .iddpm_unet import IDDPM_CONFIG_KEYS, IDDPMUNet
from .scoresde_ddpm import PF_CONFIG_KEYS, PF_REQUIRED_KEYS, ScoreSDEDDPM

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

DDPM_STRUCS = {None, "DDIM", "DDPM", "ddim", "ddpm"}
IDDPM_STRUCS = {"iDDPM", "iddpm", "IDDPM"}
PF_STRUCS = {"PF"}  # score-SDE's DDPM network
PF_DEEP_STRUCS = {"PF_deep"}  # score-SDE's NCSN++

# The Model-section keys of NCSN++ (`struc: PF_deep`), in the order of the released config/pf_deep_cifar10.yml.
# Listed here rather than read from models.ncsnpp so that the layouts can be read without importing it.
PF_DEEP_CONFIG_KEYS = PF_CONFIG_KEYS[:-1] + (
    "skip_rescale", "resblock_type", "progressive", "progressive_input", "embedding_type", "init_scale",
    "combine_method", "fir", "fir_kernel", "continuous", "centered", "fourier_scale", "scale_by_sigma",
)

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


def timestep_scale(cfg: Mapping[str, Any]) -> float:
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

    `struc` absent or 'DDIM' → `DDPMUNet`; 'iDDPM' → `IDDPMUNet`; 'PF' → `ScoreSDEDDPM` (score-SDE's DDPM);
    'PF_deep' → `NCSNpp` (score-SDE's NCSN++). For a learned-σ iDDPM model `eps_only` (default) makes the
    forward return ε only, which is what samplers call; training wants `eps_only=False`.
    """
    section = model_section(cfg)
    struc = section.get("struc")
    if struc in IDDPM_STRUCS:
        return IDDPMUNet.from_config(section, eps_only=eps_only, timestep_scale=timestep_scale(cfg))
    if struc in DDPM_STRUCS:
        return DDPMUNet.from_config(section)
    if struc in PF_STRUCS:
        return ScoreSDEDDPM.from_config(section)
    if struc in PF_DEEP_STRUCS:
        from .ncsnpp import NCSNpp  # the largest network: imported only when a config asks for it

        return NCSNpp.from_config(section)
    raise ValueError(f"unsupported Model.struc {struc!r}; this project has 'DDIM' (DDPM UNet), 'iDDPM', 'PF' "
                     "(score-SDE DDPM) and 'PF_deep' (NCSN++)")


def can_build(section: Mapping[str, Any]) -> bool:
    """Whether `build_model` knows the network family that this Model section names.

    A score-SDE section (PF, PF_deep) counts only when it holds every key its network has no default for
    (PF_deep: every architecture key, as the released config does): those networks have switches such as
    `centered` whose wrong default would not show in the key shapes, so a partial section is no layout to
    compare checkpoints against.
    """
    struc = section.get("struc")
    if struc in PF_STRUCS:
        return all(k in section for k in PF_REQUIRED_KEYS)
    if struc in PF_DEEP_STRUCS:
        return all(k in section for k in PF_DEEP_CONFIG_KEYS)
    return struc in DDPM_STRUCS or struc in IDDPM_STRUCS


def architecture(section: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of a Model section that decide the network, in the network class's order.

    `struc` is kept only where it selects a class other than the default DDPM UNet, so a DDPM layout reads
    `ch=128, out_ch=3, ...` and an iDDPM one `struc=iDDPM, in_channels=3, ...`, a score-SDE one
    `struc=PF, image_size=32, num_channels=3, nf=128, ...`.
    """
    section = model_section(section)
    struc = section.get("struc")
    if struc in IDDPM_STRUCS:
        keys = ("struc",) + IDDPM_CONFIG_KEYS + ("image_size",)
    elif struc in PF_STRUCS:
        keys = ("struc",) + PF_CONFIG_KEYS
    elif struc in PF_DEEP_STRUCS:
        keys = ("struc",) + PF_DEEP_CONFIG_KEYS
    else:
        keys = DDPM_CONFIG_KEYS + ("type",)
    return {k: section[k] for k in keys if k in section}


def read_layouts(config_dir: Path) -> dict[str, dict[str, Any]]:
    """File stem → architecture of every `*.yml` in `config_dir` whose Model section `build_model` can build.

    Files without a Model section, or naming a network family this project does not build (or a score-SDE one
    only in part, see `can_build`), are skipped rather than failing: they are not layouts a checkpoint can be
    compared against.
    """
    layouts = {}
    for path in sorted(Path(config_dir).glob("*.yml")):
        cfg = yaml.safe_load(path.read_text())
        section = cfg.get("Model") if isinstance(cfg, Mapping) else None
        if isinstance(section, Mapping) and can_build(section):
            layouts[path.stem] = architecture(section)
    return layouts


@functools.lru_cache(maxsize=None)
def _cached_layouts() -> dict[str, dict[str, Any]]:
    return read_layouts(CONFIG_DIR)


def known_model_configs() -> dict[str, dict[str, Any]]:
    """Name → Model section of every config in the repo's `configs/` (read once, returned as a fresh copy so a
    caller cannot alter what the diagnostics compare against)."""
    return copy.deepcopy(_cached_layouts())


def __getattr__(name: str) -> Any:
    """`KNOWN_MODEL_CONFIGS` as a module attribute, read on first use rather than at import."""
    if name == "KNOWN_MODEL_CONFIGS":
        return known_model_configs()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
