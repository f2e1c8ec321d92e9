"""What a user can fix versus what is a bug.

Every error a user can fix by changing a flag, a config key or a file — a bad value, a missing or mismatched
checkpoint, unusable statistics, an output folder held by another run — is a ``UserError``: ``main.py`` prints
it as one line and exits 2. Anything else is a bug and keeps its traceback. Library functions below the runners
(``samplers``, ``models``) raise ``ValueError``/``CheckpointError``; the runners translate the ones that come from
user input at the point where they validate it, so that an internal ``ValueError`` is never mistaken for one.
"""
from __future__ import annotations


class UserError(Exception):
    """Something the user can fix; printed as ``error: <message>`` with exit code 2."""


class ArgumentError(UserError, ValueError):
    """A command-line value or sampler setting that cannot be used."""


class ConfigError(UserError, ValueError):
    """A config that cannot be used; the message names the file and the key."""


class StatsError(UserError, ValueError):
    """FID statistics that are missing, malformed, non-finite or from another feature network."""


class DatasetError(UserError, FileNotFoundError):
    """A dataset or image file that is missing or unreadable."""


class OutputError(UserError):
    """An output path that cannot be written: not a folder, not writable, held by another run, or holding
    results of a different configuration."""


class ModelOutputError(UserError, FloatingPointError):
    """The network returned a non-finite or misshapen ε (a broken checkpoint or a diverging schedule)."""


class MissingFileError(UserError, FileNotFoundError):
    """An input file (checkpoint, weights, statistics) that does not exist."""
