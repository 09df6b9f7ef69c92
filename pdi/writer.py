"""Write IHE PDI media (RAD-47 Portable Media Creator) from de-identified Part 10 files.

What lands at `out` (one volume; several volumes go to out/VOL001, out/VOL002, ...):

    DICOMDIR      Explicit VR Little Endian, Media Storage Directory Storage, File-set ID
    DICOM/PTnnnnnn/STnnnnnn/SEnnnnnn/IMnnnnnn    the files, copied byte for byte
    README.TXT    what the medium holds and how it is laid out; no patient data
    INDEX.HTM     studies and series with links to the files (MediaOptions.web)

Why it is all-or-nothing: a half-written medium looks like a complete one to the person who
carries it to the research site. Everything is written and fsynced in a hidden staging folder
on the same file system as `out`, read back with pdi.reader (every offset, every referenced
file, nothing unreferenced), and only then renamed into place. On any error the staging
folder is removed and `out` is left exactly as it was.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from pdi.contents import INDEX, README, VolumeSummary, index_html, readme_text
from pdi.dicomdir import DirNode, build_dicomdir, write_dicomdir
from pdi.fileids import is_conformant_file_id, numbered_name
from pdi.model import MediaError, MediaOptions, VolumeResult
from pdi.part10 import UnreadableFile, read_header
from pdi.plan import VOLUME_OVERHEAD, Instance, PlanError, Unit, organize, pack
from pdi.profiles import media_profile
from pdi.reader import read_media
from pdi.records import DEFAULT_LEAF_PREFIX, LEAF_PREFIXES, RecordError, build_records

DICOM_FOLDER = "DICOM"
STAGING_PREFIX = ".tce-pdi-"
# Entries a fresh USB stick or disk may carry that do not make a mount point "non-empty".
IGNORABLE = frozenset({"lost+found", "System Volume Information", ".Trashes", ".fseventsd",
                       ".Spotlight-V100"})
_COPY_CHUNK = 1 << 20


def write_media(
    files: Iterable[Path], out: Path, options: MediaOptions | None = None, *,
    overwrite: bool = False,
) -> list[VolumeResult]:
    """Write the files as one or more independent PDI File-sets at `out`; see the module doc.

    Raises MediaError (nothing written) if `out` is a non-empty folder and `overwrite` is
    False, if there are no files, or if any file is not a complete Part 10 file from which a
    directory record can be built.
    """
    options = options or MediaOptions()
    out = Path(out)
    _check_target(out, overwrite)
    instances, notes = _scan(files)
    try:
        patients = organize(instances)
    except PlanError as exc:
        raise MediaError(f"{exc}; nothing was written. Check the de-identification output.") \
            from exc
    volumes = pack(patients, options.volume_bytes)
    created = datetime.now(UTC)
    staging, inside = _make_staging(out)
    try:
        results = []
        for number, units in enumerate(volumes, 1):
            name = f"VOL{number:03d}" if len(volumes) > 1 else ""
            vol_notes = (notes if number == 1 else []) + _split_notes(volumes, number)
            result = _write_volume(staging / name if name else staging, units, number,
                                   len(volumes), options, created, vol_notes)
            results.append(replace(result, path=out / name if name else out))
        _fsync_tree(staging)
        _commit(staging, out, inside=inside, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return results


def _check_target(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise MediaError(f"{out} exists and is not a folder; choose a folder for the media")
    if out.is_dir() and _entries(out) and not overwrite:
        raise MediaError(
            f"{out} is not empty; choose an empty or new folder, or overwrite it explicitly"
        )


def _entries(out: Path) -> list[str]:
    names = [n for n in os.listdir(out) if not n.startswith(STAGING_PREFIX)]
    if os.path.ismount(out):
        names = [n for n in names if n not in IGNORABLE]
    return names


def _scan(files: Iterable[Path]) -> tuple[list[Instance], list[str]]:
    """Read every header first, so a bad file stops the run before anything is written."""
    instances: list[Instance] = []
    seen: set[str] = set()
    duplicates = 0
    for path in map(Path, files):
        try:
            ds = read_header(path)
            records = build_records(ds)
        except (UnreadableFile, RecordError) as exc:
            raise MediaError(
                f"input file {path} cannot go on media: {exc}. Nothing was written; "
                "fix or remove the file and write the media again."
            ) from exc
        sop_uid = str(ds.SOPInstanceUID)
        if sop_uid in seen:
            duplicates += 1
            continue
        seen.add(sop_uid)
        instances.append(Instance(path, path.stat().st_size, str(ds.SOPClassUID), sop_uid,
                                  str(ds.file_meta.TransferSyntaxUID), records))
    if not instances:
        raise MediaError("no DICOM files were given; a DICOMDIR may not be empty (PS3.11)")
    notes = [f"{duplicates} input files repeated an instance already written and were "
             "skipped."] if duplicates else []
    return instances, notes


def _split_notes(volumes: Sequence[Sequence[Unit]], number: int) -> list[str]:
    """Say which studies on volume `number` continue on other volumes, and how they were cut."""
    where: dict[str, set[int]] = {}
    how: dict[str, str] = {}
    for index, units in enumerate(volumes, 1):
        for unit in units:
            where.setdefault(unit.study_uid, set()).add(index)
            if unit.split and how.get(unit.study_uid) != "instances":
                how[unit.study_uid] = unit.split
    notes = []
    for study_uid, split in how.items():
        if number in where[study_uid] and len(where[study_uid]) > 1:
            names = ", ".join(f"VOL{n:03d}" for n in sorted(where[study_uid]))
            unit_name = "series" if split == "series" else "series and instances"
            notes.append(f"A study larger than one volume was split by {unit_name} across "
                         f"{names}; this volume holds part of it.")
    return notes


def _record(template: Dataset, record_type: str) -> Dataset:
    record = copy.deepcopy(template)
    record.DirectoryRecordType = record_type
    return record


def _write_volume(root: Path, units: Sequence[Unit], number: int, total: int,
                  options: MediaOptions, created: datetime, notes: list[str]) -> VolumeResult:
    root.mkdir(parents=True, exist_ok=True)
    instances = [inst for unit in units for inst in unit.instances]
    patients = organize(instances, assign_numbers=False)
    roots: list[DirNode] = []
    dicom_bytes = 0
    series_count = 0
    for p_no, patient in enumerate(patients, 1):
        p_node = DirNode(_record(patient.record, "PATIENT"))
        roots.append(p_node)
        for st_no, study in enumerate(patient.studies, 1):
            st_node = DirNode(_record(study.record, "STUDY"))
            p_node.children.append(st_node)
            for se_no, series in enumerate(study.series, 1):
                series_count += 1
                se_node = DirNode(_record(series.record, "SERIES"))
                st_node.children.append(se_node)
                folder = [DICOM_FOLDER, numbered_name("PT", p_no), numbered_name("ST", st_no),
                          numbered_name("SE", se_no)]
                for i_no, inst in enumerate(series.instances, 1):
                    prefix = LEAF_PREFIXES.get(inst.records.leaf_type, DEFAULT_LEAF_PREFIX)
                    file_id = [*folder, numbered_name(prefix, i_no)]
                    if not is_conformant_file_id(file_id):  # pragma: no cover - by construction
                        raise MediaError(f"internal error: non-conformant File ID {file_id}")
                    _copy_fsync(inst.path, root.joinpath(*file_id))
                    dicom_bytes += inst.size
                    leaf = _record(inst.records.leaf, inst.records.leaf_type)
                    leaf.ReferencedFileID = file_id
                    leaf.ReferencedSOPClassUIDInFile = inst.sop_class_uid
                    leaf.ReferencedSOPInstanceUIDInFile = inst.sop_instance_uid
                    leaf.ReferencedTransferSyntaxUIDInFile = inst.transfer_syntax
                    se_node.children.append(DirNode(leaf))

    filled = sorted({kw for inst in instances for kw in inst.records.filled})
    if filled:
        notes = [*notes, "The DICOMDIR holds placeholder values where the de-identified files "
                 f"leave a required key empty ({', '.join(filled)}); the DICOM files themselves "
                 "are unchanged."]
    oversize = ("This volume is larger than the requested volume size because a single file "
                "does not fit in one volume.")
    if VOLUME_OVERHEAD + sum(inst.cost for inst in instances) > options.volume_bytes:
        notes = [*notes, oversize]
    profile = media_profile(inst.transfer_syntax for inst in instances)
    file_set_uid = generate_uid(prefix=None)
    summary = VolumeSummary(
        number=number, total=total, file_set_id=options.label, profile=profile,
        patients=len(patients), studies=sum(len(p.studies) for p in patients),
        series=series_count, instances=len(instances), dicom_bytes=dicom_bytes,
        modalities=tuple(sorted({str(s.record.Modality) for r in roots for st in r.children
                                 for s in st.children})),
        notes=tuple(notes), created=created, producer=options.producer,
        version=options.version, institution=options.institution, web=options.web)
    dicomdir = build_dicomdir(roots, file_set_uid=file_set_uid, file_set_id=options.label,
                              implementation=f"TCE {options.version}")
    if options.web:
        _write_fsync(root / INDEX, index_html(summary, roots))
    _write_fsync(root / README, readme_text(summary))
    write_dicomdir(root / "DICOMDIR", dicomdir)  # last: its presence means "complete"
    _verify(root, len(instances))
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    if size > options.volume_bytes and oversize not in notes:  # pragma: no cover - estimate
        notes = [*notes, oversize]
    studies = [study.uid for patient in patients for study in patient.studies]
    return VolumeResult(root, file_set_uid, studies, len(instances), size, profile, notes)


def _verify(root: Path, expected: int) -> None:
    """Read the volume back the way an importer will (pdi.reader, independent of the code
    that wrote it): every offset resolves, every referenced file exists and parses, and
    nothing on the volume is left unreferenced."""
    contents = read_media(root)
    if contents.problems or len(contents.instances) != expected:
        raise MediaError(
            f"internal error: the new volume reads back with {len(contents.instances)} of "
            f"{expected} instances ({'; '.join(contents.problems)}); nothing was written"
        )


def _copy_fsync(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        with src.open("rb") as fin, dst.open("xb") as fout:
            shutil.copyfileobj(fin, fout, _COPY_CHUNK)
            fout.flush()
            os.fsync(fout.fileno())
    except OSError as exc:
        raise MediaError(f"could not copy {src} to the media: {exc}") from exc


def _write_fsync(path: Path, data: bytes) -> None:
    with path.open("xb") as fp:
        fp.write(data)
        fp.flush()
        os.fsync(fp.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for folder, _dirs, _files in os.walk(root, topdown=False):
        _fsync_dir(Path(folder))


def _make_staging(out: Path) -> tuple[Path, bool]:
    """A private folder on the same file system as `out`, so the final step is a rename.

    Normally it sits next to `out`. When `out` is a mount point (a USB stick) it cannot be
    renamed, so the staging folder goes inside it and its entries are renamed up one level.
    """
    inside = out.is_dir() and os.path.ismount(out)
    parent = out if inside else out.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=parent))
    os.chmod(staging, 0o755)
    return staging, inside


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _commit(staging: Path, out: Path, *, inside: bool, overwrite: bool) -> None:
    if inside:
        if overwrite:
            for name in _entries(out):
                _remove(out / name)
        # DICOMDIR last: a reader that sees it sees a complete medium.
        for name in sorted(os.listdir(staging), key=lambda n: (n == "DICOMDIR", n)):
            os.rename(staging / name, out / name)
        os.rmdir(staging)
        _fsync_dir(out)
        return
    old: Path | None = None
    if out.exists():
        if os.listdir(out):
            old = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX + "old-", dir=out.parent))
            os.rename(out, old / "previous")
        else:
            os.rmdir(out)
    try:
        os.rename(staging, out)
    except OSError:
        if old is not None:  # put the previous medium back
            os.rename(old / "previous", out)
            os.rmdir(old)
        raise
    _fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
