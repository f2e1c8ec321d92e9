"""What a training run is at a given step (``TrainState``), its checkpoint file and the checks of a resume.

Checkpoint format ``pndm-train/1`` (``W/checkpoints/last.pt``): the weights, the EMA, the optimiser state, the
step, the epoch and the position in that epoch's permutation, the batch and world size, the state of each rank's
dropout stream (see ``rng``), the effective config the run started with and the settings each --resume changed
('config', 'resumes': ``settings.ConfigRecord``), and the versions. Only tensors, numbers, strings and containers,
so it loads with ``torch.load(weights_only=True)``; ``models.load_model`` reads its 'ema' (else 'model') entry.
``W/checkpoints/ema.pt`` holds the EMA weights alone as a plain state dict.
"""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from ..errors import ConfigError, MissingFileError, UserError
from ..files import save_torch_atomic
from ..seeds import derive_seed
from .rng import INIT, global_state, seed_dropout, seed_global, set_global_state
from .settings import RESUME_FIXED_SECTIONS, ConfigRecord, Settings, config_changes

CHECKPOINT_FORMAT = "pndm-train/1"
CHECKPOINTS, LAST, EMA_FILE = "checkpoints", "last.pt", "ema.pt"


class ResumeError(UserError, ValueError):
    """The workdir and --resume disagree, or the checkpoint does not fit the config."""


class NoCheckpointError(MissingFileError):
    """--resume was given but the workdir holds no checkpoint."""


class DivergedError(UserError, FloatingPointError):
    """The training loss became NaN or infinite (lower Optim.lr, raise Optim.warmup or clip gradients)."""


def checkpoint_path(workdir: Path) -> Path:
    return Path(workdir) / CHECKPOINTS / LAST


@dataclass
class TrainState:
    """The model, its EMA and optimiser, and where the run is: ``step`` optimiser steps done, ``position`` images
    of epoch ``epoch``'s permutation consumed. ``saved_at`` is the step of the checkpoint on disk (None while
    this run has none)."""

    model: nn.Module  # never wrapped: the loop wraps it in DDP for itself
    ema: Optional[object]  # models.ema.EMA
    optimizer: torch.optim.Optimizer
    step: int = 0
    epoch: int = 0
    position: int = 0
    saved_at: Optional[int] = None

    @classmethod
    def create(cls, cfg: dict, s: Settings, device: torch.device, rank: int) -> "TrainState":
        """Fresh weights from the INIT stream, Adam, the EMA; then this rank's dropout stream is started."""
        from models import build_model
        from models.ema import EMA

        seed_global(derive_seed(s.seed, INIT), device)
        try:
            model = build_model(cfg, eps_only=False)
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"Model: {e}") from None
        model = model.to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=s.lr, betas=(s.beta1, 0.999), eps=s.eps,
                                     weight_decay=s.weight_decay, amsgrad=s.amsgrad)
        ema = EMA(model, s.ema_rate) if s.ema else None
        seed_dropout(s.seed, rank, device)
        return cls(model, ema, optimizer)

    def advance(self, per_step: int, n: int) -> None:
        """One optimiser step of ``per_step`` images done; an epoch ends when the next step would not fit."""
        self.step += 1
        self.position += per_step
        self.next_epoch_if_used_up(per_step, n)

    def next_epoch_if_used_up(self, per_step: int, n: int) -> None:
        if self.position + per_step > n:
            self.epoch, self.position = self.epoch + 1, 0

    def save(self, folder: Path, *, settings: Settings, record: ConfigRecord, dist) -> None:
        """Write last.pt (and ema.pt) atomically. Every rank calls it (their dropout streams are gathered); only
        rank 0 writes."""
        streams = _gather(global_state(dist.device), dist)
        if not dist.is_main:
            self.saved_at = self.step
            return
        state = checkpoint_state(self, settings=settings, world=dist.world, record=record, streams=streams)
        save_torch_atomic(state, Path(folder) / LAST)
        self.saved_at = self.step  # before ema.pt: an interruption now is reported with this checkpoint
        if "ema" in state:
            save_torch_atomic(state["ema"], Path(folder) / EMA_FILE)
        else:  # EMA switched off on a resume: an ema.pt left from before would be sampled as this run's weights
            (Path(folder) / EMA_FILE).unlink(missing_ok=True)

    def restore(self, state: dict, *, cfg: dict, settings: Settings, dist, say: Callable[[str], None]) -> None:
        """Continue from a checkpoint: weights, EMA, optimiser, position and this rank's dropout stream. A changed
        Model/Schedule is refused; other trajectory-changing differences from the settings the run trained with
        last are reported."""
        changes = config_changes(ConfigRecord.of_checkpoint(state).current(), cfg)
        fixed = [c for c in changes if c[0].split(".")[0] in RESUME_FIXED_SECTIONS]
        if fixed:
            shown = "; ".join(f"{k}: {a!r} → {b!r}" for k, a, b in fixed[:4])
            raise ResumeError(f"the config's Model/Schedule differ from the checkpoint's ({shown}); resume with "
                              "the run's own config, which is saved as config.yml in the workdir")
        for key, a, b in changes:
            say(f"resume: {key} changed {a!r} → {b!r} from step {state.get('step')} (recorded in config.yml; the run "
                "will not match an uninterrupted one)")
        data = state.get("data") or {}
        same_layout = (data.get("batch_size"), data.get("world_size")) == (settings.batch_size, dist.world)
        if not same_layout:
            say(f"resume: batch {data.get('batch_size')} × {data.get('world_size')} process(es) → "
                f"{settings.batch_size} × {dist.world}: the data order continues, but the run will not match an "
                "uninterrupted one")
        try:
            self.model.load_state_dict(state["model"], strict=True)
            self.optimizer.load_state_dict(state["optimizer"])
            if self.ema is not None and "ema" in state:
                self.ema.load_state_dict(state["ema"])
            self.step, self.epoch, self.position = int(state["step"]), int(state["epoch"]), int(state["position"])
        except (KeyError, RuntimeError, ValueError, TypeError) as err:
            raise ResumeError(f"the checkpoint does not fit the model/optimizer the config builds: "
                              f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
        _apply_optim_settings(self.optimizer, settings)
        if self.ema is not None:
            if "ema" not in state:
                say("resume: the checkpoint has no EMA weights; the EMA restarts from the current weights")
                self.ema.shadow = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.ema.to(next(self.model.parameters()).device)
        streams = (state.get("rng") or {}).get("ranks") or []
        if not (dist.rank < len(streams) and set_global_state(streams[dist.rank], dist.device)):
            seed_dropout(settings.seed, dist.rank, dist.device, self.step)
            if same_layout:
                say("resume: the checkpoint holds no dropout RNG state for this process; dropout continues from a "
                    "new stream (the run will not match an uninterrupted one)")
        self.saved_at = self.step


def checkpoint_state(train: TrainState, *, settings: Settings, world: int, record: ConfigRecord,
                     streams: Optional[list] = None) -> dict:
    """The contents of last.pt (see the module docstring); ``streams``: each rank's ``rng.global_state``."""
    from models.ema import unwrap

    state = {
        "format": CHECKPOINT_FORMAT,
        "model": {k: v.detach().cpu() for k, v in unwrap(train.model).state_dict().items()},
        "optimizer": train.optimizer.state_dict(),
        "step": train.step,
        "epoch": train.epoch,
        "position": train.position,
        "data": {"seed": settings.seed, "batch_size": settings.batch_size, "world_size": world},
        "rng": {"ranks": list(streams or [])},
        "config": record.config,
        "resumes": [dict(r) for r in record.resumes],
        "versions": {"torch": str(torch.__version__), "python": platform.python_version()},
    }
    if train.ema is not None:
        state["ema"] = train.ema.state_dict()
    return state


def load_checkpoint(path: Path) -> dict:
    """A training checkpoint written by this package (raises ResumeError with one line if it is not one)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ResumeError(f"{path} is not a readable training checkpoint ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ResumeError(f"{path} is not a training checkpoint of this project (format {CHECKPOINT_FORMAT})")
    return state


def _stamp(path: Path) -> Optional[tuple]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


@dataclass(frozen=True)
class WorkdirCheckpoint:
    """The workdir's checkpoint as this run found it: the loaded state for --resume, else None."""

    path: Path
    state: Optional[dict]
    stamp: Optional[tuple]

    @classmethod
    def read(cls, workdir: Path, resume: bool) -> "WorkdirCheckpoint":
        """Check the workdir against --resume (a fresh run is refused only when last.pt exists); load the
        checkpoint to resume from."""
        last = checkpoint_path(workdir)
        stamp = _stamp(last)
        if resume:
            if not last.is_file():
                raise NoCheckpointError(f"--resume: no checkpoint at {last}; start the run without --resume")
            return cls(last, load_checkpoint(last), stamp)
        if last.exists():
            raise ResumeError(f"{workdir} already holds a training run ({last}); pass --resume to continue it or "
                              "choose another --workdir")
        return cls(last, None, stamp)

    def check_unchanged(self) -> None:
        """Once the workdir is ours: refuse if another run wrote a checkpoint since ``read``."""
        if _stamp(self.path) != self.stamp:
            raise ResumeError(f"{self.path} changed while this run was starting (another run wrote it); run the "
                              "command again")


def _gather(obj, dist) -> list:
    """Every rank's ``obj`` on rank 0 (a list in rank order; [obj] without a process group)."""
    if dist.world == 1:
        return [obj]
    import torch.distributed as tdist

    out = [None] * dist.world if dist.is_main else None
    tdist.gather_object(obj, out, dst=0)
    return out


def _apply_optim_settings(optimizer: torch.optim.Optimizer, settings: Settings) -> None:
    """The config's Optim values over the ones a resumed optimiser state carries: load_state_dict restores the
    saved hyper-parameters, so a changed beta1/eps/weight_decay would be reported and recorded but not used (lr is
    set at every step by the loop). amsgrad cannot change: Adam's saved state has (or lacks) the running maximum."""
    for group in optimizer.param_groups:
        if bool(group.get("amsgrad", False)) != settings.amsgrad:
            raise ResumeError(f"Optim.amsgrad cannot change on resume ({group.get('amsgrad')} → {settings.amsgrad}): "
                              f"Adam's saved state {'lacks' if settings.amsgrad else 'has'} its running maximum; "
                              f"start a new run for it")
        group["betas"] = (settings.beta1, group["betas"][1])
        group["eps"], group["weight_decay"] = settings.eps, settings.weight_decay
