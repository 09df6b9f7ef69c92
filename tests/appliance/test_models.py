"""Tables: no PHI-named columns, constraints that hold on both backends, sealed pseudonyms."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, select, text
from sqlalchemy.exc import IntegrityError, StatementError

from appliance.db import session_scope
from appliance.keys import KeyRing, UnsealError
from appliance.logging import is_phi_key
from appliance.models import (
    Base,
    Heartbeat,
    ImportVia,
    Instance,
    InstanceState,
    Job,
    JobInstance,
    JobState,
    Media,
    MediaImport,
    MediaStudy,
    Node,
    Pseudonym,
    QuarantineItem,
    SendStatus,
    Study,
)

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def instance(key: str, node: Node = Node.STAGE1) -> Instance:
    return Instance(node=node, received_key=key, sop_class_uid=CT, transfer_syntax_uid=EXPLICIT_LE)


def job_instance(uid: str, job: Job | None = None, job_id: int | None = None) -> JobInstance:
    row = JobInstance(sop_instance_uid=uid, sop_class_uid=CT, transfer_syntax_uid=EXPLICIT_LE,
                      store_path=f"store/{uid}.dcm", size_bytes=10)
    if job is not None:
        row.job = job
    if job_id is not None:
        row.job_id = job_id
    return row


def media_import(fingerprint: str) -> MediaImport:
    return MediaImport(fingerprint=fingerprint, via=ImportVia.DICOMDIR)


# --- no PHI by construction -----------------------------------------------------------------


def test_no_table_or_column_is_named_after_an_identifying_attribute() -> None:
    names = [(table.name, column.name) for table in Base.metadata.sorted_tables
             for column in table.columns]
    assert len(names) > 100  # the whole schema was inspected
    offending = [f"{t}.{c}" for t, c in names if is_phi_key(c) or is_phi_key(t)]
    assert offending == []


@pytest.mark.parametrize("name", ["patient_name", "PatientBirthDate", "birth_date",
                                  "sop_instance_uid_original", "sealed_original"])
def test_the_deny_list_used_above_would_catch_such_columns(name: str) -> None:
    assert is_phi_key(name)


# --- constraints, on both backends ----------------------------------------------------------


def test_a_received_key_is_unique_per_node(db_engine: Engine) -> None:
    with session_scope(db_engine) as session:
        session.add_all([instance("hmac-1"), instance("hmac-1", Node.RECEIVER)])
    with pytest.raises(IntegrityError), session_scope(db_engine) as session:
        session.add(instance("hmac-1"))
    with session_scope(db_engine) as session:
        assert len(session.execute(select(Instance)).scalars().all()) == 2


@pytest.mark.parametrize("make", [
    lambda: Study(node=Node.STAGE1, new_study_instance_uid="2.25.7"),
    lambda: media_import("f" * 64),
    lambda: Pseudonym(keyword="PatientID", pseudonym="TCE-0001", lookup="l" * 64,
                      sealed=b"token", key_id="k1"),
], ids=["study-uid-per-node", "import-fingerprint", "pseudonym-lookup"])
def test_unique_constraints_hold(db_engine: Engine, make: object) -> None:
    with session_scope(db_engine) as session:
        session.add(make())  # type: ignore[operator]
    with pytest.raises(IntegrityError), session_scope(db_engine) as session:
        session.add(make())  # type: ignore[operator]


def test_one_original_is_stored_once_even_under_another_pseudonym(db_engine: Engine) -> None:
    with session_scope(db_engine) as session:
        session.add(Pseudonym(keyword="PatientID", pseudonym="A", lookup="same", sealed=b"1",
                              key_id="k1"))
    with pytest.raises(IntegrityError), session_scope(db_engine) as session:
        session.add(Pseudonym(keyword="PatientID", pseudonym="B", lookup="same", sealed=b"2",
                              key_id="k1"))


def test_job_instances_need_a_job_and_go_with_it(db_engine: Engine) -> None:
    with pytest.raises(IntegrityError), session_scope(db_engine) as session:
        session.add(job_instance("2.25.1", job_id=4242))
    with session_scope(db_engine) as session:
        job = Job(study_instance_uid="2.25.100", instance_count=2)
        job.instances = [job_instance("2.25.1"), job_instance("2.25.2")]
        session.add(job)
    with pytest.raises(IntegrityError), session_scope(db_engine) as session:
        session.add(job_instance("2.25.1", job_id=job.id))  # same instance twice in a job
    with session_scope(db_engine) as session:
        session.execute(delete(Job))  # SQL-level delete: ON DELETE CASCADE does the rest
        assert session.execute(select(JobInstance)).scalars().all() == []


def test_deleting_a_media_import_keeps_its_jobs(db_engine: Engine) -> None:
    with session_scope(db_engine) as session:
        session.add(Job(study_instance_uid="2.25.5", media_import=media_import("a" * 64)))
    with session_scope(db_engine) as session:
        session.execute(delete(MediaImport))
        job = session.execute(select(Job)).scalar_one()
        assert job.media_import_id is None


# --- values as SQL tools see them -----------------------------------------------------------


def test_states_are_stored_as_their_value(db_engine: Engine) -> None:
    with session_scope(db_engine) as session:
        session.add(Job(study_instance_uid="2.25.9", state=JobState.PENDING_APPROVAL))
        session.add(MediaImport(fingerprint="b" * 64, via=ImportVia.FOLDER_SCAN))
        session.add(instance("k", Node.RECEIVER))
    with db_engine.connect() as conn:
        assert conn.execute(text("SELECT state FROM jobs")).scalar() == "PENDING_APPROVAL"
        assert conn.execute(text("SELECT via FROM media_imports")).scalar() == "folder scan"
        assert conn.execute(text("SELECT node, state FROM instances")).one() == ("receiver",
                                                                                "RECEIVED")
    with session_scope(db_engine) as session:
        row = session.execute(select(Job)).scalar_one()
        assert row.state is JobState.PENDING_APPROVAL
        assert row.attempts == 0 and row.sent_count == 0


def test_an_unknown_state_is_refused(db_engine: Engine) -> None:
    with pytest.raises(StatementError, match="APPROVD"), session_scope(db_engine) as session:
        session.add(Job(study_instance_uid="2.25.9", state="APPROVD"))


def test_times_come_back_as_utc(db_engine: Engine) -> None:
    cet = timezone(timedelta(hours=1))
    local = datetime(2024, 3, 1, 13, 30, 15, 250000, tzinfo=cet)
    with session_scope(db_engine) as session:
        session.add(Job(study_instance_uid="2.25.3", delay_until=local))
    with session_scope(db_engine) as session:
        job = session.execute(select(Job)).scalar_one()
        assert job.delay_until == local
        assert job.delay_until is not None and job.delay_until.tzinfo is UTC
        assert job.delay_until.hour == 12
        assert job.created_at.tzinfo is UTC
        due = session.execute(select(Job.id).where(
            Job.delay_until <= datetime(2024, 3, 1, 12, 31, tzinfo=UTC))).scalars().all()
        assert due == [job.id]


def test_naive_times_are_refused(db_engine: Engine) -> None:
    with pytest.raises(StatementError, match="naive datetime"), \
            session_scope(db_engine) as session:
        session.add(Job(study_instance_uid="2.25.3", delay_until=datetime(2024, 3, 1)))


def test_every_table_accepts_a_row(db_engine: Engine) -> None:
    """Defaults fill what callers leave out; nothing needs a value only PHI could provide."""
    with session_scope(db_engine) as session:
        media = Media(node=Node.STAGE1, path="/media/usb0", volume="TCE00001")
        media.studies = [MediaStudy(study_uid="2.25.11"), MediaStudy(study_uid="2.25.12")]
        session.add_all([
            media,
            Study(node=Node.STAGE1, new_study_instance_uid="2.25.11", patient_pseudonym="P1"),
            QuarantineItem(node=Node.RECEIVER, stored_path="q/abc", reason="not DICOM",
                           stage="receive", sha256="c" * 64, size_bytes=3),
            Heartbeat(node=Node.STAGE2, pid=123, host="appliance", port=11113),
            instance("k2"),
        ])
    with session_scope(db_engine) as session:
        stored = session.execute(select(Media)).scalar_one()
        assert sorted(s.study_uid for s in stored.studies) == ["2.25.11", "2.25.12"]
        assert session.get(Heartbeat, Node.STAGE2) is not None
        row = session.execute(select(Instance)).scalar_one()
        assert row.state is InstanceState.RECEIVED and row.size_bytes == 0
        job = Job(study_instance_uid="2.25.11", instances=[job_instance("2.25.13")])
        session.add(job)
        session.flush()
        assert job.state is JobState.IMPORTED
        assert job.instances[0].send_status is SendStatus.PENDING


# --- sealed originals -----------------------------------------------------------------------


def test_a_sealed_original_round_trips_and_is_not_stored_in_clear(db_engine: Engine,
                                                                  tmp_path: Path) -> None:
    ring = KeyRing.create(tmp_path / "keyring.json")
    original = b"MRN-20240301-0042"
    pseudonym = "TCE-7F3A9C"
    token = ring.seal(original, context=pseudonym.encode())
    with session_scope(db_engine) as session:
        session.add(Pseudonym(keyword="PatientID", pseudonym=pseudonym, lookup="hmac-of-original",
                              sealed=token, key_id=ring.active_key_id))

    with db_engine.connect() as conn:
        for row in conn.execute(text("SELECT * FROM pseudonyms")):
            for value in row:
                raw = value if isinstance(value, (bytes, memoryview)) else str(value).encode()
                assert original not in bytes(raw)

    with session_scope(db_engine) as session:
        stored = session.execute(select(Pseudonym).where(
            Pseudonym.lookup == "hmac-of-original")).scalar_one()
        assert isinstance(stored.sealed, bytes)
        assert stored.key_id == ring.active_key_id
        assert KeyRing.load(ring.path).unseal(stored.sealed, stored.pseudonym.encode()) == original
        with pytest.raises(UnsealError):
            ring.unseal(stored.sealed, b"TCE-OTHER")  # a token moved to another row fails
