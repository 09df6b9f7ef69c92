"""Group commit: the one thread that writes what the stage-1 node records while it works.

Why it exists: every C-STORE success waits for a commit, and a commit costs an fsync (SQLite
``synchronous=FULL``; PostgreSQL's ``synchronous_commit``). When each association committed its
own row, and the workers' results were committed separately, every instance paid several fsyncs
and the threads queued for SQLite's single write lock. Here one thread takes everything that is
waiting (receipts from any number of associations, results from the worker pool), writes it in
one transaction and commits once, then answers the waiting associations. A receipt is still
answered only after its row is committed and the spool folder is fsynced (the rename of its
spool file is then durable too), so the success status keeps its promise; the instances that
arrived meanwhile simply share the fsync.

A failed batch is retried one item per transaction, so one bad item cannot fail the others. A
receipt that still fails is answered with an error (the SCP returns 0xA700 and the sender
retries); a result that cannot be recorded leaves its instance RECEIVED, to be processed again
at the next start. A result is recorded at most once: the update only applies to an instance
that is not PROCESSED yet.
"""

from __future__ import annotations

import hashlib
import hmac
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from appliance.audit import record_audit
from appliance.durable import fsync_dir
from appliance.keys import KeyRing
from appliance.logging import get_logger
from appliance.models import (
    Instance,
    InstanceState,
    Node,
    Pseudonym,
    QuarantineItem,
    Study,
    StudyState,
)
from appliance.quarantine import quarantine_file
from stage1_modality.worker import WorkResult

NODE = Node.STAGE1
BUSY = (InstanceState.RECEIVED, InstanceState.PROCESSING)
LOG = get_logger("tce.stage1")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(eq=False)
class Receipt:
    """A spooled instance waiting for its row; ``stored`` and ``error`` are the answer."""

    key: str
    spool_path: Path
    sop_class_uid: str
    transfer_syntax_uid: str
    study_uid: str
    size: int
    calling_ae: str
    stored: bool = False  # a new row; False for a duplicate of a known instance
    error: str = ""  # the commit failed: no row, no success status
    done: threading.Event = field(default_factory=threading.Event, repr=False)


_STOP = object()


class Recorder:
    """Owns the write transactions of receipts and results; see the module docstring."""

    def __init__(self, sessions: sessionmaker[Session], keyring: KeyRing, policy_name: str,
                 quarantine_dir: Path, *, sync_dirs: Sequence[Path] = (),
                 received: Callable[[str, str], None] = lambda key, path: None,
                 recorded: Callable[[str], None] = lambda key: None,
                 max_batch: int = 256) -> None:
        self.sessions = sessions
        self.keyring = keyring
        self.policy_name = policy_name
        self.quarantine_dir = quarantine_dir
        self.sync_dirs = tuple(sync_dirs)
        self.received = received  # after commit: a new instance to process (key, spool path)
        self.recorded = recorded  # after commit: a result is recorded (or given up on)
        self.max_batch = max_batch
        self._queue: queue.Queue[Receipt | WorkResult | object] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lookup_key = keyring.subkey("pseudonym")
        self._sealed: set[str] = set()  # lookups known to be in the pseudonyms table

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="stage1-recorder", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 60) -> None:
        """Record everything queued so far, then end the thread."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._thread = None

    def receive(self, receipt: Receipt, timeout: float = 60) -> Receipt:
        """Queue ``receipt`` and wait until its row is committed (or the attempt failed)."""
        self._queue.put(receipt)
        if not receipt.done.wait(timeout):
            receipt.error = "the database did not answer in time"
        return receipt

    def record(self, result: WorkResult) -> None:
        self._queue.put(result)

    # -- the loop -----------------------------------------------------------------------------
    def _loop(self) -> None:
        stopping = False
        while not stopping:
            batch = [self._queue.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if any(item is _STOP for item in batch):
                stopping = True
                batch = [item for item in batch if item is not _STOP]
            if batch:
                self._write(batch)  # type: ignore[arg-type]

    def _write(self, batch: list[Receipt | WorkResult]) -> None:
        try:
            done = self._transaction(batch)
        except Exception as exc:
            if len(batch) == 1:
                self._failed(batch[0], exc)
                return
            for item in batch:  # isolate whatever failed
                self._write([item])
            return
        self._after_commit(done)

    def _transaction(self, batch: list[Receipt | WorkResult]) -> list[tuple[object, str]]:
        receipts = [item for item in batch if isinstance(item, Receipt)]
        if receipts:
            for folder in self.sync_dirs:  # the spool renames become durable before the rows
                fsync_dir(folder)
        sealed: set[str] = set()
        done: list[tuple[object, str]] = []
        with self.sessions.begin() as session:
            studies: set[str] = set()
            for receipt in receipts:
                done.append((receipt, self._insert(session, receipt)))
                if receipt.stored:
                    studies.add(receipt.study_uid)
            for study_uid in sorted(studies):
                touch_study(session, study_uid)
            counted: dict[str, str] = {}
            for item in batch:
                if isinstance(item, WorkResult):
                    done.append((item, self._apply(session, item, counted, sealed)))
            for study_uid, patient in sorted(counted.items()):
                _count_study(session, study_uid, patient)
        self._sealed |= sealed
        return done

    def _after_commit(self, done: list[tuple[object, str]]) -> None:
        for item, outcome in done:
            if isinstance(item, Receipt):
                if item.stored:  # queued before the answer, so a drain after it waits for it
                    self.received(item.key, str(item.spool_path))
                elif outcome == "remove":  # a re-sent instance that is already processed
                    item.spool_path.unlink(missing_ok=True)
                    LOG.info("scp.duplicate", receipt=item.key[:16])
                else:
                    LOG.info("scp.duplicate", receipt=item.key[:16], state="queued")
                item.done.set()
            elif isinstance(item, WorkResult):
                if outcome:
                    Path(outcome).unlink(missing_ok=True)  # the spool copy, now processed
                if item.ok and outcome:
                    LOG.info("stage1.instance", sop_instance_uid=item.sop_instance_uid,
                             study_instance_uid=item.study_instance_uid, bytes=item.size)
                self.recorded(item.key)

    def _failed(self, item: Receipt | WorkResult, exc: Exception) -> None:
        if isinstance(item, Receipt):
            item.error = type(exc).__name__
            LOG.error("scp.db_failed", receipt=item.key[:16], error=type(exc).__name__)
            item.done.set()
        else:  # the instance stays RECEIVED and is processed again at the next start
            LOG.error("stage1.commit_failed", error=type(exc).__name__, detail=str(exc)[:200])
            self.recorded(item.key)

    # -- receipts -----------------------------------------------------------------------------
    def _insert(self, session: Session, receipt: Receipt) -> str:
        try:
            with session.begin_nested():
                session.execute(insert(Instance).values(
                    node=NODE, received_key=receipt.key, state=InstanceState.RECEIVED,
                    sop_class_uid=receipt.sop_class_uid,
                    transfer_syntax_uid=receipt.transfer_syntax_uid,
                    new_study_instance_uid=receipt.study_uid,
                    spool_path=str(receipt.spool_path), size_bytes=receipt.size,
                    calling_ae=receipt.calling_ae, received_at=utcnow()))
        except IntegrityError:  # known already: from an earlier or a parallel association
            receipt.stored = False
            state = session.scalar(select(Instance.state).where(
                Instance.node == NODE, Instance.received_key == receipt.key))
            return "keep" if state in BUSY else "remove"
        receipt.stored = True
        return "new"

    # -- results ------------------------------------------------------------------------------
    def _apply(self, session: Session, result: WorkResult, counted: dict[str, str],
               sealed: set[str]) -> str:
        """Record one worker result; the spool path to remove after commit ('' for none)."""
        row = session.execute(select(Instance.id, Instance.state, Instance.spool_path,
                                     Instance.new_study_instance_uid).where(
            Instance.node == NODE, Instance.received_key == result.key)).first()
        if row is None or row.state not in BUSY:  # gone, or recorded already
            return ""
        if not result.ok:
            self._quarantined(session, row.id, row.spool_path, result)
            return str(row.spool_path or "")
        session.execute(update(Instance).where(Instance.id == row.id).values(
            state=InstanceState.PROCESSED, new_sop_instance_uid=result.sop_instance_uid,
            new_series_instance_uid=result.series_instance_uid,
            new_study_instance_uid=result.study_instance_uid, store_path=result.store_path,
            sha256=result.sha256, size_bytes=result.size, processed_at=utcnow()))
        if row.new_study_instance_uid != result.study_instance_uid:
            touch_study(session, result.study_instance_uid)
        counted[result.study_instance_uid] = (result.patient_pseudonym
                                              or counted.get(result.study_instance_uid, ""))
        for keyword, pseudonym, original in result.pseudonyms:
            self._seal(session, keyword, pseudonym, original, sealed)
        record_audit(session, NODE, "instance.pseudonymized", result.sop_instance_uid,
                     policy_id=self.policy_name, study=result.study_instance_uid)
        return str(row.spool_path or "")

    def _quarantined(self, session: Session, instance_id: int, spool_path: str | None,
                     result: WorkResult) -> None:
        stored = quarantine_file(spool_path or b"", self.quarantine_dir, result.reason,
                                 stage="stage1")
        session.execute(update(Instance).where(Instance.id == instance_id).values(
            state=InstanceState.QUARANTINED, error=result.reason))
        session.add(QuarantineItem(node=NODE, stored_path=str(stored), reason=result.reason,
                                   stage="stage1", sha256=_sha256_file(stored),
                                   size_bytes=stored.stat().st_size))
        record_audit(session, NODE, "instance.quarantined", stored.name, reason=result.reason)
        LOG.warning("stage1.quarantined", item=stored.name, reason=result.reason)

    def _seal(self, session: Session, keyword: str, pseudonym: str, original: str,
              sealed: set[str]) -> None:
        """Store the original under the key ring once per (keyword, original)."""
        lookup = hmac.new(self._lookup_key, f"{keyword}\x00{original}".encode(),
                          hashlib.sha256).hexdigest()
        if lookup in self._sealed or lookup in sealed:
            return
        sealed.add(lookup)
        if session.scalar(select(Pseudonym.id).where(Pseudonym.lookup == lookup)) is not None:
            return
        token = self.keyring.seal(original.encode("utf-8"), keyword.encode("ascii"))
        try:
            with session.begin_nested():
                session.execute(insert(Pseudonym).values(
                    keyword=keyword, pseudonym=pseudonym, lookup=lookup, sealed=token,
                    key_id=self.keyring.active_key_id, created_at=utcnow()))
        except IntegrityError:  # issued meanwhile by another process: same mapping
            pass


def touch_study(session: Session, study_uid: str) -> None:
    """Create the study row if needed and move its quiet period forward."""
    now = utcnow()
    changed = session.execute(update(Study).where(
        Study.node == NODE, Study.new_study_instance_uid == study_uid).values(
        last_received_at=now, state=StudyState.RECEIVING, completed_at=None))
    if changed.rowcount:  # type: ignore[attr-defined]
        return
    try:
        with session.begin_nested():
            session.execute(insert(Study).values(
                node=NODE, new_study_instance_uid=study_uid, state=StudyState.RECEIVING,
                instance_count=0, first_received_at=now, last_received_at=now))
    except IntegrityError:  # created meanwhile by another process
        pass


def _count_study(session: Session, study_uid: str, patient: str) -> None:
    count = select(func.count()).where(
        Instance.node == NODE, Instance.new_study_instance_uid == study_uid,
        Instance.state == InstanceState.PROCESSED).scalar_subquery()
    values: dict[str, object] = {"instance_count": count}
    if patient:
        values["patient_pseudonym"] = patient
    session.execute(update(Study).where(
        Study.node == NODE, Study.new_study_instance_uid == study_uid).values(**values))


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
