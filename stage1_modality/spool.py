"""The spool folder: where a received dataset becomes durable before it is acknowledged.

The spool is stage 1's durable queue. A file appears under its final name
(``<receipt key>.dcm``) only after its bytes are fsynced and the dataset has passed validation,
and a success status is answered only after the folder is fsynced as well, so the name is on
disk too. The database row follows (group commit, off the acknowledgement path); a file that a
crash left without its row is adopted at the next start (:meth:`Stage1Service.recover
<stage1_modality.service.Stage1Service.recover>`), so "on disk under its final name" is what
the success status promises, and the restart picks it up.

Two things keep that promise cheap (measured on the stage-1 ingest benchmark):

* Creating a file waits for any journal commit in progress, and commits are frequent while
  instances are fsynced: it cost about 0.5 ms of each instance's turn. :class:`SpareFiles`
  creates the temporary files ahead of need, on its own thread, so an association only takes
  one that is ready.
* :class:`FolderSync` fsyncs the folder once for every association waiting at that moment:
  each caller renamed its file before it asked, so one fsync that starts after a request covers
  that request.

(Asking the kernel to start writing each fragment back early, with ``sync_file_range``, did not
shorten the fsync here and doubled the receive time: not done.)
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections import deque
from pathlib import Path

from appliance.durable import FILE_MODE, fsync_dir


class SpareFiles:
    """Empty temporary files in one folder, created ahead of need (see the module docstring).

    They are hidden (``.spare-….tmp``): a crash leaves only files the next start sweeps.
    """

    def __init__(self, folder: Path, keep: int = 8) -> None:
        self.folder = folder
        self.keep = keep
        self._spares: deque[tuple[Path, int]] = deque()
        self._wanted = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._fill, name="spool-spares", daemon=True)
        self._thread.start()

    def take(self) -> tuple[Path, int]:
        """A temporary file (path, read-write descriptor), made now if none is ready."""
        self._wanted.set()
        try:
            return self._spares.popleft()
        except IndexError:
            return self._create()

    def close(self) -> None:
        self._closed = True
        self._wanted.set()
        self._thread.join(5)
        while self._spares:
            path, fd = self._spares.popleft()
            with contextlib.suppress(OSError):
                os.close(fd)
                path.unlink(missing_ok=True)

    def _create(self) -> tuple[Path, int]:
        path = self.folder / f".spare-{uuid.uuid4().hex}.tmp"
        # Read-write: the validation reads the file back through an mmap of the page cache.
        return path, os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, FILE_MODE)

    def _fill(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            while not self._closed and len(self._spares) < self.keep:
                try:
                    self._spares.append(self._create())
                except OSError:  # the folder is unusable: take() makes (and reports) its own
                    break
            if self._closed:
                return


class SpoolFile:
    """A temporary file that becomes ``target``, written fragment by fragment, then published."""

    def __init__(self, target: Path, spare: tuple[Path, int]) -> None:
        self.target = target
        self.tmp, self.fd = spare
        self.size = 0

    def write(self, data: memoryview | bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            self.size += written
            view = view[written:]

    def sync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1

    def publish(self) -> None:
        """Rename into place (the caller fsyncs the folder, see :class:`FolderSync`)."""
        self.close()
        os.replace(self.tmp, self.target)

    def abandon(self) -> None:
        """Nothing of it is kept: the association ended early, a write failed, or it is bad.

        If even the unlink fails (the folder is gone), the next start sweeps the file."""
        self.close()
        with contextlib.suppress(OSError):
            self.tmp.unlink(missing_ok=True)


class FolderSync:
    """Group fsync of one folder for any number of threads (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._changed = threading.Condition()
        self._requested = 0  # requests made so far
        self._covered = 0  # requests covered by a finished fsync
        self._running = False

    def sync(self) -> None:
        """Return once an fsync of the folder that started after this call has finished."""
        with self._changed:
            self._requested += 1
            ticket = self._requested
            while self._covered < ticket:
                if self._running:
                    self._changed.wait()
                    continue
                self._running = True
                covers = self._requested
                self._changed.release()
                try:
                    fsync_dir(self.folder)
                finally:
                    self._changed.acquire()
                    self._running = False
                    self._changed.notify_all()
                self._covered = max(self._covered, covers)
