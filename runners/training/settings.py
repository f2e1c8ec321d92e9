"""What training reads from the config, checked once: ``Settings`` (Train/Optim/Dataset values with defaults
filled in), the model's shape, the config recorded in the workdir (``ConfigRecord``: the settings a run started
with and what each --resume changed), and which config changes break a resume.

Every failure is a ``ConfigError`` naming the key.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Optional

import yaml

from ..config import get
from ..errors import ConfigError

LOSS_TYPES = ("linear", "square")

# Keys whose change on --resume does not affect the trajectory (run length, logging, paths).
RESUME_FREE = {
    "Train": {"max_steps", "epoch", "snapshot_freq", "sample_freq", "log_freq"},
    "Dataset": {"root", "num_workers", "download"},
    "Model": {"ckpt"},
}
RESUME_FREE_SECTIONS = {"Sample", "FID"}
RESUME_FIXED_SECTIONS = ("Model", "Schedule")  # a change here makes the checkpoint a different model


@dataclass(frozen=True)
class Settings:
    """Everything the training loop reads from the config, validated and with defaults filled in."""

    seed: int
    batch_size: int  # per process: under torchrun with N processes a step sees N × batch_size images
    loss_type: str
    ema: bool
    ema_rate: float
    lr: float
    beta1: float
    eps: float
    weight_decay: float
    amsgrad: bool
    grad_clip: float  # 0 = no clipping
    warmup: int  # linear lr warm-up steps, 0 = none
    max_steps: Optional[int]  # --max-steps, else Train.max_steps; None → from Train.epoch
    epochs: Optional[int]
    snapshot_freq: int
    sample_freq: int  # 0 = never
    log_freq: int
    random_flip: bool
    num_workers: int


def _nonnegative(name: str, value, allow_zero: bool = True):
    if value is None:
        return value
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{name} must be {'≥ 0' if allow_zero else '≥ 1'}, got {value}")
    return value


def _within(name: str, value: float, ok: bool, want: str) -> float:
    """``value`` if it is finite and ``ok``, else a ConfigError naming the key. Finite first: a NaN slips past
    checks written as ``value < 0``, and an infinite lr or eps is never meant."""
    if not (math.isfinite(value) and ok):
        raise ConfigError(f"{name} must be a finite number {want}, got {value}")
    return value


def _optim(cfg: dict) -> dict:
    """The Optim values, checked against the ranges torch's Adam accepts (β₁ in [0, 1), eps ≥ 0, weight decay
    ≥ 0) plus lr > 0 and finite everywhere, so that a bad value is one line before anything is written rather
    than a traceback from the optimiser's constructor (or a NaN loss many steps later). eps = 0 is allowed, as
    Adam allows it, although a parameter whose gradient is exactly 0 then gets a 0/0 update."""
    lr = float(get(cfg, "Optim", "lr", 2e-4))
    beta1 = float(get(cfg, "Optim", "beta1", 0.9))
    eps = float(get(cfg, "Optim", "eps", 1e-8))
    decay = float(get(cfg, "Optim", "weight_decay", 0.0))
    clip = float(get(cfg, "Optim", "grad_clip", 0.0))
    return {
        "lr": _within("Optim.lr", lr, lr > 0, "> 0"),
        "beta1": _within("Optim.beta1", beta1, 0 <= beta1 < 1, "in [0, 1)"),
        "eps": _within("Optim.eps", eps, eps >= 0, "≥ 0"),
        "weight_decay": _within("Optim.weight_decay", decay, decay >= 0, "≥ 0"),
        "grad_clip": _within("Optim.grad_clip", clip, clip >= 0, "≥ 0 (0 = no clipping)"),
        "warmup": _nonnegative("Optim.warmup", int(get(cfg, "Optim", "warmup", 0))),
        "amsgrad": bool(get(cfg, "Optim", "amsgrad", False)),
    }


def resolve_settings(cfg: dict, max_steps: Optional[int] = None) -> Settings:
    """Read and check the Train/Optim/Dataset keys training uses (raises ConfigError naming the key)."""
    loss_type = get(cfg, "Train", "loss_type", "linear")
    if loss_type not in LOSS_TYPES:
        raise ConfigError(f"Train.loss_type {loss_type!r} is not one of {', '.join(LOSS_TYPES)}")
    optimizer = str(get(cfg, "Optim", "optimizer", "adam")).lower()
    if optimizer != "adam":
        raise ConfigError(f"Optim.optimizer {optimizer!r}: only 'adam' (the released configs' choice) is supported")
    # Dataset.batch_size only when Train.batch_size is absent: an explicit 0 is a mistake to report, not a
    # request for the fallback
    batch_key = "Train.batch_size" if get(cfg, "Train", "batch_size") is not None else "Dataset.batch_size"
    batch = get(cfg, *batch_key.split("."))
    if batch is None:
        raise ConfigError("config needs Train.batch_size (or Dataset.batch_size): the batch of one process")
    _nonnegative(batch_key, batch, allow_zero=False)
    for key in ("logit_transform", "uniform_dequantization", "gaussian_dequantization"):
        if get(cfg, "Dataset", key, False):
            raise ConfigError(f"Dataset.{key}: true is not supported by this trainer (it trains on x/127.5 − 1)")
    if get(cfg, "Dataset", "rescaled", True) is False:
        raise ConfigError("Dataset.rescaled: false is not supported: models are trained on images in [-1, 1]")
    if max_steps is not None and max_steps < 1:
        raise ConfigError(f"--max-steps must be at least 1, got {max_steps}")
    steps = max_steps if max_steps is not None else get(cfg, "Train", "max_steps")
    epochs = get(cfg, "Train", "epoch")
    if steps is None and epochs is None:
        raise ConfigError("no run length: pass --max-steps or set Train.max_steps or Train.epoch")
    _nonnegative("Train.max_steps", steps, allow_zero=False)
    _nonnegative("Train.epoch", epochs, allow_zero=False)
    ema = get(cfg, "Train", "ema", get(cfg, "Model", "ema", True))
    rate = get(cfg, "Train", "ema_rate", get(cfg, "Model", "ema_rate", 0.9999))
    if ema and not 0.0 <= rate < 1.0:
        raise ConfigError(f"Train.ema_rate must lie in [0, 1), got {rate}")
    seed = get(cfg, "Train", "seed", 0)
    return Settings(
        seed=_nonnegative("Train.seed", seed), batch_size=int(batch), loss_type=loss_type, ema=bool(ema),
        ema_rate=float(rate), **_optim(cfg), max_steps=steps, epochs=epochs,
        snapshot_freq=_nonnegative("Train.snapshot_freq", get(cfg, "Train", "snapshot_freq", 5000), False),
        sample_freq=_nonnegative("Train.sample_freq", get(cfg, "Train", "sample_freq", 0)),
        log_freq=_nonnegative("Train.log_freq", get(cfg, "Train", "log_freq", 50), False),
        random_flip=bool(get(cfg, "Dataset", "random_flip", False)),
        num_workers=_nonnegative("Dataset.num_workers", get(cfg, "Dataset", "num_workers", 0)),
    )


def check_model_config(cfg: dict) -> tuple[int, int]:
    """(channels, image size) of the model; refuses models whose output is not ε (learned-σ iDDPM)."""
    model = cfg.get("Model") or {}
    iddpm = str(model.get("struc", "")).lower() == "iddpm"
    channels = model.get("in_channels", model.get("num_channels", 3))  # score-SDE networks say num_channels
    out = model.get("out_channels" if iddpm else "out_ch", channels)
    if out != channels:
        raise ConfigError(f"Model.{'out_channels' if iddpm else 'out_ch'}={out} but in_channels={channels}: "
                          "this trainer fits ε only; learned-σ models need the hybrid VLB loss, which it lacks")
    if model.get("centered", True) is False:
        raise ConfigError("Model.centered: false is not supported by this trainer: it trains on images in [-1, 1]")
    size = model.get("image_size")
    if size is None:
        raise ConfigError("config needs Model.image_size")
    return int(channels), int(size)


def effective_config(cfg: dict, s: Settings, total_steps: int, weights: str) -> dict:
    """The config with the resolved training values written into Train (what W/config.yml records), and
    Model.ckpt naming the run's own ``weights`` (a path relative to W): the config's checkpoint (the released
    model the file was written for) would otherwise be what ``main.py sample --config W/config.yml`` samples."""
    out = copy.deepcopy(cfg)
    out.setdefault("Model", {})["ckpt"] = weights
    train = out.setdefault("Train", {})
    train.update({"loss_type": s.loss_type, "batch_size": s.batch_size, "max_steps": total_steps, "ema": s.ema,
                  "ema_rate": s.ema_rate, "snapshot_freq": s.snapshot_freq, "sample_freq": s.sample_freq,
                  "log_freq": s.log_freq, "seed": s.seed})
    return out


def config_changes(old: dict, new: dict) -> list[tuple[str, Any, Any]]:
    """(Section.key, old, new) for every key that differs and matters for the trajectory."""
    changes = []
    for section in sorted(set(old) | set(new)):
        if section in RESUME_FREE_SECTIONS:
            continue
        a, b = old.get(section) or {}, new.get(section) or {}
        for key in sorted(set(a) | set(b)):
            if key in RESUME_FREE.get(section, ()):
                continue
            if a.get(key) != b.get(key):
                changes.append((f"{section}.{key}", a.get(key), b.get(key)))
    return changes


@dataclass(frozen=True)
class ConfigRecord:
    """What a run records of its config (W/config.yml, and the checkpoint's 'config' and 'resumes'): the config it
    started with, and every --resume that changed a setting which shapes the trajectory, with the step the change
    took effect from, so that a changed lr is not recorded as the whole run's. Run length, logging and paths
    (``RESUME_FREE``) are not history: the record holds the latest run's."""

    config: dict  # the effective config the run started with
    # ({"step": N, "changes": {"Section.key": [old, new]}}, …), oldest first; N is the step the run resumed at, so
    # the change holds for the optimiser steps after N
    resumes: tuple = ()

    @classmethod
    def of_checkpoint(cls, state: dict) -> "ConfigRecord":
        return cls(state.get("config") or {}, tuple(state.get("resumes") or ()))

    def current(self) -> dict:
        """The config the run trains with now: ``config`` with every recorded change applied in order."""
        out = copy.deepcopy(self.config)
        for resume in self.resumes:
            for key, (_, new) in resume["changes"].items():
                _set_key(out, key, new)
        return out

    def resumed(self, cfg: dict, step: int) -> "ConfigRecord":
        """The record once a run resumed at ``step`` trains with the effective config ``cfg``."""
        started = copy.deepcopy(cfg)
        for key, first, _ in config_changes(self.config, cfg):
            _set_key(started, key, first)
        changes = config_changes(self.current(), cfg)
        if not changes:
            return ConfigRecord(started, self.resumes)
        resume = {"step": int(step), "changes": {key: [old, new] for key, old, new in changes}}
        return ConfigRecord(started, (*self.resumes, resume))

    def as_yaml(self) -> str:
        """W/config.yml: the config the run trains with now (``current``), which loads as a config as it is, so
        that resuming with it continues as the run last trained; the resumes that changed it, with the values
        the run started with, are comments above it, because a config has no key for history."""
        notes = [f"#   from step {r['step']}: " + "; ".join(f"{key} {old!r} → {new!r}"
                                                          for key, (old, new) in r["changes"].items())
                 for r in self.resumes]
        header = ("# --resume changed settings of this run (also recorded in checkpoints/last.pt under 'resumes',\n"
                  "# next to the config it started with); the values below are the ones it trains with now:\n" +
                  "\n".join(notes) + "\n") if notes else ""
        return header + yaml.safe_dump(self.current(), sort_keys=False)


def _set_key(cfg: dict, key: str, value) -> None:
    """Set ``Section.key`` in ``cfg``; None (as ``config_changes`` reports a missing key) removes it."""
    section, name = key.split(".", 1)
    if value is None:
        (cfg.get(section) or {}).pop(name, None)
    else:
        cfg.setdefault(section, {})[name] = copy.deepcopy(value)
