"""Read PDI media (RAD-47 Portable Media Importer side): find every instance, report problems.

Why this does not simply call `pydicom.fileset.FileSet(path)`: an importer meets media it did
not write. FileSet raises on a bad offset and, for orphan records, stages copies of the files;
it cannot say "this one file is missing, here are the other 500". This reader walks the record
tree itself, following the offsets defensively (unknown offsets and loops are reported, not
fatal), resolves File IDs case-insensitively (ISO 9660 discs mounted without Rock Ridge show
"dicom/pt000001" or "IM000001;1"), refuses File IDs that would leave the medium, and reads
each file's header to confirm what the record says. A missing or damaged DICOMDIR makes the
medium non-conformant; we then scan the folder for Part 10 files and say so in `problems`.

The values in MediaInstance come from each file, not from the directory records, because
records may hold placeholders (see pdi.records) while the files hold the de-identified truth.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import MediaStorageDirectoryStorage

from pdi.contents import INDEX, README
from pdi.part10 import UnreadableFile, is_part10, read_header

VIA_DICOMDIR = "DICOMDIR"
VIA_SCAN = "folder scan"
_VOLUME = re.compile(r"VOL\d{3}", re.IGNORECASE)
_SKIP_NAMES = {"DICOMDIR", README, INDEX}


@dataclass(frozen=True)
class MediaInstance:
    path: Path
    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    patient_id: str
    transfer_syntax: str


@dataclass
class MediaContents:
    """Everything found on the medium. `via` is "DICOMDIR" only if every volume had a usable
    DICOMDIR; otherwise "folder scan". `problems` are human-readable and hold no PHI (paths are
    relative to `root`)."""

    root: Path
    instances: list[MediaInstance] = field(default_factory=list)
    via: str = VIA_DICOMDIR
    problems: list[str] = field(default_factory=list)


def _clean(name: str) -> str:
    """ISO 9660 names as some systems show them: "IM000001;1", "README.TXT;1", "DICOMDIR."."""
    return name.split(";", 1)[0].rstrip(".").upper()


def _child(folder: Path, name: str) -> Path | None:
    """`folder/name`, matched exactly or else case-insensitively after ISO 9660 clean-up."""
    exact = folder / name
    if exact.exists():
        return exact
    try:
        entries = os.listdir(folder)
    except OSError:
        return None
    for entry in sorted(entries):
        if _clean(entry) == name.upper():
            return folder / entry
    return None


def _resolve(root: Path, components: list[str]) -> Path | None:
    path = root
    for component in components:
        found = _child(path, component)
        if found is None:
            return None
        path = found
    return path


def _volumes(root: Path) -> list[Path]:
    """`root` itself if it holds a DICOMDIR or no VOLnnn folders; else each VOLnnn, in order."""
    if _child(root, "DICOMDIR") is not None:
        return [root]
    try:
        names = sorted(n for n in os.listdir(root) if _VOLUME.fullmatch(_clean(n)))
    except OSError:
        return [root]
    subs = [root / n for n in names if (root / n).is_dir()]
    return subs or [root]


def read_media(root: Path) -> MediaContents:
    """List the instances on a medium (one File-set, or VOL001... folders of File-sets)."""
    root = Path(root)
    contents = MediaContents(root)
    if not root.is_dir():
        contents.problems.append(f"{root} is not a folder")
        contents.via = VIA_SCAN
        return contents
    seen: set[str] = set()
    for volume in _volumes(root):
        label = _rel(root, volume) if volume != root else "the medium"
        found = _read_volume(root, volume, label, contents.problems)
        if found is None:
            contents.via = VIA_SCAN
            found = _scan(root, volume, contents.problems)
        for inst in found:
            if inst.sop_instance_uid in seen:
                contents.problems.append(
                    f"{_rel(root, inst.path)} repeats an instance found earlier; ignored")
                continue
            seen.add(inst.sop_instance_uid)
            contents.instances.append(inst)
    return contents


def _rel(root: Path, path: Path) -> str:
    try:
        return path.relative_to(root).as_posix() or "."
    except ValueError:
        return str(path)


def _instance(path: Path, ds: Dataset) -> MediaInstance:
    return MediaInstance(
        path=path,
        sop_instance_uid=str(ds.SOPInstanceUID),
        sop_class_uid=str(ds.SOPClassUID),
        study_instance_uid=str(ds.get("StudyInstanceUID", "")),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
        patient_id=str(ds.get("PatientID", "")),
        transfer_syntax=str(ds.file_meta.TransferSyntaxUID),
    )


_RECORDS = b"\x04\x00\x20\x12SQ\x00\x00"  # (0004,1220) SQ header, Explicit VR Little Endian
_UNDEFINED = 0xFFFFFFFF


def _check_not_cut_short(path: Path) -> None:
    """Raise ValueError when the Directory Record Sequence's defined length runs past the end of
    the file: pydicom reads such a cut sequence without complaint, and the records before the
    cut may then look like a complete (smaller) hierarchy."""
    data = path.read_bytes()
    at = data.find(_RECORDS)
    if at < 0:
        return
    length = int.from_bytes(data[at + 8:at + 12], "little")
    missing = at + 12 + length - len(data)
    if length != _UNDEFINED and missing > 0:
        raise ValueError(f"it is cut short: {missing} bytes of its directory records are missing")


def _load_records(volume: Path, label: str, problems: list[str]) -> list[Dataset] | None:
    """The leaf records reachable from the root of the DICOMDIR, or None if it is unusable."""
    path = _child(volume, "DICOMDIR")
    if path is None:
        problems.append(f"DICOMDIR missing in {label}; scanned the folder instead")
        return None
    try:
        ds = dcmread(path)
        if ds.file_meta.get("MediaStorageSOPClassUID") != MediaStorageDirectoryStorage:
            raise ValueError("it is not a Media Storage Directory (DICOMDIR) object")
        _check_not_cut_short(path)
        records = list(ds.DirectoryRecordSequence)
        by_offset = {int(r.seq_item_tell): r for r in records}
        first = int(ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity)
    except Exception as exc:  # damaged files raise many different pydicom errors
        problems.append(f"DICOMDIR in {label} is damaged ({type(exc).__name__}: {exc}); "
                        "scanned the folder instead")
        return None
    leaves: list[Dataset] = []
    visited: set[int] = set()
    bad: list[int] = []

    def walk(offset: int) -> None:
        while offset:
            if offset in visited:
                bad.append(offset)  # a loop: stop following this chain
                return
            record = by_offset.get(offset)
            if record is None:
                bad.append(offset)
                return
            visited.add(offset)
            if "ReferencedFileID" in record:
                leaves.append(record)
            lower = int(record.get("OffsetOfReferencedLowerLevelDirectoryEntity", 0) or 0)
            if lower:
                walk(lower)
            offset = int(record.get("OffsetOfTheNextDirectoryRecord", 0) or 0)

    try:
        walk(first)
        orphans = [r for off, r in by_offset.items()
                   if off not in visited and "ReferencedFileID" in r]
    except Exception as exc:  # record values are decoded lazily: a cut value raises only here
        problems.append(f"DICOMDIR in {label} is damaged ({type(exc).__name__}: {exc}); "
                        "scanned the folder instead")
        return None
    if bad:
        problems.append(f"DICOMDIR in {label} is damaged ({len(bad)} offsets point at no "
                        "record); scanned the folder instead")
        return None
    if orphans:
        problems.append(f"DICOMDIR in {label} has {len(orphans)} records outside its hierarchy;"
                        " their files were read anyway")
        leaves += orphans
    if not leaves:
        problems.append(f"DICOMDIR in {label} references no files; scanned the folder instead")
        return None
    return leaves


def _read_volume(root: Path, volume: Path, label: str,
                 problems: list[str]) -> list[MediaInstance] | None:
    leaves = _load_records(volume, label, problems)
    if leaves is None:
        return None
    found: list[MediaInstance] = []
    referenced: set[Path] = set()
    for record in leaves:
        value = record.ReferencedFileID
        components = [value] if isinstance(value, str) else [str(v) for v in value]
        shown = "/".join(components)
        if not components or any(c in ("", ".", "..") or "/" in c or "\\" in c
                                 for c in components):
            problems.append(f"DICOMDIR in {label} has an unsafe File ID {shown!r}; ignored")
            continue
        path = _resolve(volume, components)
        if path is None or not path.is_file():
            problems.append(f"referenced file {_rel(root, volume / shown)} missing")
            continue
        referenced.add(path.resolve())
        try:
            ds = read_header(path)
        except UnreadableFile as exc:
            problems.append(f"file {_rel(root, path)} unreadable: {exc}")
            continue
        expected = str(record.get("ReferencedSOPInstanceUIDInFile", ""))
        if expected and expected != str(ds.SOPInstanceUID):
            problems.append(f"file {_rel(root, path)} is not the instance its DICOMDIR record "
                            "names; imported as found")
        found.append(_instance(path, ds))
    for path in _part10_files(volume):
        if path.resolve() not in referenced:
            problems.append(f"file {_rel(root, path)} is not referenced by the DICOMDIR; "
                            "imported anyway")
            _append_scanned(root, path, found, problems)
    return found


def _part10_files(volume: Path) -> list[Path]:
    """Part 10 files below `volume`, skipping the DICOMDIR, README.TXT, INDEX.HTM and VOLnnn."""
    out: list[Path] = []
    for folder, dirs, files in os.walk(volume):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not (here == volume and _VOLUME.fullmatch(_clean(d)))
                         and not d.startswith("."))
        for name in sorted(files):
            if _clean(name) in _SKIP_NAMES or name.startswith("."):
                continue
            path = here / name
            if is_part10(path):
                out.append(path)
    return out


def _append_scanned(root: Path, path: Path, found: list[MediaInstance],
                    problems: list[str]) -> None:
    try:
        found.append(_instance(path, read_header(path)))
    except UnreadableFile as exc:
        problems.append(f"file {_rel(root, path)} unreadable: {exc}")


def _scan(root: Path, volume: Path, problems: list[str]) -> list[MediaInstance]:
    found: list[MediaInstance] = []
    for path in _part10_files(volume):
        _append_scanned(root, path, found, problems)
    if not found:
        problems.append(f"no DICOM files found in {_rel(root, volume)}")
    return found
