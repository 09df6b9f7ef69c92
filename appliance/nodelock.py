"""One running node per role and working folder.

Two ``serve`` processes of the same node on the same configuration would share a spool, a store
and the heartbeat row: the second would sweep and re-queue the first one's work, and its failed
start (port in use) would mark the running node as stopped. An exclusive POSIX record lock
(``lockf``) on a file in ``work_dir``, taken before anything else starts, makes the second one
fail at once with a clear message. A record lock, not ``flock``: it belongs to the process, so
worker processes forked later do not inherit it, and the kernel drops it when the node dies,
even by SIGKILL while orphaned workers are still finishing. (Being per process, it does not
guard against a second node inside the same process; nodes are separate processes.)
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class NodeAlreadyRunning(OSError):
    """Another process serves this role from this working folder."""


class NodeLock:
    """An exclusive, non-blocking lock on ``work_dir/.tce-<role>.lock``; the file holds the
    owner's pid for the message a second node prints."""

    def __init__(self, work_dir: Path, role: str) -> None:
        self.path = work_dir / f".tce-{role}.lock"
        self.role = role
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # EACCES or EAGAIN: held by another process
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise NodeAlreadyRunning(
                f"another {self.role} node (pid {holder}) is already running with this"
                f" configuration ({self.path})") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd

    def release(self) -> None:
        """Give the lock up; the file stays (removing it would race with a new owner)."""
        if self._fd is not None:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
