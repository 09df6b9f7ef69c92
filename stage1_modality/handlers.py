"""C-STORE for stage 1: validate, spool durably, record, then answer.

Success (0x0000) is returned only after the received bytes are fsynced and renamed into the
spool folder *and* the instance row is committed (the recorder fsyncs the spool folder and
commits, for every association waiting at that moment at once), so an acknowledged instance
survives any crash. Nothing is decoded beyond what validation needs, and no original identifier
is stored: the spool file and the row are named by a keyed hash of the SOP Instance UID (the
"receipt key"), which also makes a re-sent instance idempotent: it is acknowledged again, and
the recorder finds its row and drops the second copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import cast

import pydicom
from pynetdicom import evt
from pynetdicom.dimse_primitives import C_STORE
from sqlalchemy.orm import Session, sessionmaker

from appliance.audit import record_audit
from appliance.dimse import Status
from appliance.durable import publish, write_temporary
from appliance.logging import get_logger
from appliance.models import Node, QuarantineItem
from appliance.quarantine import quarantine_file
from appliance.validation import BadInstance, receipt_key, validate
from stage1_modality.recorder import Receipt

LOG = get_logger("tce.scp")

__all__ = ["StoreHandler", "receipt_key"]


class StoreHandler:
    """``EVT_C_STORE`` handler of the stage-1 node."""

    def __init__(self, node: Node, sessions: sessionmaker[Session], spool_dir: Path,
                 quarantine_dir: Path, hash_key: bytes,
                 study_uid_for: Callable[[pydicom.Dataset], str],
                 receive: Callable[[Receipt], Receipt]) -> None:
        self.node = node
        self.sessions = sessions
        self.spool_dir = spool_dir
        self.quarantine_dir = quarantine_dir
        self.hash_key = hash_key
        self.study_uid_for = study_uid_for
        self.receive = receive
        self._io = ThreadPoolExecutor(max_workers=8, thread_name_prefix="scp-spool")

    def __call__(self, event: evt.Event) -> int:
        started = time.perf_counter()
        request = cast(C_STORE, event.request)
        affected = str(request.AffectedSOPInstanceUID or "")
        try:
            stream = event.encoded_dataset(include_meta=True)
        except Exception:
            return int(Status.CANNOT_UNDERSTAND_DECODE)
        key = receipt_key(self.hash_key, affected)
        spool = self.spool_dir / f"{key}.dcm"
        # The bytes are written and fsynced (which releases the GIL) while they are validated;
        # only a valid dataset is renamed into the spool, so a bad copy of an instance that is
        # still queued never replaces the good one.
        writing = self._io.submit(write_temporary, spool, stream)
        try:
            ds = validate(stream, affected)
        except Exception as exc:
            reason = (str(exc) if isinstance(exc, BadInstance)  # else a decoder error that
                      else f"dataset cannot be decoded ({type(exc).__name__})")  # is bad input
            _discard(writing)
            self._quarantine(stream, reason, key)
            return int(Status.CANNOT_UNDERSTAND_DECODE)
        try:
            publish(writing.result(), spool, sync_dir=False)  # the recorder fsyncs the folder
        except OSError as exc:  # disk full, permissions: out of resources, node keeps serving
            LOG.error("scp.store_failed", receipt=key[:16], error=type(exc).__name__)
            return int(Status.OUT_OF_RESOURCES)
        receipt = self.receive(Receipt(
            key=key, spool_path=spool, sop_class_uid=str(request.AffectedSOPClassUID),
            transfer_syntax_uid=str(ds.file_meta.get("TransferSyntaxUID", "")),
            study_uid=self.study_uid_for(ds), size=len(stream),
            calling_ae=str(event.assoc.requestor.ae_title)))
        if receipt.error:  # no row: the sender must not think it is kept. The spool file may
            return int(Status.OUT_OF_RESOURCES)  # be a queued twin's: the next start sweeps it
        LOG.debug("scp.stored", receipt=key[:16], bytes=len(stream),
                  ms=round((time.perf_counter() - started) * 1000, 2))
        return int(Status.SUCCESS)

    def close(self) -> None:
        self._io.shutdown(wait=True)

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


def _discard(writing: Future[Path]) -> None:
    """Remove the temporary file of a write that is no longer wanted."""
    with contextlib.suppress(OSError):
        writing.result().unlink(missing_ok=True)
