"""The Receiver's DIMSE handlers: C-STORE into the UID-named store, a log line per association.

The promise to the sender is the one stage 1 makes: success (0x0000) only after the file is
fsynced and renamed into its final place *and* its row is committed. The Receiver stores
instances as received (stage 2 has already anonymized them), so there is no spool: the bytes go
straight to ``<store>/<Study>/<Series>/<SOP Instance UID>.dcm`` (:mod:`receiver.storage`). Bad
input gets what stage 1 gives it (0xC210 and quarantine, the node keeps serving); a full disk or
an unreachable database gets 0xA700, so the sender retries later.

A re-sent instance (same SOP Instance UID) is acknowledged without a second row or file. If its
content differs, the newest copy wins: the file is replaced, the row updated and an
``instance.replaced`` audit event recorded, because a silent replacement of research data is
something a reviewer must be able to see. Instances are serialized per SOP Instance UID (a
striped lock), so two associations delivering the same instance at once cannot interleave their
file and database writes.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pynetdicom import evt
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from appliance.audit import record_audit
from appliance.dimse import Status, handle_echo, set_nodelay
from appliance.durable import write_atomic
from appliance.logging import get_logger
from appliance.models import (
    Instance,
    InstanceState,
    Node,
    QuarantineItem,
    Study,
    StudyState,
    utcnow,
)
from appliance.quarantine import quarantine_file
from appliance.validation import BadInstance, check_dataset
from receiver.storage import UnsafeUID, instance_path, make_instance_dirs, remove_empty_dirs

NODE = Node.RECEIVER
LOG = get_logger("tce.receiver")
_STRIPES = 64
_DB_ATTEMPTS = 3  # a unique-key race on PostgreSQL (two new series of one new study) is retried


@dataclass(frozen=True)
class Received:
    """A dataset that passed validation, and where it belongs."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    path: Path


class AssociationLog:
    """Per-association JSON log lines: who connected, what they sent, how it ended.

    Only AE titles, addresses, counts and statuses are logged: nothing from the datasets.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._open: dict[int, tuple[int, Counter[str], float]] = {}
        self._ended: dict[int, str] = {}

    def accepted(self, event: evt.Event) -> None:
        assoc = event.assoc
        with self._lock:
            number = next(self._ids)
            self._open[id(assoc)] = (number, Counter(), time.monotonic())
        LOG.info("receiver.association_accepted", association=number,
                 calling_ae=assoc.requestor.ae_title, peer=assoc.requestor.address,
                 contexts=len(assoc.accepted_contexts),
                 rejected_contexts=len(assoc.rejected_contexts))

    def rejected(self, event: evt.Event) -> None:
        LOG.warning("receiver.association_rejected", calling_ae=event.assoc.requestor.ae_title,
                    peer=event.assoc.requestor.address)

    def ended(self, event: evt.Event) -> None:
        """EVT_RELEASED / EVT_ABORTED: remember how, for the closing line."""
        with self._lock:
            self._ended[id(event.assoc)] = ("released" if event.event == evt.EVT_RELEASED
                                            else "aborted")

    def count(self, event: evt.Event, outcome: str) -> None:
        with self._lock:
            entry = self._open.get(id(event.assoc))
            if entry is not None:
                entry[1][outcome] += 1

    def closed(self, event: evt.Event) -> None:
        """EVT_CONN_CLOSE: the summary line of an accepted association."""
        with self._lock:
            entry = self._open.pop(id(event.assoc), None)
            how = self._ended.pop(id(event.assoc), "closed")
        if entry is None:
            return
        number, counts, started = entry
        LOG.info("receiver.association_closed", association=number, how=how,
                 calling_ae=event.assoc.requestor.ae_title,
                 seconds=round(time.monotonic() - started, 3),
                 instances=sum(counts.values()), **dict(sorted(counts.items())))


class StoreHandler:
    """``EVT_C_STORE`` handler of the Receiver (see the module docstring)."""

    def __init__(self, sessions: sessionmaker[Session], store_dir: Path, quarantine_dir: Path,
                 associations: AssociationLog | None = None) -> None:
        self.sessions = sessions
        self.store_dir = Path(store_dir)
        self.quarantine_dir = Path(quarantine_dir)
        self.associations = associations or AssociationLog()
        self._locks = [threading.Lock() for _ in range(_STRIPES)]

    def __call__(self, event: evt.Event) -> int:
        started = time.perf_counter()
        request: Any = event.request
        affected = str(request.AffectedSOPInstanceUID or "")
        try:
            stream = event.encoded_dataset(include_meta=True)
        except Exception:
            return self._answer(event, "refused", Status.CANNOT_UNDERSTAND_DECODE)
        try:
            received = self.check(stream, affected, str(event.context.abstract_syntax),
                                  str(event.context.transfer_syntax))
        except BadInstance as exc:
            self._quarantine(stream, str(exc))
            return self._answer(event, "refused", Status.CANNOT_UNDERSTAND_DECODE)
        try:
            with self._lock_for(received.sop_instance_uid):
                outcome = self.store(received, stream, event.assoc.requestor.ae_title)
        except OSError as exc:  # disk full, permissions: out of resources, node keeps serving
            LOG.error("receiver.store_failed", sop_instance_uid=received.sop_instance_uid,
                      error=type(exc).__name__)
            return self._answer(event, "failed", Status.OUT_OF_RESOURCES)
        except SQLAlchemyError as exc:
            LOG.error("receiver.db_failed", sop_instance_uid=received.sop_instance_uid,
                      error=type(exc).__name__)
            return self._answer(event, "failed", Status.OUT_OF_RESOURCES)
        LOG.info(f"receiver.{outcome}", sop_instance_uid=received.sop_instance_uid,
                 study_instance_uid=received.study_instance_uid, bytes=len(stream),
                 ms=round((time.perf_counter() - started) * 1000, 2))
        return self._answer(event, outcome, Status.SUCCESS)

    def _answer(self, event: evt.Event, outcome: str, status: Status) -> int:
        self.associations.count(event, outcome)
        return int(status)

    def _lock_for(self, sop_uid: str) -> threading.Lock:
        digest = hashlib.blake2b(sop_uid.encode(), digest_size=2).digest()
        return self._locks[int.from_bytes(digest, "big") % _STRIPES]

    def check(self, stream: bytes, affected_uid: str, sop_class_uid: str,
              transfer_syntax_uid: str) -> Received:
        """Validate like stage 1, then make sure the UIDs can name folders and files.

        ``stream`` is pynetdicom's Part 10 encoding: preamble, File Meta Information (whose
        group length says where it ends), then the dataset as received.
        """
        meta_end = 144 + int.from_bytes(stream[140:144], "little")
        checked = check_dataset(stream, transfer_syntax_uid, affected_uid, meta_end)
        try:
            path = instance_path(self.store_dir, checked.study_instance_uid,
                                 checked.series_instance_uid, checked.sop_instance_uid)
        except UnsafeUID as exc:
            raise BadInstance(str(exc)) from exc
        return Received(sop_class_uid, checked.sop_instance_uid, checked.study_instance_uid,
                        checked.series_instance_uid, transfer_syntax_uid, path)

    def store(self, received: Received, stream: bytes, calling_ae: str) -> str:
        """Write and index one instance; returns ``stored``, ``duplicate`` or ``replaced``."""
        sha256 = hashlib.sha256(stream).hexdigest()
        with self.sessions() as session:
            known = session.scalar(select(Instance).where(
                Instance.node == NODE, Instance.received_key == received.sop_instance_uid))
        if (known is not None and known.sha256 == sha256
                and known.store_path == str(received.path) and received.path.is_file()):
            return "duplicate"
        make_instance_dirs(self.store_dir, received.path.parent)
        write_atomic(received.path, stream)
        try:
            outcome, previous = self._index_retrying(received, stream, sha256, calling_ae)
        except BaseException:
            if known is None:  # unacknowledged and unindexed: leave nothing behind
                received.path.unlink(missing_ok=True)
            raise
        if previous is not None and previous != received.path:  # it moved study or series
            previous.unlink(missing_ok=True)
            remove_empty_dirs(self.store_dir, previous.parent)
        return outcome

    def _index_retrying(self, received: Received, stream: bytes, sha256: str,
                        calling_ae: str) -> tuple[str, Path | None]:
        for attempt in range(1, _DB_ATTEMPTS + 1):
            try:
                return self._index(received, stream, sha256, calling_ae)
            except IntegrityError:
                if attempt == _DB_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _index(self, received: Received, stream: bytes, sha256: str,
               calling_ae: str) -> tuple[str, Path | None]:
        now = utcnow()
        with self.sessions.begin() as session:
            row = session.scalar(select(Instance).where(
                Instance.node == NODE, Instance.received_key == received.sop_instance_uid))
            if row is None:
                session.add(Instance(
                    node=NODE, received_key=received.sop_instance_uid,
                    state=InstanceState.STORED, sop_class_uid=received.sop_class_uid,
                    transfer_syntax_uid=received.transfer_syntax_uid,
                    new_sop_instance_uid=received.sop_instance_uid,
                    new_study_instance_uid=received.study_instance_uid,
                    new_series_instance_uid=received.series_instance_uid,
                    store_path=str(received.path), size_bytes=len(stream), sha256=sha256,
                    calling_ae=calling_ae, received_at=now, processed_at=now))
                _touch_study(session, received.study_instance_uid, now, +1)
                return "stored", None
            outcome = "duplicate" if row.sha256 == sha256 else "replaced"
            previous = Path(row.store_path) if row.store_path else None
            if outcome == "replaced":
                record_audit(session, NODE, "instance.replaced", received.sop_instance_uid,
                             actor=calling_ae, previous_sha256=row.sha256, sha256=sha256,
                             previous_bytes=row.size_bytes, bytes=len(stream),
                             moved=row.new_study_instance_uid != received.study_instance_uid
                             or row.new_series_instance_uid != received.series_instance_uid)
            old_study = row.new_study_instance_uid
            if old_study != received.study_instance_uid:
                if old_study:
                    _touch_study(session, old_study, now, -1)
                _touch_study(session, received.study_instance_uid, now, +1)
            elif outcome == "replaced":
                _touch_study(session, received.study_instance_uid, now, 0)
            row.state = InstanceState.STORED
            row.sop_class_uid = received.sop_class_uid
            row.transfer_syntax_uid = received.transfer_syntax_uid
            row.new_study_instance_uid = received.study_instance_uid
            row.new_series_instance_uid = received.series_instance_uid
            row.store_path = str(received.path)
            row.size_bytes, row.sha256, row.calling_ae = len(stream), sha256, calling_ae
            row.received_at = row.processed_at = now
            row.error = None
            return outcome, previous

    def _quarantine(self, stream: bytes, reason: str) -> None:
        try:
            stored = quarantine_file(stream, self.quarantine_dir, reason, stage=NODE.value)
            with self.sessions.begin() as session:
                session.add(QuarantineItem(node=NODE, stored_path=str(stored), reason=reason,
                                           stage="receive",
                                           sha256=hashlib.sha256(stream).hexdigest(),
                                           size_bytes=len(stream)))
                record_audit(session, NODE, "instance.quarantined", stored.name, reason=reason)
            LOG.warning("receiver.quarantined", item=stored.name, reason=reason)
        except Exception as exc:  # quarantine must never take the node down
            LOG.error("receiver.quarantine_failed", error=type(exc).__name__)


def _touch_study(session: Session, study_uid: str, now: datetime, delta: int) -> None:
    """Keep a Study row's instance count and last arrival in step with its instances."""
    study = session.scalar(select(Study).where(Study.node == NODE,
                                               Study.new_study_instance_uid == study_uid))
    if study is None:
        if delta <= 0:
            return
        study = Study(node=NODE, new_study_instance_uid=study_uid, state=StudyState.RECEIVING,
                      instance_count=0, first_received_at=now, last_received_at=now)
        session.add(study)
    study.instance_count += delta
    if study.instance_count <= 0:
        session.delete(study)
        return
    if delta >= 0:
        study.last_received_at = now
        if study.state == StudyState.MEDIA_WRITTEN:  # the medium no longer holds all of it
            study.state = StudyState.RECEIVING


def handler_table(store: StoreHandler) -> list[evt.EventHandlerType]:
    """The (event, handler) pairs the Receiver's SCP is started with."""
    log = store.associations
    return [(evt.EVT_C_STORE, store), (evt.EVT_C_ECHO, handle_echo),
            (evt.EVT_CONN_OPEN, set_nodelay),
            (evt.EVT_ACCEPTED, log.accepted), (evt.EVT_REJECTED, log.rejected),
            (evt.EVT_RELEASED, log.ended), (evt.EVT_ABORTED, log.ended),
            (evt.EVT_CONN_CLOSE, log.closed)]
