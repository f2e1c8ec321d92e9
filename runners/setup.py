"""The setup every job shares: config → noise schedule, image shape, sampling plan, device, threads, and the
checkpoint as an ε(x, t) callable.

These are the only places where library errors about user input (a ``ValueError`` from ``samplers``, a
``CheckpointError`` from ``models``) become ``UserError``s: everything else that raises is a bug.
"""
from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from samplers import NoiseSchedule, plan

from .errors import ArgumentError, ConfigError, MissingFileError, UserError

PRECISIONS = ("fp32", "bf16", "fp16")


def schedule_of(cfg: dict) -> NoiseSchedule:
    try:
        return NoiseSchedule.from_config(cfg.get("Schedule", {}))
    except ValueError as e:
        raise ConfigError(f"Schedule: {e}") from None


def image_shape(cfg: dict) -> tuple[int, int, int]:
    """(channels, size, size) of the model's images; Model and Dataset must agree where both say."""
    model, data = cfg.get("Model", {}), cfg.get("Dataset", {})
    channels = model.get("in_channels", model.get("num_channels", data.get("channels")))  # num_channels: score-SDE
    size = model.get("image_size", data.get("image_size"))
    if channels is None or size is None:
        raise ConfigError("the config needs Model.in_channels and Model.image_size (or Dataset.channels and "
                          "Dataset.image_size)")
    channel_key = "in_channels" if "in_channels" in model or "num_channels" not in model else "num_channels"
    for key, model_key, ours in (("image_size", "image_size", size), ("channels", channel_key, channels)):
        theirs = data.get(key)
        if theirs is not None and theirs != ours:
            raise ConfigError(f"Model and Dataset disagree: {model_key}={ours} but Dataset.{key}={theirs}")
    if channels < 1 or size < 1:
        raise ConfigError(f"image channels and size must be positive, got {channels} and {size}")
    return (int(channels), int(size), int(size))


def resolve_plan(method: str, schedule: NoiseSchedule, steps: Optional[int], convention: str,
                 eta: Optional[float] = None, timesteps=None):
    """The validated sampling plan (``samplers.plan``): the same checks ``sample()`` makes, before any work."""
    try:
        return plan(method, schedule, steps, convention, eta=eta, timesteps=timesteps)
    except ValueError as e:
        raise ArgumentError(str(e)) from None


def positive(name: str, value) -> int:
    if value is None or isinstance(value, bool) or value < 1:
        raise ArgumentError(f"{name} must be at least 1, got {value}")
    return int(value)


def nonnegative(name: str, value) -> int:
    if value is None or isinstance(value, bool) or value < 0:
        raise ArgumentError(f"{name} must be at least 0, got {value}")
    return int(value)


def pick(value, fallback):
    """A command-line value when given (0 included), else the config's."""
    return fallback if value is None else value


# ---------------------------------------------------------------------------------------------------------------
# device and threads


def resolve_device(name: Optional[str]) -> torch.device:
    """``--device`` as a torch.device that exists here (default: cuda when available, else cpu)."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ArgumentError(f"--device {name!r} is not a device name; use cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ArgumentError(f"--device {name}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ArgumentError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return device
    backend = getattr(torch.backends, device.type, None) or getattr(torch, device.type, None)
    if backend is not None and getattr(backend, "is_available", lambda: False)():
        return device
    raise ArgumentError(f"--device {name}: no {device.type} device is available here; use cpu or cuda")


def busy_cores(interval: float = 0.1) -> float:
    """How many cores other processes keep busy right now: the machine's non-idle share of CPU time over
    ``interval`` seconds (Linux /proc/stat), times the core count; else the 1-minute load average."""
    def ticks():
        with open("/proc/stat") as fh:
            values = [int(v) for v in fh.readline().split()[1:]]
        return sum(values), values[3] + values[4]  # total, idle + iowait

    try:
        (total0, idle0), _ = ticks(), time.sleep(interval)
        total1, idle1 = ticks()
        return (os.cpu_count() or 1) * (1 - (idle1 - idle0) / max(1, total1 - total0))
    except (OSError, ValueError, IndexError):
        try:
            return os.getloadavg()[0]
        except OSError:
            return 0.0


def process_cores() -> int:
    """The cores this process may use, shared among torchrun's local processes."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def default_threads() -> int:
    """CPU threads for torch: ``process_cores()`` minus the cores other processes are keeping busy at the start.
    Torch's default takes every core, and when the machine is shared its threads wait on each other: on a busy
    2-core machine a batch of 7 digits took 676 ms per network call with 2 threads and 6 ms with 1
    (scripts/bench_threads.py)."""
    cores = process_cores()
    return max(1, min(cores, math.floor(cores - busy_cores() + 0.5)))


def apply_threads(threads: Optional[int], follow_load: bool = True) -> int:
    """Set torch's intra-op threads: ``--threads``, else OMP_NUM_THREADS when the user set it, else
    ``default_threads()`` (``follow_load``) or ``process_cores()``; returns the number used.

    Jobs whose result is a learned number (tune-grid, tune-solver) pass ``follow_load=False``: their gradients
    are sums whose rounding depends on the thread count, and learning amplifies it (the same tune-solver
    command on 1 and on 2 threads gave grids 2.4 timesteps apart), so their default must not depend on what
    else the machine is doing."""
    if threads is None and os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    if threads is not None:
        n = positive("--threads", threads)
    else:
        n = default_threads() if follow_load else process_cores()
    torch.set_num_threads(n)
    return n


# ---------------------------------------------------------------------------------------------------------------
# checkpoints


def sha256_file(path: Optional[str]) -> Optional[str]:
    """sha256 of a file, or of a diffusers directory's files in name order."""
    if not path:
        return None
    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class ModelSpec:
    """Which network to load and how to run it: everything ``load_eps`` needs, and what a manifest records."""

    checkpoint: str
    checkpoint_sha256: str
    trust_checkpoint: bool = False
    precision: str = "fp32"
    compile: bool = False


def model_spec(cfg: dict, checkpoint: Optional[str], source: str, trust: bool, precision: str,
               compile_: bool) -> ModelSpec:
    """``source``: where ``checkpoint`` came from (``--ckpt``, or ``Model.ckpt in FILE``), for the error."""
    if not checkpoint:
        raise ConfigError("no checkpoint: pass --ckpt or set Model.ckpt in the config")
    if not Path(checkpoint).exists():
        raise MissingFileError(f"checkpoint not found: {checkpoint} ({source})")
    if precision not in PRECISIONS:
        raise ArgumentError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return ModelSpec(str(checkpoint), sha256_file(checkpoint), bool(trust), precision, bool(compile_))


def load_eps(spec: ModelSpec, cfg: dict, device: torch.device) -> Callable:
    """The checkpoint as an ε(x, t) callable in the requested precision (torch.compile'd if asked)."""
    from models import CheckpointError, load_model, prepare_for_inference

    try:
        model = load_model(cfg, spec.checkpoint, trust_pickle=spec.trust_checkpoint, device=device)
    except CheckpointError as e:
        raise UserError(str(e)) from None
    try:
        return prepare_for_inference(model, precision=spec.precision, compile=spec.compile)
    except ValueError as e:  # a precision this device cannot run
        raise ArgumentError(str(e)) from None
