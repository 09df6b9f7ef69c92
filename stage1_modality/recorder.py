"""Group commit: the one thread that writes what the stage-1 node records while it works.

Why it exists: a commit costs an fsync (SQLite ``synchronous=FULL``; PostgreSQL's
``synchronous_commit``). When each association committed its own row, and the workers' results
were committed separately, every instance paid several fsyncs and the threads queued for
SQLite's single write lock. Here one thread takes everything that is waiting (receipts from any
number of associations, results from the worker pool), writes it in one transaction and commits
once.

The SCP does not wait for a receipt's row (:meth:`Recorder.submit`): its success status already
stands on the fsynced spool file (see :mod:`stage1_modality.spool`), and a spool file whose row
a crash prevented is adopted at the next start. Waiting for the commit as well cost a second
and third fsync in every instance's turn.

A failed batch is retried one item per transaction, so one bad item cannot fail the others. A
receipt that still fails is logged (its spool file is adopted at the next start); a result that
cannot be recorded leaves its instance RECEIVED, to be processed again at the next start. A
result is recorded at most once: the update only applies to an instance that is not PROCESSED
yet.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

from sqlalchemy import Connection, Engine, Table, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from appliance.audit import record_audit
from appliance.keys import KeyRing
from appliance.logging import get_logger
from appliance.models import (
    AuditEvent,
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
BUSY_VALUES = frozenset(s.value for s in BUSY)
LOG = get_logger("tce.stage1")

# Core statements, built once: the ORM's per-statement bookkeeping cost more than the SQL.
_INSTANCES = cast(Table, Instance.__table__)
_STUDIES = cast(Table, Study.__table__)
_AUDIT = cast(Table, AuditEvent.__table__)
_I, _S = _INSTANCES.c, _STUDIES.c
_KNOWN = select(_I.received_key, _I.state).where(
    _I.node == NODE, _I.received_key.in_(bindparam("keys", expanding=True)))
_PENDING = select(_I.id, _I.received_key, _I.state, _I.spool_path,
                  _I.new_study_instance_uid).where(
    _I.node == NODE, _I.received_key.in_(bindparam("keys", expanding=True)))
_PROCESSED = update(_INSTANCES).where(_I.id == bindparam("b_id")).values(
    state=InstanceState.PROCESSED, new_sop_instance_uid=bindparam("b_sop"),
    new_series_instance_uid=bindparam("b_series"),
    new_study_instance_uid=bindparam("b_study"), store_path=bindparam("b_store"),
    sha256=bindparam("b_sha"), size_bytes=bindparam("b_size"), processed_at=bindparam("b_at"))
_TOUCH = update(_STUDIES).where(
    _S.node == NODE, _S.new_study_instance_uid == bindparam("b_uid")).values(
    last_received_at=bindparam("b_now"), state=StudyState.RECEIVING, completed_at=None)
_COUNT = update(_STUDIES).where(
    _S.node == NODE, _S.new_study_instance_uid == bindparam("b_uid")).values(
    instance_count=_S.instance_count + bindparam("b_n"),
    patient_pseudonym=func.coalesce(bindparam("b_patient"), _S.patient_pseudonym))


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(eq=False)
class Receipt:
    """A durable spool file waiting for its row; ``stored`` tells what the commit found."""

    key: str
    spool_path: Path
    sop_class_uid: str
    transfer_syntax_uid: str
    study_uid: str
    size: int
    calling_ae: str
    stored: bool = False  # a new row; False for a duplicate of a known instance


_STOP = object()
RESULT_BATCH = 64
RESULT_DELAY = 0.25  # seconds a recorded result may wait for others


class Recorder:
    """Owns the write transactions of receipts and results; see the module docstring."""

    def __init__(self, sessions: sessionmaker[Session], keyring: KeyRing, policy_name: str,
                 quarantine_dir: Path, *,
                 received: Callable[[str, str], None] = lambda key, path: None,
                 recorded: Callable[[str], None] = lambda key: None,
                 max_batch: int = 256) -> None:
        self.sessions = sessions
        self._engine: Engine = sessions.kw["bind"]
        self._conn: Connection | None = None
        self.keyring = keyring
        self.policy_name = policy_name
        self.quarantine_dir = quarantine_dir
        self.received = received  # after commit: a new instance to process (key, spool path)
        self.recorded = recorded  # after commit: a result is recorded (or given up on)
        self.max_batch = max_batch
        self._queue: queue.Queue[Receipt | WorkResult | threading.Event | object] = \
            queue.Queue()
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
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def submit(self, receipt: Receipt) -> None:
        """Queue ``receipt`` without waiting: its spool file is durable already, and a row that
        cannot be written now is written when the next start adopts the file."""
        self._queue.put(receipt)

    def flush(self, timeout: float = 60) -> bool:
        """Wait until everything queued before this call is written (False on timeout)."""
        marker = threading.Event()
        self._queue.put(marker)
        return marker.wait(timeout)

    def record(self, result: WorkResult) -> None:
        self._queue.put(result)

    # -- the loop -----------------------------------------------------------------------------
    def _loop(self) -> None:
        """Receipts are written at once; results wait for a bigger batch (or a quiet moment).

        An association waits for its receipt's commit, nobody waits for a result's. Recording
        results in batches of up to ``RESULT_BATCH`` (or after ``RESULT_DELAY`` seconds, or as
        soon as no receipt is waiting) costs a few statements per batch instead of per instance.
        """
        stopping = False
        backlog: list[WorkResult] = []
        since = 0.0
        while not stopping:
            try:
                first = self._queue.get(timeout=RESULT_DELAY if backlog else None)
                batch = [first]
            except queue.Empty:
                batch = []
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if any(item is _STOP for item in batch):
                stopping = True
            markers = [item for item in batch if isinstance(item, threading.Event)]
            receipts = [item for item in batch if isinstance(item, Receipt)]
            results = [item for item in batch if isinstance(item, WorkResult)]
            if results and not backlog:
                since = time.monotonic()
            backlog += results
            flush = (stopping or markers or not receipts or len(backlog) >= RESULT_BATCH
                     or time.monotonic() - since >= RESULT_DELAY)
            items: list[Receipt | WorkResult] = [*receipts, *(backlog if flush else [])]
            if flush:
                backlog = []
            if items:
                try:
                    self._write(items)
                except Exception as exc:  # never let the recorder thread die: nothing would
                    LOG.error("stage1.recorder_failed", error=type(exc).__name__)  # be recorded
            for marker in markers:
                marker.set()

    def _connection(self) -> Connection:
        """The recorder's own connection, kept open: a pool checkout and the rollback on its
        return cost as much as a small transaction."""
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            self._conn = self._engine.connect()
        return self._conn

    def _write(self, batch: list[Receipt | WorkResult]) -> None:
        try:
            done = self._transaction(batch)
        except Exception as exc:
            if self._conn is not None:  # whatever went wrong, start the retry afresh
                with contextlib.suppress(Exception):
                    self._conn.close()
                self._conn = None
            if len(batch) == 1:
                self._failed(batch[0], exc)
                return
            for item in batch:  # isolate whatever failed
                self._write([item])
            return
        self._after_commit(done)

    def _transaction(self, batch: list[Receipt | WorkResult]) -> list[tuple[object, str]]:
        receipts = [item for item in batch if isinstance(item, Receipt)]
        results = [item for item in batch if isinstance(item, WorkResult)]
        sealed: set[str] = set()
        conn = self._connection()
        with conn.begin():  # Core: a Session costs more than this SQL
            done = self._insert_receipts(conn, receipts) if receipts else []
            if results:
                done += self._apply_results(conn, results, sealed)
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
            elif isinstance(item, WorkResult):
                if outcome:
                    Path(outcome).unlink(missing_ok=True)  # the spool copy, now processed
                if item.ok and outcome:
                    LOG.info("stage1.instance", sop_instance_uid=item.sop_instance_uid,
                             study_instance_uid=item.study_instance_uid, bytes=item.size)
                self.recorded(item.key)

    def _failed(self, item: Receipt | WorkResult, exc: Exception) -> None:
        if isinstance(item, Receipt):  # its spool file is adopted at the next start
            LOG.error("scp.db_failed", receipt=item.key[:16], error=type(exc).__name__)
        else:  # the instance stays RECEIVED and is processed again at the next start
            LOG.error("stage1.commit_failed", error=type(exc).__name__, detail=str(exc)[:200])
            self.recorded(item.key)

    # -- receipts -----------------------------------------------------------------------------
    def _insert_receipts(self, conn: Connection, receipts: list[Receipt]
                         ) -> list[tuple[object, str]]:
        """One query for the duplicates, one multi-row insert, one update per study."""
        known = dict(conn.execute(_KNOWN, {"keys": sorted({r.key for r in receipts})}).all())
        now = utcnow()
        rows: list[dict[str, object]] = []
        studies: set[str] = set()
        done: list[tuple[object, str]] = []
        for receipt in receipts:
            state = known.get(receipt.key)
            if state is not None:  # from an earlier or a parallel association
                receipt.stored = False
                done.append((receipt, "keep" if state in BUSY_VALUES else "remove"))
                continue
            known[receipt.key] = InstanceState.RECEIVED.value
            receipt.stored = True
            rows.append({"node": NODE, "received_key": receipt.key,
                         "state": InstanceState.RECEIVED,
                         "sop_class_uid": receipt.sop_class_uid,
                         "transfer_syntax_uid": receipt.transfer_syntax_uid,
                         "new_study_instance_uid": receipt.study_uid,
                         "spool_path": str(receipt.spool_path), "size_bytes": receipt.size,
                         "calling_ae": receipt.calling_ae, "received_at": now})
            studies.add(receipt.study_uid)
            done.append((receipt, "new"))
        if rows:
            conn.execute(insert(_INSTANCES), rows)
        for study_uid in sorted(studies):
            touch_study(conn, study_uid, now)
        return done

    # -- results ------------------------------------------------------------------------------
    def _apply_results(self, conn: Connection, results: list[WorkResult],
                       sealed: set[str]) -> list[tuple[object, str]]:
        """Record worker results; each paired with the spool path to remove after commit."""
        rows = {row.received_key: row for row in conn.execute(
            _PENDING, {"keys": sorted({r.key for r in results})})}
        now = utcnow()
        updates: list[dict[str, object]] = []
        audits: list[dict[str, object]] = []
        done: list[tuple[object, str]] = []
        counted: dict[str, tuple[int, str]] = {}
        for result in results:
            row = rows.pop(result.key, None)  # pop: a result twice in one batch counts once
            if row is None or row.state not in BUSY_VALUES:  # gone, or recorded already
                done.append((result, ""))
                continue
            done.append((result, str(row.spool_path or "")))
            if not result.ok:
                self._quarantined(conn, row.id, row.spool_path, result)
                continue
            updates.append({"b_id": row.id, "b_sop": result.sop_instance_uid,
                            "b_series": result.series_instance_uid,
                            "b_study": result.study_instance_uid,
                            "b_store": result.store_path, "b_sha": result.sha256,
                            "b_size": result.size, "b_at": now})
            if row.new_study_instance_uid != result.study_instance_uid:
                touch_study(conn, result.study_instance_uid, now)
            n, patient = counted.get(result.study_instance_uid, (0, ""))
            counted[result.study_instance_uid] = (n + 1, result.patient_pseudonym or patient)
            for keyword, pseudonym, original in result.pseudonyms:
                self._seal(conn, keyword, pseudonym, original, sealed)
            audits.append({"at": now, "node": NODE, "actor": "system",
                           "action": "instance.pseudonymized",
                           "subject": result.sop_instance_uid,
                           "details": json.dumps({"policy_id": self.policy_name,
                                                  "study": result.study_instance_uid},
                                                 sort_keys=True)})
        if updates:
            conn.execute(_PROCESSED, updates)
            conn.execute(insert(_AUDIT), audits)
        for study_uid, (n, patient) in sorted(counted.items()):
            conn.execute(_COUNT, {"b_uid": study_uid, "b_n": n, "b_patient": patient or None})
        return done

    def _quarantined(self, conn: Connection, instance_id: int, spool_path: str | None,
                     result: WorkResult) -> None:
        stored = quarantine_file(spool_path or b"", self.quarantine_dir, result.reason,
                                 stage="stage1")
        with Session(bind=conn) as session:  # rare: the ORM and record_audit() are fine here
            session.execute(update(Instance).where(Instance.id == instance_id).values(
                state=InstanceState.QUARANTINED, error=result.reason))
            session.add(QuarantineItem(node=NODE, stored_path=str(stored),
                                       reason=result.reason, stage="stage1",
                                       sha256=_sha256_file(stored),
                                       size_bytes=stored.stat().st_size))
            record_audit(session, NODE, "instance.quarantined", stored.name,
                         reason=result.reason)
            session.flush()
        LOG.warning("stage1.quarantined", item=stored.name, reason=result.reason)

    def _seal(self, conn: Connection, keyword: str, pseudonym: str, original: str,
              sealed: set[str]) -> None:
        """Store the original under the key ring once per (keyword, original)."""
        lookup = hmac.new(self._lookup_key, f"{keyword}\x00{original}".encode(),
                          hashlib.sha256).hexdigest()
        if lookup in self._sealed or lookup in sealed:
            return
        sealed.add(lookup)
        if conn.scalar(select(Pseudonym.id).where(Pseudonym.lookup == lookup)) is not None:
            return
        token = self.keyring.seal(original.encode("utf-8"), keyword.encode("ascii"))
        try:
            with conn.begin_nested():
                conn.execute(insert(cast(Table, Pseudonym.__table__)).values(
                    keyword=keyword, pseudonym=pseudonym, lookup=lookup, sealed=token,
                    key_id=self.keyring.active_key_id, created_at=utcnow()))
        except IntegrityError:  # issued meanwhile by another process: same mapping
            pass


def touch_study(conn: Connection, study_uid: str, now: datetime | None = None) -> None:
    """Create the study row if needed and move its quiet period forward (RECEIVING again)."""
    now = now or utcnow()
    if conn.execute(_TOUCH, {"b_uid": study_uid, "b_now": now}).rowcount:
        return
    try:
        with conn.begin_nested():
            conn.execute(insert(_STUDIES).values(
                node=NODE, new_study_instance_uid=study_uid, state=StudyState.RECEIVING,
                instance_count=0, first_received_at=now, last_received_at=now))
    except IntegrityError:  # created meanwhile by another process
        pass


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
