"""Tuned time-grid files: what ``main.py tune-grid`` writes and ``sample``/``ablate --timesteps-file`` read.

A grid file is JSON. ``timesteps`` is the grid (descending, ending with −1); ``method`` is the base method it was
tuned for; ``checkpoint_sha256`` and ``schedule`` name the network and noise schedule it was tuned on. A grid tuned
for one network or solver is a guess for another, so using it elsewhere is refused unless the user says
``--force``; a grid that does not fit the schedule (a timestep beyond its last) is refused always.
"""
from __future__ import annotations

import hashlib
import json
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

    @property
    def sha256(self) -> str:
        """A fingerprint of the grid itself (not of the file: a re-saved file with the same grid is the same)."""
        return hashlib.sha256(json.dumps([float(t) for t in self.timesteps]).encode()).hexdigest()


def read_grid_file(path) -> GridFile:
    """Read and check a grid file; every problem is one ``UserError`` naming the file."""
    path = Path(path)
    if not str(path).strip() or not path.is_file():
        raise MissingFileError(f"grid file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is not a grid file (unreadable JSON: {e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("timesteps"), list) \
            or not isinstance(data.get("method"), str):
        raise UserError(f"{path} is not a grid file (it needs a 'timesteps' list and a 'method'; write one with "
                        f"'main.py tune-grid')")
    try:
        timesteps = tuple(float(t) for t in data["timesteps"])
    except (TypeError, ValueError):
        raise UserError(f"{path}: 'timesteps' must be a list of numbers") from None
    nfe = data.get("nfe")
    return GridFile(str(path), timesteps, data["method"], int(nfe) if isinstance(nfe, int) else None,
                    data.get("checkpoint_sha256"), data.get("schedule"))


def check_grid_for(grid: GridFile, method: str, checkpoint_sha256: str, schedule_section: dict,
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
    if grid.checkpoint_sha256 and grid.checkpoint_sha256 != checkpoint_sha256:
        mismatches.append(f"it was tuned for checkpoint {grid.checkpoint_sha256[:12]}…, this one is "
                          f"{checkpoint_sha256[:12]}…")
    if grid.schedule is not None and _schedule_key(grid.schedule) != _schedule_key(schedule_section):
        mismatches.append(f"it was tuned for schedule {grid.schedule}, this config's is {schedule_section}")
    if mismatches and not force:
        raise ArgumentError(f"grid file {grid.path}: {'; '.join(mismatches)} (add --force to use it anyway)")


def _schedule_key(section: dict) -> tuple:
    """The values that define ā (the released config's keys, with their defaults)."""
    section = dict(section or {})
    return (str(section.get("type", "linear")).lower(), float(section.get("beta_start", 1e-4)),
            float(section.get("beta_end", 0.02)), int(section.get("diffusion_step", 1000)))
