"""Training an ε-prediction DDPM (Ho et al. 2020, Algorithm 1), the recipe of the released DDIM/PNDM code, made
exactly resumable and torchrun-aware.

Adam with an optional linear warm-up of the learning rate, gradient-norm clipping and an EMA of the weights, as
in the released code; the loss is in ``loss``. ``Train.batch_size`` (else ``Dataset.batch_size``) is the batch of
one process: under torchrun with N processes an optimiser step sees N × batch_size images (``data``).

``--resume`` is exact: the data order, the flips, timesteps and noise are functions of position (seed, epoch,
step, rank), and dropout draws from one stream per rank whose state the checkpoint stores (``rng``). On the CPU
20 steps + resume + 20 steps equal 40 straight steps bit for bit. On GPUs the same holds for the data order and
every random draw, but cuDNN/cuBLAS kernels are not bit-reproducible unless torch's deterministic algorithms are
switched on, so two GPU runs — interrupted or not — agree only to rounding. The job runs on a fork of the global
RNG: the caller's RNG state is the same afterwards.

The workdir is owned by one run at a time (``runners.files.owned_folder``); a fresh run is refused only when
``checkpoints/last.pt`` exists. A run that fails (diverges, is interrupted, crashes) before writing a checkpoint
of its own leaves the workdir as it found it: what it wrote is removed, config.yml restored. Layout::

    W/config.yml               effective config the run trains with now (the file + --set overrides + resolved
                               Train defaults); settings a --resume changed are listed in comments above it,
                               each with the step it took effect from and the value before (also in last.pt,
                               whose 'config' is the one the run started with and 'resumes' the changes)
    W/checkpoints/last.pt      everything needed to resume (see ``state``)
    W/checkpoints/ema.pt       EMA weights as a plain state dict (what ``main.py sample --ckpt`` wants)
    W/tensorboard/             train/loss, train/lr, train/grad_norm, samples/ema (DDIM grid)
    W/samples/step_NNNNNNN.png the same sample grids as PNG files

Modules: ``settings`` (config → Settings), ``state`` (TrainState and its checkpoint), ``data`` (dataset and data
order), ``loss``, ``rng`` (the random streams), ``preview`` (sample grids), ``loop`` (``run_training``).
"""
from .data import epoch_loader, epoch_permutation, rank_batches, to_model_space, training_dataset
from .loop import CONFIG, run_training
from .loss import diffusion_loss, lr_at, step_draws
from .settings import (ConfigRecord, Settings, check_model_config, config_changes, effective_config,
                       resolve_settings)
from .state import (CHECKPOINT_FORMAT, CHECKPOINTS, EMA_FILE, LAST, DivergedError, NoCheckpointError, ResumeError,
                    TrainState, WorkdirCheckpoint, checkpoint_state, load_checkpoint)

__all__ = [
    "run_training", "resolve_settings", "Settings", "ConfigRecord", "check_model_config", "effective_config",
    "config_changes", "TrainState", "WorkdirCheckpoint", "checkpoint_state", "load_checkpoint", "CHECKPOINT_FORMAT",
    "CHECKPOINTS", "LAST", "EMA_FILE", "CONFIG", "ResumeError", "NoCheckpointError", "DivergedError",
    "diffusion_loss", "lr_at", "step_draws", "epoch_permutation", "rank_batches", "epoch_loader", "to_model_space",
    "training_dataset",
]
