"""Writing results safely: atomic files, one temporary-name scheme, and exclusive ownership of an output.

A result file is written under a temporary name in the same folder and renamed over its final name, so a killed
job never leaves a truncated file behind. Every temporary is named ``.<name>.<pid>.tmp``: one pattern, which
``remove_stale_temporaries`` clears when the next owner of the folder starts. Ownership is a ``flock`` on a lock
file: the kernel drops it when the holder dies, so a killed run never blocks a rerun, while a second live writer
is refused with one line naming the holder.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import OutputError

TEMPORARY_SUFFIX = ".tmp"


def temporary_path(path: Path) -> Path:
    """The temporary name a write to ``path`` uses: hidden, per process, in the same folder (same filesystem)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}{TEMPORARY_SUFFIX}")


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable (best effort: not every filesystem lets a folder be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, write: Callable[[Any], None], binary: bool = True, durable: bool = False) -> None:
    """Call ``write(fh)`` on a temporary file and rename it over ``path``; on any failure the temporary is removed
    and ``path`` keeps its previous content. ``durable`` also fsyncs (checkpoints that must survive a crash)."""
    path = Path(path)
    if path.is_dir():  # os.replace would fail with a bare IsADirectoryError
        raise OutputError(f"cannot write {path}: a folder of that name is in the way")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        with open(tmp, "wb" if binary else "w") as fh:
            write(fh)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync_folder(path.parent)


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda fh: fh.write(text), binary=False)


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=1, default=str))


def save_torch_atomic(obj: Any, path: Path) -> None:
    """torch.save, atomically and durably (training checkpoints)."""
    import torch

    write_atomic(path, lambda fh: torch.save(obj, fh), durable=True)


def remove_stale_temporaries(folder: Path, recursive: bool = True) -> None:
    """Temporaries left by a killed writer. Only the folder's owner (see ``OutputLock``) may call this: another
    live writer's temporaries look exactly the same."""
    folder = Path(folder)
    if folder.is_dir():
        pattern = f".*{TEMPORARY_SUFFIX}"
        for tmp in (folder.rglob(pattern) if recursive else folder.glob(pattern)):
            tmp.unlink(missing_ok=True)


def as_json(data: Any) -> Any:
    """``data`` as it reads back from a JSON file (tuples become lists, paths strings): for comparing with one."""
    return json.loads(json.dumps(data, default=str))


def read_json(path: Path) -> dict:
    """A JSON object from ``path``, or {} when the file is missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def check_output_folder(folder: Path, flag: str = "--out") -> Path:
    """Refuse an output folder that cannot be one (an existing file, an unwritable parent), before any work."""
    if not str(folder).strip():
        raise OutputError(f"{flag} is empty; name an output folder")
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{flag} {folder} is a file, not a folder")
    existing = folder
    while not existing.exists():  # the nearest existing ancestor must be a writable folder
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{flag} {folder}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {folder}: {existing} is not writable")
    return folder


def check_output_file(path: Path, flag: str = "--out", example: str = "stats.npz") -> Path:
    """Refuse an output file path that is a folder or sits in an unwritable place, before any work."""
    if not str(path).strip():
        raise OutputError(f"{flag} is empty; name an output file")
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{flag} {path} is a folder; give a file name (e.g. {path / example})")
    check_output_folder(path.parent, flag)
    return path


class OutputLock:
    """Exclusive ownership of an output (a folder's ``.lock`` file, or ``.<name>.lock`` beside a file).

    ``acquire`` either takes the lock or raises OutputError naming the live holder (its pid, command and start
    time). The lock file is removed on release; a process that opened the old file just before is detected by
    comparing inodes, so two owners can never coexist.
    """

    def __init__(self, lock_file: Path, what: Path):
        self.lock_file, self.what, self.fd = Path(lock_file), Path(what), None
        self.created: list[Path] = []  # folders acquire made for the lock, removed on release if nothing was written

    @classmethod
    def for_folder(cls, folder: Path) -> "OutputLock":
        return cls(Path(folder) / ".lock", folder)

    @classmethod
    def for_file(cls, path: Path) -> "OutputLock":
        path = Path(path)
        return cls(path.with_name(f".{path.name}.lock"), path)

    def acquire(self) -> "OutputLock":
        missing = self.lock_file.parent
        while not missing.exists() and missing != missing.parent:
            self.created.append(missing)  # deepest first
            missing = missing.parent
        while True:
            try:
                self.lock_file.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise OutputError(f"cannot write to {self.what}: {e.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise OutputError(f"{self.what} is being written by another run ({holder}); wait for it to "
                                  f"finish or choose another output") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.lock_file).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the previous owner removed this file after we opened it: take the new one
        os.ftruncate(fd, 0)
        command = " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv))[:200]
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, '{command}', since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            self.lock_file.unlink(missing_ok=True)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
        if not self.what.exists():  # a run that failed before writing leaves no folders it made behind
            for folder in self.created:
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only if empty
        self.created = []

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@dataclass
class Ownership:
    """What ``owned_folder`` yields. The job sets ``keep`` as soon as the folder holds something worth keeping
    (a result of this run, or results of an earlier run that this one continues)."""

    folder: Path
    created: bool
    keep: bool = False


@contextlib.contextmanager
def owned_folder(folder: Path, bookkeeping: tuple[str, ...] = ()) -> Iterator[Ownership]:
    """Own ``folder`` for the duration: create it, lock it, clear stale temporaries.

    If the body fails before setting ``ownership.keep``, the folder holds nothing of value: the ``bookkeeping`` files
    (e.g. a 'running' manifest) are removed, and the folder too if this call created it, so that the corrected
    command starts clean. Under torchrun only rank 0 owns the folder (``distributed.main_owns``).
    """
    folder = Path(folder)
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create {folder}: {e.strerror}") from None
    own = Ownership(folder, created)
    lock = OutputLock.for_folder(folder)
    try:
        lock.acquire()
    except OutputError:
        if created:  # nobody else can be using a folder we just made; tidy up anyway
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    try:
        remove_stale_temporaries(folder)
        yield own
    except BaseException:
        if not own.keep:
            for name in bookkeeping:
                if not (folder / name).is_dir():  # a folder in the way is the user's, not this run's
                    (folder / name).unlink(missing_ok=True)
        raise
    finally:
        lock.release()
        if created and not own.keep:
            _remove_empty_tree(folder)


def _remove_empty_tree(folder: Path) -> None:
    """Remove ``folder`` and its empty subfolders; anything holding a file stays."""
    with contextlib.suppress(OSError):
        for path in sorted(folder.rglob("*"), reverse=True):  # deepest first
            if path.is_dir():
                path.rmdir()
        folder.rmdir()
