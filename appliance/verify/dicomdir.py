"""DICOMDIR checks: every record points at a file of the set and holds only that file's values.

A DICOMDIR is not de-identified by the engine; the PDI writer (:mod:`pdi.records`) builds it
from the de-identified files, copying a fixed list of keys and putting documented placeholders
where a Type 1 key is empty. So a record may hold only (a) a value one of the files below it
holds for the same attribute, (b) a documented placeholder for that attribute, or (c) nothing.
Anything else (an original name put back in a PATIENT record) is an ERROR, whatever the policy;
so are private attributes, record chains that point nowhere or loop, records whose File ID is
unsafe or names no file of the set or a file holding another instance, and DICOM files below
the DICOMDIR that no record references. UIDs inside records get the UID check; the DICOMDIR's
own File-set UID is a fresh UID the writer makes, so it is only checked for being valid.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from appliance.verify.findings import Check, Findings
from appliance.verify.uids import check_uid, is_valid_uid
from pdi.reader import _resolve
from policies.annex_e import STRUCTURAL_UID_TAGS, keyword_or_tag
from policies.charset import encodings_of, raw_strings

_NUMBER = re.compile(r"\d{1,12}")
_PLACEHOLDERS: dict[str, re.Pattern[str]] = {  # pdi.records: the documented fallbacks
    "PatientID": re.compile(r"NOID[0-9A-F]{8}"),
    "StudyID": re.compile(r"[0-9A-F]{8}"),
    "StudyDate": re.compile("19000101"), "StudyTime": re.compile("000000"),
    "ContentDate": re.compile("19000101"), "ContentTime": re.compile("000000"),
    "PresentationCreationDate": re.compile("19000101"),
    "PresentationCreationTime": re.compile("000000"),
    "Modality": re.compile("OT"), "SeriesNumber": _NUMBER, "InstanceNumber": _NUMBER,
    "CompletionFlag": re.compile("PARTIAL"), "VerificationFlag": re.compile("UNVERIFIED"),
    "ContentLabel": re.compile("UNNAMED"),
}
_BINARY_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN", "SQ", "US", "SS", "UL",
                         "SL", "UV", "SV", "FL", "FD", "AT"})
_SPECIFIC_CHARACTER_SET = 0x00080005
_FILE_ID, _SOP_CLASS_IN_FILE = 0x00041500, 0x00041510
_SOP_INSTANCE_IN_FILE, _SYNTAX_IN_FILE = 0x00041511, 0x00041512
_VERIFYING_OBSERVER_SEQUENCE, _VERIFICATION_DATE_TIME = 0x0040A073, 0x0040A030


@dataclass
class FileSummary:
    """The top-level values of one DICOM file that a directory record may copy."""

    rel: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax: str
    values: dict[int, str] = field(default_factory=dict)


def summarise(rel: str, ds: Dataset) -> FileSummary:
    encodings = encodings_of(ds)
    values: dict[int, str] = {}
    for tag in ds.keys():  # noqa: SIM118
        elem = ds.get_item(tag, keep_deferred=True)
        if int(tag) & 0x10000 or (elem.VR or "") in _BINARY_VRS or elem.value is None:
            continue
        values[int(tag)] = "\\".join(v.strip() for v in raw_strings(elem, encodings))
    verified = [v for item in _items(ds, _VERIFYING_OBSERVER_SEQUENCE)
                for v in raw_strings(item.get_item(_VERIFICATION_DATE_TIME), encodings)]
    if verified:  # an SR DOCUMENT record carries the latest verification time (pdi.records)
        values[_VERIFICATION_DATE_TIME] = max(v.strip() for v in verified)
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    return FileSummary(rel, values.get(0x00080018, ""), values.get(0x00080016, ""), syntax,
                       values)


def _items(ds: Dataset, tag: int) -> list[Dataset]:
    try:
        value = ds[tag].value if tag in ds else None
    except Exception:  # a damaged sequence: nothing to summarise
        return []
    return list(value) if isinstance(value, Sequence) else []


@dataclass
class DicomdirCheck:
    """Check one DICOMDIR file against the set's file summaries (by resolved path)."""

    findings: Findings
    path: Path
    rel: str
    summaries: dict[Path, FileSummary]
    remap_uids: bool
    uid_root: str
    rel_of: Callable[[Path], str]
    referenced: set[Path] = field(default_factory=set)

    def run(self, dicom_below: list[Path]) -> None:
        try:
            ds = dcmread(self.path)
            records = list(ds.DirectoryRecordSequence)
            first = int(ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity)
        except Exception as exc:  # damaged files raise many different pydicom errors
            self.error("", f"DICOMDIR cannot be read ({type(exc).__name__})")
            return
        file_set_uid = str(ds.file_meta.get("MediaStorageSOPInstanceUID", ""))
        if not is_valid_uid(file_set_uid):
            self.error("(file meta) MediaStorageSOPInstanceUID", "not a valid UID")
        self._private(ds, "")
        by_offset = {int(r.seq_item_tell): (i, r) for i, r in enumerate(records)}
        visited: set[int] = set()
        self._chain(first, by_offset, visited, ds)
        for offset, (index, _record) in sorted(by_offset.items()):
            if offset not in visited:
                self.error(f"DirectoryRecordSequence[{index}]",
                           "record outside the directory hierarchy (orphan)")
        for path in dicom_below:
            if path.resolve() not in self.referenced:
                self.error("", f"{self.rel_of(path)} is not referenced by this DICOMDIR")

    def error(self, path: str, message: str) -> None:
        self.findings.error(Check.DICOMDIR, self.rel, path, message)

    def _chain(self, offset: int, by_offset: dict[int, tuple[int, Dataset]],
               visited: set[int], top: Dataset) -> list[FileSummary]:
        """Walk one chain of sibling records; returns the files below all of them."""
        below_all: list[FileSummary] = []
        while offset:
            entry = by_offset.get(offset)
            if entry is None or offset in visited:
                self.error("DirectoryRecordSequence",
                           "a record offset points at no record or loops back")
                return below_all
            visited.add(offset)
            index, record = entry
            where = f"DirectoryRecordSequence[{index}]"
            lower = int(record.get("OffsetOfReferencedLowerLevelDirectoryEntity", 0) or 0)
            below = self._chain(lower, by_offset, visited, top) if lower else []
            if _FILE_ID in record:
                leaf = self._leaf(record, where)
                if leaf is not None:
                    below = [*below, leaf]
            self._values(record, where, below, encodings_of(record, encodings_of(top)))
            below_all += below
            offset = int(record.get("OffsetOfTheNextDirectoryRecord", 0) or 0)
        return below_all

    def _leaf(self, record: Dataset, where: str) -> FileSummary | None:
        value = record[_FILE_ID].value
        components = [value] if isinstance(value, str) else [str(v) for v in value]
        if not components or any(c in ("", ".", "..") or "/" in c or "\\" in c
                                 for c in components):
            self.error(f"{where}.ReferencedFileID", "unsafe File ID")
            return None
        path = _resolve(self.path.parent, components)
        summary = self.summaries.get(path.resolve()) if path is not None else None
        if path is None or summary is None:
            self.error(f"{where}.ReferencedFileID", "names no DICOM file of this set")
            return None
        self.referenced.add(path.resolve())
        for tag, expected, what in ((_SOP_INSTANCE_IN_FILE, summary.sop_instance_uid, "instance"),
                                    (_SOP_CLASS_IN_FILE, summary.sop_class_uid, "SOP class"),
                                    (_SYNTAX_IN_FILE, summary.transfer_syntax, "transfer syntax")):
            elem = record.get(tag)
            found = str(elem.value if elem is not None else "").strip("\x00 ")
            if found and found != expected:
                self.error(f"{where}.{keyword_or_tag(tag)}",
                           f"differs from the {what} of the file it references"
                           f" ({summary.rel})")
        return summary

    def _values(self, record: Dataset, where: str, below: list[FileSummary],
                encodings: list[str]) -> None:
        self._private(record, f"{where}.")
        for tag in record.keys():  # noqa: SIM118
            tag_int = int(tag)
            elem = record.get_item(tag, keep_deferred=True)
            if tag_int >> 16 == 0x0004 or tag_int & 0x10000 or tag_int == _SPECIFIC_CHARACTER_SET:
                continue
            keyword = keyword_or_tag(tag_int)
            path = f"{where}.{keyword}"
            if elem.VR == "SQ" or isinstance(record[tag].value, Sequence):
                self._uids(record[tag].value, path)
                continue
            if (elem.VR or "") in _BINARY_VRS:
                continue
            value = "\\".join(v.strip() for v in raw_strings(elem, encodings))
            if elem.VR == "UI":
                self._uid(path, value)
            if not value or any(s.values.get(tag_int) == value for s in below):
                continue
            placeholder = _PLACEHOLDERS.get(keyword)
            if placeholder is not None and placeholder.fullmatch(value):
                continue
            self.error(path, "holds a value that none of the files below the record holds"
                             " (and that is not a documented placeholder)")

    def _uids(self, items: Sequence, path: str) -> None:
        for index, item in enumerate(items):
            self._private(item, f"{path}[{index}].")
            for elem in item:
                inner = f"{path}[{index}].{keyword_or_tag(int(elem.tag))}"
                if elem.VR == "SQ":
                    self._uids(elem.value, inner)
                elif elem.VR == "UI" and int(elem.tag) not in STRUCTURAL_UID_TAGS:
                    for value in ([elem.value] if isinstance(elem.value, str) else elem.value):
                        self._uid(inner, str(value))

    def _uid(self, path: str, value: str) -> None:
        if value:
            check_uid(self.findings, self.rel, path, value, remap_expected=self.remap_uids,
                      root=self.uid_root)

    def _private(self, ds: Dataset, prefix: str) -> None:
        for tag in ds.keys():  # noqa: SIM118
            if int(tag) & 0x10000:
                self.findings.error(Check.DICOMDIR, self.rel,
                                    f"{prefix}({int(tag) >> 16:04X},{int(tag) & 0xFFFF:04X})",
                                    "private attribute in a DICOMDIR")
