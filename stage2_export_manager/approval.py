"""Per-study approval: bind a stage-2 job to one exact policy, and check that binding at export.

An approval is a privacy officer's decision about *this* policy text for *this* study. It records
the policy id, version, sha256 digest (of the canonical form, see :mod:`policies.loader`) and
where the policy came from (a built-in id, or the absolute path of a YAML file). Export reloads
the policy from that source through :func:`approved_policy` and refuses to run when the digest
differs: someone edited the file after approval, and what would be sent is no longer what was
approved. Comments and key order do not change the digest, so only a change of meaning needs a
new approval.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.audit import record_audit
from appliance.models import Job, JobState, Node, SendStatus
from policies.loader import PolicyError, builtin_policy_names, load_builtin, load_policy
from policies.model import Policy

BUILTIN_PREFIX = "builtin:"
NODE = Node.STAGE2


class PolicyChanged(Exception):
    """The approved policy cannot be used as approved; the job needs a new approval.

    The message names the job, the policy id and source, never a patient value.
    """


class ApprovedJob(Protocol):
    """What :func:`approved_policy` reads of a :class:`appliance.models.Job`."""

    id: int
    policy_id: str | None
    policy_digest: str | None
    policy_source: str | None


def policy_source(policy: Policy) -> str:
    """What a job records as the source: a built-in id, else the file's absolute path."""
    if policy.source.startswith(BUILTIN_PREFIX):
        return policy.source.removeprefix(BUILTIN_PREFIX)
    return os.path.abspath(policy.source)


def load_source(source: str) -> Policy:
    """Load a policy from what :func:`policy_source` recorded; raises PolicyError."""
    name = source.removeprefix(BUILTIN_PREFIX)
    if os.sep not in name and name in builtin_policy_names():
        return load_builtin(name)
    return load_policy(source)


def approved_policy(job: ApprovedJob) -> Policy:
    """The policy ``job`` was approved with, reloaded from its source and checked by digest.

    Raises :class:`PolicyChanged` when the job has no approval, when the source can no longer
    be read or parsed, or when its digest differs from the approved one.
    """
    if not job.policy_source or not job.policy_digest:
        raise PolicyChanged(f"job {job.id} has no approved policy: approve it first")
    try:
        policy = load_source(job.policy_source)
    except PolicyError as exc:
        raise PolicyChanged(
            f"job {job.id}: the approved policy {job.policy_id} ({job.policy_source}) cannot be"
            f" loaded any more ({exc.problem}): approve again") from None
    if policy.digest != job.policy_digest:
        raise PolicyChanged(
            f"job {job.id}: policy file changed after approval: approve again"
            f" ({job.policy_id} from {job.policy_source}: approved digest"
            f" {job.policy_digest[:12]}, now {policy.digest[:12]})")
    return policy


# --- decisions ----------------------------------------------------------------------------


class ApprovalError(Exception):
    """A decision that cannot be taken (unknown job, wrong state); the message says why."""


APPROVABLE = frozenset({JobState.PENDING_APPROVAL, JobState.DELAYED, JobState.APPROVED,
                        JobState.FAILED})
REJECTABLE = APPROVABLE


def find_job(session: Session, ref: str, *, lock: bool = False) -> Job:
    """The job named by ``ref``: a job id, or a study UID (as imported) with one open job.

    A study imported in several parts may have several jobs; then the one not yet exported or
    rejected is meant, and if that is still ambiguous the caller must give a job id. ``lock``
    takes a row lock (PostgreSQL ``FOR UPDATE``; SQLite transactions already hold the write
    lock), so a decision and a running export cannot both change the job's state.
    """
    ref = ref.strip()
    if ref.isdigit():
        job = session.get(Job, int(ref), with_for_update=lock)
        if job is None:
            raise ApprovalError(f"no job {ref}; 'tce stage2 jobs' lists them")
        return job
    query = select(Job).where(Job.study_instance_uid == ref).order_by(Job.id)
    jobs = list(session.scalars(query.with_for_update() if lock else query))
    if not jobs:
        raise ApprovalError(f"no job for study {ref}; 'tce stage2 jobs' lists them")
    open_jobs = [j for j in jobs if j.state not in (JobState.EXPORTED, JobState.REJECTED)]
    candidates = open_jobs or jobs
    if len(candidates) > 1:
        ids = ", ".join(str(j.id) for j in candidates)
        raise ApprovalError(f"study {ref} has {len(candidates)} jobs ({ids}): give a job id")
    return candidates[0]


def parse_when(text: str) -> datetime:
    """An ISO 8601 time; without a zone it is local time. Raises ValueError."""
    when = datetime.fromisoformat(text.strip())
    return when.astimezone() if when.tzinfo is None else when


def approve(session: Session, job: Job, policy: Policy, approver: str, *,
            reason: str | None = None, delay_until: datetime | None = None,
            now: datetime | None = None) -> Job:
    """Bind ``job`` to ``policy`` (id, version, digest, source) and make it APPROVED or DELAYED.

    A ``delay_until`` in the future makes the job DELAYED until then (TCE's delay for reason).
    Re-approving with a different policy digest marks instances already sent for sending again,
    so that the Receiver ends up with the whole study under one policy. Attempts are reset.
    """
    if not approver.strip():
        raise ApprovalError("an approval needs the approver's name (--approver NAME)")
    if job.state not in APPROVABLE:
        raise ApprovalError(
            f"job {job.id} is {job.state.value}; only jobs pending approval, delayed, approved"
            " or failed can be approved")
    now = now or datetime.now(UTC)
    previous, old_digest = job.state, job.policy_digest
    resend = 0
    if old_digest is not None and old_digest != policy.digest:
        for instance in job.instances:
            if instance.send_status is SendStatus.SENT:
                instance.send_status, instance.dimse_status = SendStatus.PENDING, None
                instance.sent_at, instance.new_sop_instance_uid = None, None
                resend += 1
        job.sent_count = 0
    for instance in job.instances:
        if instance.send_status is SendStatus.FAILED:
            instance.send_status, instance.attempts = SendStatus.PENDING, 0
    delayed = delay_until is not None and delay_until > now
    job.state = JobState.DELAYED if delayed else JobState.APPROVED
    job.policy_id, job.policy_version = policy.id, policy.version
    job.policy_digest, job.policy_source = policy.digest, policy_source(policy)
    job.approver, job.approved_at = approver.strip(), now
    job.approval_reason = reason
    job.delay_until = delay_until.astimezone(UTC) if delayed and delay_until else None
    job.attempts, job.next_attempt_at, job.last_error = 0, None, None
    record_audit(session, NODE, "job.delayed" if delayed else "job.approved", job_subject(job.id),
                 actor=job.approver, policy=policy, reason=reason,
                 previous_state=previous.value, policy_source=job.policy_source,
                 delay_until=job.delay_until.isoformat() if job.delay_until else None,
                 instances=job.instance_count, resend=resend)
    return job


def reject(session: Session, job: Job, actor: str, reason: str) -> Job:
    """Mark ``job`` REJECTED: it will never be exported (a new import makes a new job)."""
    if not reason.strip():
        raise ApprovalError("a rejection needs a reason (--reason TEXT)")
    if job.state not in REJECTABLE:
        raise ApprovalError(f"job {job.id} is {job.state.value}; only jobs pending approval,"
                            " delayed, approved or failed can be rejected")
    previous = job.state
    job.state, job.approval_reason, job.next_attempt_at = JobState.REJECTED, reason, None
    record_audit(session, NODE, "job.rejected", job_subject(job.id), actor=actor, reason=reason,
                 previous_state=previous.value)
    return job


def retry(session: Session, job: Job, actor: str) -> Job:
    """Put a FAILED job back to APPROVED with attempts reset; its policy must still match."""
    if job.state is not JobState.FAILED:
        raise ApprovalError(f"job {job.id} is {job.state.value}; only FAILED jobs are retried")
    try:
        policy = approved_policy(job)
    except PolicyChanged as exc:
        raise ApprovalError(str(exc)) from None
    failed = 0
    for instance in job.instances:
        if instance.send_status is SendStatus.FAILED:
            instance.send_status, instance.attempts = SendStatus.PENDING, 0
            failed += 1
    previous_error = job.last_error
    job.state, job.attempts, job.next_attempt_at = JobState.APPROVED, 0, None
    job.last_error = None
    record_audit(session, NODE, "job.retried", job_subject(job.id), actor=actor, policy=policy,
                 failed_instances=failed, previous_error=previous_error)
    return job


def job_subject(job_id: int) -> str:
    """The audit subject of a job's events (``job-12``); the history of ``tce stage2 job``."""
    return f"job-{job_id}"
