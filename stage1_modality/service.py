"""Spool → pseudonymize → store, off the association threads.

The C-STORE handler only validates and spools (see :mod:`stage1_modality.handlers`); this
service records each receipt through the :class:`~stage1_modality.recorder.Recorder` (group
commit), runs the stage-1 policy on it in a process pool, and has the recorder record the
result: the new UIDs, the stored file, the pseudonyms issued (originals sealed under the key
ring, never in plain text) and an audit event. After a crash, :meth:`Stage1Service.recover`
queues the unfinished instances again; they are processed again with identical results.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import socket
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from appliance.audit import record_audit
from appliance.keys import KeyRing
from appliance.logging import get_logger
from appliance.models import (
    Heartbeat,
    Instance,
    InstanceState,
    Node,
    Study,
    StudyState,
)
from appliance.settings import Settings
from stage1_modality import worker
from stage1_modality.recorder import Receipt, Recorder

NODE = Node.STAGE1
LOG = get_logger("tce.stage1")
HEARTBEAT_STALE = 5  # seconds; the node beats every second


def utcnow() -> datetime:
    return datetime.now(UTC)


class Stage1Service:
    """Owns the worker pool and the recorder; thread-safe ``receive`` and ``enqueue``."""

    def __init__(self, sessions: sessionmaker[Session], keyring: KeyRing, policy_name: str,
                 *, store_dir: Path, quarantine_dir: Path, workers: int,
                 spool_dir: Path | None = None) -> None:
        self.sessions = sessions
        self.keyring = keyring
        self.keys = keyring.engine_keys()
        self.policy_name = policy_name
        self.store_dir = store_dir
        self.quarantine_dir = quarantine_dir
        self.workers = max(1, workers)
        self._pool: ProcessPoolExecutor | None = None
        self._todo: queue.Queue[tuple[str, str] | None] = queue.Queue()
        self._slots = threading.BoundedSemaphore(self.workers * 2)
        self._pending = 0
        self._lock = threading.Condition()
        self._threads: list[threading.Thread] = []
        self.recorder = Recorder(sessions, keyring, policy_name, quarantine_dir,
                                 sync_dirs=[spool_dir] if spool_dir else [],
                                 received=self.enqueue, recorded=lambda _key: self._done())

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        context = multiprocessing.get_context("forkserver")
        self._pool = ProcessPoolExecutor(self.workers, mp_context=context,
                                         initializer=worker.init_worker,
                                         initargs=(self.policy_name, self.keys, os.getpid()))
        self.recorder.start()
        thread = threading.Thread(target=self._dispatch, name="stage1-dispatch", daemon=True)
        thread.start()
        self._threads.append(thread)
        self.recover()

    def recover(self) -> int:
        """Queue everything spooled but not finished (after a crash or restart)."""
        with self.sessions.begin() as session:
            session.execute(update(Instance)
                            .where(Instance.node == NODE,
                                   Instance.state == InstanceState.PROCESSING)
                            .values(state=InstanceState.RECEIVED))
            rows = session.execute(select(Instance.received_key, Instance.spool_path).where(
                Instance.node == NODE, Instance.state == InstanceState.RECEIVED)).all()
        for key, spool_path in rows:
            self.enqueue(key, spool_path or "")
        if rows:
            LOG.info("stage1.recovered", instances=len(rows))
        return len(rows)

    def receive(self, receipt: Receipt) -> Receipt:
        """Record a spooled instance (blocks until committed); it is then queued for work."""
        return self.recorder.receive(receipt)

    def enqueue(self, key: str, spool_path: str) -> None:
        with self._lock:
            self._pending += 1
        self._todo.put((key, spool_path))

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every queued instance is recorded; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._pending:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._lock.wait(remaining)
        return True

    def stop(self, timeout: float | None = 60) -> None:
        self.drain(timeout)
        self._todo.put(None)
        for thread in self._threads:
            thread.join(5)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self.recorder.stop()

    # -- dispatch -----------------------------------------------------------------------------
    def _dispatch(self) -> None:
        """Hand queued instances to the pool, at most two per worker in flight.

        Instances are not claimed in the database: while the node runs this queue is the only
        one that holds them, and after a restart :meth:`recover` queues them again.
        """
        assert self._pool is not None
        while (item := self._todo.get()) is not None:
            key, spool_path = item
            self._slots.acquire()
            future = self._pool.submit(worker.process, key, spool_path, str(self.store_dir))
            future.add_done_callback(self._collect)

    def _collect(self, future: Future[worker.WorkResult]) -> None:
        self._slots.release()
        try:
            self.recorder.record(future.result())
        except Exception as exc:  # the worker process died: redone at the next start
            LOG.error("stage1.worker_failed", error=type(exc).__name__)
            self._done()

    def _done(self) -> None:
        with self._lock:
            self._pending -= 1
            self._lock.notify_all()


def complete_quiet_studies(sessions: sessionmaker[Session], quiet_seconds: float,
                           study_uids: list[str] | None = None) -> list[str]:
    """Mark studies COMPLETE: quiet for ``quiet_seconds`` (0 = now) and nothing left to process."""
    cutoff = utcnow() - timedelta(seconds=quiet_seconds)
    done: list[str] = []
    with sessions.begin() as session:
        query = select(Study).where(Study.node == NODE, Study.state == StudyState.RECEIVING,
                                    Study.last_received_at <= cutoff)
        if study_uids:
            query = query.where(Study.new_study_instance_uid.in_(study_uids))
        for study in session.scalars(query):
            busy = session.scalar(select(func.count()).where(
                Instance.node == NODE,
                Instance.new_study_instance_uid == study.new_study_instance_uid,
                Instance.state.in_([InstanceState.RECEIVED, InstanceState.PROCESSING])))
            if busy:
                continue
            study.state, study.completed_at = StudyState.COMPLETE, utcnow()
            record_audit(session, NODE, "study.complete", study.new_study_instance_uid,
                         instances=study.instance_count)
            done.append(study.new_study_instance_uid)
    return done


BUSY = (InstanceState.RECEIVED, InstanceState.PROCESSING)


def _pending(session: Session, studies: list[str] | None) -> int:
    query = select(func.count()).where(Instance.node == NODE, Instance.state.in_(BUSY))
    if studies:
        query = query.where(Instance.new_study_instance_uid.in_(studies))
    return session.scalar(query) or 0


def sweep_leftovers(sessions: sessionmaker[Session], spool_dir: Path, store_dir: Path) -> int:
    """Remove the files a crash left behind that no database row vouches for; how many.

    * Temporary files of interrupted atomic writes (``.*.tmp``) in the spool and store trees.
    * Spool files without a RECEIVED or PROCESSING row: either the row was never committed, so
      the instance was never acknowledged and the sender will send it again, or the instance
      was processed and only the unlink after the commit was lost.

    Only the serving node calls this, before its SCP and workers start, so nothing of this node
    is writing; the PHI in these files must not linger in the spool.
    """
    with sessions() as session:
        wanted = {Path(p).name for p in session.scalars(select(Instance.spool_path).where(
            Instance.node == NODE, Instance.state.in_(BUSY))) if p}
    removed = 0
    if spool_dir.is_dir():
        for path in spool_dir.iterdir():
            if path.is_file() and path.name not in wanted:
                path.unlink(missing_ok=True)
                removed += 1
    if store_dir.is_dir():
        for path in store_dir.rglob(".*.tmp"):
            path.unlink(missing_ok=True)
            removed += 1
    if removed:
        LOG.info("stage1.swept", files=removed)
    return removed


def _node_running(session: Session) -> bool:
    """A fresh heartbeat from a node process that still exists (when it is on this host)."""
    beat = session.get(Heartbeat, NODE)
    if beat is None or beat.beat_at <= datetime.now(UTC) - timedelta(seconds=HEARTBEAT_STALE):
        return False
    if beat.host == socket.gethostname() and beat.pid:
        try:
            os.kill(beat.pid, 0)
        except ProcessLookupError:  # killed moments ago: its heartbeat is not stale yet
            return False
        except PermissionError:
            pass
    return True


def finish_pending(settings: Settings, sessions: sessionmaker[Session],
                   studies: list[str] | None, timeout: float = 600) -> None:
    """Wait for the running node to process the queued instances of ``studies`` (None: all),
    or, when no node runs (or it stops meanwhile), process them here with the same policy."""
    deadline = time.monotonic() + timeout
    while True:
        with sessions() as session:
            if not _pending(session, studies):
                return
            running = _node_running(session)
        if not running:
            break
        if time.monotonic() > deadline:
            raise TimeoutError("queued instances were not processed in time; is the node"
                               " overloaded? Check its log, or stop it and run this again")
        time.sleep(0.2)
    service = Stage1Service(sessions, KeyRing.load(settings.key_ring), settings.stage1.policy,
                            store_dir=settings.stage1.store_dir,
                            quarantine_dir=settings.quarantine_dir,
                            workers=settings.stage1.workers)
    service.start()
    try:
        finished = service.drain(max(1.0, deadline - time.monotonic()))
    finally:
        service.stop(0)
    if not finished:
        raise TimeoutError("queued instances were not processed in time; run this again to"
                           " continue where it stopped")
