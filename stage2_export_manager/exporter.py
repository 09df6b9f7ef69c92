"""Stage-2 export: anonymize each approved study with its approved policy and send it on.

For every due job (APPROVED, or DELAYED until a time now past, and not waiting for a retry):

1. The approved policy is reloaded and checked by digest (:func:`approval.approved_policy`). If
   the file changed after approval, nothing is sent and the job goes back to PENDING_APPROVAL.
2. The job becomes EXPORTING. Each instance not yet SENT is anonymized with the same engine as
   stage 1 (the stage-2 key ring's keys) by the fast path of ``tce deidentify``: the header is
   de-identified, Pixel Data copied by the kernel. The result is staged atomically as
   ``outbox/<job>/<new SOP Instance UID>.dcm`` next to ``stage2.store_dir``; an instance the
   policy refuses, or whose stored copy is missing or changed since import, fails for good.
3. The staged files are streamed by C-STORE (:mod:`.scu`), one association per study, with the
   presentation contexts the study needs. Per-instance results are committed in small batches
   while sending (SQLite's fsync per commit would otherwise cost more than the C-STORE): a crash
   can resend the last batch, never lose an instance, and a clean failure records everything.
4. All SENT: EXPORTED. A Receiver that refuses, is down or aborts: the attempt counts, the job
   waits ``min(backoff_seconds * 2**(attempts-1), backoff_max_seconds)`` in APPROVED and later
   resumes with what is not SENT yet; after ``max_attempts``, FAILED. Instances that failed for
   good (context not accepted, failure status): FAILED once the rest is sent, with the counts.

Nothing here logs or audits a patient value: jobs are named by id, studies by stage-1 UIDs.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from appliance.audit import record_audit
from appliance.batch_worker import (
    InvalidInstance,
    NotDicom,
    read_for_splice,
    read_instance,
    write_temporary,
)
from appliance.durable import make_dirs
from appliance.logging import get_logger
from appliance.models import Job, JobInstance, JobState, Node, SendStatus
from appliance.settings import Settings
from policies.engine import Deidentifier
from policies.keying import EngineKeys
from policies.model import Policy
from policies.outcome import PolicyRefusal
from stage2_export_manager.approval import PolicyChanged, approved_policy, job_subject
from stage2_export_manager.scu import (
    AssociationFailed,
    Peer,
    StoreItem,
    StoreResult,
    Timeouts,
    parse_peer,
    send_study,
)

__all__ = ["ExportSummary", "Peer", "export_due", "outbox_dir", "parse_peer"]

LOG = get_logger("tce.stage2.export")
NODE = Node.STAGE2
POLICY_CHANGED = "policy changed after approval; approve again"
STALE_EXPORTING = timedelta(minutes=10)  # an EXPORTING job untouched this long was interrupted
_FLUSH_RESULTS, _FLUSH_SECONDS = 64, 0.5
_IN_CHUNK = 500
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


@dataclass
class ExportSummary:
    """What one :func:`export_due` run did; printed by ``tce stage2 export``."""

    jobs_exported: int = 0
    jobs_failed: int = 0
    jobs_waiting: int = 0
    instances_sent: int = 0
    instances_failed: int = 0
    messages: list[str] = field(default_factory=list)
    attempts_failed: int = 0  # attempts that ended with the Receiver refusing or unreachable
    policies_changed: int = 0  # jobs sent back for approval: their policy changed
    anonymize_seconds: float = 0.0
    send_seconds: float = 0.0

    @property
    def exit_status(self) -> int:
        return 1 if self.jobs_failed or self.attempts_failed or self.policies_changed else 0

    def __str__(self) -> str:
        head = (f"{self.jobs_exported} job(s) exported, {self.jobs_failed} failed,"
                f" {self.jobs_waiting} waiting; {self.instances_sent} instance(s) sent,"
                f" {self.instances_failed} failed")
        return "\n".join([head, *self.messages])


def outbox_dir(settings: Settings) -> Path:
    """Where anonymized files wait to be sent: ``outbox/`` beside ``stage2.store_dir``."""
    return settings.stage2.store_dir.parent / "outbox"


def backoff(settings: Settings, attempts: int) -> timedelta:
    config = settings.stage2
    seconds = min(config.backoff_seconds * 2 ** max(attempts - 1, 0), config.backoff_max_seconds)
    return timedelta(seconds=seconds)


def export_due(settings: Settings, sessions: sessionmaker[Session], keyring: Any, *,
               to: Peer | None = None, study: str | None = None, now: datetime | None = None,
               stop: threading.Event | None = None) -> ExportSummary:
    """Export every due job (or only ``study``: a job id or study UID); see the module doc.

    ``keyring`` is the stage-2 :class:`appliance.keys.KeyRing`. ``stop`` (set by
    ``tce stage2 serve`` on SIGTERM) ends the run between two instances; the job then waits
    in APPROVED without an attempt counted.
    """
    now = now or datetime.now(UTC)
    receiver = settings.stage2.receiver
    peer = to or Peer(receiver.ae_title, receiver.host, receiver.port)
    summary = ExportSummary()
    with sessions.begin() as session:
        _release_delayed(session, now, study)
        due = _due_jobs(session, now, study, summary)
    keys = keyring.engine_keys() if due else None
    for job_id in due:
        if stop is not None and stop.is_set():
            break
        assert keys is not None
        _Export(settings, sessions, keys, peer, now, summary, stop).run(job_id)
    with sessions() as session:
        summary.jobs_waiting = len(list(session.scalars(
            _matching(select(Job.id), study).where(or_(
                (Job.state == JobState.APPROVED) & (Job.next_attempt_at > now),
                (Job.state == JobState.DELAYED) & (Job.delay_until > now))))))
    return summary


def _matching(query: Any, study: str | None) -> Any:
    if study is None:
        return query
    if study.isdigit():
        return query.where(or_(Job.id == int(study), Job.study_instance_uid == study))
    return query.where(Job.study_instance_uid == study)


def _release_delayed(session: Session, now: datetime, study: str | None) -> None:
    """DELAYED jobs whose time has come become APPROVED (TCE's delay for reason ends)."""
    query = _matching(select(Job), study).where(Job.state == JobState.DELAYED,
                                                Job.delay_until <= now)
    for job in session.scalars(query):
        job.state = JobState.APPROVED
        record_audit(session, NODE, "job.released", job_subject(job.id),
                     delay_until=job.delay_until.isoformat() if job.delay_until else None)
        LOG.info("job.released", job=job.id)


def _due_jobs(session: Session, now: datetime, study: str | None,
              summary: ExportSummary) -> list[int]:
    stale = datetime.now(UTC) - STALE_EXPORTING
    query = _matching(select(Job), study).where(or_(
        (Job.state == JobState.APPROVED)
        & (Job.next_attempt_at.is_(None) | (Job.next_attempt_at <= now)),
        (Job.state == JobState.EXPORTING) & (Job.updated_at < stale)))
    due = [job.id for job in session.scalars(query.order_by(Job.id))]
    if study is not None and not due:
        jobs = list(session.scalars(_matching(select(Job), study)))
        if not jobs:
            summary.messages.append(f"no job matches {study!r}: give a job id or a study UID"
                                    " from 'tce stage2 jobs'")
        for job in jobs:
            summary.messages.append(f"job {job.id} is not due: {_why_not(job, now)}")
    return due


def _why_not(job: Job, now: datetime) -> str:
    if job.state is JobState.APPROVED and job.next_attempt_at and job.next_attempt_at > now:
        return (f"it waits for its retry at {job.next_attempt_at:%Y-%m-%d %H:%M:%S} UTC after:"
                f" {job.last_error}")
    if job.state is JobState.DELAYED and job.delay_until:
        return f"it is DELAYED until {job.delay_until:%Y-%m-%d %H:%M:%S} UTC"
    if job.state is JobState.PENDING_APPROVAL:
        return "it is PENDING_APPROVAL: approve it with 'tce stage2 approve'"
    if job.state is JobState.FAILED:
        return f"it FAILED ({job.last_error}); 'tce stage2 retry {job.id}' tries again"
    return f"it is {job.state.value}"


class _Export:
    """One attempt at one job: verify, claim, anonymize, send, settle."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session], keys: EngineKeys,
                 peer: Peer, now: datetime, summary: ExportSummary,
                 stop: threading.Event | None) -> None:
        self.settings, self.sessions, self.keys = settings, sessions, keys
        self.peer, self.now, self.summary, self.stop = peer, now, summary, stop
        self.reasons: Counter[str] = Counter()
        self.pending: list[tuple[StoreResult, datetime]] = []
        self.last_flush = time.monotonic()

    def run(self, job_id: int) -> None:
        policy = self._claim(job_id)
        if policy is None:
            return
        failure: str | None = None
        started = time.monotonic()
        try:
            items = self._anonymize(job_id, policy)
        except OSError as exc:  # the outbox cannot be written (disk full...): try again later
            failure, items = f"cannot write the outbox ({exc.strerror or exc})", []
        self.summary.anonymize_seconds += time.monotonic() - started
        started = time.monotonic()
        try:
            if failure is None:
                send_study(self.peer, self.settings.stage2.ae_title, items, self._on_result,
                           timeouts=self._timeouts(), stop=self.stop)
        except AssociationFailed as exc:
            failure = str(exc)
        except Exception as exc:  # a bug must not leave the job EXPORTING: count an attempt
            LOG.exception("job.export_error", job=job_id, error=type(exc).__name__)
            failure = f"internal error while sending ({type(exc).__name__})"
        finally:
            self._flush(job_id)
            self.summary.send_seconds += time.monotonic() - started
        self._settle(job_id, policy, failure)

    def _timeouts(self) -> Timeouts:
        config = self.settings.stage2
        return Timeouts(config.acse_timeout, config.dimse_timeout, config.network_timeout)

    def _claim(self, job_id: int) -> Policy | None:
        with self.sessions.begin() as session:
            job = session.scalars(select(Job).where(Job.id == job_id).with_for_update()).one()
            stale = datetime.now(UTC) - STALE_EXPORTING
            if not (job.state is JobState.APPROVED
                    or (job.state is JobState.EXPORTING and job.updated_at < stale)):
                return None  # another exporter took it meanwhile
            try:
                policy = approved_policy(job)
            except PolicyChanged as exc:
                job.state, job.last_error, job.next_attempt_at = (
                    JobState.PENDING_APPROVAL, POLICY_CHANGED, None)
                record_audit(session, NODE, "job.policy_changed", job_subject(job.id),
                             approved_digest=job.policy_digest, detail=str(exc))
                text = str(exc)
                prefix = "" if text.startswith(f"job {job.id}") else f"job {job.id}: "
                self.summary.messages.append(f"{prefix}{text}; nothing was sent")
                self.summary.policies_changed += 1
                LOG.warning("job.policy_changed", job=job.id)
                return None
            job.state = JobState.EXPORTING
        LOG.info("job.export_started", job=job_id, policy=policy.id, receiver=str(self.peer))
        return policy

    # --- anonymize ------------------------------------------------------------------------

    def _anonymize(self, job_id: int, policy: Policy) -> list[StoreItem]:
        """Stage every instance not SENT yet; short transactions, none held while working."""
        engine = Deidentifier(policy, self.keys)
        folder = outbox_dir(self.settings) / str(job_id)
        make_dirs(folder)
        with self.sessions() as session:
            rows = session.execute(select(JobInstance.id, JobInstance.store_path,
                                          JobInstance.sha256).where(
                JobInstance.job_id == job_id, JobInstance.send_status != SendStatus.SENT)
                .order_by(JobInstance.id)).all()
        items: list[StoreItem] = []
        staged: dict[int, str] = {}
        refused: dict[int, str] = {}
        for row_id, store_path, sha256 in rows:
            if self.stop is not None and self.stop.is_set():
                break
            result = _stage(engine, row_id, Path(store_path), sha256, folder)
            if isinstance(result, str):
                refused[row_id] = result
            else:
                staged[row_id] = result[0]
                items.append(result[1])
        ids = [*staged, *refused]
        with self.sessions.begin() as session:
            for start in range(0, len(ids), _IN_CHUNK):  # SQLite limits bound parameters
                for row in session.scalars(select(JobInstance).where(
                        JobInstance.id.in_(ids[start:start + _IN_CHUNK]))):
                    if row.id in staged:
                        row.new_sop_instance_uid = staged[row.id]
                    else:
                        self._record(row, StoreResult(row.id, False, None, refused[row.id]))
        LOG.info("job.anonymized", job=job_id, staged=len(items), failed=len(refused))
        return items

    # --- results --------------------------------------------------------------------------

    def _on_result(self, result: StoreResult) -> None:
        self.pending.append((result, datetime.now(UTC)))
        if (len(self.pending) >= _FLUSH_RESULTS
                or time.monotonic() - self.last_flush >= _FLUSH_SECONDS):
            self._flush(None)

    def _flush(self, job_id: int | None) -> None:
        pending, self.pending = self.pending, []
        self.last_flush = time.monotonic()
        if not pending:
            return
        with self.sessions.begin() as session:
            rows = {r.id: r for r in session.scalars(select(JobInstance).where(
                JobInstance.id.in_([result.key for result, _ in pending])))}
            for result, at in pending:
                self._record(rows[result.key], result, at)
            first = next(iter(rows.values()))
            job = session.get(Job, job_id or first.job_id)
            if job is not None:
                job.updated_at = datetime.now(UTC)  # progress: not a stale EXPORTING job

    def _record(self, row: JobInstance, result: StoreResult,
                at: datetime | None = None) -> None:
        row.attempts += 1
        row.dimse_status = result.status
        if result.sent:
            row.send_status, row.sent_at = SendStatus.SENT, at or datetime.now(UTC)
            self.summary.instances_sent += 1
        else:
            row.send_status = SendStatus.FAILED
            self.reasons[result.reason.split(" (")[0]] += 1
            self.summary.instances_failed += 1

    # --- outcome --------------------------------------------------------------------------

    def _settle(self, job_id: int, policy: Policy, failure: str | None) -> None:
        config = self.settings.stage2
        with self.sessions.begin() as session:
            job = session.get_one(Job, job_id)
            counts = Counter(session.scalars(select(JobInstance.send_status).where(
                JobInstance.job_id == job_id)))
            sent, failed = counts[SendStatus.SENT], counts[SendStatus.FAILED]
            job.sent_count, total = sent, sum(counts.values())
            subject = job_subject(job_id)
            unsent = total - sent - failed
            if failure is None and unsent and self.stop is not None and self.stop.is_set():
                job.state, job.next_attempt_at = JobState.APPROVED, None
                job.last_error = "export interrupted by a shutdown; it resumes at the next run"
                self.summary.messages.append(f"job {job_id}: interrupted after {sent} of"
                                             f" {total} instances; it resumes later")
                return
            if failure is not None:
                job.attempts += 1
                self.summary.attempts_failed += 1
                if job.attempts >= config.max_attempts:
                    job.state, job.next_attempt_at = JobState.FAILED, None
                    job.last_error = f"{failure}; gave up after {job.attempts} attempt(s)"
                    record_audit(session, NODE, "job.failed", subject, policy=policy,
                                 reason=job.last_error, sent=sent, failed=failed, unsent=unsent)
                    self.summary.jobs_failed += 1
                    self._say(job_id, f"FAILED: {job.last_error}", sent, total)
                    return
                job.state, job.last_error = JobState.APPROVED, failure
                job.next_attempt_at = self.now + backoff(self.settings, job.attempts)
                record_audit(session, NODE, "job.retry_scheduled", subject, policy=policy,
                             reason=failure, attempt=job.attempts, sent=sent, unsent=unsent,
                             next_attempt_at=job.next_attempt_at.isoformat())
                self._say(job_id, f"attempt {job.attempts} of {config.max_attempts} failed"
                          f" ({failure}); retry at {job.next_attempt_at:%Y-%m-%d %H:%M:%S} UTC",
                          sent, total)
                return
            job.next_attempt_at = None
            if failed:
                listed = ", ".join(f"{n} {reason}" for reason, n in self.reasons.most_common())
                job.state = JobState.FAILED
                job.last_error = (f"{failed} of {total} instance(s) failed permanently"
                                  f" ({listed or 'see earlier attempts'}); the rest was sent")
                record_audit(session, NODE, "job.failed", subject, policy=policy,
                             reason=job.last_error, sent=sent, failed=failed)
                self.summary.jobs_failed += 1
                self._say(job_id, f"FAILED: {job.last_error}", sent, total)
                return
            job.state, job.last_error = JobState.EXPORTED, None
            record_audit(session, NODE, "job.exported", subject, policy=policy, sent=sent,
                         receiver=str(self.peer), attempts=job.attempts + 1)
            self.summary.jobs_exported += 1
            self._say(job_id, f"exported to {self.peer}", sent, total)

    def _say(self, job_id: int, what: str, sent: int, total: int) -> None:
        self.summary.messages.append(f"job {job_id}: {what} ({sent} of {total} instances sent)")
        LOG.info("job.export_settled", job=job_id, outcome=what.split(" ")[0].rstrip(":"),
                 sent=sent, total=total)


def _stage(engine: Deidentifier, row_id: int, store_path: Path, sha256: str | None,
           folder: Path) -> tuple[str, StoreItem] | str:
    """Anonymize one stored instance into ``folder``: (new SOP UID, item), or why it cannot be.

    Problems with the stored copy or the policy's refusal are returned (the instance fails for
    good); OSError while writing the outbox propagates (the attempt fails, to be retried).
    """
    try:
        fh = open(store_path, "rb")  # noqa: SIM115 - closed by the with block below
    except FileNotFoundError:
        return "stored copy is missing (it was deleted or moved after import)"
    except OSError as exc:
        return f"stored copy is unreadable ({exc.strerror or type(exc).__name__})"
    with fh:
        try:
            size = os.fstat(fh.fileno()).st_size
            if sha256 and hashlib.file_digest(fh, "sha256").hexdigest() != sha256:
                return "stored copy changed since import (checksum mismatch)"
            fh.seek(0)
            ds, span = read_for_splice(fh, size)
            if ds is None:
                ds, span = read_instance(store_path), None
        except (InvalidInstance, NotDicom) as exc:
            return f"stored copy is not a usable instance ({exc or 'not DICOM'})"
        except OSError as exc:
            return f"stored copy is unreadable ({exc.strerror or type(exc).__name__})"
        try:
            outcome = engine.deidentify(ds)
        except PolicyRefusal as exc:
            return f"refused by policy: {exc}"
        except Exception as exc:
            return f"anonymization failed ({type(exc).__name__})"
        new_sop = outcome.sop_instance_uid
        final = folder / f"{new_sop if _UID.fullmatch(new_sop or '') else f'row{row_id}'}.dcm"
        try:
            tmp, _ = write_temporary(final, ds, fh, span)
        except InvalidInstance as exc:
            return f"cannot be encoded after anonymization ({exc})"
    assert tmp is not None
    os.replace(tmp, final)
    meta = ds.file_meta
    return new_sop, StoreItem(row_id, final, str(meta.MediaStorageSOPClassUID),
                              str(meta.TransferSyntaxUID), str(meta.MediaStorageSOPInstanceUID))
