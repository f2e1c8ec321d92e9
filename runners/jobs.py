"""Jobs as typed values. The CLI (``runners/cli.py``) turns flags + the validated config into one of these, once,
after every check; a job never reads argparse or goes back to the config for a setting (it carries the config
only to record it next to its results).

A job's *identity* is every setting that changes its numbers: two runs with equal identities write the same
files, and a folder holding results of another identity is refused instead of being mixed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from samplers import LearnedSolver, NoiseSchedule

from .setup import ModelSpec


@dataclass(frozen=True)
class FidSpec:
    """How samples are scored: the reference statistics and the feature network that must match them."""

    stats_path: str
    stats_sha256: str
    reference: dict  # loaded and validated statistics (see fid.load_stats)
    extractor: str  # 'inception' | 'digits'
    extractor_weights: Optional[str]
    extractor_sha256: Optional[str]

    def identity(self) -> dict:
        return {"stats_sha256": self.stats_sha256, "extractor": self.extractor,
                "extractor_sha256": self.extractor_sha256}


@dataclass(frozen=True)
class Sampling:
    """One sampler setting: the validated plan's method name, steps, convention and η — or, instead of a built-in
    grid, the ``timesteps`` of a tuned grid file (then ``steps`` is its number of steps) — or a learned ``solver``
    (``main.py tune-solver``; ``method`` is then its base method and ``timesteps`` its grid)."""

    method: str
    steps: Optional[int]
    convention: str
    eta: Optional[float] = None
    nfe: Optional[int] = None  # known in advance except for adaptive methods
    timesteps: Optional[tuple] = None  # a tuned grid (main.py tune-grid), replacing the method's own
    solver: Optional[LearnedSolver] = None  # a learned solver (main.py tune-solver)
    # the grid or solver file it came from, for the manifest's config (not part of what the setting is)
    file: Optional[str] = field(default=None, compare=False)

    @property
    def label(self) -> str:
        """The name tables and folders use: the method, marked ``@tuned`` when it runs on a tuned grid and
        ``@learned`` for a learned solver."""
        if self.solver is not None:
            return f"{self.method}@learned"
        return self.method if self.timesteps is None else f"{self.method}@tuned"

    def sample_kwargs(self) -> dict:
        """The arguments ``samplers.sample`` takes for this setting (besides model, x_T and schedule)."""
        if self.solver is not None:
            return dict(method=self.solver, convention=self.convention)
        if self.timesteps is not None:
            return dict(method=self.method, timesteps=list(self.timesteps), convention=self.convention, eta=self.eta)
        return dict(method=self.method, steps=self.steps, convention=self.convention, eta=self.eta)


@dataclass(frozen=True)
class SampleJob:
    """``main.py sample``: images 0..num_samples−1 of one sampler setting into ``out``."""

    config: dict
    out: Path
    sampling: Sampling
    schedule: NoiseSchedule
    model: ModelSpec
    num_samples: int
    seed: int
    batch_size: int
    image_shape: tuple
    device: Optional[str] = None
    fid: Optional[FidSpec] = None

    @property
    def centered(self) -> bool:
        """Whether the model's data live in [-1, 1] (else [0, 1]: score-SDE's ``Model.centered: false``)."""
        return is_centered(self.config)

    def identity(self) -> dict:
        """What must match for two runs to write the same images (batch size and sample count excluded)."""
        cfg = self.config
        identity = {
            "method": self.sampling.method, "steps": self.sampling.steps, "convention": self.sampling.convention,
            "eta": self.sampling.eta, "seed": self.seed, "precision": self.model.precision,
            "image_shape": list(self.image_shape), "checkpoint_sha256": self.model.checkpoint_sha256,
            "Schedule": _schedule_identity(cfg.get("Schedule", {})),
            "Model": {k: v for k, v in cfg.get("Model", {}).items() if k != "ckpt"},
        }
        if self.sampling.nfe is None and self.sampling.convention == "official" and self.schedule.kind != "linear":
            # PF under the official convention integrates the released linear VP SDE on quad/cosine since
            # 2026-12-02 (before, the schedule's own process): folders of the old images are another setting
            identity["pf_process"] = "released linear VP SDE"
        if self.sampling.timesteps is not None:  # only then: folders of built-in grids keep their identity
            identity["timesteps"] = list(self.sampling.timesteps)
        if self.sampling.solver is not None:
            identity["solver_sha256"] = self.sampling.solver.sha256
        return identity


@dataclass(frozen=True)
class FidJob:
    """``main.py fid``: the FID of a folder of images."""

    samples: Path
    fid: FidSpec
    image_shape: tuple
    device: Optional[str] = None


@dataclass(frozen=True)
class StatsJob:
    """``main.py stats``: reference statistics of an image folder or a dataset split."""

    out: Path
    extractor: str
    extractor_weights: Optional[str]
    batch_size: int
    image_shape: tuple
    source: Optional[Path] = None  # an image folder, or None for the dataset below
    dataset: Optional[dict] = None  # the config's Dataset section
    split: str = "train"
    device: Optional[str] = None


@dataclass(frozen=True)
class AblateJob:
    """``main.py ablate``: every (sampler setting, seed) cell sampled into its own folder and scored."""

    config: dict
    out: Path
    cells: tuple  # of Sampling, in table order
    seeds: tuple
    schedule: NoiseSchedule
    model: ModelSpec
    fid: FidSpec
    num_samples: int
    batch_size: int
    reference_samples: int
    image_shape: tuple
    noise_floor_split: Optional[str] = None  # the dataset split whose real images give the noise floor
    device: Optional[str] = None

    def cell_dir(self, cell: Sampling, seed: int) -> Path:
        name = cell.label if cell.steps is None else f"{cell.label}-{cell.steps}"
        return self.out / name / f"seed{seed}"

    def sample_job(self, cell: Sampling, seed: int) -> SampleJob:
        return SampleJob(config=self.config, out=self.cell_dir(cell, seed), sampling=cell,
                         schedule=self.schedule, model=self.model, num_samples=self.num_samples, seed=seed,
                         batch_size=self.batch_size, image_shape=self.image_shape, device=self.device)


OBJECTIVES = ("teacher", "fid")  # what ``main.py tune-grid`` fits a grid to


@dataclass(frozen=True)
class TuneJob:
    """``main.py tune-grid``: a time grid for ``method`` at ``nfe`` evaluations, learned on this network."""

    config: dict
    out: Path  # the grid file
    method: str  # as given: BASE or BASE@spacing (the spacing the tuning starts from)
    nfe: int
    schedule: NoiseSchedule
    model: ModelSpec
    num_samples: int  # tuning noise (the library holds part of it out)
    eval_samples: int  # further noise for the final comparison with the fixed spacings
    seed: int
    iterations: Optional[int]
    batch_size: int
    image_shape: tuple
    device: Optional[str] = None
    loss: str = "log"  # samplers.tune_timesteps' loss, learn_first and last
    learn_first: bool = False
    last: Optional[float] = None
    objective: str = "teacher"  # or "fid": samplers.search_timesteps on the FID of ``fid``
    evaluations: Optional[int] = None
    fid: Optional[FidSpec] = None


@dataclass(frozen=True)
class TuneSolverJob:
    """``main.py tune-solver``: a learned solver (``samplers.learn_solver``) for ``nfe`` evaluations of this network."""

    config: dict
    out: Path  # the solver file
    nfe: int
    schedule: NoiseSchedule
    model: ModelSpec
    num_samples: int  # tuning noise (the library holds ``holdout`` of it out)
    eval_samples: int  # further noise for the final comparison with every fixed spacing
    seed: int
    iterations: int
    batch_size: int
    image_shape: tuple
    compare: tuple  # the methods whose fixed spacings the solver is compared with
    device: Optional[str] = None
    affine: bool = False
    history: int = 3
    holdout: int = 64


@dataclass(frozen=True)
class TrainJob:
    """``main.py train``: train (or resume) in ``workdir``; ``settings`` are the resolved Train/Optim values."""

    config: dict
    settings: object  # runners.training.settings.Settings
    workdir: Path
    resume: bool = False
    device: Optional[str] = None


def _schedule_identity(section: dict) -> dict:
    """The Schedule section as folder identity. A schedule named only by improved-diffusion's ``noise_schedule``
    was read as linear before 2026-12-02 and is its own kind since: the kind is added, so that images made under
    the old reading are another setting. Every other section is unchanged (their folders keep their identity)."""
    if "noise_schedule" in section and "type" not in section:
        return {**section, "type": str(section["noise_schedule"]).lower()}
    return section


def is_centered(config: dict) -> bool:
    """Whether a config's model works on data in [-1, 1] (every released network) or in [0, 1] (score-SDE's
    ``Model.centered: false``): what images and distances must be converted by."""
    return config.get("Model", {}).get("centered", True) is not False
