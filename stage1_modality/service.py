"""Spool → pseudonymize → store, off the association threads.

The C-STORE handler only spools and records (see :mod:`stage1_modality.handlers`); this service
claims RECEIVED instances, runs the stage-1 policy in a process pool, and records the results in
one committer thread: the new UIDs, the stored file, the pseudonyms issued (originals sealed under
the key ring, never in plain text) and an audit event. After a crash, :meth:`recover` puts claimed
but unfinished instances back, and they are processed again with identical results.
"""

from __future__ import annotations

import hashlib
import hmac
import multiprocessing
import os
import queue
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from appliance.audit import record_audit
from appliance.keys import KeyRing
from appliance.logging import get_logger
from appliance.models import (
    Heartbeat,
    Instance,
    InstanceState,
    Node,
    Pseudonym,
    QuarantineItem,
    Study,
    StudyState,
)
from appliance.quarantine import quarantine_file
from appliance.settings import Settings
from stage1_modality import worker

NODE = Node.STAGE1
LOG = get_logger("tce.stage1")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Stage1Service:
    """Owns the worker pool and the committer; thread-safe ``enqueue``."""

    def __init__(self, sessions: sessionmaker[Session], keyring: KeyRing, policy_name: str,
                 *, store_dir: Path, quarantine_dir: Path, workers: int) -> None:
        self.sessions = sessions
        self.keyring = keyring
        self.keys = keyring.engine_keys()
        self.policy_name = policy_name
        self.store_dir = store_dir
        self.quarantine_dir = quarantine_dir
        self.workers = max(1, workers)
        self._pool: ProcessPoolExecutor | None = None
        self._todo: queue.Queue[str | None] = queue.Queue()
        self._results: queue.Queue[worker.WorkResult | None] = queue.Queue()
        self._slots = threading.BoundedSemaphore(self.workers * 2)
        self._pending = 0
        self._lock = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._lookup_key = keyring.subkey("pseudonym")

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        context = multiprocessing.get_context("forkserver")
        self._pool = ProcessPoolExecutor(self.workers, mp_context=context,
                                         initializer=worker.init_worker,
                                         initargs=(self.policy_name, self.keys, os.getpid()))
        for target in (self._dispatch, self._commit_loop):
            thread = threading.Thread(target=target, name=f"stage1-{target.__name__}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)
        self.recover()

    def recover(self) -> int:
        """Re-queue everything spooled but not finished (after a crash or restart)."""
        with self.sessions.begin() as session:
            session.execute(update(Instance)
                            .where(Instance.node == NODE,
                                   Instance.state == InstanceState.PROCESSING)
                            .values(state=InstanceState.RECEIVED))
            keys = session.scalars(select(Instance.received_key).where(
                Instance.node == NODE, Instance.state == InstanceState.RECEIVED)).all()
        for key in keys:
            self.enqueue(key)
        if keys:
            LOG.info("stage1.recovered", instances=len(keys))
        return len(keys)

    def enqueue(self, key: str) -> None:
        with self._lock:
            self._pending += 1
        self._todo.put(key)

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
        for thread in self._threads[:1]:
            thread.join(5)
        self._results.put(None)
        for thread in self._threads[1:]:
            thread.join(5)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    # -- dispatch -----------------------------------------------------------------------------
    def _dispatch(self) -> None:
        assert self._pool is not None
        while (key := self._todo.get()) is not None:
            claimed = self._claim(key)
            if claimed is None:
                self._done()
                continue
            self._slots.acquire()
            future = self._pool.submit(worker.process, key, claimed, str(self.store_dir))
            future.add_done_callback(self._collect)

    def _claim(self, key: str) -> str | None:
        with self.sessions.begin() as session:
            result = session.execute(
                update(Instance)
                .where(Instance.node == NODE, Instance.received_key == key,
                       Instance.state == InstanceState.RECEIVED)
                .values(state=InstanceState.PROCESSING)
                .returning(Instance.spool_path))
            row = result.first()
        return None if row is None else row[0]

    def _collect(self, future: Future[worker.WorkResult]) -> None:
        self._slots.release()
        try:
            self._results.put(future.result())
        except Exception as exc:  # the worker process died: put the instance back
            LOG.error("stage1.worker_failed", error=type(exc).__name__)
            self._done()

    def _done(self) -> None:
        with self._lock:
            self._pending -= 1
            self._lock.notify_all()

    # -- commit -------------------------------------------------------------------------------
    def _commit_loop(self) -> None:
        while (result := self._results.get()) is not None:
            started = time.perf_counter()
            try:
                self._record(result)
            except Exception as exc:  # keep the node alive; the instance stays claimed
                LOG.error("stage1.commit_failed", error=type(exc).__name__, detail=str(exc)[:200])
            finally:
                self._done()
            LOG.debug("stage1.committed", ms=round((time.perf_counter() - started) * 1000, 2))

    def _record(self, result: worker.WorkResult) -> None:
        with self.sessions.begin() as session:
            instance = session.scalars(select(Instance).where(
                Instance.node == NODE, Instance.received_key == result.key)).one()
            spool = instance.spool_path
            if result.ok:
                self._record_success(session, instance, result)
            else:
                self._record_failure(session, instance, result)
        if spool:
            Path(spool).unlink(missing_ok=True)

    def _record_success(self, session: Session, instance: Instance,
                        result: worker.WorkResult) -> None:
        instance.state = InstanceState.PROCESSED
        instance.new_sop_instance_uid = result.sop_instance_uid
        instance.new_series_instance_uid = result.series_instance_uid
        instance.store_path = result.store_path
        instance.sha256, instance.size_bytes = result.sha256, result.size
        instance.processed_at = utcnow()
        if instance.new_study_instance_uid != result.study_instance_uid:
            instance.new_study_instance_uid = result.study_instance_uid
            touch_study(session, result.study_instance_uid)
        study = session.scalars(select(Study).where(
            Study.node == NODE, Study.new_study_instance_uid == result.study_instance_uid)).one()
        study.patient_pseudonym = result.patient_pseudonym or study.patient_pseudonym
        study.instance_count = session.scalar(select(func.count()).where(
            Instance.node == NODE, Instance.new_study_instance_uid == result.study_instance_uid,
            Instance.state == InstanceState.PROCESSED)) or 0
        for keyword, pseudonym, original in result.pseudonyms:
            self._seal(session, keyword, pseudonym, original)
        record_audit(session, NODE, "instance.pseudonymized", result.sop_instance_uid,
                     policy_id=self.policy_name, study=result.study_instance_uid)
        LOG.info("stage1.instance", sop_instance_uid=result.sop_instance_uid,
                 study_instance_uid=result.study_instance_uid, bytes=result.size)

    def _record_failure(self, session: Session, instance: Instance,
                        result: worker.WorkResult) -> None:
        stored = quarantine_file(instance.spool_path or b"", self.quarantine_dir,
                                 result.reason, stage="stage1")
        instance.state = InstanceState.QUARANTINED
        instance.error = result.reason
        session.add(QuarantineItem(node=NODE, stored_path=str(stored), reason=result.reason,
                                   stage="stage1", sha256=_sha256_file(stored),
                                   size_bytes=stored.stat().st_size))
        record_audit(session, NODE, "instance.quarantined", stored.name, reason=result.reason)
        LOG.warning("stage1.quarantined", item=stored.name, reason=result.reason)

    def _seal(self, session: Session, keyword: str, pseudonym: str, original: str) -> None:
        lookup = hmac.new(self._lookup_key, f"{keyword}\x00{original}".encode(),
                          hashlib.sha256).hexdigest()
        if session.scalar(select(Pseudonym.id).where(Pseudonym.lookup == lookup)) is not None:
            return
        sealed = self.keyring.seal(original.encode("utf-8"), keyword.encode("ascii"))
        try:
            with session.begin_nested():
                session.add(Pseudonym(keyword=keyword, pseudonym=pseudonym, lookup=lookup,
                                      sealed=sealed, key_id=self.keyring.active_key_id))
        except IntegrityError:  # issued meanwhile by another process: same mapping
            pass


def touch_study(session: Session, study_uid: str) -> None:
    """Create the study row if needed and move its quiet period forward."""
    study = session.scalars(select(Study).where(
        Study.node == NODE, Study.new_study_instance_uid == study_uid)).first()
    now = utcnow()
    if study is None:
        try:
            with session.begin_nested():
                session.add(Study(node=NODE, new_study_instance_uid=study_uid,
                                  first_received_at=now, last_received_at=now))
        except IntegrityError:
            pass
        return
    study.last_received_at = now
    if study.state is not StudyState.RECEIVING:
        study.state = StudyState.RECEIVING  # more instances arrived: not complete any more
        study.completed_at = None


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


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
    beat = session.get(Heartbeat, NODE)
    return beat is not None and beat.beat_at > datetime.now(UTC) - timedelta(seconds=5)


def finish_pending(settings: Settings, sessions: sessionmaker[Session],
                   studies: list[str] | None, timeout: float = 600) -> None:
    """Wait for (or do) the processing of queued instances of ``studies`` (None: all)."""
    with sessions() as session:
        if not _pending(session, studies):
            return
        running = _node_running(session)
    if not running:
        service = Stage1Service(sessions, KeyRing.load(settings.key_ring), settings.stage1.policy,
                                store_dir=settings.stage1.store_dir,
                                quarantine_dir=settings.quarantine_dir,
                                workers=settings.stage1.workers)
        service.start()
        service.stop(timeout)
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sessions() as session:
            if not _pending(session, studies):
                return
        time.sleep(0.2)
    raise TimeoutError("queued instances were not processed in time; is the node overloaded?")
