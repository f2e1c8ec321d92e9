"""``run_training(job)``: check everything, take the workdir, then step until the run length is reached, saving
a checkpoint every ``Train.snapshot_freq`` steps (and at the end)."""
from __future__ import annotations

import contextlib
import functools
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ..config import get
from ..distributed import main_owns, session
from ..errors import ConfigError
from ..files import write_atomic, write_text_atomic
from ..jobs import TrainJob
from ..setup import schedule_of
from .data import epoch_loader, to_model_space, training_dataset
from .loss import diffusion_loss, lr_at, step_draws
from .preview import SampleGrid, write_grid
from .rng import forked, seed_step, step_generator
from .settings import ConfigRecord, Settings, check_model_config, effective_config
from .state import CHECKPOINTS, EMA_FILE, LAST, DivergedError, TrainState, WorkdirCheckpoint

CONFIG = "config.yml"


@dataclass(frozen=True)
class RunPlan:
    """What the run covers, fixed before it starts."""

    dataset: Dataset
    schedule: object  # samplers.NoiseSchedule
    shape: tuple[int, int, int]
    per_step: int  # images per optimiser step, all ranks together
    steps_per_epoch: int
    total: int  # the step to stop at
    config: dict  # the effective config this run trains with (what W/config.yml records: ``ConfigRecord``)


def run_training(job: TrainJob) -> dict:
    """``main.py train``: train (or resume) in ``job.workdir``. Returns a summary dict (final step, epoch,
    position, the logged (step, loss) pairs and the workdir). The caller's global RNG state is left as it was."""
    cfg, s, workdir = job.config, job.settings, Path(job.workdir)
    # everything that can be wrong is checked before anything is written
    channels, size = check_model_config(cfg)
    schedule = schedule_of(cfg)
    dataset = training_dataset(cfg, channels, size)
    found = WorkdirCheckpoint.read(workdir, job.resume)
    with session(job.device) as dist, forked(dist.device):
        say = functools.partial(_say, dist)
        plan = _plan(cfg, s, dataset, schedule, (channels, size, size), dist.world)
        train = TrainState.create(cfg, s, dist.device, dist.rank)
        record = ConfigRecord(plan.config)
        if found.state is not None:
            train.restore(found.state, cfg=plan.config, settings=s, dist=dist, say=say)
            record = ConfigRecord.of_checkpoint(found.state).resumed(plan.config, train.step)
            train.next_epoch_if_used_up(plan.per_step, len(dataset))  # the batch or world size changed
            if train.step >= plan.total:
                say(f"{workdir} is already at step {train.step} of {plan.total}: nothing to do (raise --max-steps "
                    "to train further)")
                return _summary(train, [], workdir)
        with contextlib.ExitStack() as stack:
            before = None  # the workdir as this run found it (main process only)

            def start(own) -> None:
                nonlocal before
                found.check_unchanged()
                before = WorkdirBefore.take(workdir)
                write_text_atomic(workdir / CONFIG, record.as_yaml())

            own = main_owns(dist, stack, workdir, (CONFIG,), start)
            resumed_at = train.saved_at
            own.keep = resumed_at is not None  # a resumed run's folder is worth keeping from the start
            try:
                history = _train(job, plan, record, train, dist, own, say)
            except BaseException:
                if before is not None and train.saved_at == resumed_at:  # failed before its first checkpoint
                    before.put_back(workdir)
                    own.keep = resumed_at is not None  # a fresh run's folder holds nothing again: owned_folder
                    # removes it if it made it
                raise
    return _summary(train, history, workdir)


@dataclass(frozen=True)
class WorkdirBefore:
    """The workdir's files when this run took it, and its config.yml. A run that fails (diverges, is interrupted,
    crashes) before writing a checkpoint of its own leaves nothing worth keeping, so it puts the folder back: its
    TensorBoard events, sample grids and config go, and a resumed run's earlier files stay as they were."""

    files: frozenset  # paths relative to the workdir
    config: Optional[bytes]

    @classmethod
    def take(cls, workdir: Path) -> "WorkdirBefore":
        config = workdir / CONFIG
        return cls(frozenset(p.relative_to(workdir) for p in workdir.rglob("*")),
                   config.read_bytes() if config.is_file() else None)

    def put_back(self, workdir: Path) -> None:
        """Remove what appeared since ``take`` (only the owner of the workdir calls this, so that is this run's
        own output) and restore config.yml."""
        for path in sorted(workdir.rglob("*"), reverse=True):  # deepest first, so folders are empty in turn
            if path.relative_to(workdir) in self.files:
                continue
            if path.is_dir() and not path.is_symlink():
                with contextlib.suppress(OSError):
                    path.rmdir()
            else:
                path.unlink(missing_ok=True)
        if self.config is not None:
            write_atomic(workdir / CONFIG, lambda fh: fh.write(self.config))


def _plan(cfg: dict, s: Settings, dataset: Dataset, schedule, shape: tuple, world: int) -> RunPlan:
    per_step = s.batch_size * world
    steps_per_epoch = len(dataset) // per_step
    if steps_per_epoch == 0:
        raise ConfigError(f"the dataset has {len(dataset)} images, fewer than one step's {s.batch_size} × {world} "
                          "process(es)")
    total = s.max_steps if s.max_steps is not None else s.epochs * steps_per_epoch
    # relative to W/config.yml, where config paths are read from: a copied or moved run names its own weights
    weights = f"{CHECKPOINTS}/{EMA_FILE if s.ema else LAST}"
    return RunPlan(dataset, schedule, shape, per_step, steps_per_epoch, total,
                   effective_config(cfg, s, total, weights))


def _train(job: TrainJob, plan: RunPlan, record: ConfigRecord, train: TrainState, dist, own,
           say) -> list[tuple[int, float]]:
    """The optimiser steps from ``train.step`` to ``plan.total``; the logged (step, loss) pairs. Checkpoints carry
    ``record``."""
    s, device, workdir = job.settings, dist.device, Path(job.workdir)
    net = train.model
    if dist.world > 1:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    alphas_cumprod = torch.from_numpy(np.array(plan.schedule.alphas_cumprod)).to(device)
    gen = step_generator(device)
    monitor = _Monitor(job, plan, train, dist, say)
    net.train()
    try:
        while train.step < plan.total:
            for images, _ in epoch_loader(plan.dataset, seed=s.seed, epoch=train.epoch, position=train.position,
                                          batch=s.batch_size, world=dist.world, rank=dist.rank,
                                          num_workers=s.num_workers, pin_memory=device.type == "cuda"):
                seed_step(gen, s.seed, train.step, dist.rank)
                x0 = to_model_space(images.to(device, non_blocking=True))
                x0, t, noise = step_draws(x0, gen, plan.schedule.T, s.random_flip)
                lr = lr_at(train.step, s.lr, s.warmup)
                loss, grad_norm = _optimise(net, train, x0, t, noise, alphas_cumprod, s, lr)
                train.advance(plan.per_step, len(plan.dataset))
                monitor.log(train, loss, lr, grad_norm)
                if train.step % s.snapshot_freq == 0 or train.step == plan.total:
                    own.keep = True
                    train.save(workdir / CHECKPOINTS, settings=s, record=record, dist=dist)
                monitor.preview(train)
                if train.step >= plan.total:
                    break
    except KeyboardInterrupt:
        say(_interrupted(train, workdir))
        raise
    finally:
        monitor.close()
    if train.saved_at != train.step:
        own.keep = True
        train.save(workdir / CHECKPOINTS, settings=s, record=record, dist=dist)
    dist.barrier()
    note = f"; EMA weights: {workdir / CHECKPOINTS / EMA_FILE}" if train.ema is not None else ""
    say(f"done at step {train.step} (epoch {train.epoch}); checkpoint {workdir / CHECKPOINTS / LAST}{note}")
    return monitor.history


def _optimise(net: nn.Module, train: TrainState, x0, t, noise, alphas_cumprod, s: Settings, lr: float):
    """One Adam step on the loss of (x0, t, noise), with clipping and the EMA update; (loss, grad norm)."""
    for group in train.optimizer.param_groups:
        group["lr"] = lr
    loss = diffusion_loss(net, x0, t, noise, alphas_cumprod, s.loss_type)
    train.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = nn.utils.clip_grad_norm_(net.parameters(), s.grad_clip) if s.grad_clip > 0 else None
    train.optimizer.step()
    if train.ema is not None:
        train.ema.update(net)
    return loss.detach(), grad_norm


class _Monitor:
    """The loss averaged over ``log_freq`` steps and all ranks, TensorBoard, the progress bar, preview grids."""

    def __init__(self, job: TrainJob, plan: RunPlan, train: TrainState, dist, say):
        from tqdm.auto import tqdm

        from models.ema import unwrap

        s, self.dist, self.say, self.workdir = job.settings, dist, say, Path(job.workdir)
        self.log_freq, self.sample_freq, self.total = s.log_freq, s.sample_freq, plan.total
        self.writer = self.grid = None
        if dist.is_main:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step hides the events an interrupted run logged after its last checkpoint (all of them for a
            # fresh run); those of the checkpoint's own step (loss, preview grid) belong to the resumed trajectory
            self.writer = SummaryWriter(str(self.workdir / "tensorboard"),
                                        purge_step=train.step + 1 if train.step else 0)
            if s.sample_freq:
                self.grid = SampleGrid(job.config, plan.schedule, plan.shape, s.seed, dist.device)
        self.history: list[tuple[int, float]] = []
        self.window_sum, self.window_n = torch.zeros((), device=dist.device), 0
        n_params = sum(p.numel() for p in train.model.parameters())
        say(f"{'resuming at' if train.saved_at is not None else 'training from'} step {train.step} → {plan.total}: "
            f"{type(unwrap(train.model)).__name__} ({n_params / 1e6:.2f}M parameters), "
            f"{get(job.config, 'Dataset', 'dataset')} ({len(plan.dataset)} images, {plan.steps_per_epoch} "
            f"steps/epoch), batch {s.batch_size} × {dist.world} process(es), {s.loss_type} loss, on "
            f"{dist.device}; workdir {self.workdir}")
        self.bar = tqdm(total=plan.total, initial=train.step, disable=not dist.is_main, dynamic_ncols=True,
                        desc="train")

    def log(self, train: TrainState, loss: torch.Tensor, lr: float, grad_norm) -> None:
        self.window_sum += loss
        self.window_n += 1
        self.bar.update(1)
        step = train.step
        if step % self.log_freq and step != self.total:
            return
        value = _mean_over_ranks(self.window_sum / self.window_n, self.dist.world)
        self.window_sum.zero_()
        self.window_n = 0
        if not math.isfinite(value):
            saved = (f"the last checkpoint (step {train.saved_at}) is in {self.workdir / CHECKPOINTS}"
                     if train.saved_at is not None else "no checkpoint was written")
            raise DivergedError(f"the training loss became {value} by step {step}; {saved}")
        self.history.append((step, value))
        if self.writer is not None:
            self.writer.add_scalar("train/loss", value, step)
            self.writer.add_scalar("train/lr", lr, step)
            if grad_norm is not None:
                self.writer.add_scalar("train/grad_norm", float(grad_norm), step)
            self.bar.set_postfix(loss=f"{value:.4g}", epoch=train.epoch)

    def preview(self, train: TrainState) -> None:
        if self.grid is None or train.step % self.sample_freq:
            return
        from models.ema import unwrap

        weights = train.ema.shadow if train.ema is not None else unwrap(train.model).state_dict()
        write_grid(self.grid, weights, "ema" if train.ema is not None else "model", self.writer, self.workdir,
                   train.step, self.say)

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()


def _interrupted(train: TrainState, workdir: Path) -> str:
    """What Ctrl-C leaves on disk, truly."""
    if train.saved_at is None:
        return f"\ninterrupted at step {train.step}, before this run's first checkpoint: nothing was saved"
    return (f"\ninterrupted at step {train.step}; the last checkpoint (step {train.saved_at}) is "
            f"{workdir / CHECKPOINTS / LAST}: continue with --resume")


def _mean_over_ranks(value: torch.Tensor, world: int) -> float:
    if world > 1:
        import torch.distributed as tdist

        value = value.detach().clone().float()
        tdist.all_reduce(value)
        value /= world
    return float(value)


def _say(dist, message: str) -> None:
    if dist.is_main:
        from tqdm.auto import tqdm

        tqdm.write(message, file=sys.stderr)


def _summary(train: TrainState, history: list, workdir: Path) -> dict:
    return {"step": train.step, "epoch": train.epoch, "position": train.position, "losses": history,
            "workdir": str(workdir)}
