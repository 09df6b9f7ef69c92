"""Spool → pseudonymize → store, off the association threads.

The C-STORE handler only validates and spools (see :mod:`stage1_modality.handlers`); this
service records each receipt through the :class:`~stage1_modality.recorder.Recorder` (group
commit), runs the stage-1 policy on it in a process pool, and has the recorder record the
result: the new UIDs, the stored file, the pseudonyms issued (originals sealed under the key
ring, never in plain text) and an audit event. After a crash, :meth:`Stage1Service.recover`
queues the unfinished instances again, and records the spool files whose row the crash
prevented (acknowledged instances: the spool is the durable queue, see
:mod:`stage1_modality.spool`); they are processed with identical results.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import queue
import socket
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pydicom
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
from policies.engine import Deidentifier
from policies.loader import resolve_policy
from stage1_modality import worker
from stage1_modality.recorder import Receipt, Recorder

NODE = Node.STAGE1
LOG = get_logger("tce.stage1")
HEARTBEAT_STALE = 5  # seconds; the node beats every second
BATCH = 16  # instances per worker task at most


def utcnow() -> datetime:
    return datetime.now(UTC)


class Stage1Service:
    """Owns the worker pool and the recorder; thread-safe ``record`` and ``enqueue``."""

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
        self.spool_dir = spool_dir
        self._pool: ProcessPoolExecutor | None = None
        self._todo: queue.Queue[tuple[str, str] | None] = queue.Queue()
        self._slots = threading.BoundedSemaphore(self.workers * 2)
        self._pending = 0
        self._lock = threading.Condition()
        self._threads: list[threading.Thread] = []
        self.recorder = Recorder(sessions, keyring, policy_name, quarantine_dir,
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
        """Queue everything spooled but not finished (after a crash or restart), and record
        the spool files that have no row yet."""
        with self.sessions.begin() as session:
            session.execute(update(Instance)
                            .where(Instance.node == NODE,
                                   Instance.state == InstanceState.PROCESSING)
                            .values(state=InstanceState.RECEIVED))
            rows = session.execute(select(Instance.received_key, Instance.spool_path).where(
                Instance.node == NODE, Instance.state == InstanceState.RECEIVED)).all()
        for key, spool_path in rows:
            self.enqueue(key, spool_path or "")
        adopted = self._adopt_spooled()
        if rows or adopted:
            LOG.info("stage1.recovered", instances=len(rows), adopted=adopted)
        return len(rows) + adopted

    def _adopt_spooled(self) -> int:
        """Record spool files without a row: each was durable, so maybe acknowledged, when a
        crash came before its row was committed. Recording one twice is harmless (the recorder
        treats it as a re-sent instance)."""
        spooled = spool_files(self.spool_dir) if self.spool_dir else []
        known: set[str] = set()
        with self.sessions() as session:
            for n in range(0, len(spooled), 500):
                keys = [path.stem for path in spooled[n:n + 500]]
                known.update(session.scalars(select(Instance.received_key).where(
                    Instance.node == NODE, Instance.received_key.in_(keys))))
        orphans = [path for path in spooled if path.stem not in known]
        if orphans:
            mapper = Deidentifier(resolve_policy(self.policy_name), self.keys)
            for path in orphans:
                self.recorder.submit(_receipt_of(path, mapper))
            self.recorder.flush()  # committed and queued for work before anyone drains
        return len(orphans)

    def record(self, receipt: Receipt) -> None:
        """Record a spooled instance without waiting; it is queued for work once committed."""
        self.recorder.submit(receipt)

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
        self.recorder.flush(timeout or 60)  # receipts still queued become work to drain
        self.drain(timeout)
        self._todo.put(None)
        for thread in self._threads:
            thread.join(5)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self.recorder.stop()

    # -- dispatch -----------------------------------------------------------------------------
    def _dispatch(self) -> None:
        """Hand queued instances to the pool, at most two tasks per worker in flight, each
        with up to ``BATCH`` instances (those that queued up while the workers were busy).

        Instances are not claimed in the database: while the node runs this queue is the only
        one that holds them, and after a restart :meth:`recover` queues them again.
        """
        assert self._pool is not None
        stopping = False
        while not stopping and (item := self._todo.get()) is not None:
            self._slots.acquire()
            batch = [item]  # and whatever queued up meanwhile: one task, fewer fsyncs
            while len(batch) < BATCH:
                try:
                    more = self._todo.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                batch.append(more)
            future = self._pool.submit(worker.process_batch, batch, str(self.store_dir))
            future.add_done_callback(functools.partial(self._collect, len(batch)))

    def _collect(self, count: int, future: Future[list[worker.WorkResult]]) -> None:
        self._slots.release()
        try:
            results = future.result()
        except Exception as exc:  # the worker process died, or the disk is full: the batch
            LOG.error("stage1.worker_failed", error=type(exc).__name__)  # is redone at the
            for _ in range(count):  # next start
                self._done()
            return
        for result in results:
            self.recorder.record(result)

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
    * Spool files whose row says the instance is finished (PROCESSED or QUARANTINED): only the
      unlink after the commit was lost.

    Spool files without any row are kept: they are durable instances whose row a crash
    prevented, and :meth:`Stage1Service.recover` records them. Only the serving node calls
    this, before its SCP and workers start, so nothing of this node is writing; the PHI in
    these files must not linger in the spool.
    """
    spooled = spool_files(spool_dir)
    finished: set[str] = set()
    with sessions() as session:
        for n in range(0, len(spooled), 500):
            keys = [path.stem for path in spooled[n:n + 500]]
            finished.update(session.scalars(select(Instance.received_key).where(
                Instance.node == NODE, Instance.received_key.in_(keys),
                Instance.state.not_in(BUSY))))
    removed = 0
    if spool_dir.is_dir():
        for path in spool_dir.iterdir():
            if path.is_file() and (path.name.startswith(".") or path.stem in finished):
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
        with sessions() as session:  # a spool file may not have its row yet: it is pending
            if not _pending(session, studies) and not spool_files(settings.stage1.spool_dir):
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
                            workers=settings.stage1.workers,
                            spool_dir=settings.stage1.spool_dir)
    service.start()
    try:
        finished = service.drain(max(1.0, deadline - time.monotonic()))
    finally:
        service.stop(0)
    if not finished:
        raise TimeoutError("queued instances were not processed in time; run this again to"
                           " continue where it stopped")


def spool_files(spool_dir: Path) -> list[Path]:
    """The published spool files (``<receipt key>.dcm``; temporary files are hidden)."""
    if not spool_dir.is_dir():
        return []
    return sorted(p for p in spool_dir.iterdir()
                  if p.suffix == ".dcm" and not p.name.startswith(".") and p.is_file())


def _receipt_of(path: Path, mapper: Deidentifier) -> Receipt:
    """A receipt for an adopted spool file, from the File Meta and dataset it holds."""
    sop_class = syntax = study = ""
    with contextlib.suppress(Exception):  # unreadable: recorded anyway; the worker quarantines
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        sop_class = str(ds.file_meta.get("MediaStorageSOPClassUID", ""))
        syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
        study = str(ds.get("StudyInstanceUID", ""))
    return Receipt(key=path.stem, spool_path=path, sop_class_uid=sop_class,
                   transfer_syntax_uid=syntax, study_uid=mapper.remap_uid(study),
                   size=path.stat().st_size, calling_ae="")
