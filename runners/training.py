"""Training an ε-prediction DDPM (Ho et al. 2020, Algorithm 1), the recipe of the released DDIM/PNDM code, made
exactly resumable and torchrun-aware.

Each optimiser step draws t ~ U{0, …, T−1} and ε ~ N(0, I), forms x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε and minimises
‖ε_θ(x_t, t) − ε‖ summed over pixels and averaged over the batch: the L1 norm for ``Train.loss_type: linear``
(the released code's default), its square for ``square``. Adam with an optional linear warm-up of the learning
rate, gradient-norm clipping and an EMA of the weights, as in the released code.

Randomness is a function of position, never of history, which is what makes ``--resume`` exact:
- the data order of epoch e is a permutation drawn from a generator seeded from (seed, e); each step takes the
  next ``batch × world`` indices of it (the last incomplete batch is dropped) and rank r the r-th ``batch`` of
  them, so the ranks see disjoint shards;
- the flips, timesteps and noise of step s on rank r come from a generator seeded from (seed, s, r), and the
  global RNG (dropout) is reseeded from (seed, s, r) before the step.
The checkpoint therefore needs only the step, the epoch and the position in that epoch's permutation, next to
the weights, EMA and optimiser state (the RNG states are saved as well, but nothing depends on them). On the CPU
20 steps + resume + 20 steps equal 40 straight steps bit for bit. On GPUs the same holds for the data order and
every random draw, but cuDNN/cuBLAS kernels are not bit-reproducible unless torch's deterministic algorithms are
switched on, so two GPU runs — interrupted or not — agree only to rounding.

``Train.batch_size`` (else ``Dataset.batch_size``) is the batch of ONE process: under torchrun with N
processes an optimiser step sees N × batch_size images.

Workdir layout::

    W/config.yml               effective config (the file + --set overrides + resolved Train defaults)
    W/checkpoints/last.pt      everything needed to resume (see ``checkpoint_state``)
    W/checkpoints/ema.pt       EMA weights as a plain state dict (what ``main.py sample --ckpt`` wants)
    W/tensorboard/             train/loss, train/lr, train/grad_norm, samples/ema (DDIM grid)
    W/samples/step_NNNNNNN.png the same sample grids as PNG files
"""
from __future__ import annotations

import copy
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from .config import ConfigError, get, save_config

CHECKPOINT_FORMAT = "pndm-train/1"
LAST, EMA_FILE = "last.pt", "ema.pt"
LOSS_TYPES = ("linear", "square")
SAMPLE_METHOD, SAMPLE_STEPS = "DDIM", 20

# Seed streams: independent random streams derived from the one Train.seed.
_INIT, _DATA, _STEP, _DROPOUT, _GRID = range(5)

# Keys whose change on --resume does not affect the trajectory (run length, logging, paths).
_RESUME_FREE = {
    "Train": {"max_steps", "epoch", "snapshot_freq", "sample_freq", "log_freq"},
    "Dataset": {"root", "num_workers", "download"},
    "Model": {"ckpt"},
}
_RESUME_FREE_SECTIONS = {"Sample", "FID"}
_RESUME_FIXED_SECTIONS = ("Model", "Schedule")  # a change here makes the checkpoint a different model


class ResumeError(ValueError):
    """The workdir and --resume disagree, or the checkpoint does not fit the config."""


class NoCheckpointError(FileNotFoundError):
    """--resume was given but the workdir holds no checkpoint."""


def derive_seed(seed: int, stream: int, *counters: int) -> int:
    """A well-mixed 63-bit seed for (seed, stream, counters…), via numpy's SeedSequence hashing."""
    state = np.random.SeedSequence([seed, stream, *counters]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


# ---------------------------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class Settings:
    """Everything the training loop reads from the config, validated and with defaults filled in."""

    seed: int
    batch_size: int  # per process
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


def resolve_settings(cfg: dict, max_steps: Optional[int] = None) -> Settings:
    """Read and check the Train/Optim/Dataset keys training uses (raises ConfigError naming the key)."""
    loss_type = get(cfg, "Train", "loss_type", "linear")
    if loss_type not in LOSS_TYPES:
        raise ConfigError(f"Train.loss_type {loss_type!r} is not one of {', '.join(LOSS_TYPES)}")
    optimizer = str(get(cfg, "Optim", "optimizer", "adam")).lower()
    if optimizer != "adam":
        raise ConfigError(f"Optim.optimizer {optimizer!r}: only 'adam' (the released configs' choice) is supported")
    batch = get(cfg, "Train", "batch_size") or get(cfg, "Dataset", "batch_size")
    if batch is None:
        raise ConfigError("config needs Train.batch_size (or Dataset.batch_size): the batch of one process")
    _nonnegative("batch_size", batch, allow_zero=False)
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
    lr = get(cfg, "Optim", "lr", 2e-4)
    if not lr > 0:
        raise ConfigError(f"Optim.lr must be > 0, got {lr}")
    return Settings(
        seed=_nonnegative("Train.seed", seed), batch_size=int(batch), loss_type=loss_type, ema=bool(ema),
        ema_rate=float(rate), lr=float(lr), beta1=float(get(cfg, "Optim", "beta1", 0.9)),
        eps=float(get(cfg, "Optim", "eps", 1e-8)),
        weight_decay=_nonnegative("Optim.weight_decay", float(get(cfg, "Optim", "weight_decay", 0.0))),
        amsgrad=bool(get(cfg, "Optim", "amsgrad", False)),
        grad_clip=_nonnegative("Optim.grad_clip", float(get(cfg, "Optim", "grad_clip", 0.0) or 0.0)),
        warmup=_nonnegative("Optim.warmup", int(get(cfg, "Optim", "warmup", 0) or 0)),
        max_steps=steps, epochs=epochs,
        snapshot_freq=_nonnegative("Train.snapshot_freq", get(cfg, "Train", "snapshot_freq", 5000), False),
        sample_freq=_nonnegative("Train.sample_freq", get(cfg, "Train", "sample_freq", 0) or 0),
        log_freq=_nonnegative("Train.log_freq", get(cfg, "Train", "log_freq", 50), False),
        random_flip=bool(get(cfg, "Dataset", "random_flip", False)),
        num_workers=_nonnegative("Dataset.num_workers", get(cfg, "Dataset", "num_workers", 0)),
    )


def check_model_config(cfg: dict) -> tuple[int, int]:
    """(channels, image size) of the model; refuses models whose output is not ε (learned-σ iDDPM)."""
    model = cfg.get("Model") or {}
    iddpm = str(model.get("struc", "")).lower() == "iddpm"
    channels = model.get("in_channels", 3)
    out = model.get("out_channels" if iddpm else "out_ch", channels)
    if out != channels:
        raise ConfigError(f"Model.{'out_channels' if iddpm else 'out_ch'}={out} but in_channels={channels}: "
                          "this trainer fits ε only; learned-σ models need the hybrid VLB loss, which it lacks")
    size = model.get("image_size")
    if size is None:
        raise ConfigError("config needs Model.image_size")
    return int(channels), int(size)


def effective_config(cfg: dict, s: Settings, total_steps: int) -> dict:
    """The config with the resolved training values written into Train (what W/config.yml records)."""
    out = copy.deepcopy(cfg)
    train = out.setdefault("Train", {})
    train.update({"loss_type": s.loss_type, "batch_size": s.batch_size, "max_steps": total_steps, "ema": s.ema,
                  "ema_rate": s.ema_rate, "snapshot_freq": s.snapshot_freq, "sample_freq": s.sample_freq,
                  "log_freq": s.log_freq, "seed": s.seed})
    return out


def config_changes(old: dict, new: dict) -> list[tuple[str, Any, Any]]:
    """(Section.key, old, new) for every key that differs and matters for the trajectory."""
    changes = []
    for section in sorted(set(old) | set(new)):
        if section in _RESUME_FREE_SECTIONS:
            continue
        a, b = old.get(section) or {}, new.get(section) or {}
        for key in sorted(set(a) | set(b)):
            if key in _RESUME_FREE.get(section, ()):
                continue
            if a.get(key) != b.get(key):
                changes.append((f"{section}.{key}", a.get(key), b.get(key)))
    return changes


# ---------------------------------------------------------------------------------------------------------------
# Data order


def epoch_permutation(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The data order of ``epoch``: a permutation of range(n), the same on every rank and every run."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(seed, _DATA, epoch)))


def rank_batches(perm: torch.Tensor, position: int, batch: int, world: int, rank: int) -> list[list[int]]:
    """The batches of ``rank`` for the rest of the epoch, from ``position`` (images of ``perm`` consumed).

    Each step consumes the next ``batch × world`` indices; rank r takes the r-th block of ``batch``. A final
    block shorter than ``batch × world`` is dropped (every step has the same number of images).
    """
    step = batch * world
    out = []
    for start in range(position, len(perm) - step + 1, step):
        lo = start + rank * batch
        out.append(perm[lo:lo + batch].tolist())
    return out


# ---------------------------------------------------------------------------------------------------------------
# Loss and schedule


def diffusion_loss(model: nn.Module, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                   alphas_cumprod: torch.Tensor, loss_type: str = "linear") -> torch.Tensor:
    """‖ε_θ(√ᾱ_t x0 + √(1−ᾱ_t) ε, t) − ε‖ per image (L1 for 'linear', squared L2 for 'square'), summed over pixels
    and averaged over the batch — the released code's ``noise_estimation_loss``."""
    a = alphas_cumprod.index_select(0, t).view(-1, *([1] * (x0.ndim - 1)))
    x_t = x0 * a.sqrt() + noise * (1.0 - a).sqrt()
    err = model(x_t, t.float()) - noise
    per_pixel = err.abs() if loss_type == "linear" else err.square()
    return per_pixel.flatten(1).sum(dim=1).mean(dim=0)


def lr_at(step: int, lr: float, warmup: int) -> float:
    """Learning rate of optimiser step ``step`` (0-based): linear warm-up over ``warmup`` steps, then constant."""
    return lr * min(1.0, (step + 1) / warmup) if warmup > 0 else lr


def to_model_space(images: torch.Tensor) -> torch.Tensor:
    """uint8 images → float32 in [-1, 1] (x/127.5 − 1)."""
    return images.float() / 127.5 - 1.0


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over ``path``: a save killed at any
    point leaves the previous file intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def remove_stale_temporaries(folder: Path) -> None:
    """Temporary files left by a save that was killed."""
    if folder.is_dir():
        for tmp in folder.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


def rng_states() -> dict:
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def checkpoint_state(model: nn.Module, ema, optimizer, *, step: int, epoch: int, position: int,
                     settings: Settings, world: int, cfg: dict) -> dict:
    """The contents of last.pt. Only tensors, numbers, strings and containers, so that it loads with
    ``torch.load(weights_only=True)``; ``models.load_model`` reads its 'ema' (else 'model') entry."""
    from models.ema import unwrap

    state = {
        "format": CHECKPOINT_FORMAT,
        "model": {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "step": step,
        "epoch": epoch,
        "position": position,
        "data": {"seed": settings.seed, "batch_size": settings.batch_size, "world_size": world},
        "rng": rng_states(),
        "config": cfg,
        "versions": {"torch": str(torch.__version__), "python": platform.python_version()},
    }
    if ema is not None:
        state["ema"] = ema.state_dict()
    return state


def load_checkpoint(path: Path) -> dict:
    """A training checkpoint written by this module (raises ResumeError with one line if it is not one)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ResumeError(f"{path} is not a readable training checkpoint ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ResumeError(f"{path} is not a training checkpoint of this project (format {CHECKPOINT_FORMAT})")
    return state


# ---------------------------------------------------------------------------------------------------------------
# Sample grids


class SampleGrid:
    """DDIM samples of the EMA weights from a fixed x_T, so that grids at different steps are comparable."""

    def __init__(self, cfg: dict, schedule, shape: tuple[int, int, int], seed: int, device: torch.device):
        from models import build_model

        self.model = build_model(cfg, eps_only=True).to(device).eval()
        self.schedule, self.device = schedule, device
        n = 64 if shape[-1] <= 64 else 16
        gen = torch.Generator().manual_seed(derive_seed(seed, _GRID))
        self.x_T = torch.randn((n, *shape), generator=gen).to(device)
        self.steps = min(SAMPLE_STEPS, schedule.T)
        self.nrow = int(math.isqrt(n))

    @torch.no_grad()
    def __call__(self, weights: dict) -> torch.Tensor:
        """A uint8 CHW grid of samples from ``weights``."""
        from torchvision.utils import make_grid

        from samplers import sample

        from .images import to_uint8

        self.model.load_state_dict(weights)
        x0 = sample(self.model, self.x_T, self.schedule, SAMPLE_METHOD, self.steps)
        grid = make_grid(x0.clamp(-1, 1).cpu(), nrow=self.nrow, padding=1, pad_value=1.0)
        return to_uint8(grid)


# ---------------------------------------------------------------------------------------------------------------
# The job


def _workdir_state(workdir: Path, resume: bool) -> Optional[dict]:
    """Check the workdir against --resume; the checkpoint to resume from, or None for a fresh run."""
    last = workdir / "checkpoints" / LAST
    if resume:
        if not last.is_file():
            raise NoCheckpointError(f"--resume: no checkpoint at {last}; start the run without --resume")
        return load_checkpoint(last)
    if last.exists():
        raise ResumeError(f"{workdir} already holds a training run ({last}); pass --resume to continue it or "
                          "choose another --workdir")
    return None


def _check_images(dataset, channels: int, size: int, cfg: dict) -> None:
    first = dataset[0][0]
    if tuple(first.shape) != (channels, size, size):
        raise ConfigError(f"Dataset {get(cfg, 'Dataset', 'dataset')} gives images of shape {tuple(first.shape)} "
                          f"but the Model expects {(channels, size, size)} (Model.in_channels, Model.image_size)")


def _say(dist, message: str) -> None:
    if dist.is_main:
        from tqdm.auto import tqdm

        tqdm.write(message, file=sys.stderr)


def run_training(args) -> dict:
    """``main.py train``: train (or resume) in ``args.workdir``. Returns a summary dict (final step, epoch,
    position, and the logged (step, loss) pairs)."""
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from models import build_model
    from models.ema import EMA, unwrap
    from samplers import NoiseSchedule

    from .config import load_config
    from .datasets import image_dataset
    from .distributed import setup, teardown

    # ---- everything that can be wrong is checked before anything is written
    cfg = load_config(args.config, getattr(args, "overrides", None) or [])
    settings = resolve_settings(cfg, getattr(args, "max_steps", None))
    channels, size = check_model_config(cfg)
    schedule = NoiseSchedule.from_config(cfg.get("Schedule", {}))
    workdir = Path(args.workdir)
    resumed = _workdir_state(workdir, bool(getattr(args, "resume", False)))
    dataset = image_dataset(cfg, "train")
    if len(dataset) == 0:
        raise ConfigError(f"Dataset {get(cfg, 'Dataset', 'dataset')} is empty")
    _check_images(dataset, channels, size, cfg)

    dist = setup(getattr(args, "device", None))
    try:
        world, rank, device = dist.world, dist.rank, dist.device
        s = settings
        per_step = s.batch_size * world
        steps_per_epoch = len(dataset) // per_step
        if steps_per_epoch == 0:
            raise ConfigError(f"the dataset has {len(dataset)} images, fewer than one step's "
                              f"{s.batch_size} × {world} process(es)")
        total = s.max_steps if s.max_steps is not None else s.epochs * steps_per_epoch
        run_cfg = effective_config(cfg, s, total)

        torch.manual_seed(derive_seed(s.seed, _INIT))
        model = build_model(cfg, eps_only=False).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=s.lr, betas=(s.beta1, 0.999), eps=s.eps,
                                     weight_decay=s.weight_decay, amsgrad=s.amsgrad)
        ema = EMA(model, s.ema_rate) if s.ema else None
        step, epoch, position = 0, 0, 0
        if resumed is not None:
            step, epoch, position = _restore(resumed, run_cfg, model, ema, optimizer, s, world, dist)
            if position + per_step > len(dataset):  # the batch or world size changed at an epoch's end
                epoch, position = epoch + 1, 0
            if step >= total:
                _say(dist, f"{workdir} is already at step {step} of {total}: nothing to do (raise --max-steps to "
                           "train further)")
                return {"step": step, "epoch": epoch, "position": position, "losses": [], "workdir": str(workdir)}

        if dist.is_main:
            (workdir / "checkpoints").mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(workdir / "checkpoints")
            save_config(run_cfg, workdir / "config.yml")
        if world > 1:
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)

        alphas_cumprod = torch.from_numpy(np.array(schedule.alphas_cumprod)).to(device)
        writer = grid = None
        if dist.is_main:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(workdir / "tensorboard"), purge_step=step if resumed is not None else None)
            if s.sample_freq:
                grid = SampleGrid(cfg, schedule, (channels, size, size), s.seed, device)
        n_params = sum(p.numel() for p in model.parameters())
        _say(dist, f"{'resuming at' if resumed is not None else 'training from'} step {step} → {total}: "
                   f"{type(unwrap(model)).__name__} ({n_params / 1e6:.2f}M parameters), "
                   f"{get(cfg, 'Dataset', 'dataset')} ({len(dataset)} images, {steps_per_epoch} steps/epoch), "
                   f"batch {s.batch_size} × {world} process(es), {s.loss_type} loss, on {device}; workdir {workdir}")

        def save() -> None:
            if not dist.is_main:
                return
            state = checkpoint_state(model, ema, optimizer, step=step, epoch=epoch, position=position,
                                     settings=s, world=world, cfg=run_cfg)
            save_atomic(state, workdir / "checkpoints" / LAST)
            if ema is not None:
                save_atomic(state["ema"], workdir / "checkpoints" / EMA_FILE)

        history: list[tuple[int, float]] = []
        window_sum = torch.zeros((), device=device)
        window_n = 0
        grad_norm = None
        saved_at = step
        gen = torch.Generator(device=device)  # reseeded at every step: flips, timesteps, noise
        bar = tqdm(total=total, initial=step, disable=not dist.is_main, dynamic_ncols=True, desc="train")
        model.train()
        try:
            while step < total:
                perm = epoch_permutation(s.seed, epoch, len(dataset))
                batches = rank_batches(perm, position, s.batch_size, world, rank)
                loader = DataLoader(dataset, batch_sampler=batches, num_workers=s.num_workers,
                                    pin_memory=device.type == "cuda")
                for images, _ in loader:
                    gen.manual_seed(derive_seed(s.seed, _STEP, step, rank))
                    torch.manual_seed(derive_seed(s.seed, _DROPOUT, step, rank))  # dropout
                    x0 = to_model_space(images.to(device, non_blocking=True))
                    b = x0.shape[0]
                    if s.random_flip:
                        flip = torch.rand(b, generator=gen, device=device) < 0.5
                        x0 = torch.where(flip.view(-1, 1, 1, 1), x0.flip(-1), x0)
                    t = torch.randint(0, schedule.T, (b,), generator=gen, device=device)
                    noise = torch.randn(x0.shape, generator=gen, device=device)

                    lr = lr_at(step, s.lr, s.warmup)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    loss = diffusion_loss(model, x0, t, noise, alphas_cumprod, s.loss_type)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if s.grad_clip > 0:
                        grad_norm = nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
                    optimizer.step()
                    if ema is not None:
                        ema.update(model)

                    step += 1
                    position += per_step
                    if position + per_step > len(dataset):  # the epoch is used up
                        epoch, position = epoch + 1, 0
                    window_sum += loss.detach()
                    window_n += 1
                    bar.update(1)

                    if step % s.log_freq == 0 or step == total:
                        value = _mean_over_ranks(window_sum / window_n, world)
                        window_sum.zero_()
                        window_n = 0
                        if not math.isfinite(value):
                            raise FloatingPointError(f"the training loss became {value} by step {step}; the last "
                                                     f"checkpoint (step {saved_at}) is in {workdir / 'checkpoints'}")
                        history.append((step, value))
                        if writer is not None:
                            writer.add_scalar("train/loss", value, step)
                            writer.add_scalar("train/lr", lr, step)
                            if grad_norm is not None:
                                writer.add_scalar("train/grad_norm", float(grad_norm), step)
                            bar.set_postfix(loss=f"{value:.4g}", epoch=epoch)
                    if step % s.snapshot_freq == 0 or step == total:
                        save()
                        saved_at = step
                    if grid is not None and step % s.sample_freq == 0:
                        _write_grid(grid, ema.shadow if ema is not None else unwrap(model).state_dict(),
                                    "ema" if ema is not None else "model", writer, workdir, step, dist)
                    if step >= total:
                        break
        except KeyboardInterrupt:
            _say(dist, f"\ninterrupted at step {step}; the last checkpoint (step {saved_at}) is "
                       f"{workdir / 'checkpoints' / LAST}: continue with --resume")
            raise
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        if saved_at != step:
            save()
        dist.barrier()
        if dist.is_main:
            note = f"; EMA weights: {workdir / 'checkpoints' / EMA_FILE}" if ema is not None else ""
            _say(dist, f"done at step {step} (epoch {epoch}); checkpoint {workdir / 'checkpoints' / LAST}{note}")
        return {"step": step, "epoch": epoch, "position": position, "losses": history, "workdir": str(workdir)}
    finally:
        teardown()


def _mean_over_ranks(value: torch.Tensor, world: int) -> float:
    if world > 1:
        import torch.distributed as tdist

        value = value.detach().clone().float()
        tdist.all_reduce(value)
        value /= world
    return float(value)


def _write_grid(grid: SampleGrid, weights: dict, which: str, writer, workdir: Path, step: int, dist) -> None:
    from .images import write_png

    start = time.perf_counter()
    try:
        image = grid(weights)
    except FloatingPointError as err:  # early weights can diverge under DDIM: report, keep training
        _say(dist, f"sample grid at step {step} skipped: {err}")
        return
    writer.add_image(f"samples/{which}_{SAMPLE_METHOD.lower()}{grid.steps}", image, step)
    write_png(workdir / "samples" / f"step_{step:07d}.png", image)
    writer.add_scalar("time/sample_grid_s", time.perf_counter() - start, step)


def _restore(state: dict, run_cfg: dict, model: nn.Module, ema, optimizer, s: Settings, world: int,
             dist) -> tuple[int, int, int]:
    """Load a checkpoint's weights, EMA, optimiser and RNG states; (step, epoch, position) to continue from."""
    changes = config_changes(state.get("config") or {}, run_cfg)
    fixed = [c for c in changes if c[0].split(".")[0] in _RESUME_FIXED_SECTIONS]
    if fixed:
        shown = "; ".join(f"{k}: {a!r} → {b!r}" for k, a, b in fixed[:4])
        raise ResumeError(f"the config's Model/Schedule differ from the checkpoint's ({shown}); resume with the "
                          "run's own config, which is saved as config.yml in the workdir")
    for key, a, b in changes:
        _say(dist, f"resume: {key} changed {a!r} → {b!r} (the run will not match an uninterrupted one)")
    data = state.get("data") or {}
    if (data.get("batch_size"), data.get("world_size")) != (s.batch_size, world):
        _say(dist, f"resume: batch {data.get('batch_size')} × {data.get('world_size')} process(es) → "
                   f"{s.batch_size} × {world}: the data order continues, but the run will not match an "
                   "uninterrupted one")
    try:
        model.load_state_dict(state["model"], strict=True)
        optimizer.load_state_dict(state["optimizer"])
    except (KeyError, RuntimeError, ValueError) as err:
        raise ResumeError(f"the checkpoint does not fit the model/optimizer the config builds: "
                          f"{str(err).splitlines()[0]}") from None
    if ema is not None:
        if "ema" in state:
            ema.load_state_dict(state["ema"])
        else:
            _say(dist, "resume: the checkpoint has no EMA weights; the EMA restarts from the current weights")
            ema.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}
        ema.to(next(model.parameters()).device)
    rng = state.get("rng") or {}
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return int(state["step"]), int(state["epoch"]), int(state["position"])


__all__ = ["run_training", "resolve_settings", "Settings", "diffusion_loss", "lr_at", "epoch_permutation",
           "rank_batches", "save_atomic", "load_checkpoint", "checkpoint_state", "derive_seed", "ResumeError",
           "NoCheckpointError", "CHECKPOINT_FORMAT"]
