"""``tce stage2 serve``: the stage-2 node's scheduler loop (APScheduler) and its C-ECHO SCP.

Four periodic jobs share one BackgroundScheduler; each runs at most once at a time and missed
runs are coalesced, so a slow export never piles up behind itself:

* **media watch** (every ``poll_seconds``): ``stage2.media_watch_dir`` is a mount point or a
  folder where media are dropped. The folder itself (a USB stick mounted there) or each
  subfolder holding a DICOMDIR or DICOM files is imported once it has been *stable* (same files,
  sizes and modification times) for one poll interval, so a copy still in progress is never
  imported half-way. Each state of a folder is imported once; the importer itself also
  recognises media it has seen before.
* **export** (every ``poll_seconds``): :func:`.exporter.export_due`, which also releases DELAYED
  jobs and retries failed attempts when their back-off has passed.
* **retention** (at start, then hourly): :func:`.retention.apply_retention`.
* **heartbeat**: the ``heartbeats`` row of node ``stage2``, written by
  :class:`appliance.heartbeat.NodeHeartbeat` in its own thread (every few seconds, whatever
  ``poll_seconds`` is), with the AE title and port of the SCP below, which is where
  ``tce status --echo`` finds it.

Beside the loop, :class:`.echo.EchoSCP` listens on ``stage2.bind``:``stage2.port`` and answers
C-ECHO only (Verification SOP Class; storage is refused, so media stay the only way in). It
binds its address *before* the heartbeat row is written: a second ``serve`` started by mistake
on the same database and port then fails without touching the row of the node that runs (it
would otherwise take the row over and record a ``node.stopped`` that makes the running node
look stopped).

SIGTERM or SIGINT stops the node: the SCP stops listening, an export in progress stops between
two instances (what was acknowledged is recorded), running jobs are waited for, and
:func:`serve` returns 0. Logs carry job ids, counts and hashed media references, never a
patient value or a folder name.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.orm import Session, sessionmaker

from appliance.db import open_database, session_factory
from appliance.durable import make_dirs
from appliance.heartbeat import NodeHeartbeat
from appliance.keys import KeyRing
from appliance.logging import get_logger
from appliance.models import Node
from appliance.nodelock import NodeLock
from appliance.settings import Settings
from stage2_export_manager.echo import EchoSCP
from stage2_export_manager.exporter import export_due, outbox_dir
from stage2_export_manager.retention import apply_retention

LOG = get_logger("tce.stage2.scheduler")
RETENTION_SECONDS = 3600
_SCAN_LIMIT = 64  # files probed for "DICM" before a folder counts as holding no DICOM


@dataclass(frozen=True)
class Signature:
    files: int
    size: int
    newest_ns: int


def signature(folder: Path) -> Signature:
    """Count, total size and newest mtime of the files below ``folder``: equal means unchanged."""
    files = size = newest = 0
    for root, _dirs, names in os.walk(folder):
        for name in names:
            try:
                st = os.stat(os.path.join(root, name))
            except FileNotFoundError:
                continue
            files, size, newest = files + 1, size + st.st_size, max(newest, st.st_mtime_ns)
    return Signature(files, size, newest)


def holds_media(folder: Path) -> bool:
    """A DICOMDIR at the top, or a Part 10 file among the first few found below."""
    try:
        if any(entry.name.upper() == "DICOMDIR" and entry.is_file()
               for entry in os.scandir(folder)):
            return True
    except OSError:
        return False
    probed = 0
    for root, _dirs, names in os.walk(folder):
        for name in names:
            try:
                with open(os.path.join(root, name), "rb") as fh:
                    if fh.read(132)[128:132] == b"DICM":
                        return True
            except OSError:
                pass
            probed += 1
            if probed >= _SCAN_LIMIT:
                return False
    return False


def media_ref(path: Path) -> str:
    """A folder named in logs: a hash, since operators name folders after patients."""
    return hashlib.sha256(str(path).encode()).hexdigest()[:12]


class MediaWatcher:
    """Imports each stable media folder below ``watch_dir`` once per state (see module doc)."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        assert settings.stage2.media_watch_dir is not None
        self.settings, self.sessions = settings, sessions
        self.watch_dir = settings.stage2.media_watch_dir
        self._seen: dict[Path, Signature] = {}
        self._done: dict[Path, Signature] = {}

    def candidates(self) -> list[Path]:
        if not self.watch_dir.is_dir():
            return []
        if holds_media_at_top(self.watch_dir):
            return [self.watch_dir]
        try:
            return sorted(Path(e.path) for e in os.scandir(self.watch_dir)
                          if e.is_dir() and not e.name.startswith("."))
        except OSError:
            return []

    def poll(self) -> list[Any]:
        """Look once; import what has been stable since the last look. Returns the results."""
        results = []
        for folder in self.candidates():
            sig = signature(folder)
            previous, self._seen[folder] = self._seen.get(folder), sig
            if not sig.files or previous != sig or self._done.get(folder) == sig:
                continue
            self._done[folder] = sig
            if not holds_media(folder):
                continue
            results.append(self._import(folder))
        return results

    def _import(self, folder: Path) -> Any:
        ref = media_ref(folder)
        try:
            from stage2_export_manager.importer import import_media
        except ImportError as exc:
            LOG.error("media.import_unavailable", media=ref, error=str(exc))
            return None
        try:
            result = import_media(self.settings, self.sessions, folder, actor="scheduler")
        except Exception as exc:  # one bad medium must not stop the node
            LOG.error("media.import_failed", media=ref, error=type(exc).__name__)
            return None
        LOG.info("media.imported", media=ref, status=str(getattr(result, "status", "")),
                 instances=getattr(result, "instances", None),
                 jobs=len(getattr(result, "new_jobs", []) or []))
        return result


def holds_media_at_top(folder: Path) -> bool:
    """The watched folder is itself a medium (a mount point): DICOMDIR or DICOM files in it."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return False
    if any(e.name.upper() == "DICOMDIR" and e.is_file() for e in entries):
        return True
    for entry in entries[:_SCAN_LIMIT]:
        if entry.is_file():
            try:
                with open(entry.path, "rb") as fh:
                    if fh.read(132)[128:132] == b"DICM":
                        return True
            except OSError:
                continue
    return False


class Stage2Service:
    """The scheduler, the C-ECHO SCP and what they need, built from settings; start(), stop()."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = open_database(settings.db_url)
        self.sessions = session_factory(self.db)
        self.keyring = KeyRing.load(settings.key_ring)
        for folder in (settings.stage2.store_dir, outbox_dir(settings)):
            make_dirs(folder)
        self.stop_event = threading.Event()
        self.watcher = (MediaWatcher(settings, self.sessions)
                        if settings.stage2.media_watch_dir is not None else None)
        self.echo = EchoSCP(settings.stage2)
        self.lock = NodeLock(settings.work_dir, "stage2")
        self.heartbeat = NodeHeartbeat(self.sessions, Node.STAGE2,
                                       ae_title=settings.stage2.ae_title,
                                       port=settings.stage2.port)
        self.scheduler = BackgroundScheduler(timezone=UTC)

    def start(self) -> None:
        """The SCP (an address in use raises OSError), the heartbeat, the jobs; what started
        is stopped again when the SCP or the heartbeat cannot start."""
        self.lock.acquire()  # before the SCP or the heartbeat row: one node per work_dir
        try:
            self.echo.start()
            self.heartbeat.start()
        except BaseException:
            self.echo.stop()
            self.db.dispose()
            self.lock.release()
            raise
        poll = self.settings.stage2.poll_seconds
        now = datetime.now(UTC)
        add = self.scheduler.add_job
        options: dict[str, Any] = {"max_instances": 1, "coalesce": True,
                                   "misfire_grace_time": None}
        add(self.retention, "interval", seconds=RETENTION_SECONDS, next_run_time=now,
            id="retention", **options)
        if self.watcher is not None:
            add(self.watch, "interval", seconds=poll, next_run_time=now, id="media", **options)
        add(self.export, "interval", seconds=poll, next_run_time=now, id="export", **options)
        self.scheduler.start()
        LOG.info("stage2.started", poll_seconds=poll, watching=self.watcher is not None,
                 receiver=f"{self.settings.stage2.receiver.ae_title}@"
                          f"{self.settings.stage2.receiver.host}:"
                          f"{self.settings.stage2.receiver.port}")

    def stop(self) -> None:
        self.stop_event.set()
        self.echo.stop()
        self.scheduler.shutdown(wait=True)
        self.heartbeat.stop()
        self.db.dispose()
        self.lock.release()
        LOG.info("stage2.stopped")

    # --- the periodic jobs (each catches everything: the loop must survive) ----------------

    def watch(self) -> None:
        assert self.watcher is not None
        self._guard("media", self.watcher.poll)

    def export(self) -> None:
        def run() -> None:
            summary = export_due(self.settings, self.sessions, self.keyring,
                                 stop=self.stop_event)
            if summary.jobs_exported or summary.jobs_failed or summary.attempts_failed:
                LOG.info("export.run", exported=summary.jobs_exported,
                         failed=summary.jobs_failed, waiting=summary.jobs_waiting,
                         sent=summary.instances_sent, instances_failed=summary.instances_failed)

        self._guard("export", run)

    def retention(self) -> None:
        self._guard("retention", lambda: apply_retention(self.settings, self.sessions))

    def _guard(self, name: str, func: Any) -> None:
        if self.stop_event.is_set():
            return
        try:
            func()
        except Exception as exc:
            LOG.error("stage2.job_failed", job_name=name, error=type(exc).__name__)


def serve(settings: Settings) -> int:
    """Run the stage-2 scheduler and SCP until SIGTERM/SIGINT; 0 after a graceful stop.

    Raises OSError, with nothing left running, when the SCP's address cannot be bound.
    """
    stopping = threading.Event()

    def _signal(signum: int, _frame: Any) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, _signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        service = Stage2Service(settings)
        service.start()
        stopping.wait()
        LOG.info("stage2.stopping")
        service.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
