"""YAML configs: load, validate against a schema, override from the command line, save.

Section names follow the released PNDM configs (Schedule, Dataset, Model, Train, Optim, Sample) plus FID.
Every key is declared here with its type, so a typo is an error that names the key and the file instead of a
silently ignored setting. Released configs load unchanged (keys the released code reads but we do not need,
such as ``Sample.mpi4py``, are accepted).
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Iterable, Optional

import yaml

from .errors import ConfigError
from .files import write_text_atomic


# type names: int, int>0, float, bool, str, path (a str resolved against the config's folder), list[int],
# list[int>0], csv (a comma-separated list as a string; a number or a YAML list of them is accepted too).
# Network sizes are int>0: a zero width would build a network of empty tensors that fails later with torch's
# warning and an unrelated message.
SCHEMA: dict[str, dict[str, str]] = {
    "Schedule": {
        "type": "str", "beta_start": "float", "beta_end": "float", "diffusion_step": "int",
        # improved-diffusion options carried by the released iDDPM config
        "learn_sigma": "bool", "sigma_small": "bool", "noise_schedule": "str", "use_kl": "bool",
        "predict_xstart": "bool", "rescale_timesteps": "bool", "rescale_learned_sigmas": "bool",
        "timestep_respacing": "str",
    },
    "Dataset": {
        "dataset": "str", "image_size": "int", "channels": "int", "batch_size": "int", "logit_transform": "bool",
        "uniform_dequantization": "bool", "gaussian_dequantization": "bool", "random_flip": "bool",
        "rescaled": "bool", "num_workers": "int", "root": "path", "split": "str", "download": "bool", "category": "str",
    },
    "Model": {
        "struc": "str", "type": "str", "image_size": "int>0", "in_channels": "int>0", "out_ch": "int>0", "ch": "int>0",
        "ch_mult": "list[int>0]", "num_res_blocks": "int>0", "attn_resolutions": "list[int]", "dropout": "float",
        "var_type": "str", "resamp_with_conv": "bool", "ema_rate": "float", "ema": "bool",
        # iDDPM
        "model_channels": "int>0", "out_channels": "int>0", "attention_resolutions": "list[int]",
        "channel_mult": "list[int>0]", "dims": "int", "conv_resample": "bool", "use_scale_shift_norm": "bool",
        "use_checkpoint": "bool", "num_heads": "int>0", "num_heads_upsample": "int", "rescale_timesteps": "bool",
        # score-SDE's DDPM (struc PF) and NCSN++ (struc PF_deep)
        "nf": "int>0", "num_channels": "int>0", "nonlinearity": "str", "conditional": "bool", "centered": "bool",
        "skip_rescale": "bool", "resblock_type": "str", "progressive": "str", "progressive_input": "str",
        "embedding_type": "str", "init_scale": "float", "combine_method": "str", "fir": "bool",
        "fir_kernel": "list[int]", "continuous": "bool", "fourier_scale": "float", "scale_by_sigma": "bool",
        "normalization": "str", "sigma_min": "float", "sigma_max": "float", "num_scales": "int",
        "beta_min": "float", "beta_max": "float",
        # where the weights are
        "ckpt": "path",
    },
    "Train": {
        "epoch": "int", "loss_type": "str", "ema_rate": "float", "ema": "bool", "batch_size": "int",
        "max_steps": "int", "snapshot_freq": "int", "sample_freq": "int", "log_freq": "int", "seed": "int",
    },
    "Optim": {
        "weight_decay": "float", "optimizer": "str", "lr": "float", "beta1": "float", "amsgrad": "bool",
        "eps": "float", "grad_clip": "float", "warmup": "int",
    },
    "Sample": {
        "mpi4py": "bool", "batch_size": "int", "last_only": "bool", "total_num": "int", "method": "str",
        "steps": "int", "convention": "str", "seed": "int", "precision": "str",
        "compile": "bool", "timesteps_file": "path?", "solver_file": "path?", "eta": "float?",
    },
    "FID": {
        "stats": "path", "extractor": "str", "extractor_weights": "path", "num_samples": "int",
        "batch_size": "int", "methods": "csv", "steps": "csv", "seeds": "csv",
        "reference_samples": "int", "noise_floor": "bool",
    },
}


def _coerce(value: Any, kind: str, where: str, base: Path) -> Any:
    def bad():
        wanted = {"int>0": "a positive int", "list[int>0]": "a list of positive ints",
                  "csv": "a comma-separated list (or a number, or a list)"}.get(kind, kind)
        return ConfigError(f"{where}: expected {wanted}, got {value!r}")

    if kind.endswith("?"):  # optional: null switches it off (e.g. --set Sample.timesteps_file=null)
        return None if value is None else _coerce(value, kind[:-1], where, base)

    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise bad()
    if kind in ("int", "int>0"):
        if isinstance(value, bool) or not isinstance(value, int) or (kind == "int>0" and value <= 0):
            raise bad()
        return value
    if kind == "float":
        if isinstance(value, bool):
            raise bad()
        try:
            return float(value)  # YAML 1.1 reads '1e-4' as a string
        except (TypeError, ValueError):
            raise bad() from None
    if kind == "csv":  # a comma-separated list, also written as one number or a YAML list (steps: 5, seeds: [0, 1])
        if isinstance(value, str):
            return value
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(v, (int, str)) and not isinstance(v, bool) for v in items):
            raise bad()
        return ",".join(str(v) for v in items)
    if kind in ("str", "path"):
        if not isinstance(value, str):
            raise bad()
        if kind == "path":
            return str((base / os.path.expanduser(value)).resolve()) if value else value
        return value
    if kind in ("list[int]", "list[int>0]"):
        item = kind[5:-1]
        items = value if isinstance(value, list) else [value]
        if not isinstance(value, (list, int)) or isinstance(value, bool):
            raise bad()
        try:
            return [_coerce(v, item, where, base) for v in items]
        except ConfigError:
            raise bad() from None
    raise AssertionError(kind)


def validate(cfg: Any, source: str, base: Optional[Path] = None) -> dict:
    """Check sections, keys and types; return a normalised copy (paths resolved against ``base``)."""
    base = base or Path.cwd()
    if not isinstance(cfg, dict):
        raise ConfigError(f"{source}: a config is a mapping of sections, got {type(cfg).__name__}")
    out = {}
    for section, body in cfg.items():
        if section not in SCHEMA:
            raise ConfigError(f"{source}: unknown section {section!r}; expected one of {', '.join(SCHEMA)}")
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise ConfigError(f"{source}: section {section} must be a mapping")
        out[section] = {}
        for key, value in body.items():
            if key not in SCHEMA[section]:
                raise ConfigError(f"{source}: unknown key {section}.{key}; known keys: "
                                  f"{', '.join(sorted(SCHEMA[section]))}")
            out[section][key] = _coerce(value, SCHEMA[section][key], f"{source}: {section}.{key}", base)
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping: PyYAML keeps the last silently, so a
    second ``steps:`` (or a second ``Sample:`` section, dropping the whole first one) would be a setting nobody
    sees."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key != "<<" and isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key if isinstance(key, (str, int, float, bool)) else id(key_node))
        return super().construct_mapping(node, deep)


def _yaml_problem(e: yaml.YAMLError) -> str:
    """PyYAML's error as one line that keeps what is wrong and where (its first line alone is only the context)."""
    if isinstance(e, yaml.MarkedYAMLError) and e.problem:
        mark = e.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        return f"{e.context + ': ' if e.context else ''}{e.problem}{where}"
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def load_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> dict:
    """Read a YAML config, apply ``Section.key=value`` overrides, validate. Paths inside the file are relative
    to the file's folder; paths given as overrides are relative to the working directory."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: cannot read YAML: {_yaml_problem(e)}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read YAML: {str(e).splitlines()[0]}") from None
    cfg = validate(raw if raw is not None else {}, str(path), path.resolve().parent)
    return apply_overrides(cfg, overrides, source=str(path))


def apply_overrides(cfg: dict, overrides: Iterable[str], source: str = "--set") -> dict:
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"--set {item!r}: expected Section.key=value")
        dotted, text = item.split("=", 1)
        section, key = dotted.split(".", 1)
        try:
            value = yaml.load(text, Loader=_UniqueKeyLoader) if text.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({_yaml_problem(e)})") from None
        one = validate({section: {key: value}}, f"--set {item}", Path.cwd())
        cfg.setdefault(section, {})[key] = one[section][key]
    return cfg


def save_config(cfg: dict, path: str | os.PathLike) -> None:
    """Write the effective config atomically (temporary name, then rename)."""
    write_text_atomic(Path(path), yaml.safe_dump(cfg, sort_keys=False))


def get(cfg: dict, section: str, key: str, default: Any = None, required: bool = False) -> Any:
    """cfg[section][key] with a default; ``required`` turns a missing key into a ConfigError naming it."""
    value = cfg.get(section, {}).get(key, default)
    if required and value is None:
        raise ConfigError(f"config needs {section}.{key}")
    return value
