"""Retention: delete the stage-2 copies of studies exported more than ``retention_days`` ago.

Stage 2 holds two copies of every study it exports: the stage-1 pseudonymized files in
``stage2.store_dir`` (what was imported and reviewed) and the anonymized files in the outbox.
Once the Receiver has the study, they only cost space and widen what a breach of this machine
would expose, so after ``retention_days`` both are deleted. The job rows and their audit history
stay: what was exported, when, under which policy, remains on record. Each job's deletion is one
``job.retention_deleted`` audit event, recorded once.

A job counts as exported at its ``job.exported`` audit event. Only files inside ``store_dir``
and the job's own outbox folder are ever deleted, whatever a database row says.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from appliance.audit import record_audit
from appliance.logging import get_logger
from appliance.models import AuditEvent, Job, JobInstance, JobState, Node
from appliance.settings import Settings
from stage2_export_manager.approval import job_subject
from stage2_export_manager.exporter import outbox_dir

LOG = get_logger("tce.stage2.retention")
NODE = Node.STAGE2
EXPORTED = "job.exported"
DELETED = "job.retention_deleted"


@dataclass
class RetentionSummary:
    jobs: list[int] = field(default_factory=list)
    files_deleted: int = 0
    bytes_deleted: int = 0


def apply_retention(settings: Settings, sessions: sessionmaker[Session], *,
                    now: datetime | None = None) -> RetentionSummary:
    """Delete the stage-2 copies of jobs EXPORTED before ``now - retention_days``.

    Does nothing when ``stage2.retention_days`` is null (keep forever).
    """
    summary = RetentionSummary()
    days = settings.stage2.retention_days
    if days is None:
        return summary
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    for job_id in _expired_jobs(sessions, cutoff):
        files, size = _delete_copies(settings, sessions, job_id)
        with sessions.begin() as session:
            record_audit(session, NODE, DELETED, job_subject(job_id), files=files,
                         bytes=size, retention_days=days)
        summary.jobs.append(job_id)
        summary.files_deleted += files
        summary.bytes_deleted += size
        LOG.info("job.retention_deleted", job=job_id, files=files, bytes=size)
    return summary


def _expired_jobs(sessions: sessionmaker[Session], cutoff: datetime) -> list[int]:
    with sessions() as session:
        exported = dict(session.execute(
            select(AuditEvent.subject, func.max(AuditEvent.at))
            .where(AuditEvent.node == NODE, AuditEvent.action == EXPORTED)
            .group_by(AuditEvent.subject)).all())
        done = set(session.scalars(select(AuditEvent.subject).where(
            AuditEvent.node == NODE, AuditEvent.action == DELETED)))
        jobs = session.scalars(select(Job.id).where(Job.state == JobState.EXPORTED)
                               .order_by(Job.id)).all()
    expired = []
    for job_id in jobs:
        subject = job_subject(job_id)
        at = exported.get(subject)
        if at is None or subject in done:
            continue
        if (at if at.tzinfo else at.replace(tzinfo=UTC)) <= cutoff:
            expired.append(job_id)
    return expired


def _delete_copies(settings: Settings, sessions: sessionmaker[Session],
                   job_id: int) -> tuple[int, int]:
    store = settings.stage2.store_dir.resolve()
    with sessions() as session:
        paths = session.scalars(select(JobInstance.store_path).where(
            JobInstance.job_id == job_id)).all()
    files = size = 0
    parents: set[Path] = set()
    for text in paths:
        path = Path(text).resolve()
        if not path.is_relative_to(store) or path == store:
            LOG.warning("retention.skipped_outside_store", job=job_id)
            continue
        try:
            size += path.stat().st_size
            path.unlink()
            files += 1
            parents.add(path.parent)
        except FileNotFoundError:
            continue
    for parent in sorted(parents, key=lambda p: len(p.parts), reverse=True):
        _prune(parent, store)
    outbox = outbox_dir(settings) / str(job_id)
    if outbox.is_dir():
        for folder, _dirs, names in os.walk(outbox):
            for name in names:
                try:
                    size += (Path(folder) / name).stat().st_size
                    files += 1
                except FileNotFoundError:
                    continue
        shutil.rmtree(outbox, ignore_errors=True)
    return files, size


def _prune(folder: Path, stop: Path) -> None:
    """Remove empty folders from ``folder`` up to (not including) ``stop``."""
    while folder != stop and folder.is_relative_to(stop):
        try:
            folder.rmdir()
        except OSError:  # not empty, or gone
            return
        folder = folder.parent
