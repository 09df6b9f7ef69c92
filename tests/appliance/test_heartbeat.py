"""The heartbeat row of a serving node, on SQLite and PostgreSQL, and as a real node writes it.

The unit tests drive :class:`NodeHeartbeat` against real databases (``db_engine``); the last
test runs ``tce receiver serve`` in its own process and stops it with SIGTERM and SIGKILL, the
two ways a node ends in production.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from appliance.db import session_factory
from appliance.heartbeat import STALE_AFTER, STARTED, STOPPED, NodeHeartbeat
from appliance.models import AuditEvent, Base, Heartbeat, Node
from appliance.status import read_heartbeat
from tests.receiver import conftest as receiver_fixtures
from tests.receiver.harness import ReceiverFactory


@pytest.fixture
def sessions(db_engine: Engine) -> sessionmaker[Session]:
    return session_factory(db_engine)


def row(sessions: sessionmaker[Session], node: Node = Node.RECEIVER) -> Heartbeat | None:
    with sessions() as session:
        return session.get(Heartbeat, node)


def events(sessions: sessionmaker[Session], action: str) -> list[AuditEvent]:
    with sessions() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)
                                    .order_by(AuditEvent.id)))


def state(sessions: sessionmaker[Session], node: Node = Node.RECEIVER,
          now: datetime | None = None) -> str:
    with sessions() as session:
        return read_heartbeat(session, node, now or datetime.now(UTC)).state


def wait_until(condition: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_start_writes_the_row_and_a_started_event(sessions: sessionmaker[Session]) -> None:
    beat = NodeHeartbeat(sessions, Node.RECEIVER, ae_title="RX", port=11114, interval=60)
    assert state(sessions) == "absent"
    beat.start()
    try:
        found = row(sessions)
        assert found is not None
        assert (found.pid, found.ae_title, found.port) == (beat.pid, "RX", 11114)
        assert found.started_at == found.beat_at == beat.started_at
        [started] = events(sessions, STARTED)
        assert started.node is Node.RECEIVER and json.loads(started.details)["port"] == 11114
        assert state(sessions) == "alive"
    finally:
        beat.stop()


def test_the_thread_refreshes_beat_at(sessions: sessionmaker[Session]) -> None:
    beat = NodeHeartbeat(sessions, Node.STAGE2, interval=0.05)
    beat.start()
    try:
        first = row(sessions, Node.STAGE2)
        assert first is not None

        def later() -> Heartbeat:
            found = row(sessions, Node.STAGE2)
            assert found is not None
            return found

        wait_until(lambda: later().beat_at > first.beat_at)
        assert later().started_at == first.started_at
    finally:
        beat.stop()


def test_a_graceful_stop_keeps_the_row_and_says_stopped(sessions: sessionmaker[Session]) -> None:
    beat = NodeHeartbeat(sessions, Node.STAGE1, ae_title="S1", port=104, interval=60)
    beat.start()
    beat.stop()
    kept = row(sessions, Node.STAGE1)
    assert kept is not None and kept.pid == beat.pid and kept.ae_title == "S1"
    [stopped] = events(sessions, STOPPED)
    assert stopped.at == kept.beat_at  # one instant: the last beat is the stop
    assert json.loads(stopped.details)["uptime_seconds"] >= 0
    with sessions() as session:
        view = read_heartbeat(session, Node.STAGE1, datetime.now(UTC) + timedelta(days=1))
    assert view.state == "stopped" and view.stopped_at is not None  # never "stale" later
    beat.stop()  # a second stop changes nothing
    assert len(events(sessions, STOPPED)) == 1

    again = NodeHeartbeat(sessions, Node.STAGE1, ae_title="S1", port=104, interval=60)
    again.start()  # a restart: alive again, although an older stop is recorded
    try:
        assert state(sessions, Node.STAGE1) == "alive"
    finally:
        again.stop()


def test_a_node_that_stops_beating_turns_stale(sessions: sessionmaker[Session]) -> None:
    beat = NodeHeartbeat(sessions, Node.RECEIVER, interval=60)
    beat.start()
    beat._stop.set()  # what a hung node looks like: no more beats, no stop recorded
    later = datetime.now(UTC) + timedelta(seconds=STALE_AFTER + 1)
    assert state(sessions) == "alive"
    assert state(sessions, now=later) == "stale"
    with sessions() as session:
        assert read_heartbeat(session, Node.RECEIVER, later, max_age=3600).state == "alive"


def test_a_row_whose_process_is_gone_is_dead(sessions: sessionmaker[Session]) -> None:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    beat = NodeHeartbeat(sessions, Node.RECEIVER, interval=60)
    beat.pid = int(done.stdout)  # a process of this host that has ended
    beat.start()
    beat._stop.set()
    assert state(sessions) == "dead"  # at once, however fresh the last beat


def test_beats_survive_a_database_outage(sessions: sessionmaker[Session],
                                         db_engine: Engine) -> None:
    beat = NodeHeartbeat(sessions, Node.RECEIVER, interval=0.05)
    beat.start()
    try:
        Heartbeat.__table__.drop(db_engine)  # type: ignore[attr-defined]
        time.sleep(0.3)  # beats fail meanwhile (and are logged)
        Base.metadata.create_all(db_engine)
        wait_until(lambda: row(sessions) is not None)  # the row is written again
        found = row(sessions)
        assert found is not None and found.started_at == beat.started_at
    finally:
        beat.stop()


def test_interval_must_be_positive(sessions: sessionmaker[Session]) -> None:
    with pytest.raises(ValueError, match="positive"):
        NodeHeartbeat(sessions, Node.RECEIVER, interval=0)


# --- a real node ------------------------------------------------------------------------------


# The Receiver tests' fixture, reused: it stops what still runs with SIGTERM at teardown and
# fails unless it exits 0.
receivers = receiver_fixtures.receivers


def test_a_served_node_beats_and_records_how_it_ended(receivers: ReceiverFactory) -> None:
    folder = receivers.folder()
    sessions = session_factory(folder.engine)
    running = receivers.start(folder)
    beat = row(sessions)
    assert beat is not None and (beat.pid, beat.port) == (running.proc.pid, running.port)
    assert state(sessions) == "alive"
    assert running.stop() == 0
    assert state(sessions) == "stopped"
    assert [json.loads(e.details)["pid"] for e in events(sessions, STOPPED)] == [running.proc.pid]

    crashed = receivers.start(folder)
    crashed.proc.kill()  # SIGKILL: no code of the node runs any more
    crashed.returncode = crashed.proc.wait(30)
    assert state(sessions) == "dead"
    assert len(events(sessions, STOPPED)) == 1  # no stop was recorded for the crash
