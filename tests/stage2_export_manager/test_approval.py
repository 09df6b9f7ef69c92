"""Per-study approval: what an approval binds, delay, reject, retry, states, and policy edits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from appliance.audit import audit_details
from appliance.db import session_scope
from appliance.models import AuditEvent, Job, JobState, SendStatus
from appliance.settings import Settings
from policies.engine import Deidentifier
from policies.keying import EngineKeys
from policies.loader import load_builtin, load_policy
from stage2_export_manager.approval import (
    ApprovalError,
    PolicyChanged,
    approve,
    approved_policy,
    find_job,
    job_subject,
    reject,
    retry,
)
from stage2_export_manager.importer import import_media
from stage2_export_manager.jobs import pending_jobs
from tests.stage2_export_manager import stage1_datasets, stage2_node, write_pdi

Node = tuple[Settings, sessionmaker[Session]]
FIVE = load_builtin("research-age-band-5y")
THREE_YEAR_POLICY = """\
# Trial X: 3-year age bands, sex kept, dates shifted
id: trial-x
version: "2"
description: Trial X export with 3-year age bands.
base_profile: ps315-basic
options: [retain_safe_private, retain_patient_characteristics, retain_long_modified_dates,
          clean_descriptors, clean_structured_content]
parameters: {age_band_years: 3, age_cap_years: 90, date_mode: shift, compute_age: true}
overrides:
  - {tag: PatientAge, action: age_band}
  - {tag: PatientSex, action: keep}
"""


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pdi(stage1_datasets(), tmp_path_factory.mktemp("m") / "media")


@pytest.fixture
def node(tmp_path: Path, media: Path) -> Node:
    settings, sessions = stage2_node(tmp_path / "node")
    import_media(settings, sessions, media)
    return settings, sessions


@pytest.fixture
def trial_policy(tmp_path: Path) -> Path:
    path = tmp_path / "trial-x.yaml"
    path.write_text(THREE_YEAR_POLICY)
    return path


def job_by_age(session: Session, age: str) -> Job:
    """The job whose stored instances carry PatientAge ``age`` (stage 1 keeps ages)."""
    for job in session.scalars(select(Job).order_by(Job.id)):
        if dcmread(job.instances[0].store_path).get("PatientAge") == age:
            return job
    raise AssertionError(f"no job with PatientAge {age}")


def events(session: Session, job: Job) -> list[AuditEvent]:
    return list(session.scalars(select(AuditEvent).where(
        AuditEvent.subject == job_subject(job.id)).order_by(AuditEvent.id)))


def test_approval_binds_policy_id_version_digest_and_source_and_is_audited(node: Node) -> None:
    _, sessions = node
    with session_scope(sessions) as session:
        job = session.scalars(select(Job).order_by(Job.id)).first()
        assert job is not None
        approve(session, job, FIVE, "Dr. Privacy", reason="trial X, consent on file")
    with sessions() as session:
        job = session.get(Job, job.id)
        assert job is not None and job.state is JobState.APPROVED
        assert (job.policy_id, job.policy_version, job.policy_digest, job.policy_source) == (
            "research-age-band-5y", "1", FIVE.digest, "research-age-band-5y")
        assert job.approver == "Dr. Privacy" and job.approved_at is not None
        assert job.approval_reason == "trial X, consent on file"
        last = events(session, job)[-1]
        assert (last.action, last.actor, last.policy_id, last.policy_version,
                last.policy_digest) == ("job.approved", "Dr. Privacy", FIVE.id, "1", FIVE.digest)
        details = audit_details(last)
        assert details["reason"] == "trial X, consent on file"
        assert details["previous_state"] == "PENDING_APPROVAL"
        assert approved_policy(job).digest == FIVE.digest


def test_a_policy_file_is_recorded_by_absolute_path(node: Node, trial_policy: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _, sessions = node
    monkeypatch.chdir(trial_policy.parent)
    policy = load_policy("trial-x.yaml")  # a relative path, as typed on the command line
    with session_scope(sessions) as session:
        job = approve(session, find_job(session, "1"), policy, "po")
        assert job.policy_source == str(trial_policy)
    monkeypatch.chdir("/")
    assert approved_policy(job).digest == policy.digest


def test_delay_until_in_the_future_makes_the_job_delayed(node: Node) -> None:
    _, sessions = node
    now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    with session_scope(sessions) as session:
        later = approve(session, find_job(session, "1"), FIVE, "po", reason="embargo",
                        delay_until=now + timedelta(days=30), now=now)
        past = approve(session, find_job(session, "2"), FIVE, "po",
                       delay_until=now - timedelta(minutes=1), now=now)
    assert later.state is JobState.DELAYED and later.delay_until == now + timedelta(days=30)
    assert past.state is JobState.APPROVED and past.delay_until is None
    with sessions() as session:
        last = events(session, later)[-1]
        assert last.action == "job.delayed"
        assert audit_details(last)["delay_until"] == (now + timedelta(days=30)).isoformat()


def test_reject_is_audited_and_a_rejected_job_cannot_be_approved(node: Node) -> None:
    _, sessions = node
    with session_scope(sessions) as session:
        job = reject(session, find_job(session, "3"), "po", "no consent for this study")
        assert job.state is JobState.REJECTED
    with sessions() as session:
        last = events(session, job)[-1]
        assert (last.action, last.actor) == ("job.rejected", "po")
        assert audit_details(last)["reason"] == "no consent for this study"
    with pytest.raises(ApprovalError, match="job 3 is REJECTED; only jobs pending approval"), \
            session_scope(sessions) as session:
        approve(session, find_job(session, "3"), FIVE, "po")
    with pytest.raises(ApprovalError, match="needs a reason"), session_scope(sessions) as session:
        reject(session, find_job(session, "4"), "po", " ")


@pytest.mark.parametrize("state", [JobState.EXPORTING, JobState.EXPORTED, JobState.IMPORTED])
def test_jobs_in_other_states_cannot_be_approved(node: Node, state: JobState) -> None:
    _, sessions = node
    with session_scope(sessions) as session:
        find_job(session, "1").state = state
    with pytest.raises(ApprovalError, match=f"job 1 is {state.value}"), \
            session_scope(sessions) as session:
        approve(session, find_job(session, "1"), FIVE, "po")
    with sessions() as session:
        assert find_job(session, "1").policy_digest is None  # nothing was half-written


def test_all_pending_approves_each_pending_job_with_its_own_audit_event(node: Node) -> None:
    _, sessions = node
    with session_scope(sessions) as session:
        reject(session, find_job(session, "2"), "po", "duplicate")
        for job in pending_jobs(session):
            approve(session, job, FIVE, "po", reason="batch")
    with sessions() as session:
        states = {j.id: j.state for j in session.scalars(select(Job))}
        assert states == {1: JobState.APPROVED, 2: JobState.REJECTED, 3: JobState.APPROVED,
                          4: JobState.APPROVED, 5: JobState.APPROVED}
        approvals = session.scalars(select(AuditEvent.subject).where(
            AuditEvent.action == "job.approved")).all()
        assert sorted(str(a) for a in approvals) == ["job-1", "job-3", "job-4", "job-5"]


def test_retry_puts_a_failed_job_back_with_attempts_reset(node: Node) -> None:
    _, sessions = node
    with session_scope(sessions) as session:
        job = approve(session, find_job(session, "4"), FIVE, "po")
        job.state, job.attempts, job.last_error = JobState.FAILED, 5, "association rejected"
        job.instances[0].send_status = SendStatus.SENT
        job.instances[1].send_status, job.instances[1].attempts = SendStatus.FAILED, 5
    with session_scope(sessions) as session:
        job = retry(session, find_job(session, "4"), "operator")
    assert job.state is JobState.APPROVED and job.attempts == 0 and job.last_error is None
    assert job.instances[0].send_status is SendStatus.SENT  # accepted ones are not resent
    assert (job.instances[1].send_status, job.instances[1].attempts) == (SendStatus.PENDING, 0)
    with sessions() as session:
        last = events(session, job)[-1]
        assert (last.action, last.actor, last.policy_digest) == (
            "job.retried", "operator", FIVE.digest)
    with pytest.raises(ApprovalError, match="only FAILED jobs are retried"), \
            session_scope(sessions) as session:
        retry(session, find_job(session, "4"), "operator")


def test_approving_another_policy_resends_what_was_sent_under_the_old_one(
        node: Node, trial_policy: Path) -> None:
    _, sessions = node
    with session_scope(sessions) as session:
        largest = max(session.scalars(select(Job)), key=lambda j: j.instance_count)
        assert largest.instance_count >= 4
        job = approve(session, largest, FIVE, "po")
        job.state = JobState.FAILED
        for inst in job.instances[:3]:
            inst.send_status = SendStatus.SENT
        job.sent_count = 3
    with session_scope(sessions) as session:
        job = approve(session, find_job(session, str(largest.id)), load_policy(trial_policy),
                      "po")
    assert {i.send_status for i in job.instances} == {SendStatus.PENDING}
    assert job.sent_count == 0
    with sessions() as session:
        assert audit_details(events(session, job)[-1])["resend"] == 3


def test_approved_policy_refuses_a_policy_file_edited_after_approval(
        node: Node, trial_policy: Path) -> None:
    _, sessions = node
    with session_scope(sessions) as session:
        job = approve(session, find_job(session, "1"), load_policy(trial_policy), "po")
    trial_policy.write_text("# reformatted, same meaning\n" + THREE_YEAR_POLICY)
    assert approved_policy(job).parameters.age_band_years == 3
    trial_policy.write_text(THREE_YEAR_POLICY.replace("age_band_years: 3", "age_band_years: 4"))
    with pytest.raises(PolicyChanged, match="policy file changed after approval: approve again"):
        approved_policy(job)
    trial_policy.unlink()
    with pytest.raises(PolicyChanged, match="cannot be loaded any more"):
        approved_policy(job)
    with sessions() as session, pytest.raises(PolicyChanged, match="job 2 has no approved"):
        approved_policy(find_job(session, "2"))


def test_each_case_gets_its_own_approved_age_band(node: Node, trial_policy: Path) -> None:
    """A 3-year custom policy for one study and the 5-year built-in for another, side by side."""
    _, sessions = node
    with session_scope(sessions) as session:
        seventy_eight, fifty_seven = job_by_age(session, "078Y"), job_by_age(session, "057Y")
        approve(session, seventy_eight, load_policy(trial_policy), "po", reason="trial X")
        approve(session, fifty_seven, FIVE, "po", reason="registry Y")
    keys = EngineKeys.for_testing(b"stage2")
    banded = {}
    with sessions() as session:
        for job_id in (seventy_eight.id, fifty_seven.id):
            job = session.get(Job, job_id)
            assert job is not None
            ds = dcmread(job.instances[0].store_path)
            Deidentifier(approved_policy(job), keys).deidentify(ds)
            banded[job.policy_id] = ds.PatientAge
    assert banded == {"trial-x": "078Y", "research-age-band-5y": "055Y"}
    # and the other way round, to show the band comes from the policy, not from the study
    with session_scope(sessions) as session:
        job = find_job(session, str(seventy_eight.id))
        approve(session, job, FIVE, "po")
        ds = dcmread(job.instances[0].store_path)
        Deidentifier(approved_policy(job), keys).deidentify(ds)
        assert ds.PatientAge == "075Y"


def test_import_and_decisions_on_sqlite_and_postgresql(db_url: str, tmp_path: Path,
                                                       media: Path) -> None:
    settings, sessions = stage2_node(tmp_path / "db-node", db_url)
    assert import_media(settings, sessions, media).new_jobs == [1, 2, 3, 4, 5]
    assert import_media(settings, sessions, media).media_import_id == 1  # already imported
    now = datetime(2026, 6, 1, tzinfo=UTC)
    with session_scope(sessions) as session:
        reject(session, find_job(session, "1", lock=True), "po", "no consent")
        approve(session, find_job(session, "2", lock=True), FIVE, "po",
                delay_until=now + timedelta(hours=1), now=now)
        for job in pending_jobs(session, lock=True):
            approve(session, job, FIVE, "po")
    with sessions() as session:
        delayed = find_job(session, "2")
        assert delayed.delay_until == now + timedelta(hours=1)  # UTC round trip
        assert [j.state for j in session.scalars(select(Job).order_by(Job.id))] == [
            JobState.REJECTED, JobState.DELAYED, JobState.APPROVED, JobState.APPROVED,
            JobState.APPROVED]
        assert approved_policy(find_job(session, "3")).digest == FIVE.digest
    sessions.kw["bind"].dispose()


def test_find_job_by_id_or_study_uid(node: Node) -> None:
    _, sessions = node
    with sessions() as session:
        job = find_job(session, "2")
        assert find_job(session, job.study_instance_uid).id == 2
        with pytest.raises(ApprovalError, match="no job 99"):
            find_job(session, "99")
        with pytest.raises(ApprovalError, match=r"no job for study 1\.2\.3"):
            find_job(session, "1.2.3")
