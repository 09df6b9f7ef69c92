"""Export of approved studies end to end: real media, real importer, real approval, real peers.

The node's input is the stage-1 pseudonymized sample (22 instances, 5 studies) written as PDI
media and imported; studies are approved with ``research-age-band-5y`` (or a policy file) and
exported to dcmtk ``storescp`` or to a pynetdicom SCP in this process. Receptions are counted at
the peer, so "sent once" means the peer saw it once.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import GrayscaleSoftcopyPresentationStateStorage, MRImageStorage
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from appliance.audit import audit_details
from appliance.keys import KeyRing
from appliance.models import AuditEvent, Job, JobInstance, JobState, SendStatus
from appliance.settings import Settings
from policies.loader import load_builtin, load_policy
from policies.model import Policy
from stage2_export_manager.approval import approve, job_subject
from stage2_export_manager.exporter import POLICY_CHANGED, ExportSummary, export_due, outbox_dir
from stage2_export_manager.importer import import_media
from stage2_export_manager.scu import NOT_ACCEPTED, Peer
from tests.stage2_export_manager import stage1_datasets, stage2_node, write_pdi
from tests.stage2_export_manager.test_scu import RecordingSCP, Storescp, free_port

FIVE = load_builtin("research-age-band-5y")
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)  # the export's clock, injected


@dataclasses.dataclass
class Node:
    settings: Settings
    sessions: sessionmaker[Session]
    keyring: KeyRing

    def export(self, peer: Peer | None = None, **kwargs: Any) -> ExportSummary:
        kwargs.setdefault("now", T0)
        return export_due(self.settings, self.sessions, self.keyring, to=peer, **kwargs)

    def jobs(self) -> list[Job]:
        with self.sessions() as session:
            return list(session.scalars(select(Job).order_by(Job.id)))

    def job(self, job_id: int) -> Job:
        with self.sessions() as session:
            return session.get_one(Job, job_id)

    def instances(self, job_id: int | None = None) -> list[JobInstance]:
        with self.sessions() as session:
            query = select(JobInstance).order_by(JobInstance.id)
            if job_id is not None:
                query = query.where(JobInstance.job_id == job_id)
            return list(session.scalars(query))

    def sent_uids(self) -> Counter[str]:
        return Counter(str(i.new_sop_instance_uid) for i in self.instances()
                       if i.send_status is SendStatus.SENT)

    def events(self, job_id: int, action: str | None = None) -> list[AuditEvent]:
        with self.sessions() as session:
            query = select(AuditEvent).where(AuditEvent.subject == job_subject(job_id))
            if action:
                query = query.where(AuditEvent.action == action)
            return list(session.scalars(query.order_by(AuditEvent.id)))

    def approve(self, policy: Policy = FIVE, job_ids: list[int] | None = None,
                **kwargs: Any) -> list[int]:
        with self.sessions.begin() as session:
            jobs = [j for j in session.scalars(select(Job).order_by(Job.id))
                    if job_ids is None or j.id in job_ids]
            for job in jobs:
                approve(session, job, policy, "Dr. Reviewer", now=T0, **kwargs)
            return [j.id for j in jobs]

    def job_with(self, sop_class: str) -> int:
        for instance in self.instances():
            if instance.sop_class_uid == sop_class:
                return instance.job_id
        raise AssertionError(f"no job holds {sop_class}")


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pdi(stage1_datasets(), tmp_path_factory.mktemp("media") / "usb")


def make_node(base: Path, media: Path, database_url: str | None = None, **stage2: Any) -> Node:
    settings, sessions = stage2_node(base, database_url)
    settings = dataclasses.replace(settings, stage2=dataclasses.replace(
        settings.stage2, **{"backoff_seconds": 10, "backoff_max_seconds": 600, **stage2}))
    result = import_media(settings, sessions, media)
    assert result.instances == 22, result
    return Node(settings, sessions, KeyRing.create(base / "keys" / "keyring.json"))


@pytest.fixture
def node(tmp_path: Path, media: Path) -> Node:
    return make_node(tmp_path / "node", media)


@pytest.fixture
def any_node(tmp_path: Path, media: Path, db_url: str) -> Iterator[Node]:
    """A node on SQLite, then on PostgreSQL."""
    made = make_node(tmp_path / "node", media, None if db_url.startswith("sqlite") else db_url)
    yield made
    engine = made.sessions.kw["bind"]
    engine.dispose()


# --- the normal case ----------------------------------------------------------------------


def test_exports_each_approved_study_once(any_node: Node, tmp_path: Path) -> None:
    node = any_node
    node.approve()
    with Storescp(tmp_path / "rx") as scp:
        summary = node.export(scp.peer)
        again = node.export(scp.peer, now=T0 + timedelta(days=1))
        received = scp.received()
    # One instance has BurnedInAnnotation=YES: the policy's Clean Pixel Data refuses it.
    assert (summary.jobs_exported, summary.jobs_failed, summary.jobs_waiting) == (4, 1, 0)
    assert (summary.instances_sent, summary.instances_failed) == (21, 1)
    assert received == node.sent_uids() and set(received.values()) == {1}
    assert (again.jobs_exported, again.instances_sent) == (0, 0)  # nothing is sent twice
    states = Counter(job.state for job in node.jobs())
    assert states == {JobState.EXPORTED: 4, JobState.FAILED: 1}
    failed = next(job for job in node.jobs() if job.state is JobState.FAILED)
    assert failed.last_error is not None
    assert ("1 of 10 instance(s) failed permanently (1 refused by policy: BurnedInAnnotation"
            " is YES") in failed.last_error
    assert failed.sent_count == 9
    for job in node.jobs():
        if job.state is JobState.EXPORTED:
            assert job.sent_count == job.instance_count and job.last_error is None
            [event] = node.events(job.id, "job.exported")
            details = audit_details(event)
            assert details["sent"] == job.instance_count and event.policy_digest == FIVE.digest
    for path in (tmp_path / "rx").iterdir():  # what the Receiver holds is anonymized
        ds = dcmread(path)
        assert ds.PatientIdentityRemoved == "YES"
        assert "research-age-band-5y" in str(ds.DeidentificationMethod)
        assert ds.SOPInstanceUID in received
        if ds.get("PatientAge"):
            assert int(ds.PatientAge[:3]) % 5 == 0 or ds.PatientAge == "090Y"
    assert "4 job(s) exported, 1 failed" in str(summary) and summary.exit_status == 1


def test_staged_files_are_written_to_the_outbox(node: Node, tmp_path: Path) -> None:
    [job_id] = node.approve(job_ids=[node.job_with(MRImageStorage)])
    with Storescp(tmp_path / "rx") as scp:
        node.export(scp.peer)
    staged = sorted(p.stem for p in (outbox_dir(node.settings) / str(job_id)).iterdir())
    assert staged == sorted(str(i.new_sop_instance_uid) for i in node.instances(job_id))
    assert not any(p.name.endswith(".tmp") for p in outbox_dir(node.settings).rglob("*"))


# --- failures -----------------------------------------------------------------------------


def test_rejected_sop_class_fails_after_the_rest_is_sent(node: Node) -> None:
    node.approve()
    with RecordingSCP(refuse=(MRImageStorage,)) as scp:
        summary = node.export(scp.peer)
    mr_jobs = {i.job_id for i in node.instances() if i.sop_class_uid == MRImageStorage}
    assert len(mr_jobs) == 2
    for job_id in mr_jobs:
        job = node.job(job_id)
        mr = [i for i in node.instances(job_id) if i.sop_class_uid == MRImageStorage]
        assert job.state is JobState.FAILED and job.last_error is not None
        assert f"{len(mr)} {NOT_ACCEPTED}" in job.last_error
        assert all(i.send_status is SendStatus.FAILED for i in mr)
        others = [i for i in node.instances(job_id) if i.sop_class_uid != MRImageStorage]
        assert all(i.send_status is SendStatus.SENT for i in others)
        [event] = node.events(job_id, "job.failed")
        assert audit_details(event)["failed"] == len(mr)
    assert Counter(scp.stored) == node.sent_uids()
    assert summary.instances_failed == 5 + 1  # five MR, one refused by policy


def test_receiver_down_mid_study_then_back(any_node: Node, tmp_path: Path) -> None:
    """Two instances acknowledged, then the Receiver dies; later the rest, and only the rest."""
    node = any_node
    [job_id] = node.approve(job_ids=[node.job_with(GrayscaleSoftcopyPresentationStateStorage)])
    port = free_port()
    with RecordingSCP(port, abort_after=2) as down:
        first = node.export(down.peer)
    job = node.job(job_id)
    assert (first.jobs_waiting, first.attempts_failed, first.instances_sent) == (1, 1, 2)
    assert job.state is JobState.APPROVED and job.attempts == 1
    assert job.next_attempt_at == T0 + timedelta(seconds=10)
    assert job.last_error and "association" in job.last_error
    assert node.events(job_id, "job.retry_scheduled")

    with Storescp(tmp_path / "rx", port) as up:
        early = node.export(up.peer, now=T0 + timedelta(seconds=5), study=str(job_id))
        assert early.instances_sent == 0 and not up.received()
        assert "waits for its retry at 2030-01-01 12:00:10 UTC" in early.messages[0]
        later = node.export(up.peer, now=T0 + timedelta(seconds=11))
        received = up.received()
    assert later.instances_sent == 10 - 2 - 1  # minus the two already sent and the refused one
    assert set(down.stored).isdisjoint(received) and set(received.values()) == {1}
    assert Counter(down.stored) + received == node.sent_uids()
    assert len(down.requests) == 3  # the third arrived unanswered, and was sent again later
    assert down.requests[2] in received
    assert node.job(job_id).state is JobState.FAILED  # its burned-in instance was refused
    assert [e.action for e in node.events(job_id)][-2:] == ["job.retry_scheduled", "job.failed"]


def test_policy_file_edited_after_approval(node: Node, tmp_path: Path) -> None:
    policy_file = tmp_path / "trial.yaml"
    text = (Path(__file__).parents[2] / "policies" / "builtin"
            / "research-age-band-5y.yaml").read_text().replace("id: research-age-band-5y",
                                                               "id: trial-x")
    policy_file.write_text(text)
    first, job_id = node.approve(load_policy(policy_file), job_ids=[
        node.job_with(MRImageStorage), node.job_with(GrayscaleSoftcopyPresentationStateStorage)])
    policy_file.write_text("# reformatted, same meaning\n" + text)  # digest unchanged
    with Storescp(tmp_path / "rx") as scp:
        assert node.export(scp.peer, study=str(first)).jobs_exported == 1
    policy_file.write_text(text.replace("age_band_years: 5", "age_band_years: 3"))
    assert "age_band_years: 3" in policy_file.read_text()
    with Storescp(tmp_path / "rx2") as scp:
        summary = node.export(scp.peer)
        received = scp.received()
    job = node.job(job_id)
    assert not received and summary.instances_sent == 0
    assert job.state is JobState.PENDING_APPROVAL and job.last_error == POLICY_CHANGED
    assert "policy file changed after approval" in summary.messages[0]
    [event] = node.events(job_id, "job.policy_changed")
    assert audit_details(event)["approved_digest"] == job.policy_digest


def test_delayed_until_a_time(node: Node, tmp_path: Path) -> None:
    [job_id] = node.approve(job_ids=[node.job_with(MRImageStorage)],
                            delay_until=T0 + timedelta(hours=1))
    assert node.job(job_id).state is JobState.DELAYED
    with Storescp(tmp_path / "rx") as scp:
        before = node.export(scp.peer, study=str(job_id))
        assert not scp.received() and before.jobs_waiting == 1
        assert "DELAYED until 2030-01-01 13:00:00 UTC" in before.messages[0]
        after = node.export(scp.peer, now=T0 + timedelta(hours=2))
        assert len(scp.received()) == node.job(job_id).instance_count
    assert after.jobs_exported == 1 and node.job(job_id).state is JobState.EXPORTED
    assert [e.action for e in node.events(job_id)][-2:] == ["job.released", "job.exported"]


def test_gives_up_after_max_attempts(tmp_path: Path, media: Path) -> None:
    node = make_node(tmp_path / "node", media, max_attempts=3, backoff_seconds=10,
                     backoff_max_seconds=15)
    [job_id] = node.approve(job_ids=[node.job_with(MRImageStorage)])
    nobody = Peer("TCE_RECEIVER", "127.0.0.1", free_port())
    first = node.export(nobody)
    assert first.exit_status == 1 and node.job(job_id).next_attempt_at == T0 + timedelta(
        seconds=10)
    second = node.export(nobody, now=T0 + timedelta(seconds=10))
    assert second.attempts_failed == 1
    assert node.job(job_id).next_attempt_at == T0 + timedelta(seconds=25)  # 20 s, capped at 15
    third = node.export(nobody, now=T0 + timedelta(seconds=30))
    job = node.job(job_id)
    assert third.jobs_failed == 1 and job.state is JobState.FAILED and job.attempts == 3
    assert job.last_error and "not reachable" in job.last_error
    assert "gave up after 3 attempt(s)" in job.last_error
    [event] = node.events(job_id, "job.failed")
    assert "not reachable" in audit_details(event)["reason"]
    assert all(i.send_status is SendStatus.PENDING for i in node.instances(job_id))


def test_study_filter(node: Node, tmp_path: Path) -> None:
    ids = node.approve()
    study = node.job(ids[1]).study_instance_uid
    with Storescp(tmp_path / "rx") as scp:
        one = node.export(scp.peer, study=str(ids[0]))
        two = node.export(scp.peer, study=study)
        none = node.export(scp.peer, study="1.2.3.4")
    assert (one.jobs_exported + one.jobs_failed, two.jobs_exported + two.jobs_failed) == (1, 1)
    assert {j.id for j in node.jobs() if j.state is JobState.APPROVED} == set(ids[2:])
    assert "no job matches '1.2.3.4'" in none.messages[0]


def test_stop_ends_an_export_between_instances(node: Node, tmp_path: Path) -> None:
    """SIGTERM on ``tce stage2 serve``: what was acknowledged stays sent, no attempt counted."""
    stop = threading.Event()

    class StoppingSCP(RecordingSCP):
        def _store(self, event: Any) -> int:
            status = super()._store(event)
            if len(self.stored) == 2:
                stop.set()
            return status

    [job_id] = node.approve(job_ids=[node.job_with(GrayscaleSoftcopyPresentationStateStorage)])
    with StoppingSCP() as scp:
        summary = node.export(scp.peer, stop=stop)
    job = node.job(job_id)
    assert job.state is JobState.APPROVED and job.attempts == 0 and job.next_attempt_at is None
    assert summary.instances_sent == 2 and "interrupted after 2 of 10" in summary.messages[0]
    with Storescp(tmp_path / "rx") as rest:
        node.export(rest.peer)
        received = rest.received()
    assert set(scp.stored).isdisjoint(received)
    assert Counter(scp.stored) + received == node.sent_uids()
