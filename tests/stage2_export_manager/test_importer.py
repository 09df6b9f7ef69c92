"""Stage-2 import: real stage-1 PDI media → store copies and one pending job per study."""

from __future__ import annotations

import copy
import hashlib
import json
import stat
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from appliance.audit import audit_details
from appliance.models import (
    AuditEvent,
    ImportVia,
    Job,
    JobInstance,
    JobState,
    MediaImport,
    QuarantineItem,
)
from appliance.settings import Settings
from stage2_export_manager.importer import ImportStatus, import_media
from stage2_export_manager.jobs import format_jobs, list_jobs
from stage2_export_manager.screening import looks_pseudonymous, screen
from tests.stage2_export_manager import (
    raw_datasets,
    stage1_datasets,
    stage2_node,
    tree_state,
    write_pdi,
)

Node = tuple[Settings, sessionmaker[Session]]


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pdi(stage1_datasets(), tmp_path_factory.mktemp("m") / "media")


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return stage2_node(tmp_path / "node")


def count(sessions: sessionmaker[Session], model: type) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def actions(sessions: sessionmaker[Session]) -> list[str]:
    with sessions() as session:
        return list(session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


def test_each_study_becomes_a_pending_job_with_checksummed_store_copies(
        media: Path, node: Node) -> None:
    settings, sessions = node
    result = import_media(settings, sessions, media)
    assert result.status is ImportStatus.IMPORTED
    assert (result.via, result.instances, result.studies, result.patients) == (
        "DICOMDIR", 22, 5, 4)
    assert result.problems == [] and len(result.new_jobs) == 5
    with sessions() as session:
        jobs = list(session.scalars(select(Job)))
        assert {j.state for j in jobs} == {JobState.PENDING_APPROVAL}
        assert sum(j.instance_count for j in jobs) == 22
        for job in jobs:
            assert len(job.instances) == job.instance_count
            for inst in job.instances:
                path = Path(inst.store_path)
                ds = dcmread(path, stop_before_pixels=True)
                assert path == (settings.stage2.store_dir / ds.StudyInstanceUID
                                / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm")
                assert inst.sop_instance_uid == ds.SOPInstanceUID
                assert ds.StudyInstanceUID == job.study_instance_uid
                assert ds.PatientID == job.patient_pseudonym
                assert hashlib.sha256(path.read_bytes()).hexdigest() == inst.sha256
                assert inst.size_bytes == path.stat().st_size
                assert stat.S_IMODE(path.stat().st_mode) == 0o600
        record = session.scalars(select(MediaImport)).one()
        assert record.via is ImportVia.DICOMDIR and record.instance_count == 22
    events = actions(sessions)
    assert events.count("job.imported") == 5 and events.count("job.pending_approval") == 5
    assert events[-1] == "media.imported"


def test_two_studies_of_one_pseudonymous_patient_are_one_patient(media: Path,
                                                                 node: Node) -> None:
    settings, sessions = node
    import_media(settings, sessions, media)
    with sessions() as session:
        jobs = list_jobs(session)
        by_patient: dict[str | None, set[str]] = {}
        for job in jobs:
            by_patient.setdefault(job.patient_pseudonym, set()).add(job.study_instance_uid)
        table = format_jobs(jobs)
    sizes = sorted(len(studies) for studies in by_patient.values())
    assert sizes == [1, 1, 1, 2]
    (patient,) = [p for p, studies in by_patient.items() if len(studies) == 2]
    assert patient and patient.startswith("PSN")
    assert "5 jobs, 5 studies, 4 patients" in table
    assert f"patient {patient}: 2 jobs" in table
    assert table.count(patient) == 3  # two rows and the summary line


def test_importing_the_same_media_twice_creates_nothing_twice(media: Path, node: Node) -> None:
    settings, sessions = node
    first = import_media(settings, sessions, media)
    store_before = tree_state(settings.stage2.store_dir)
    again = import_media(settings, sessions, media)
    assert again.status is ImportStatus.ALREADY_IMPORTED
    assert again.media_import_id == first.media_import_id
    assert (count(sessions, MediaImport), count(sessions, Job),
            count(sessions, JobInstance)) == (1, 5, 22)
    assert tree_state(settings.stage2.store_dir) == store_before
    by_file = import_media(settings, sessions, media / "DICOMDIR")  # the DICOMDIR file itself
    assert by_file.status is ImportStatus.ALREADY_IMPORTED
    assert by_file.fingerprint == first.fingerprint


def test_instances_already_held_are_skipped_and_new_ones_join_the_pending_job(
        tmp_path: Path, media: Path, node: Node) -> None:
    settings, sessions = node
    import_media(settings, sessions, media)
    datasets = stage1_datasets()
    extra = copy.deepcopy(datasets[13])  # one more instance of the second patient's study
    extra.SOPInstanceUID = extra.file_meta.MediaStorageSOPInstanceUID = UID("2.25.4242")
    other = write_pdi([datasets[13], datasets[14], extra], tmp_path / "other")
    result = import_media(settings, sessions, other)
    assert result.status is ImportStatus.IMPORTED
    assert (result.known, result.instances, result.new_jobs) == (2, 1, [])
    with sessions() as session:
        job = session.scalars(select(Job).where(
            Job.study_instance_uid == str(extra.StudyInstanceUID))).one()
        assert result.extended_jobs == [job.id]
        assert job.instance_count == 3 and len(job.instances) == 3
    assert count(sessions, JobInstance) == 23
    assert "job.instances_added" in actions(sessions)


def test_a_study_already_decided_gets_a_new_job_for_new_instances(
        tmp_path: Path, media: Path, node: Node) -> None:
    settings, sessions = node
    import_media(settings, sessions, media)
    extra = stage1_datasets()[13]
    with sessions.begin() as session:
        job = session.scalars(select(Job).where(
            Job.study_instance_uid == str(extra.StudyInstanceUID))).one()
        job.state = JobState.EXPORTED
        old_id = job.id
    extra.SOPInstanceUID = extra.file_meta.MediaStorageSOPInstanceUID = UID("2.25.4243")
    result = import_media(settings, sessions, write_pdi([extra], tmp_path / "late"))
    assert len(result.new_jobs) == 1 and result.new_jobs[0] != old_id
    with sessions() as session:
        new = session.get(Job, result.new_jobs[0])
        assert new is not None and new.state is JobState.PENDING_APPROVAL
        assert new.study_instance_uid == extra.StudyInstanceUID and new.instance_count == 1


def test_a_damaged_dicomdir_falls_back_to_a_folder_scan_and_says_so(
        tmp_path: Path, node: Node) -> None:
    settings, sessions = node
    damaged = write_pdi(stage1_datasets(), tmp_path / "damaged")
    dicomdir = damaged / "DICOMDIR"
    dicomdir.write_bytes(dicomdir.read_bytes()[:400])  # cut inside the record sequence
    result = import_media(settings, sessions, damaged)
    assert result.status is ImportStatus.IMPORTED
    assert result.via == "folder scan" and result.instances == 22
    assert any(p.startswith("DICOMDIR") and "scanned the folder instead" in p
               for p in result.problems)
    with sessions() as session:
        record = session.scalars(select(MediaImport)).one()
        assert record.via is ImportVia.FOLDER_SCAN
        assert any("scanned the folder" in p for p in json.loads(record.problems))
        event = session.scalars(select(AuditEvent).where(
            AuditEvent.action == "media.imported")).one()
        assert audit_details(event)["via"] == "folder scan"


def test_missing_and_unreadable_files_are_reported_and_the_rest_is_imported(
        tmp_path: Path, node: Node) -> None:
    settings, sessions = node
    medium = write_pdi(stage1_datasets(), tmp_path / "partial")
    files = sorted(p for p in (medium / "DICOM").rglob("*") if p.is_file())
    files[0].unlink()
    files[1].write_bytes(files[1].read_bytes()[:600])  # an interrupted copy
    result = import_media(settings, sessions, medium)
    assert result.status is ImportStatus.IMPORTED and result.instances == 20
    rel0, rel1 = (p.relative_to(medium).as_posix() for p in files[:2])
    assert f"referenced file {rel0} missing" in result.problems
    assert any(p.startswith(f"file {rel1} unreadable") for p in result.problems)
    assert count(sessions, JobInstance) == 20


def test_media_with_direct_identifiers_are_refused_quarantined_and_left_untouched(
        tmp_path: Path, node: Node) -> None:
    settings, sessions = node
    medium = write_pdi(raw_datasets(), tmp_path / "hospital")
    before = tree_state(medium)
    result = import_media(settings, sessions, medium)
    assert result.status is ImportStatus.REFUSED
    assert result.reason.startswith("22 of 22 instances still carry direct identifiers")
    for reason in ("PatientIdentityRemoved is not YES", "PatientAddress present",
                   "ReferringPhysicianName present"):
        assert reason in result.reason
    assert "Doe" not in result.reason and "Elm Street" not in result.reason  # names, no values
    assert tree_state(medium) == before
    assert not settings.stage2.store_dir.exists() or not any(
        settings.stage2.store_dir.rglob("*.dcm"))
    assert (count(sessions, Job), count(sessions, JobInstance), count(sessions, MediaImport)) \
        == (0, 0, 0)
    with sessions() as session:
        item = session.scalars(select(QuarantineItem)).one()
        assert item.id == result.quarantine_item_id and item.stage == "stage2-import"
        assert item.reason == result.reason and item.sha256 == result.fingerprint
        manifest = json.loads(Path(item.stored_path).read_text())
        assert len(manifest["files"]) == 22 and manifest["files"][0]["refusals"]
    assert actions(sessions) == ["media.refused"]
    again = import_media(settings, sessions, medium)
    assert again.status is ImportStatus.REFUSED
    assert again.quarantine_item_id == result.quarantine_item_id
    assert count(sessions, QuarantineItem) == 1 and tree_state(medium) == before


def test_one_real_name_among_pseudonyms_refuses_the_whole_medium(tmp_path: Path,
                                                                 node: Node) -> None:
    settings, sessions = node
    datasets = stage1_datasets()
    datasets[5].PatientName = "Doe^John"
    result = import_media(settings, sessions, write_pdi(datasets, tmp_path / "leak"))
    assert result.status is ImportStatus.REFUSED
    assert result.reason.startswith("1 of 22 instances")
    assert "PatientName does not look like a pseudonym (1)" in result.reason
    assert count(sessions, Job) == 0


@pytest.mark.parametrize(("name", "patient_id", "ok"), [
    ("PSEUDO^S5B0J3WYSC", "PSNS5B0J3WYSC", True),
    ("PSEUDO^ABCDEFGHJK", "PSNABCDEFGHJK", True),  # a code without digits, found in the ID
    ("ANONYMIZED", "", True),
    ("Doe^John", "PSN1", False),
    ("DOE^JOHN", "PSN1", False),
    ("SMITHERS^ALICE", "PSN12345", False),
    ("Müller^Jürgen", "X", False),
    ("PSEUDO^Smith", "PSN1", False),
])
def test_patient_names_that_do_not_look_pseudonymous_are_recognised(
        name: str, patient_id: str, ok: bool) -> None:
    assert looks_pseudonymous(name, patient_id) is ok


def test_screen_names_unsafe_private_attributes_and_passes_stage1_output() -> None:
    for ds in stage1_datasets():
        assert screen(ds) == []
    ds = stage1_datasets()[0]
    block = ds.private_block(0x0029, "ACME SECRET NOTES", create=True)
    block.add_new(0x10, "LO", "anything")
    assert screen(ds) == [
        'private attribute (0029,xx10) "ACME SECRET NOTES" not on the safe list']
    bare = Dataset()
    assert screen(bare) == ["PatientIdentityRemoved is not YES"]
