"""A serving node's heartbeat: one ``heartbeats`` row per node, refreshed while it runs.

``tce status`` and monitoring read this row to tell a running node from a crashed or hung one;
stage 1 also reads it to decide whether the node itself will finish queued work
(:func:`stage1_modality.service.finish_pending`). The contract:

* :meth:`NodeHeartbeat.start` upserts the row (pid, host, AE title, port, ``started_at``) and
  records an audit event ``node.started``; a daemon thread then refreshes ``beat_at`` every
  ``interval`` seconds. Its own thread, rather than the node's work loop, so that a node busy
  draining its queue or exporting a large study still shows as alive.
* :meth:`NodeHeartbeat.stop` (graceful stop) ends the thread, stamps ``beat_at`` a last time and
  records ``node.stopped`` at the same instant. The row is **kept**: it says which process ran,
  on which AE and port, and until when, and the audit event is what tells a clean stop from a
  crash (a crashed node leaves a row whose ``beat_at`` only ages, with no ``node.stopped`` after
  its ``started_at``). The pair of events mirrors DICOM/ATNA "Application Activity" start/stop.
* A beat that fails (database busy or briefly away) is logged and retried at the next interval;
  it never stops the node.

Works the same on SQLite and PostgreSQL: plain ORM get/update in one short transaction.
"""

from __future__ import annotations

import os
import socket
import threading
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from appliance.audit import record_audit
from appliance.logging import get_logger
from appliance.models import Heartbeat, Node

LOG = get_logger("tce.heartbeat")

DEFAULT_INTERVAL = 5.0
"""Seconds between beats; ``tce status`` calls a heartbeat stale after :data:`STALE_AFTER`."""

STALE_AFTER = 30.0
"""Default age (seconds) after which ``tce status`` reports a heartbeat as stale: six missed
beats at the default interval, so a busy database or a paused VM does not raise a false alarm."""

STARTED, STOPPED = "node.started", "node.stopped"


class NodeHeartbeat:
    """The ``heartbeats`` row of ``node`` for this process: start(), stop(), beat()."""

    def __init__(self, sessions: sessionmaker[Session], node: Node, *,
                 ae_title: str | None = None, port: int | None = None,
                 interval: float = DEFAULT_INTERVAL) -> None:
        if interval <= 0:
            raise ValueError("heartbeat interval must be positive")
        self.sessions = sessions
        self.node = Node(node)
        self.ae_title, self.port, self.interval = ae_title, port, interval
        self.pid, self.host = os.getpid(), socket.gethostname()
        self.started_at: datetime | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _details(self) -> dict[str, Any]:
        return {"pid": self.pid, "host": self.host, "ae_title": self.ae_title,
                "port": self.port}

    def start(self) -> None:
        """Write the row and the ``node.started`` event, then beat in a daemon thread."""
        self.started_at = now = datetime.now(UTC)
        with self.sessions.begin() as session:
            beat = session.get(Heartbeat, self.node, with_for_update=True)
            if beat is None:
                beat = Heartbeat(node=self.node)
                session.add(beat)
            elif beat.pid != self.pid or beat.host != self.host:
                LOG.info("heartbeat.replaced", node=self.node.value, previous_pid=beat.pid)
            beat.pid, beat.host = self.pid, self.host
            beat.ae_title, beat.port = self.ae_title, self.port
            beat.started_at = beat.beat_at = now
            record_audit(session, self.node, STARTED, None, **self._details()).at = now
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"{self.node.value}-heartbeat")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except Exception as exc:  # a busy database must not kill the node
                LOG.error("heartbeat.failed", node=self.node.value, error=type(exc).__name__)

    def beat(self, now: datetime | None = None) -> None:
        """Refresh ``beat_at``; re-creates the row if someone deleted it meanwhile."""
        now = now or datetime.now(UTC)
        with self.sessions.begin() as session:
            beat = session.get(Heartbeat, self.node)
            if beat is None:
                beat = Heartbeat(node=self.node, started_at=self.started_at or now)
                session.add(beat)
            beat.pid, beat.host = self.pid, self.host
            beat.ae_title, beat.port, beat.beat_at = self.ae_title, self.port, now
            if self.started_at is not None:
                beat.started_at = self.started_at

    def stop(self, timeout: float = 10) -> None:
        """Graceful stop: end the thread, stamp the last beat and record ``node.stopped``."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self.started_at is None:
            return
        now = datetime.now(UTC)
        try:
            with self.sessions.begin() as session:
                beat = session.get(Heartbeat, self.node)
                if beat is not None and (beat.pid, beat.host) == (self.pid, self.host):
                    beat.beat_at = now
                event = record_audit(
                    session, self.node, STOPPED, None,
                    uptime_seconds=round((now - self.started_at).total_seconds(), 1),
                    **self._details())
                event.at = now  # the stop's time, which tce status compares with started_at
        except Exception as exc:  # the node is stopping anyway; status will call it stale
            LOG.error("heartbeat.stop_failed", node=self.node.value, error=type(exc).__name__)
        self.started_at = None
