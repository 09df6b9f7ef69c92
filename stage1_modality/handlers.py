"""C-STORE for stage 1: validate, spool durably, record, then answer.

Success (0x0000) is returned only after the received bytes are fsynced and renamed into the
spool folder *and* the instance row is committed, so an acknowledged instance survives any
crash. Nothing is decoded beyond what validation needs, and no original identifier is stored:
the spool file and the row are named by a keyed hash of the SOP Instance UID ("receipt key"),
which also makes a re-sent instance idempotent.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from pynetdicom import evt
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from appliance.audit import record_audit
from appliance.dimse import Status
from appliance.durable import write_atomic
from appliance.logging import get_logger
from appliance.models import Instance, InstanceState, Node, QuarantineItem
from appliance.quarantine import quarantine_file

LOG = get_logger("tce.scp")


class BadInstance(Exception):
    """The dataset cannot be accepted; the message (no PHI) becomes the quarantine reason."""


def receipt_key(key: bytes, sop_instance_uid: str) -> str:
    return hmac.new(key, f"receipt\x00{sop_instance_uid}".encode(), hashlib.sha256).hexdigest()


def validate(stream: bytes, affected_uid: str) -> pydicom.Dataset:
    """Parse fully (truncation shows only then) and check the identifying attributes."""
    try:
        ds = pydicom.dcmread(BytesIO(stream))
        for elem in ds.iterall():  # forces every value, so a truncated element is found here
            _ = elem.value
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OSError) as exc:
        raise BadInstance(f"dataset cannot be decoded ({type(exc).__name__})") from exc
    if "PixelData" in ds:
        declared = ds["PixelData"]
        if declared.is_undefined_length is False and ds.get("Rows") and ds.get("Columns"):
            expected = (int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1))
                        * int(ds.get("NumberOfFrames", 1) or 1) * int(ds.get("BitsAllocated", 16))
                        // 8)
            syntax = ds.file_meta.get("TransferSyntaxUID")
            if syntax is not None and not syntax.is_compressed and len(declared.value) < expected:
                raise BadInstance("dataset truncated: PixelData shorter than declared")
    if not str(ds.get("SOPInstanceUID", "")).strip():
        raise BadInstance("dataset has no SOP Instance UID")
    if str(ds.SOPInstanceUID) != affected_uid:
        raise BadInstance("SOP Instance UID differs from the C-STORE request")
    return ds


class StoreHandler:
    """``EVT_C_STORE`` handler for an SCP node (stage 1 here; the Receiver reuses the pattern)."""

    def __init__(self, node: Node, sessions: sessionmaker[Session], spool_dir: Path,
                 quarantine_dir: Path, hash_key: bytes,
                 study_uid_for: Callable[[pydicom.Dataset], str],
                 on_stored: Callable[[Session, Instance], None],
                 after_commit: Callable[[str], None]) -> None:
        self.node = node
        self.sessions = sessions
        self.spool_dir = spool_dir
        self.quarantine_dir = quarantine_dir
        self.hash_key = hash_key
        self.study_uid_for = study_uid_for
        self.on_stored = on_stored
        self.after_commit = after_commit

    def __call__(self, event: evt.Event) -> int:
        started = time.perf_counter()
        request = event.request
        affected = str(request.AffectedSOPInstanceUID or "")
        calling = event.assoc.requestor.ae_title
        try:
            stream = event.encoded_dataset(include_meta=True)
        except Exception:
            return int(Status.CANNOT_UNDERSTAND_DECODE)
        key = receipt_key(self.hash_key, affected)
        try:
            ds = validate(stream, affected)
        except BadInstance as exc:
            self._quarantine(stream, str(exc), key)
            return int(Status.CANNOT_UNDERSTAND_DECODE)
        try:
            status = self._store(key, stream, ds, calling, str(request.AffectedSOPClassUID))
        except OSError as exc:  # disk full, permissions: out of resources, node keeps serving
            LOG.error("scp.store_failed", receipt=key[:16], error=type(exc).__name__)
            return int(Status.OUT_OF_RESOURCES)
        except OperationalError as exc:
            LOG.error("scp.db_failed", receipt=key[:16], error=type(exc).__name__)
            return int(Status.OUT_OF_RESOURCES)
        LOG.debug("scp.stored", receipt=key[:16], bytes=len(stream),
                  ms=round((time.perf_counter() - started) * 1000, 2))
        return status

    def _store(self, key: str, stream: bytes, ds: pydicom.Dataset, calling: str,
               sop_class: str) -> int:
        with self.sessions() as session:
            existing = session.scalar(select(Instance.state).where(
                Instance.node == self.node, Instance.received_key == key))
        if existing is not None:
            LOG.info("scp.duplicate", receipt=key[:16], state=str(existing))
            return int(Status.SUCCESS)
        spool = self.spool_dir / f"{key}.dcm"
        write_atomic(spool, stream)
        try:
            with self.sessions.begin() as session:
                instance = Instance(
                    node=self.node, received_key=key, state=InstanceState.RECEIVED,
                    sop_class_uid=sop_class,
                    transfer_syntax_uid=str(ds.file_meta.get("TransferSyntaxUID", "")),
                    new_study_instance_uid=self.study_uid_for(ds),
                    spool_path=str(spool), size_bytes=len(stream),
                    sha256=hashlib.sha256(stream).hexdigest(), calling_ae=calling)
                session.add(instance)
                session.flush()
                self.on_stored(session, instance)
        except IntegrityError:  # the same instance on a parallel association: one row wins
            return int(Status.SUCCESS)
        self.after_commit(key)
        return int(Status.SUCCESS)

    def _quarantine(self, stream: bytes, reason: str, key: str) -> None:
        try:
            stored = quarantine_file(stream, self.quarantine_dir, reason, stage=self.node.value)
            with self.sessions.begin() as session:
                session.add(QuarantineItem(node=self.node, stored_path=str(stored), reason=reason,
                                           stage="receive",
                                           sha256=hashlib.sha256(stream).hexdigest(),
                                           size_bytes=len(stream)))
                record_audit(session, self.node, "instance.quarantined", stored.name,
                             reason=reason)
            LOG.warning("scp.quarantined", item=stored.name, reason=reason)
        except Exception as exc:  # quarantine must never take the node down
            LOG.error("scp.quarantine_failed", receipt=key[:16], error=type(exc).__name__)
