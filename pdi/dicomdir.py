"""Encode a DICOMDIR (PS3.10 §8, PS3.3 F.3) from a tree of directory records.

Why not `pydicom.fileset.FileSet.write()`: it forces its own PTxxxxxx/... layout at the File-set
root (IHE PDI wants the DICOM files under DICOM/), and it stages a second copy of every instance
in a temporary folder before copying it again. Here the writer copies each file once, to its
final File ID, and this module only encodes the directory. The record offsets are computed
from the encoded length of each record, and `write_dicomdir()` re-reads what it wrote and checks
every offset before returning, so a wrong offset can never reach a medium.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite, write_dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, MediaStorageDirectoryStorage

_ITEM_HEADER = 8  # (FFFE,E000) tag + 4-byte length; pydicom writes items with explicit lengths
_SQ_HEADER = 12  # tag, "SQ", 2 reserved bytes, 4-byte length (Explicit VR Little Endian)


@dataclass
class DirNode:
    """One directory record and the records of the lower-level directory entity it points to."""

    record: Dataset
    children: list[DirNode] = field(default_factory=list)

    def walk(self) -> Iterator[DirNode]:
        """This node, then its descendants depth-first (the order records are encoded in)."""
        yield self
        for child in self.children:
            yield from child.walk()


def _encoded_length(record: Dataset) -> int:
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_dataset(fp, record)
    return len(fp.getvalue())


def _prepare(node: DirNode) -> None:
    """Give every record its offset elements (placeholders: UL, so the length is fixed)."""
    if "DirectoryRecordType" not in node.record:
        raise ValueError("every directory record needs a Directory Record Type (0004,1430)")
    node.record.OffsetOfTheNextDirectoryRecord = 0
    # Retired since 2004, but dciodvfy and older readers still expect it; FFFFH = "in use".
    node.record.RecordInUseFlag = 0xFFFF
    node.record.OffsetOfReferencedLowerLevelDirectoryEntity = 0


def build_dicomdir(
    roots: Sequence[DirNode], *, file_set_uid: str, file_set_id: str, implementation: str
) -> Dataset:
    """The DICOMDIR dataset with all offsets filled in (records must have DirectoryRecordType)."""
    if not roots:
        raise ValueError("a DICOMDIR must reference at least one file (PS3.11 STD-GEN)")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MediaStorageDirectoryStorage
    meta.MediaStorageSOPInstanceUID = UID(file_set_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationVersionName = implementation[:16]

    ds = Dataset()
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128
    ds.FileSetID = file_set_id
    ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = 0
    ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = 0
    ds.FileSetConsistencyFlag = 0

    nodes = [node for root in roots for node in root.walk()]
    for node in nodes:
        _prepare(node)
    # Everything before (0004,1220) has a fixed length, so encode it once to find where the
    # Directory Record Sequence starts; each item then starts where the previous one ended.
    head = BytesIO()
    dcmwrite(head, ds, enforce_file_format=True)
    offset = len(head.getvalue()) + _SQ_HEADER
    offsets: dict[int, int] = {}
    for node in nodes:
        offsets[id(node)] = offset
        offset += _ITEM_HEADER + _encoded_length(node.record)

    def link(siblings: Sequence[DirNode]) -> None:
        for index, node in enumerate(siblings):
            nxt = siblings[index + 1] if index + 1 < len(siblings) else None
            node.record.OffsetOfTheNextDirectoryRecord = offsets[id(nxt)] if nxt else 0
            node.record.OffsetOfReferencedLowerLevelDirectoryEntity = (
                offsets[id(node.children[0])] if node.children else 0
            )
            link(node.children)

    link(roots)
    ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = offsets[id(roots[0])]
    ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = offsets[id(roots[-1])]
    ds.DirectoryRecordSequence = [node.record for node in nodes]
    return ds


def write_dicomdir(path: Path, ds: Dataset) -> None:
    """Write `ds` to `path`, fsync it, and verify that every record sits at its stated offset."""
    with path.open("wb") as fp:
        dcmwrite(fp, ds, enforce_file_format=True)
        fp.flush()
        os.fsync(fp.fileno())
    check_offsets(path)


def check_offsets(path: Path) -> None:
    """Raise ValueError unless every offset in the DICOMDIR points at the start of a record."""
    ds = dcmread(path)
    records = list(ds.DirectoryRecordSequence)
    starts = {record.seq_item_tell for record in records}
    pointers = [
        ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity,
        ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity,
    ]
    for record in records:
        pointers += [record.OffsetOfTheNextDirectoryRecord,
                     record.OffsetOfReferencedLowerLevelDirectoryEntity]
    bad = [p for p in pointers if p and p not in starts]
    if bad:
        raise ValueError(f"{path}: {len(bad)} directory record offsets do not point at a record")
