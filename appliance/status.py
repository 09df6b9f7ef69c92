"""What ``tce status`` reports: each node's heartbeat and the counts an operator watches.

Read-only queries over the node's own database, the same on SQLite and PostgreSQL. Nothing here
reads a file or a value that could identify a patient: only states, counts and times.

Heartbeat states (see :mod:`appliance.heartbeat` for how the row is written):

``alive``    beat within ``max_age`` seconds.
``stale``    no beat for longer than ``max_age`` and no clean stop recorded: hung, or crashed on
             another host.
``dead``     the heartbeat's process no longer exists on this host (crashed or killed), however
             recent its last beat.
``stopped``  a ``node.stopped`` audit event was recorded after the row's ``started_at``.
``absent``   this database holds no heartbeat for the node: it has never served here.

Counts, per node (``pending`` is the work the node still owes; ``oldest_pending_seconds`` is
the age of the oldest item of it):

* **stage 1** (``instances`` rows): ``received`` = instances acknowledged with 0x0000;
  ``pending`` = RECEIVED or PROCESSING (not yet pseudonymized); ``exported`` = pseudonymized
  instances written to PDI media after they were processed; ``awaiting_media`` = pseudonymized,
  not yet on media; ``failed`` = FAILED.
* **stage 2** (``job_instances`` of ``jobs``): ``received`` = imported instances; ``pending``
  = not yet sent in a job that is waiting for approval (``awaiting_approval``) or approved,
  delayed or exporting (``awaiting_export``); ``exported`` = sent and acknowledged by the
  Receiver; ``failed`` = not sent in a FAILED job; ``rejected`` = in a REJECTED job. Pending
  age is counted from the job's import.
* **Receiver** (``instances`` rows): ``received`` = stored; ``exported`` = written to media;
  ``pending`` is always 0 (an instance is stored before it is acknowledged).
* ``quarantined`` on every node = quarantine items not yet released: files refused on receipt
  or by the policy (stage 1, Receiver) and refused media (stage 2, one item per medium).
"""

from __future__ import annotations

import os
import socket
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from appliance.heartbeat import STALE_AFTER, STOPPED
from appliance.models import (
    AuditEvent,
    Heartbeat,
    Instance,
    InstanceState,
    Job,
    JobInstance,
    JobState,
    Media,
    MediaStudy,
    Node,
    QuarantineItem,
    SendStatus,
)

AWAITING_APPROVAL = (JobState.IMPORTED, JobState.PENDING_APPROVAL)
AWAITING_EXPORT = (JobState.APPROVED, JobState.DELAYED, JobState.EXPORTING)
UNHEALTHY = ("stale", "dead")


@dataclass(frozen=True)
class HeartbeatView:
    """A node's heartbeat as status shows it; times are ISO 8601 UTC strings."""

    state: str
    pid: int | None = None
    host: str | None = None
    ae_title: str | None = None
    port: int | None = None
    started_at: str | None = None
    beat_at: str | None = None
    age_seconds: float | None = None
    stopped_at: str | None = None


@dataclass(frozen=True)
class Counts:
    received: int = 0
    pending: int = 0
    quarantined: int = 0
    exported: int = 0
    failed: int = 0
    oldest_pending_seconds: float | None = None
    detail: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class NodeStatus:
    node: str
    heartbeat: HeartbeatView
    counts: Counts

    @property
    def healthy(self) -> bool:
        return self.heartbeat.state not in UNHEALTHY

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat(timespec="seconds")


def _age(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else round(max(0.0, (now - then).total_seconds()), 1)


def process_gone(host: str, pid: int) -> bool:
    """True when ``pid`` is known not to run: only decidable for a process on this host."""
    if host != socket.gethostname() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, owned by someone else
        return False
    return False


def read_heartbeat(session: Session, node: Node, now: datetime,
                   max_age: float = STALE_AFTER) -> HeartbeatView:
    beat = session.get(Heartbeat, node)
    if beat is None:
        return HeartbeatView("absent")
    stopped = session.scalar(select(func.max(AuditEvent.at)).where(
        AuditEvent.node == node, AuditEvent.action == STOPPED))
    age = _age(now, beat.beat_at)
    if stopped is not None and stopped >= beat.started_at:
        state = "stopped"
    elif process_gone(beat.host, beat.pid):
        state = "dead"
    else:
        state = "alive" if (age or 0.0) <= max_age else "stale"
    return HeartbeatView(
        state=state, pid=beat.pid, host=beat.host, ae_title=beat.ae_title, port=beat.port,
        started_at=_iso(beat.started_at), beat_at=_iso(beat.beat_at), age_seconds=age,
        stopped_at=_iso(stopped) if state == "stopped" else None)


def _quarantined(session: Session, node: Node) -> int:
    return int(session.scalar(select(func.count()).select_from(QuarantineItem).where(
        QuarantineItem.node == node, QuarantineItem.released_at.is_(None))) or 0)


def instance_counts(session: Session, node: Node, now: datetime) -> Counts:
    """Counts of a node that keeps ``instances`` rows (stage 1, Receiver)."""
    by_state: Counter[str] = Counter()
    oldest: datetime | None = None
    rows = session.execute(select(Instance.state, func.count(), func.min(Instance.received_at))
                           .where(Instance.node == node).group_by(Instance.state))
    for state, count, first in rows:
        by_state[InstanceState(state).value] = int(count)
        if state in (InstanceState.RECEIVED, InstanceState.PROCESSING) and first is not None:
            oldest = first if oldest is None else min(oldest, first)
    done = (InstanceState.PROCESSED, InstanceState.STORED)
    # On media: the instance's study is on a media set written after the instance was done
    # (a study that grows after its media was written has its late instances still waiting).
    on_media = exists().where(
        MediaStudy.study_uid == Instance.new_study_instance_uid, MediaStudy.media_id == Media.id,
        Media.node == node,
        Media.created_at >= func.coalesce(Instance.processed_at, Instance.received_at))
    written = int(session.scalar(select(func.count()).select_from(Instance).where(
        Instance.node == node, Instance.state.in_(done), on_media)) or 0)
    pending = by_state[InstanceState.RECEIVED] + by_state[InstanceState.PROCESSING]
    detail = {"processing": by_state[InstanceState.PROCESSING]}
    if node is Node.STAGE1:
        detail["awaiting_media"] = by_state[InstanceState.PROCESSED] - written
    else:
        detail["stored"] = by_state[InstanceState.STORED]
    return Counts(
        received=sum(by_state.values()), pending=pending, quarantined=_quarantined(session, node),
        exported=written + by_state[InstanceState.EXPORTED],
        failed=by_state[InstanceState.FAILED],
        oldest_pending_seconds=_age(now, oldest) if pending else None, detail=detail)


def job_counts(session: Session, now: datetime) -> Counts:
    """Counts of stage 2, from its jobs and their instances."""
    instances: Counter[str] = Counter()
    oldest: datetime | None = None
    rows = session.execute(
        select(Job.state, JobInstance.send_status, func.count(), func.min(Job.created_at))
        .join(Job, JobInstance.job_id == Job.id).group_by(Job.state, JobInstance.send_status))
    for job_state, send_status, count, first in rows:
        job_state = JobState(job_state)
        if SendStatus(send_status) is SendStatus.SENT:
            key = "exported"
        elif job_state in AWAITING_APPROVAL:
            key = "awaiting_approval"
        elif job_state in AWAITING_EXPORT:
            key = "awaiting_export"
        elif job_state is JobState.REJECTED:
            key = "rejected"
        else:  # FAILED (or an EXPORTED job holding an unsent instance, which is a failure too)
            key = "failed"
        instances[key] += int(count)
        if key.startswith("awaiting") and first is not None:
            oldest = first if oldest is None else min(oldest, first)
    jobs = Counter({JobState(s).value: int(n) for s, n in session.execute(
        select(Job.state, func.count()).group_by(Job.state))})
    pending = instances["awaiting_approval"] + instances["awaiting_export"]
    detail = {"awaiting_approval": instances["awaiting_approval"],
              "awaiting_export": instances["awaiting_export"],
              "rejected": instances["rejected"]}
    detail.update({f"jobs_{state.value.lower()}": jobs[state.value] for state in JobState})
    return Counts(
        received=sum(instances.values()), pending=pending,
        quarantined=_quarantined(session, Node.STAGE2), exported=instances["exported"],
        failed=instances["failed"], oldest_pending_seconds=_age(now, oldest) if pending else None,
        detail=detail)


def nodes_in_database(session: Session) -> set[Node]:
    """Nodes that left a heartbeat or data in this database."""
    found = {Node(n) for n in session.scalars(select(Heartbeat.node))}
    found |= {Node(n) for n in session.scalars(select(Instance.node).distinct())}
    if session.scalar(select(exists().where(Job.id.is_not(None)))):
        found.add(Node.STAGE2)
    return found


def node_status(session: Session, node: Node, now: datetime | None = None,
                max_age: float = STALE_AFTER) -> NodeStatus:
    now = now or datetime.now(UTC)
    counts = (job_counts(session, now) if node is Node.STAGE2
              else instance_counts(session, node, now))
    return NodeStatus(node.value, read_heartbeat(session, node, now, max_age), counts)


def collect(session: Session, configured: set[Node], now: datetime | None = None,
            max_age: float = STALE_AFTER) -> list[NodeStatus]:
    """Status of the configured nodes and of every other node found in the database."""
    now = now or datetime.now(UTC)
    nodes = configured | nodes_in_database(session)
    return [node_status(session, node, now, max_age) for node in Node if node in nodes]
