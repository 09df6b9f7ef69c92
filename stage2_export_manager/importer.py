"""Import stage-1 PDI media into the stage-2 store: one job per study, waiting for approval.

The importer reads the medium with :func:`pdi.reader.read_media` (the DICOMDIR, else a folder
scan, which it says), then works in three passes so that a refused or repeated medium leaves
no trace in the store:

1. **Read and fingerprint.** Each file is read once: its sha256 and size go into the media
   fingerprint (sha256 over the sorted ``(relative path, size, sha256)`` of every instance file),
   and its header is screened. A fingerprint already recorded in ``media_imports`` means the
   medium was imported before: nothing is copied or created again.
2. **Screen.** Stage 2 only accepts what stage 1 produced. A medium on which any instance still
   carries an obvious direct identifier (:mod:`stage2_export_manager.screening`) is refused as
   a whole: a ``QuarantineItem`` row (``sha256`` = the media fingerprint) and an audit event
   record why, a manifest (relative paths, sizes, digests, reasons; no values) goes to the
   quarantine folder, and nothing is copied. The medium itself is only ever read.
3. **Copy, then commit.** Files are copied to ``store_dir/<study>/<series>/<sop>.dcm`` (UIDs
   checked before they become path components), each fsynced and renamed into place, the
   folders fsynced, and only then is one transaction committed with the import, the jobs, their
   instances and the audit events. A crash before the commit leaves files that the next import
   of the same medium overwrites with identical bytes.

Instances already held by a job (same SOP Instance UID) are skipped, so overlapping media never
duplicate an instance. New instances of a study whose job still waits for approval join that
job; otherwise (the study was already decided) they form a new job, because an approval covers
what the approver saw. Patients are reconciled by the stage-1 pseudonym (PatientID): two
studies of one pseudonymous patient carry the same ``Job.patient_pseudonym``.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from appliance.audit import record_audit
from appliance.db import session_scope
from appliance.durable import fsync_dir, make_dirs, write_atomic
from appliance.models import (
    ImportVia,
    Job,
    JobInstance,
    JobState,
    MediaImport,
    Node,
    QuarantineItem,
)
from appliance.quarantine import quarantine_file
from appliance.settings import Settings
from pdi.reader import VIA_SCAN, MediaInstance, read_media
from policies.private import SafePrivateTable
from stage2_export_manager.screening import screen

NODE = Node.STAGE2
STAGE = "stage2-import"  # QuarantineItem.stage of refused media
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_CHUNK = 500  # SOP Instance UIDs per IN (...) query
_DEFER = 4096  # larger values (pixel data) are not decoded: only their position is needed
_UNDEFINED = 0xFFFFFFFF

class ImportStatus(StrEnum):
    IMPORTED = "imported"
    ALREADY_IMPORTED = "already imported"
    REFUSED = "refused"
    EMPTY = "empty"


@dataclass
class ImportResult:
    """What one import did; messages and problems hold relative paths and counts, no values."""

    status: ImportStatus
    via: str
    fingerprint: str = ""
    media_import_id: int | None = None
    problems: list[str] = field(default_factory=list)
    reason: str = ""  # why the medium was refused
    quarantine_item_id: int | None = None
    new_jobs: list[int] = field(default_factory=list)
    extended_jobs: list[int] = field(default_factory=list)
    instances: int = 0  # copied into the store
    known: int = 0  # already held by a job, skipped
    studies: int = 0
    patients: int = 0


@dataclass
class _File:
    instance: MediaInstance
    rel: str
    size: int
    sha256: str
    refusals: list[str]


# --- reading -------------------------------------------------------------------------------


def _rel(root: Path, path: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


def _read_files(root: Path, instances: list[MediaInstance],
                problems: list[str]) -> list[_File]:
    table = SafePrivateTable.bundled()
    files: list[_File] = []
    for inst in instances:
        rel = _rel(root, inst.path)
        try:
            data = inst.path.read_bytes()
            ds = dcmread(io.BytesIO(data), defer_size=_DEFER)
        except Exception as exc:  # unreadable now, or damaged in a way the reader did not see
            problems.append(f"file {rel} unreadable ({type(exc).__name__}); not imported")
            continue
        if not _ends_cleanly(ds, len(data)):
            problems.append(f"file {rel} unreadable: truncated inside an element; not imported")
            continue
        files.append(_File(inst, rel, len(data), hashlib.sha256(data).hexdigest(),
                           screen(ds, table)))
    return files


def _ends_cleanly(ds: Dataset, size: int) -> bool:
    """Whether the last top-level element ends exactly at the end of the file.

    pydicom stops quietly at a file cut inside an element header, and the part before the cut
    parses as a smaller dataset; screening that would wrongly blame a damaged stage-1 file for
    lacking PatientIdentityRemoved. Deflated files and undefined lengths cannot be checked.
    """
    if ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian or not len(ds):
        return True
    last = ds.get_item(max(ds.keys()), keep_deferred=True)
    if not isinstance(last, RawDataElement) or last.length == _UNDEFINED:
        return True
    return last.value_tell + last.length == size


def fingerprint(entries: list[tuple[str, int, str]]) -> str:
    """sha256 over the sorted ``(relative path, size, sha256)`` of a medium's instance files."""
    digest = hashlib.sha256()
    for rel, size, sha in sorted(entries):
        digest.update(f"{rel}\0{size}\0{sha}\n".encode())
    return digest.hexdigest()


# --- the import ----------------------------------------------------------------------------


def import_media(settings: Settings, sessions: sessionmaker[Session], media: Path,
                 *, actor: str = "system") -> ImportResult:
    """Import ``media`` (a PDI folder, mount point or DICOMDIR file); see the module docstring.

    Never raises for what is on the medium: refusal, repetition and emptiness are statuses.
    OSError from the store or quarantine folder and database errors propagate.
    """
    media = Path(media)
    root = media.parent if media.is_file() else media
    contents = read_media(root)
    via = ImportVia.FOLDER_SCAN if contents.via == VIA_SCAN else ImportVia.DICOMDIR
    result = ImportResult(ImportStatus.EMPTY, via.value, problems=list(contents.problems))
    files = _read_files(root, contents.instances, result.problems)
    if not files:
        return result
    result.fingerprint = fingerprint([(f.rel, f.size, f.sha256) for f in files])
    with sessions() as session:
        earlier = session.scalars(select(MediaImport).where(
            MediaImport.fingerprint == result.fingerprint)).first()
        if earlier is not None:
            result.status, result.media_import_id = ImportStatus.ALREADY_IMPORTED, earlier.id
            return result
    refused = [f for f in files if f.refusals]
    if refused:
        return _refuse(settings, sessions, files, refused, result, actor)
    return _import(settings, sessions, root, files, result, actor)


def _refuse(settings: Settings, sessions: sessionmaker[Session], files: list[_File],
            refused: list[_File], result: ImportResult, actor: str) -> ImportResult:
    counts = Counter(reason for f in refused for reason in f.refusals)
    listed = "; ".join(f"{reason} ({n})" for reason, n in counts.most_common(6))
    more = f"; and {len(counts) - 6} more" if len(counts) > 6 else ""
    result.status = ImportStatus.REFUSED
    result.reason = (f"{len(refused)} of {len(files)} instances still carry direct identifiers"
                     f" (not stage-1 output, or stage 1 misconfigured): {listed}{more}")
    with sessions() as session:
        earlier = session.scalars(select(QuarantineItem).where(
            QuarantineItem.sha256 == result.fingerprint, QuarantineItem.stage == STAGE,
            QuarantineItem.released_at.is_(None))).first()
    if earlier is not None:  # refused before and not released: one record per medium
        result.quarantine_item_id = earlier.id
        return result
    manifest = {"fingerprint": result.fingerprint, "via": result.via, "reason": result.reason,
                "files": [{"path": f.rel, "size": f.size, "sha256": f.sha256,
                           "refusals": f.refusals} for f in files]}
    stored = quarantine_file(json.dumps(manifest, indent=2).encode(), settings.quarantine_dir,
                             f"media refused: {result.reason}", stage=STAGE)
    with session_scope(sessions) as session:
        item = QuarantineItem(node=NODE, stored_path=str(stored), reason=result.reason,
                              stage=STAGE, sha256=result.fingerprint,
                              size_bytes=sum(f.size for f in files))
        session.add(item)
        session.flush()
        result.quarantine_item_id = item.id
        record_audit(session, NODE, "media.refused", f"quarantine-{item.id}", actor=actor,
                     fingerprint=result.fingerprint, via=result.via, files=len(files),
                     refused_files=len(refused), reasons=sorted(counts))
    return result


def _store_path(store: Path, inst: MediaInstance) -> Path | None:
    uids = (inst.study_instance_uid, inst.series_instance_uid, inst.sop_instance_uid)
    if not all(len(u) <= 64 and _UID.fullmatch(u) for u in uids):
        return None
    return store / uids[0] / uids[1] / f"{uids[2]}.dcm"


def _known(session: Session, uids: list[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(uids), _CHUNK):
        found.update(session.scalars(select(JobInstance.sop_instance_uid).where(
            JobInstance.sop_instance_uid.in_(uids[start:start + _CHUNK]))))
    return found


def _copy(source: Path, target: Path, expected: str) -> None:
    data = source.read_bytes()
    if hashlib.sha256(data).hexdigest() != expected:
        raise _Changed(target.name)
    write_atomic(target, data, sync_dir=False)


class _Changed(Exception):
    """A file changed on the medium between reading and copying."""


def _import(settings: Settings, sessions: sessionmaker[Session], root: Path, files: list[_File],
            result: ImportResult, actor: str) -> ImportResult:
    store = settings.stage2.store_dir
    with sessions() as session:
        known = _known(session, [f.instance.sop_instance_uid for f in files])
    todo: list[tuple[_File, Path]] = []
    for f in files:
        if f.instance.sop_instance_uid in known:
            result.known += 1
            continue
        target = _store_path(store, f.instance)
        if target is None:
            result.problems.append(f"file {f.rel} has an invalid UID; not imported")
            continue
        todo.append((f, target))
    folders: set[Path] = set()
    copied: list[tuple[_File, Path]] = []
    for f, target in todo:
        if target.parent not in folders:
            make_dirs(target.parent)
            folders.add(target.parent)
        try:
            _copy(f.instance.path, target, f.sha256)
        except (OSError, _Changed) as exc:
            what = "changed while importing" if isinstance(exc, _Changed) else "could not be copied"
            result.problems.append(f"file {f.rel} {what}; not imported")
            continue
        copied.append((f, target))
    for folder in sorted(folders | {p.parent for p in folders} | {store}):
        if folder.is_dir():
            fsync_dir(folder)
    try:
        _commit(sessions, root, copied, result, actor)
    except IntegrityError:  # the same medium was committed by a concurrent import
        result.status = ImportStatus.ALREADY_IMPORTED
    return result


def _commit(sessions: sessionmaker[Session], root: Path, copied: list[tuple[_File, Path]],
            result: ImportResult, actor: str) -> None:
    by_study: dict[str, list[tuple[_File, Path]]] = defaultdict(list)
    for f, target in copied:
        by_study[f.instance.study_instance_uid].append((f, target))
    with session_scope(sessions) as session:
        record = MediaImport(fingerprint=result.fingerprint, root_label=str(root.absolute()),
                             via=ImportVia(result.via), problems=json.dumps(result.problems),
                             instance_count=len(copied), study_count=len(by_study))
        session.add(record)
        session.flush()
        result.media_import_id = record.id
        for study_uid, members in by_study.items():
            _add_study(session, record, study_uid, members, result, actor)
        result.instances = len(copied)
        result.studies = len(by_study)
        result.patients = len({m[0][0].instance.patient_id for m in by_study.values()})
        record_audit(session, NODE, "media.imported", f"media-import-{record.id}", actor=actor,
                     via=result.via, fingerprint=result.fingerprint, instances=len(copied),
                     known_instances=result.known, studies=len(by_study),
                     patients=result.patients, new_jobs=result.new_jobs,
                     extended_jobs=result.extended_jobs, problems=len(result.problems))
    result.status = ImportStatus.IMPORTED


def _add_study(session: Session, record: MediaImport, study_uid: str,
               members: list[tuple[_File, Path]], result: ImportResult, actor: str) -> None:
    pseudonyms = Counter(f.instance.patient_id for f, _ in members)
    pseudonym = pseudonyms.most_common(1)[0][0] or None
    if len(pseudonyms) > 1:
        result.problems.append(f"study {study_uid}: instances disagree on PatientID; the job"
                               " uses the most frequent")
    job = session.scalars(select(Job).where(
        Job.study_instance_uid == study_uid,
        Job.state.in_([JobState.IMPORTED, JobState.PENDING_APPROVAL]))
        .order_by(Job.id.desc())).first()
    new = job is None
    if job is None:
        job = Job(study_instance_uid=study_uid, patient_pseudonym=pseudonym,
                  state=JobState.IMPORTED, media_import=record)
        session.add(job)
    for f, target in members:
        job.instances.append(JobInstance(
            sop_instance_uid=f.instance.sop_instance_uid, sop_class_uid=f.instance.sop_class_uid,
            transfer_syntax_uid=f.instance.transfer_syntax, store_path=str(target),
            sha256=f.sha256, size_bytes=f.size))
    job.instance_count = len(job.instances)
    session.flush()
    subject = f"job-{job.id}"
    if new:
        result.new_jobs.append(job.id)
        record_audit(session, NODE, "job.imported", subject, actor=actor,
                     media_import=record.id, instances=len(members), study=study_uid,
                     patient_pseudonym=pseudonym)
        job.state = JobState.PENDING_APPROVAL
        record_audit(session, NODE, "job.pending_approval", subject, actor=actor,
                     previous_state=JobState.IMPORTED.value)
    else:
        result.extended_jobs.append(job.id)
        record_audit(session, NODE, "job.instances_added", subject, actor=actor,
                     media_import=record.id, instances=len(members),
                     instance_count=job.instance_count)
