"""Tuned time-grid files: what ``main.py tune-grid`` writes and ``sample``/``ablate --timesteps-file`` read.

A grid file is JSON. ``timesteps`` is the grid (descending, ending with −1); ``method`` is the base method it was
tuned for; ``checkpoint_sha256`` and ``schedule`` name the network and noise schedule it was tuned on. A grid tuned
for one network or solver is a guess for another, so using it elsewhere is refused unless the user says
``--force`` — so is a file that does not say which network and schedule it was tuned on (a hand-written grid);
a grid that does not fit the schedule (a timestep beyond its last) or does not end at −1 is refused always.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .errors import ArgumentError, MissingFileError, UserError

FORMAT = "pndm-time-grid/1"


@dataclass(frozen=True)
class GridFile:
    """A grid file's content, checked for form (not yet against a job)."""

    path: str
    timesteps: tuple
    method: str  # the base method the grid was tuned for
    nfe: Optional[int]
    checkpoint_sha256: Optional[str]
    schedule: Optional[dict]
    ema: bool = True  # tuned on the checkpoint's EMA weights (the config's Model.ema), as sampling uses by default

    @property
    def sha256(self) -> str:
        """A fingerprint of the grid itself (not of the file: a re-saved file with the same grid is the same)."""
        return hashlib.sha256(json.dumps([float(t) for t in self.timesteps]).encode()).hexdigest()


def is_grid_file(path) -> bool:
    """Whether ``path`` holds JSON written as a grid file (``format``), whatever else it says."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT


def read_grid_file(path) -> GridFile:
    """Read and check a grid file; every problem is one ``UserError`` naming the file."""
    path = Path(path)
    if not str(path).strip() or not path.is_file():
        raise MissingFileError(f"grid file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is not a grid file (unreadable JSON: {e})") from None
    if isinstance(data, dict) and data.get("format") == "pndm-learned-solver/1":  # runners/solver_files.py
        raise UserError(f"{path} is a learned-solver file, not a grid file: give it as --solver-file")
    if not isinstance(data, dict) or not isinstance(data.get("timesteps"), list) \
            or not isinstance(data.get("method"), str):
        raise UserError(f"{path} is not a grid file (it needs a 'timesteps' list and a 'method'; write one with "
                        f"'main.py tune-grid')")
    timesteps = tuple(_timestep(path, t) for t in data["timesteps"])
    if len(timesteps) < 2:
        raise UserError(f"{path}: 'timesteps' needs at least two entries (a start and the final -1)")
    if timesteps[-1] != -1.0:
        # every engine treats only a final −1 as the step to the data (ā = 1); a grid that stops at t ≥ 0 would
        # return noisy images, or extrapolate the wrong way, and still look like a run
        raise UserError(f"{path}: 'timesteps' must end at -1 (the step to the data); it ends at {timesteps[-1]:g}")
    method = _tuned_method(path, data["method"])
    nfe = data.get("nfe")
    if nfe is not None:
        expected = method.nfe(len(timesteps) - 1)
        if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe != expected:
            raise UserError(f"{path}: 'nfe' is {nfe!r}, but {method.name} on these {len(timesteps) - 1} steps "
                            f"makes {expected} model evaluations")
    return GridFile(str(path), timesteps, data["method"], nfe, *recorded_identity(path, data))


def recorded_identity(path: Path, data: dict) -> tuple:
    """(checkpoint_sha256, schedule, ema) as a tuned file records them (None where it does not; ema: the recorded
    config's Model.ema, true when not recorded), checked for form."""
    sha = data.get("checkpoint_sha256")
    if sha is not None and not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)):
        raise UserError(f"{path}: 'checkpoint_sha256' must be 64 lowercase hex digits, got {sha!r}")
    schedule = data.get("schedule")
    if schedule is not None:
        try:
            _schedule_key(schedule)
        except (TypeError, ValueError):
            raise UserError(f"{path}: 'schedule' must be a config's Schedule section (type, beta_start, beta_end, "
                            f"diffusion_step), got {schedule!r}") from None
    model = data["config"].get("Model") if isinstance(data.get("config"), dict) else None
    ema = model.get("ema", True) if isinstance(model, dict) else True
    if not isinstance(ema, bool):
        raise UserError(f"{path}: the recorded config's Model.ema must be true or false, got {ema!r}")
    return sha, schedule, ema


def identity_mismatches(checkpoint_recorded: Optional[str], schedule_recorded: Optional[dict], ema_recorded: bool,
                        checkpoint_sha256: str, schedule_section: dict, ema: bool) -> list:
    """What differs between the network and schedule a file was tuned on and the job's (phrases for an error);
    ``ema``: whether the job samples the checkpoint's EMA weights (Model.ema), another network of the same file."""
    mismatches = []
    if ema_recorded != ema:
        words = {True: "EMA weights", False: "raw weights (Model.ema: false)"}
        mismatches.append(f"it was tuned on the checkpoint's {words[ema_recorded]}, this run uses its {words[ema]}")
    if checkpoint_recorded is None:
        mismatches.append("it does not record the checkpoint it was tuned for ('checkpoint_sha256')")
    elif checkpoint_recorded != checkpoint_sha256:
        mismatches.append(f"it was tuned for checkpoint {checkpoint_recorded[:12]}…, this one is "
                          f"{checkpoint_sha256[:12]}…")
    if schedule_recorded is None:
        mismatches.append("it does not record the schedule it was tuned for ('schedule')")
    elif _schedule_key(schedule_recorded) != _schedule_key(schedule_section):
        mismatches.append(f"it was tuned for schedule {schedule_recorded}, this config's is {schedule_section}")
    return mismatches


def _timestep(path: Path, t) -> float:
    """One entry of 'timesteps' as a float: a JSON number, finite (a bool or a string is not a timestep)."""
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
        raise UserError(f"{path}: 'timesteps' must be a list of numbers (finite ones), got {t!r}")
    return float(t)


def _tuned_method(path: Path, name: str):
    """The method a grid file says it was tuned for, if grids can be tuned for it (deterministic, fixed-step)."""
    from samplers.tuning import tunable_method

    try:
        return tunable_method(name)[0]
    except ValueError as e:
        raise UserError(f"{path}: {e}") from None


def check_grid_for(grid: GridFile, method: str, checkpoint_sha256: str, schedule_section: dict, ema: bool,
                   force: bool) -> None:
    """Refuse a grid tuned for another method, checkpoint or schedule unless ``force``."""
    from samplers import get_method

    mismatches = []
    try:
        tuned_for = get_method(grid.method).name
    except ValueError:
        tuned_for = grid.method
    if tuned_for.upper() != get_method(method).name.upper():
        mismatches.append(f"it was tuned for {grid.method}, not {method}")
    mismatches += identity_mismatches(grid.checkpoint_sha256, grid.schedule, grid.ema, checkpoint_sha256,
                                      schedule_section, ema)
    if mismatches and not force:
        raise ArgumentError(f"grid file {grid.path}: {'; '.join(mismatches)} (add --force to use it anyway)")


def _schedule_key(section: dict) -> bytes:
    """The ā table a Schedule section describes, as NoiseSchedule builds it (so every spelling of one schedule,
    improved-diffusion's ``noise_schedule`` included, is the same key, and the defaults are NoiseSchedule's)."""
    from samplers import NoiseSchedule

    if not isinstance(section, dict):
        raise TypeError(f"a Schedule section is a mapping, got {type(section).__name__}")
    return NoiseSchedule.from_config(section).alphas_cumprod.tobytes()
