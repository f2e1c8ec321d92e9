"""Learned-solver files: what ``main.py tune-solver`` writes and ``sample``/``ablate --solver-file`` read.

A solver file is JSON: ``solver`` holds the ``samplers.LearnedSolver`` (its grid, network times and coefficients,
as ``LearnedSolver.as_dict``), ``checkpoint_sha256`` and ``schedule`` the network and noise schedule it was learned
on, and the rest records how it was learned and how it compared. Its coefficients hold for that network only, so
using it with another checkpoint or schedule — or a file that does not say which (hand-written) — is refused unless
the user says ``--force``; a solver that does not fit the schedule (a timestep beyond its last) is refused always.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from samplers import LearnedSolver

from .errors import ArgumentError, MissingFileError, UserError
from .grid_files import FORMAT as GRID_FORMAT
from .grid_files import identity_mismatches, recorded_identity

FORMAT = "pndm-learned-solver/1"


@dataclass(frozen=True)
class SolverFile:
    """A solver file's content, checked for form (not yet against a job)."""

    path: str
    solver: LearnedSolver
    checkpoint_sha256: Optional[str]
    schedule: Optional[dict]
    ema: bool = True  # learned on the checkpoint's EMA weights (the recorded config's Model.ema)


def is_solver_file(path) -> bool:
    """Whether ``path`` holds JSON written as a solver file (``format``), whatever else it says."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT


def read_solver_file(path) -> SolverFile:
    """Read and check a solver file; every problem is one ``UserError`` naming the file."""
    path = Path(path)
    if not str(path).strip() or not path.is_file():
        raise MissingFileError(f"solver file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is not a solver file (unreadable JSON: {e})") from None
    if isinstance(data, dict) and data.get("format") == GRID_FORMAT:
        raise UserError(f"{path} is a grid file, not a learned-solver file: give it as --timesteps-file")
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("solver"), dict):
        raise UserError(f"{path} is not a solver file (it needs format {FORMAT!r} and a 'solver'; write one with "
                        f"'main.py tune-solver')")
    try:
        solver = LearnedSolver.from_dict(data["solver"])
    except ValueError as e:
        raise UserError(f"{path}: {e}") from None
    return SolverFile(str(path), solver, *recorded_identity(path, data))


def check_solver_for(solver_file: SolverFile, checkpoint_sha256: str, schedule_section: dict, ema: bool,
                     force: bool) -> None:
    """Refuse a solver learned on another checkpoint (or its other weights) or schedule unless ``force``."""
    mismatches = identity_mismatches(solver_file.checkpoint_sha256, solver_file.schedule, solver_file.ema,
                                     checkpoint_sha256, schedule_section, ema)
    if mismatches and not force:
        raise ArgumentError(f"solver file {solver_file.path}: {'; '.join(mismatches)} (add --force to use it "
                            f"anyway)")
