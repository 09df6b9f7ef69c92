"""What ``tce stage2 jobs`` and ``tce stage2 job ID`` show: job tables, details and history.

Everything here is stage-1 pseudonymized (study UIDs, patient pseudonyms) or about the job itself
(states, counts, policy, approver, audit history), so it may be printed and kept in a terminal
log. Patients are grouped by their stage-1 pseudonym: two studies of one pseudonymous patient
show the same patient, and the table says how many studies each patient has.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from appliance.audit import audit_details
from appliance.models import AuditEvent, Job, JobInstance, JobState, SendStatus
from stage2_export_manager.approval import job_subject


def list_jobs(session: Session, states: list[JobState] | None = None) -> list[Job]:
    """Jobs ordered by patient pseudonym, then by when they were created."""
    query = select(Job).order_by(Job.patient_pseudonym, Job.created_at, Job.id)
    if states:
        query = query.where(Job.state.in_(states))
    return list(session.scalars(query))


def pending_jobs(session: Session, *, lock: bool = False) -> list[Job]:
    """Jobs waiting for approval (``--all-pending``); ``lock`` as in approval.find_job."""
    query = select(Job).where(Job.state == JobState.PENDING_APPROVAL).order_by(Job.id)
    return list(session.scalars(query.with_for_update() if lock else query))


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


def _policy(job: Job) -> str:
    return f"{job.policy_id} v{job.policy_version}" if job.policy_id else "-"


def format_jobs(jobs: list[Job]) -> str:
    """The ``tce stage2 jobs`` table plus a line per patient with more than one study."""
    if not jobs:
        return "no stage-2 jobs yet: import media with 'tce stage2 import MEDIA'"
    studies = Counter(j.patient_pseudonym or "-" for j in jobs)
    header = ("ID", "STUDY UID", "PATIENT", "STATE", "INST", "SENT", "POLICY", "UPDATED")
    rows = [header] + [
        (str(j.id), j.study_instance_uid, j.patient_pseudonym or "-", j.state.value,
         str(j.instance_count), str(j.sent_count), _policy(j), _when(j.updated_at))
        for j in jobs]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    right = {4, 5}
    lines = ["  ".join(cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
                       for i, cell in enumerate(row)).rstrip() for row in rows]
    patients = len(studies)
    distinct = len({j.study_instance_uid for j in jobs})
    lines.append(f"{len(jobs)} jobs, {distinct} studies, {patients} patients")
    for pseudonym, count in sorted(studies.items()):
        if count > 1 and pseudonym != "-":
            lines.append(f"patient {pseudonym}: {count} jobs (studies of one patient)")
    return "\n".join(lines)


@dataclass(frozen=True)
class HistoryEntry:
    at: datetime
    actor: str
    action: str
    policy: str
    details: dict[str, object]


def history(session: Session, job: Job) -> list[HistoryEntry]:
    """The job's audit events, oldest first."""
    events = session.scalars(select(AuditEvent).where(AuditEvent.subject == job_subject(job.id))
                             .order_by(AuditEvent.at, AuditEvent.id))
    return [HistoryEntry(e.at, e.actor, e.action,
                         f"{e.policy_id} v{e.policy_version} sha256 {e.policy_digest[:12]}"
                         if e.policy_id and e.policy_digest else "",
                         audit_details(e)) for e in events]


def send_counts(session: Session, job: Job) -> dict[SendStatus, int]:
    rows = session.execute(select(JobInstance.send_status, func.count())
                           .where(JobInstance.job_id == job.id)
                           .group_by(JobInstance.send_status))
    counts = dict.fromkeys(SendStatus, 0)
    counts.update({SendStatus(status): int(n) for status, n in rows})
    return counts


def other_studies(session: Session, job: Job) -> list[Job]:
    """Other jobs of the same pseudonymous patient."""
    if not job.patient_pseudonym:
        return []
    return list(session.scalars(select(Job).where(Job.patient_pseudonym == job.patient_pseudonym,
                                                  Job.id != job.id).order_by(Job.id)))


def _detail_value(value: object) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "-"
    return str(value)


def format_job(session: Session, job: Job) -> str:
    """``tce stage2 job ID``: state, counts, policy, approver, the patient's other jobs, history."""
    counts = send_counts(session, job)
    lines = [
        f"job {job.id}  {job.state.value}",
        f"  study            {job.study_instance_uid}",
        f"  patient          {job.patient_pseudonym or '-'}",
        f"  instances        {job.instance_count} ({counts[SendStatus.SENT]} sent,"
        f" {counts[SendStatus.PENDING]} pending, {counts[SendStatus.FAILED]} failed)",
        f"  policy           {_policy(job)}",
    ]
    if job.policy_id:
        lines += [f"  policy sha256    {job.policy_digest}",
                  f"  policy source    {job.policy_source}",
                  f"  approver         {job.approver} at {_when(job.approved_at)}"]
    if job.approval_reason:
        label = "rejected because" if job.state is JobState.REJECTED else "reason"
        lines.append(f"  {label:<16} {job.approval_reason}")
    if job.delay_until:
        lines.append(f"  delayed until    {job.delay_until.isoformat(timespec='minutes')}")
    if job.attempts or job.next_attempt_at:
        lines.append(f"  attempts         {job.attempts}, next {_when(job.next_attempt_at)}")
    if job.last_error:
        lines.append(f"  last error       {job.last_error}")
    if job.media_import is not None:
        lines.append(f"  imported         {_when(job.created_at)} (media import"
                     f" {job.media_import.id}, {job.media_import.via.value})")
    others = other_studies(session, job)
    if others:
        listed = ", ".join(f"job {o.id} ({o.state.value})" for o in others)
        lines.append(f"  same patient     {listed}")
    lines.append("  history")
    for entry in history(session, job):
        details = " ".join(f"{k}={_detail_value(v)}" for k, v in sorted(entry.details.items())
                           if v not in (None, "", []))
        policy = f" [{entry.policy}]" if entry.policy else ""
        lines.append(f"    {_when(entry.at)}  {entry.action:<22} by {entry.actor}{policy}"
                     f"{'  ' + details if details else ''}")
    return "\n".join(lines)
