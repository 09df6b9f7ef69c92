"""``tce status``: the counts on SQLite and PostgreSQL, and the command against real nodes.

The count queries run on rows made the way each node makes them; the command runs as a
subprocess against ``tce stage1 serve``, ``tce receiver serve`` and ``tce stage2 serve``, fed by
pynetdicom and dcmtk ``storescu``, and stopped with SIGTERM or SIGKILL. ``--echo`` reaches every
node at the AE title and port of its heartbeat, stage 2's Verification-only SCP included.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import _config
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from appliance import models
from appliance.db import open_database, session_factory
from appliance.models import InstanceState, JobState, Node, SendStatus
from appliance.status import collect, node_status
from tests.e2e import Stage2Dir
from tests.receiver import conftest as receiver_fixtures
from tests.receiver.harness import ReceiverFactory, storescu, write
from tests.receiver.harness import ct_instances as receiver_instances
from tests.stage1_modality import conftest as stage1_fixtures
from tests.stage1_modality.harness import (
    SUCCESS,
    TCE,
    NodeFactory,
    ct_instances,
    open_association,
    send,
    status_of,
)
from tests.stage2_export_manager.test_echo import RunningStage2

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"

# The node fixtures of the stage-1 and Receiver tests, reused (they need dcmtk, and skip without
# it): each stops what still runs with SIGTERM at teardown and fails unless it exits 0.
nodes = stage1_fixtures.nodes
receivers = receiver_fixtures.receivers


@pytest.fixture
def sessions(db_engine: Engine) -> sessionmaker[Session]:
    return session_factory(db_engine)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def instance(node: Node, key: str, state: InstanceState, *, study: str = "2.25.1",
             received: float = 600, processed: float | None = None) -> models.Instance:
    return models.Instance(node=node, received_key=key, state=state, sop_class_uid=CT,
                           transfer_syntax_uid=EXPLICIT, new_study_instance_uid=study,
                           received_at=ago(received),
                           processed_at=None if processed is None else ago(processed))


def quarantine_item(node: Node, n: int, released: bool = False) -> models.QuarantineItem:
    return models.QuarantineItem(node=node, stored_path=f"/q/{n}", reason="test",
                                 stage="receive", sha256="0" * 64, size_bytes=1, at=ago(60),
                                 released_at=ago(1) if released else None)


# --- the count queries, on both databases --------------------------------------------------------


def test_stage1_counts_follow_instance_states_and_media(sessions: sessionmaker[Session]) -> None:
    s1 = Node.STAGE1
    with sessions.begin() as session:
        session.add_all([
            instance(s1, "r1", InstanceState.RECEIVED, received=100),
            instance(s1, "r2", InstanceState.RECEIVED, received=10),
            instance(s1, "p1", InstanceState.PROCESSING, received=50),
            *[instance(s1, f"a{i}", InstanceState.PROCESSED, study="2.25.1", processed=500)
              for i in range(3)],
            instance(s1, "late", InstanceState.PROCESSED, study="2.25.1", received=200,
                     processed=200),  # arrived after its study was written to media
            instance(s1, "b1", InstanceState.PROCESSED, study="2.25.2", processed=500),
            instance(s1, "q1", InstanceState.QUARANTINED),
            instance(s1, "f1", InstanceState.FAILED),
            instance(Node.RECEIVER, "other", InstanceState.RECEIVED, received=9000),
            quarantine_item(s1, 1), quarantine_item(s1, 2),
            quarantine_item(s1, 3, released=True), quarantine_item(Node.RECEIVER, 4),
            models.Media(node=s1, path="/media/1", created_at=ago(300),
                         studies=[models.MediaStudy(study_uid="2.25.1")]),
        ])
    with sessions() as session:
        status = node_status(session, s1, NOW)
    counts = status.counts
    assert (counts.received, counts.pending, counts.exported, counts.failed,
            counts.quarantined) == (10, 3, 3, 1, 2)
    assert counts.oldest_pending_seconds == 100.0
    assert counts.detail == {"processing": 1, "awaiting_media": 2}
    assert status.heartbeat.state == "absent" and status.healthy


def test_stage2_counts_follow_jobs_and_send_status(sessions: sessionmaker[Session]) -> None:
    def job(state: JobState, created: float, *sends: SendStatus) -> models.Job:
        made = models.Job(study_instance_uid=f"2.25.{created:.0f}", state=state,
                          created_at=ago(created))
        made.instances = [models.JobInstance(sop_instance_uid=f"2.25.{created:.0f}.{i}",
                                             sop_class_uid=CT, transfer_syntax_uid=EXPLICIT,
                                             store_path=f"/s/{i}", send_status=send)
                          for i, send in enumerate(sends)]
        return made

    pending, sent, failed = SendStatus.PENDING, SendStatus.SENT, SendStatus.FAILED
    with sessions.begin() as session:
        session.add_all([
            job(JobState.PENDING_APPROVAL, 3600, pending, pending),
            job(JobState.APPROVED, 120, sent, pending, failed),  # retry scheduled
            job(JobState.EXPORTED, 7200, sent, sent, sent),
            job(JobState.FAILED, 900, sent, failed),
            job(JobState.REJECTED, 800, pending),
            quarantine_item(Node.STAGE2, 1),
        ])
    with sessions() as session:
        counts = node_status(session, Node.STAGE2, NOW).counts
    assert (counts.received, counts.pending, counts.exported, counts.failed,
            counts.quarantined) == (11, 4, 5, 1, 1)
    assert counts.oldest_pending_seconds == 3600.0
    assert counts.detail["awaiting_approval"] == 2 and counts.detail["awaiting_export"] == 2
    assert counts.detail["rejected"] == 1
    assert counts.detail["jobs_exported"] == 1 and counts.detail["jobs_delayed"] == 0


def test_receiver_counts_and_which_nodes_are_listed(sessions: sessionmaker[Session]) -> None:
    rx = Node.RECEIVER
    with sessions.begin() as session:
        session.add_all([
            *[instance(rx, f"s{i}", InstanceState.STORED, study="2.25.7", processed=60)
              for i in range(3)],
            instance(rx, "x1", InstanceState.STORED, study="2.25.8", processed=60),
            models.Media(node=rx, path="/m", created_at=ago(30),
                         studies=[models.MediaStudy(study_uid="2.25.7")]),
            models.Heartbeat(node=Node.STAGE2, pid=0, host="elsewhere", started_at=ago(99),
                      beat_at=ago(5)),
        ])
    with sessions() as session:
        listed = collect(session, {Node.STAGE1}, NOW)
    assert [n.node for n in listed] == ["stage1", "stage2", "receiver"]
    stage1, stage2, receiver = listed
    assert stage1.heartbeat.state == "absent" and stage1.counts.received == 0
    assert stage2.heartbeat.state == "alive" and stage2.heartbeat.age_seconds == 5.0
    counts = receiver.counts
    assert (counts.received, counts.pending, counts.exported) == (4, 0, 3)
    assert counts.oldest_pending_seconds is None and counts.detail["stored"] == 4


# --- the command against real nodes -----------------------------------------------------------


def status(run: Any, *options: str) -> tuple[int, dict[str, Any]]:
    """``tce status --json`` through ``run`` (a node folder's ``tce``); (exit status, report)."""
    done = run("status", "--json", *options)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def by_node(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["node"]: entry for entry in report["nodes"]}


def send_without_uid(port: int, folder: Path) -> int | None:
    """A file whose dataset lacks SOP Instance UID, sent as it is: refused and quarantined."""
    ds = ct_instances("status-no-uid", 1)[0]
    del ds.SOPInstanceUID
    path = folder / "no-uid.dcm"
    ds.save_as(path, enforce_file_format=True)
    saved, _config.STORE_SEND_CHUNKED_DATASET = _config.STORE_SEND_CHUNKED_DATASET, True
    try:
        assoc = open_association(port, [(str(CTImageStorage), [EXPLICIT])])
        try:
            return status_of(assoc.send_c_store(path))
        finally:
            assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = saved


def test_stage1_status_while_serving_after_media_and_after_sigterm(nodes: NodeFactory,
                                                                  tmp_path: Path) -> None:
    node = nodes.folder("s1", quiet_period_seconds=3600)
    running = nodes.start(node)
    results = send(running.port, ct_instances("status", 3))
    assert [s for _uid, s in results] == [SUCCESS] * 3
    assert send_without_uid(running.port, tmp_path) not in (SUCCESS, None)
    node.wait_processed(3)

    code, report = status(node.tce, "--echo")
    assert code == 0 and report["ok"] and list(by_node(report)) == ["stage1"]
    entry = by_node(report)["stage1"]
    beat, counts = entry["heartbeat"], entry["counts"]
    assert beat["state"] == "alive" and beat["age_seconds"] < 30
    assert (beat["pid"], beat["port"], beat["ae_title"]) == (running.proc.pid, running.port,
                                                             "TCE_STAGE1")
    assert entry["echo"]["ok"] and entry["echo"]["status"] == 0
    assert (counts["received"], counts["pending"], counts["quarantined"], counts["exported"],
            counts["failed"], counts["oldest_pending_seconds"]) == (3, 0, 1, 0, 0, None)
    assert counts["detail"]["awaiting_media"] == 3

    written = node.tce("stage1", "media", "write", str(tmp_path / "usb"), "--all")
    assert written.returncode == 0, written.stderr
    _code, report = status(node.tce)
    counts = by_node(report)["stage1"]["counts"]
    assert counts["exported"] == 3 and counts["detail"]["awaiting_media"] == 0

    text = node.tce("status")
    assert text.returncode == 0
    assert "stage1    alive" in text.stdout and "received 3, pending 0" in text.stdout
    assert "exported 3" in text.stdout and "TCE_STAGE1 port" in text.stdout

    assert running.stop() == 0
    code, report = status(node.tce)
    beat = by_node(report)["stage1"]["heartbeat"]
    assert code == 0 and beat["state"] == "stopped" and beat["pid"] == running.proc.pid
    assert beat["stopped_at"] is not None
    required = node.tce("status", "--require-running")
    assert required.returncode == 1
    assert "problem: stage1: not running (stopped)" in required.stdout


def test_a_killed_node_fails_status_at_once(nodes: NodeFactory) -> None:
    node = nodes.folder("killed")
    running = nodes.start(node)
    assert status(node.tce)[0] == 0
    running.kill()
    code, report = status(node.tce)
    assert code == 1 and not report["ok"]
    assert by_node(report)["stage1"]["heartbeat"]["state"] == "dead"
    assert report["problems"] == ["stage1: heartbeat dead"]


def test_receiver_status_counts_what_storescu_sent(receivers: ReceiverFactory,
                                                   tmp_path: Path) -> None:
    folder = receivers.folder()
    running = receivers.start(folder)
    files = [write(ds, tmp_path / f"{i}.dcm")
             for i, ds in enumerate(receiver_instances("status", 2))]
    done = storescu(running.port, files)
    assert done.returncode == 0, done.stderr
    code, report = status(folder.tce, "--echo", "--require-running")
    entry = by_node(report)["receiver"]
    assert code == 0, report["problems"]
    assert entry["heartbeat"]["state"] == "alive" and entry["echo"]["ok"]
    assert (entry["counts"]["received"], entry["counts"]["pending"]) == (2, 0)
    assert running.stop() == 0
    assert by_node(status(folder.tce)[1])["receiver"]["heartbeat"]["state"] == "stopped"


def test_stage2_status_echoes_its_verification_scp(tmp_path: Path) -> None:
    node = Stage2Dir(tmp_path / "s2")
    try:
        with RunningStage2(node) as running:
            code, report = status(node.tce, "--echo", "--require-running")
            assert code == 0 and report["ok"], report["problems"]
            entry = by_node(report)["stage2"]
            beat, answer = entry["heartbeat"], entry["echo"]
            assert (beat["state"], beat["pid"], beat["ae_title"], beat["port"]) == \
                ("alive", running.proc.pid, "TCE_STAGE2", running.port)
            assert answer["ok"] and answer["status"] == 0
            assert (answer["host"], answer["port"]) == ("127.0.0.1", running.port)
            text = node.tce("status", "--echo")
            assert f"TCE_STAGE2 port {running.port}" in text.stdout
            assert "C-ECHO: status 0x0000" in text.stdout

            node.configure(allowed_callers=["MONITOR"])  # read at start: the node allows any
            assert status(node.tce, "--echo", "--calling-ae", "NOBODY")[0] == 0
        with RunningStage2(node, echo_as="MONITOR"):  # now it refuses the default TCE_STATUS
            code, report = status(node.tce, "--echo")
            assert code == 1 and not by_node(report)["stage2"]["echo"]["ok"]
            [problem] = report["problems"]
            assert problem.startswith("stage2: no C-ECHO answer from TCE_STAGE2@127.0.0.1:")
            assert problem.endswith("(association rejected)")
            assert status(node.tce, "--echo", "--calling-ae", "MONITOR")[0] == 0
        code, report = status(node.tce, "--echo")
        assert code == 0 and "echo" not in by_node(report)["stage2"]  # stopped: not echoed
        assert by_node(report)["stage2"]["heartbeat"]["state"] == "stopped"
    finally:
        node.dispose()


def test_a_stale_heartbeat_exits_1_and_max_age_moves_the_line(receivers: ReceiverFactory) -> None:
    folder = receivers.folder()
    engine = open_database(str(folder.settings.database_url))
    try:
        with session_factory(engine).begin() as session:  # this test process: still running
            session.add(models.Heartbeat(
                node=Node.RECEIVER, pid=os.getpid(), host=socket.gethostname(),
                ae_title="TCE_RECEIVER", port=11114,
                started_at=datetime.now(UTC) - timedelta(hours=2),
                beat_at=datetime.now(UTC) - timedelta(minutes=10)))
    finally:
        engine.dispose()
    done = folder.tce("status")
    assert done.returncode == 1
    assert "receiver  stale, last beat 6" in done.stdout  # ~600 s
    assert "problem: receiver: heartbeat stale" in done.stdout
    assert folder.tce("status", "--max-age", "3600").returncode == 0


def test_bad_usage_and_configuration_exit_2(tmp_path: Path) -> None:
    missing = subprocess.run([str(TCE), "--config", str(tmp_path / "none.yaml"), "status"],
                             capture_output=True, text=True, check=False)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    zero = subprocess.run([str(TCE), "status", "--max-age", "0"], capture_output=True,
                          text=True, check=False)
    assert zero.returncode == 2 and "positive number of seconds" in zero.stderr
