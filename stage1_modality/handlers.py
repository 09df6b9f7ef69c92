"""C-STORE for stage 1: spool while receiving, validate, make durable, then answer.

The bytes of a dataset go to a temporary file in the spool folder while they arrive (see
:mod:`appliance.streaming_scp`), so the node never holds a whole instance in memory. After the
last fragment the file is fsynced, checked (:func:`appliance.validation.check_dataset`, reading
the file through an mmap of the page cache), renamed to its spool name, and the spool folder is
fsynced (once for every association waiting at that moment). Success (0x0000) is answered only
then, so an acknowledged instance survives any crash: the spool is the durable queue
(:mod:`stage1_modality.spool`). The instance row is committed by the recorder right after,
off the acknowledgement path; a crash in between leaves a spool file without a row, which the
next start adopts.

No original identifier is stored: the spool file and the row are named by a keyed hash of the
SOP Instance UID (the "receipt key"), which also makes a re-sent instance idempotent: it is
acknowledged again, and the recorder finds its row and drops the second copy. Only a valid
dataset is renamed into the spool, so a bad copy of an instance that is still queued never
replaces the good one.
"""

from __future__ import annotations

import mmap
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from appliance.audit import record_audit
from appliance.dimse import Status
from appliance.logging import get_logger
from appliance.models import Node, QuarantineItem
from appliance.quarantine import quarantine_file, read_reason
from appliance.streaming_scp import StoreRequest
from appliance.validation import BadInstance, check_dataset, receipt_key
from stage1_modality.recorder import Receipt
from stage1_modality.spool import FolderSync, SpareFiles, SpoolFile

LOG = get_logger("tce.scp")

__all__ = ["StoreHandler", "receipt_key"]


class StoreHandler:
    """The stage-1 node's C-STORE handler for :class:`~appliance.streaming_scp.StreamingScp`."""

    def __init__(self, node: Node, sessions: sessionmaker[Session], spool_dir: Path,
                 quarantine_dir: Path, hash_key: bytes,
                 study_uid_for: Callable[[str], str],
                 record: Callable[[Receipt], None]) -> None:
        self.node = node
        self.sessions = sessions
        self.spool_dir = spool_dir
        self.quarantine_dir = quarantine_dir
        self.hash_key = hash_key
        self.study_uid_for = study_uid_for  # original Study Instance UID -> the new one
        self.record = record  # queues the row; returns at once
        self.folder_sync = FolderSync(spool_dir)
        self.spares = SpareFiles(spool_dir)

    def __call__(self, request: StoreRequest) -> _Spooling | int:
        key = receipt_key(self.hash_key, request.sop_instance_uid)
        try:
            spooled = SpoolFile(self.spool_dir / f"{key}.dcm", self.spares.take())
        except OSError as exc:  # disk full, permissions: out of resources, node keeps serving
            LOG.error("scp.store_failed", receipt=key[:16], error=type(exc).__name__)
            return int(Status.OUT_OF_RESOURCES)
        header = request.part10_header()
        try:
            spooled.write(header)
        except OSError as exc:
            spooled.abandon()
            LOG.error("scp.store_failed", receipt=key[:16], error=type(exc).__name__)
            return int(Status.OUT_OF_RESOURCES)
        return _Spooling(self, request, key, spooled, len(header))

    def close(self) -> None:
        """After the last association: remove the spare files."""
        self.spares.close()

    def finish(self, spooling: _Spooling) -> int:
        """The last fragment is written: make it durable and check it; the status to answer."""
        started = time.perf_counter()
        key, request, spooled = spooling.key, spooling.request, spooling.file
        try:
            spooled.sync()
            with mmap.mmap(spooled.fd, 0, access=mmap.ACCESS_READ) as view:
                try:
                    checked = check_dataset(view, request.transfer_syntax_uid,
                                            request.sop_instance_uid, spooling.header_size)
                    reason = ""
                except BadInstance as exc:
                    reason = str(exc)
            if reason:
                spooled.close()
                self._quarantine(spooled.tmp, reason, key)
                spooled.abandon()
                return int(Status.CANNOT_UNDERSTAND_DECODE)
            spooled.publish()
            self.folder_sync.sync()
        except OSError as exc:  # disk full, I/O error: not kept, the sender retries later
            spooled.abandon()
            LOG.error("scp.store_failed", receipt=key[:16], error=type(exc).__name__)
            return int(Status.OUT_OF_RESOURCES)
        self.record(Receipt(
            key=key, spool_path=spooled.target, sop_class_uid=request.sop_class_uid,
            transfer_syntax_uid=request.transfer_syntax_uid,
            study_uid=self.study_uid_for(checked.study_instance_uid), size=spooled.size,
            calling_ae=request.calling_ae))
        LOG.debug("scp.stored", receipt=key[:16], bytes=spooled.size,
                  ms=round((time.perf_counter() - started) * 1000, 2))
        return int(Status.SUCCESS)

    def _quarantine(self, path: Path, reason: str, key: str) -> None:
        try:
            stored = quarantine_file(path, self.quarantine_dir, reason, stage=self.node.value)
            record = read_reason(stored)
            with self.sessions.begin() as session:
                session.add(QuarantineItem(node=self.node, stored_path=str(stored), reason=reason,
                                           stage="receive", sha256=record.sha256,
                                           size_bytes=record.size))
                record_audit(session, self.node, "instance.quarantined", stored.name,
                             reason=reason)
            LOG.warning("scp.quarantined", item=stored.name, reason=reason)
        except Exception as exc:  # quarantine must never take the node down
            LOG.error("scp.quarantine_failed", receipt=key[:16], error=type(exc).__name__)


class _Spooling:
    """One dataset on its way into the spool (the :class:`Incoming` of the SCP)."""

    def __init__(self, handler: StoreHandler, request: StoreRequest, key: str,
                 spooled: SpoolFile, header_size: int) -> None:
        self.handler = handler
        self.request = request
        self.key = key
        self.file = spooled
        self.header_size = header_size

    def write(self, fragment: memoryview) -> None:
        self.file.write(fragment)

    def complete(self) -> int:
        try:
            return self.handler.finish(self)
        except BaseException:  # a bug: the SCP answers a failure; leave no open file behind
            self.file.abandon()
            raise

    def abandon(self) -> None:
        self.file.abandon()

