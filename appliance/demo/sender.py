"""C-STORE every DICOM file under a folder, with pynetdicom, the way a modality would.

Why not dcmtk's ``storescu``: the demo must run on a machine with nothing but Python. Files are
streamed as they are on disk (``send_c_store(path)``: no decoding, no re-encoding), in the
transfer syntax they were written in, so a truncated file reaches the node truncated and the
node's own checks decide about it. What is not a DICOM Part 10 file (a text file, a DICOMDIR) is
skipped and reported, never sent.

pynetdicom pauses the requestor's reactor thread around each ``send_c_store`` by clearing an
Event and polling a flag that can be stale; the reactor may then take the C-STORE response off
the queue itself, and the store waits out the DIMSE timeout with an empty status (see
``stage2_export_manager.cstore``, where this was measured). This sender only ever issues
C-STOREs, so it keeps the reactor paused for the whole association, as stage 2's SCU does
(:class:`appliance.dimse.HeldReactorAE`, :func:`appliance.dimse.hold_reactor`), and counts a
missing status as "no response", never as success.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pynetdicom import evt

from appliance.dimse import (
    HeldReactorAE,
    hold_reactor,
    quiet_identifiers,
    release_reactor,
    set_nodelay,
)

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # a DICOMDIR: not an instance to store
MAX_CONTEXTS = 120  # PS3.8 allows 128 presentation contexts per association
WARNING_STATUSES = frozenset({0x0001, 0xB000, 0xB006, 0xB007})
SUCCESS = 0x0000


@dataclass(frozen=True)
class _File:
    path: Path
    sop_class_uid: str
    transfer_syntax_uid: str


@dataclass
class SendReport:
    """What happened to each file under the folder."""

    stored: list[Path] = field(default_factory=list)  # 0x0000 or a warning status
    refused: list[tuple[Path, int | None]] = field(default_factory=list)  # None: no response
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # not sent, and why

    @property
    def sent(self) -> int:
        return len(self.stored) + len(self.refused)

    def summary(self, root: Path) -> list[str]:
        """Lines for the user; files are named relative to ``root`` (the sample's own names)."""
        lines = [f"{self.sent} file(s) sent: {len(self.stored)} stored,"
                 f" {len(self.refused)} refused; {len(self.skipped)} skipped"]
        for path, status in self.refused:
            why = "no response" if status is None else f"status 0x{status:04X}"
            lines.append(f"  refused  {_relative(path, root)}: {why}")
        for path, reason in self.skipped:
            lines.append(f"  skipped  {_relative(path, root)}: {reason}")
        return lines


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def classify(folder: Path) -> tuple[list[_File], list[tuple[Path, str]]]:
    """Part 10 instances under ``folder`` (sorted by path), and the files skipped with why."""
    files: list[_File] = []
    skipped: list[tuple[Path, str]] = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            meta = read_file_meta_info(path)
        except InvalidDicomError:
            skipped.append((path, "not a DICOM file"))
            continue
        except (OSError, ValueError, EOFError, KeyError) as exc:
            skipped.append((path, f"unreadable file meta ({type(exc).__name__})"))
            continue
        sop_class = str(meta.get("MediaStorageSOPClassUID", ""))
        syntax = str(meta.get("TransferSyntaxUID", ""))
        if sop_class == MEDIA_STORAGE_DIRECTORY:
            skipped.append((path, "a DICOMDIR (a directory of files, not an instance)"))
        elif not sop_class or not syntax or "MediaStorageSOPInstanceUID" not in meta:
            skipped.append((path, "file meta without SOP class, instance or transfer syntax"))
        else:
            files.append(_File(path, sop_class, syntax))
    return files, skipped


def _batches(files: list[_File]) -> Iterator[list[_File]]:
    """Files in groups whose (SOP class, transfer syntax) pairs fit one association."""
    batch: list[_File] = []
    pairs: set[tuple[str, str]] = set()
    for item in files:
        pair = (item.sop_class_uid, item.transfer_syntax_uid)
        if pair not in pairs and len(pairs) == MAX_CONTEXTS:
            yield batch
            batch, pairs = [], set()
        pairs.add(pair)
        batch.append(item)
    if batch:
        yield batch


def send_folder(folder: Path, host: str, port: int, called: str, *,
                calling: str = "TCE_DEMO_SCU", timeout: float = 30.0) -> SendReport:
    """C-STORE every DICOM file under ``folder`` to ``called`` at ``host:port``.

    Raises ``ConnectionError`` when the peer refuses or cannot be reached at all; a lost
    association leaves the remaining files refused with no response.
    """
    quiet_identifiers()
    files, skipped = classify(folder)
    report = SendReport(skipped=skipped)
    for batch in _batches(files):
        _send_batch(batch, host, port, called, calling, timeout, report)
    return report


def _send_batch(batch: list[_File], host: str, port: int, called: str, calling: str,
                timeout: float, report: SendReport) -> None:
    ae = HeldReactorAE(ae_title=calling)
    for pair in dict.fromkeys((f.sop_class_uid, f.transfer_syntax_uid) for f in batch):
        ae.add_requested_context(pair[0], [pair[1]])
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    assoc = ae.associate(host, port, ae_title=called,
                         evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay)])
    if not assoc.is_established:
        raise ConnectionError(f"{called} at {host}:{port} did not accept an association from"
                              f" {calling} (rejected, or nothing listening)")
    accepted = {(str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
                for cx in assoc.accepted_contexts}
    hold_reactor(assoc)
    try:
        for item in batch:
            if (item.sop_class_uid, item.transfer_syntax_uid) not in accepted:
                report.skipped.append((item.path, "the peer accepts no presentation context for"
                                       f" SOP class {item.sop_class_uid} in transfer syntax"
                                       f" {item.transfer_syntax_uid}"))
                continue
            status: int | None = None
            if assoc.is_established:
                response = assoc.send_c_store(item.path)
                status = int(response.Status) if "Status" in response else None
            if status == SUCCESS or status in WARNING_STATUSES:
                report.stored.append(item.path)
            else:
                report.refused.append((item.path, status))
    finally:
        release_reactor(assoc)
        if assoc.is_established:
            assoc.release()
