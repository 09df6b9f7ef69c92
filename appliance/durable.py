"""Durable file writes: what a C-STORE success status promises.

A file is written to a temporary name in its final folder, flushed and fsynced, renamed into
place, and the folder is fsynced so the rename itself survives a power cut. A reader therefore
sees either no file or the whole file, never a torn one.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from pathlib import Path

FILE_MODE = 0o600
FOLDER_MODE = 0o700


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(folder: Path) -> None:
    """Create ``folder`` and each missing parent with mode 0700 (they hold patient data).

    ``Path.mkdir(parents=True)`` would give the parents the umask's mode, so each level is made
    and chmodded here; a level made meanwhile by another process is fine.
    """
    missing: list[Path] = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=FOLDER_MODE)
        except FileExistsError:
            continue
        os.chmod(path, FOLDER_MODE)


def write_atomic(target: Path, data: bytes | Iterable[bytes], *, sync_dir: bool = True) -> None:
    """Write ``data`` to ``target`` atomically and durably (see module docstring)."""
    publish(write_temporary(target, data), target, sync_dir=sync_dir)


def write_temporary(target: Path, data: bytes | Iterable[bytes]) -> Path:
    """The first half of :func:`write_atomic`: ``data`` fsynced under a hidden temporary name
    beside ``target``. Lets a caller write while it still checks the data, then
    :func:`publish` it, or unlink the temporary file if the data turns out to be bad."""
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as out:
            if isinstance(data, bytes | bytearray | memoryview):
                out.write(data)
            else:
                for part in data:
                    out.write(part)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def publish(tmp: Path, target: Path, *, sync_dir: bool = True) -> None:
    """The second half of :func:`write_atomic`: rename into place, then fsync the folder."""
    try:
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_dir(target.parent)
