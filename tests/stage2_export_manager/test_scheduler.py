"""``tce stage2 serve`` and what it schedules: media watching, retention, heartbeat, shutdown.

(Its C-ECHO SCP is tested in ``test_echo.py``.)

The end-to-end test runs the real command in its own process (it installs signal handlers and
is stopped with SIGTERM like an operator would), drops PDI media into the watched folder while
it runs, approves the studies from here through the shared database, and counts what dcmtk's
storescp received.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, select
from sqlalchemy.orm import sessionmaker
from sqlalchemy.pool import NullPool

from appliance.audit import audit_details
from appliance.models import AuditEvent, Heartbeat, Job, JobInstance, JobState, Node
from stage2_export_manager.approval import approve
from stage2_export_manager.exporter import outbox_dir
from stage2_export_manager.retention import apply_retention
from stage2_export_manager.scheduler import MediaWatcher, signature
from tests.stage2_export_manager import stage1_datasets, stage2_node, write_pdi
from tests.stage2_export_manager.test_exporter import FIVE, make_node
from tests.stage2_export_manager.test_scu import Storescp, free_port

TCE = Path(sys.executable).parent / "tce"


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pdi(stage1_datasets(), tmp_path_factory.mktemp("media") / "usb")


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


# --- retention ----------------------------------------------------------------------------


def test_retention_deletes_stage2_copies_after_n_days(tmp_path: Path, media: Path) -> None:
    node = make_node(tmp_path / "node", media, retention_days=30)
    node.approve()
    with Storescp(tmp_path / "rx") as scp:
        node.export(scp.peer)
    exported = [j.id for j in node.jobs() if j.state is JobState.EXPORTED]
    failed = [j.id for j in node.jobs() if j.state is not JobState.EXPORTED]
    store, outbox = node.settings.stage2.store_dir, outbox_dir(node.settings)
    copies = {i.job_id: Path(i.store_path) for i in node.instances()}
    assert all(p.is_file() for p in copies.values()) and len(exported) == 4

    # The export happened on the real clock, just now; retention is asked about days later.
    early = apply_retention(node.settings, node.sessions, now=_days_from_now(29))
    assert early.jobs == [] and all(p.is_file() for p in copies.values())

    late = apply_retention(node.settings, node.sessions, now=_days_from_now(31))
    assert late.jobs == exported and late.files_deleted > 0
    for job_id in exported:
        assert not any(Path(i.store_path).exists() for i in node.instances(job_id))
        assert not (outbox / str(job_id)).exists()
        [event] = node.events(job_id, "job.retention_deleted")
        details = audit_details(event)
        assert details["retention_days"] == 30 and details["files"] > 0
    for job_id in failed:  # not exported: kept
        assert all(Path(i.store_path).is_file() for i in node.instances(job_id))
    assert len(node.instances()) == 22 and len(node.jobs()) == 5  # rows stay
    assert store.is_dir()
    again = apply_retention(node.settings, node.sessions, now=_days_from_now(40))
    assert again.jobs == []  # recorded once


def test_retention_off_by_default(tmp_path: Path, media: Path) -> None:
    node = make_node(tmp_path / "node", media)
    node.approve()
    with Storescp(tmp_path / "rx") as scp:
        node.export(scp.peer)
    assert apply_retention(node.settings, node.sessions, now=_days_from_now(3650)).jobs == []
    assert all(Path(i.store_path).is_file() for i in node.instances())


def _days_from_now(days: int) -> datetime:
    return datetime.now(UTC) + timedelta(days=days)


# --- media watching -----------------------------------------------------------------------


def test_media_folder_is_imported_once_it_is_stable(tmp_path: Path, media: Path) -> None:
    watch = tmp_path / "watch"
    watch.mkdir()
    settings, sessions = stage2_node(tmp_path / "node")
    settings = dataclasses.replace(settings, stage2=dataclasses.replace(
        settings.stage2, media_watch_dir=watch))
    watcher = MediaWatcher(settings, sessions)
    assert watcher.poll() == []
    (watch / "not-media").mkdir()
    (watch / "not-media" / "notes.txt").write_text("nothing to import")
    shutil.copytree(media, watch / "stick")
    before = signature(watch / "stick")
    assert watcher.poll() == []  # first sight: not yet known to be stable
    (watch / "stick" / "LATE.TXT").write_text("a copy still in progress")
    assert signature(watch / "stick") != before
    assert watcher.poll() == []  # it changed since the last look: wait again
    [result] = watcher.poll()
    assert str(result.status) == "imported" and result.instances == 22
    assert watcher.poll() == []  # each state of a folder is imported once
    with sessions() as session:
        assert len(session.scalars(select(Job)).all()) == 5


def test_a_mounted_medium_is_the_watched_folder_itself(tmp_path: Path, media: Path) -> None:
    mount = tmp_path / "mnt"
    shutil.copytree(media, mount)
    settings, sessions = stage2_node(tmp_path / "node")
    settings = dataclasses.replace(settings, stage2=dataclasses.replace(
        settings.stage2, media_watch_dir=mount))
    watcher = MediaWatcher(settings, sessions)
    assert watcher.candidates() == [mount]
    assert watcher.poll() == []
    [result] = watcher.poll()
    assert result.instances == 22


# --- the whole loop -----------------------------------------------------------------------


def test_serve_imports_dropped_media_and_exports_after_approval(tmp_path: Path,
                                                                media: Path) -> None:
    root = tmp_path / "stage2"
    done = subprocess.run([str(TCE), "init", str(root), "--role", "stage2"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    watch = tmp_path / "mnt"
    watch.mkdir()
    with Storescp(tmp_path / "rx") as scp:
        config = root / "tce.yaml"
        data = yaml.safe_load(config.read_text())
        data["stage2"].update(media_watch_dir=str(watch), poll_seconds=1, backoff_seconds=1,
                              port=free_port())
        data["stage2"]["receiver"]["port"] = scp.port
        data["log_file"] = "logs/tce.log"
        config.write_text(yaml.safe_dump(data))
        env = {k: v for k, v in os.environ.items() if k != "TCE_DATABASE_URL"}
        proc = subprocess.Popen([str(TCE), "--config", str(config), "stage2", "serve"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            engine = create_engine(f"sqlite:///{root / 'tce.sqlite3'}", poolclass=NullPool)
            wait_for(lambda: (root / "tce.sqlite3").exists() and _count(engine, Heartbeat) > 0,
                     30, "the heartbeat")
            shutil.copytree(media, watch / "usb-stick")
            wait_for(lambda: _count(engine, Job) == 5, 30, "the media to be imported")
            sessions = sessionmaker(engine, expire_on_commit=False)
            with sessions.begin() as session:
                for job in session.scalars(select(Job)):
                    assert job.state is JobState.PENDING_APPROVAL
                    approve(session, job, FIVE, "Dr. Reviewer")
            wait_for(lambda: all(s in (JobState.EXPORTED, JobState.FAILED)
                                 for s in _states(engine)), 60, "the export")
            received = scp.received()
        finally:
            proc.send_signal(signal.SIGTERM)
            _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    assert Counter(_states(engine)) == {JobState.EXPORTED: 4, JobState.FAILED: 1}
    with sessions() as session:
        sent = Counter(session.scalars(select(JobInstance.new_sop_instance_uid).where(
            JobInstance.send_status == "SENT")))
        beat = session.get_one(Heartbeat, Node.STAGE2)
        exported = session.scalars(select(AuditEvent.subject).where(
            AuditEvent.action == "job.exported")).all()
    assert received == sent and len(sent) == 21 and set(received.values()) == {1}
    assert beat.ae_title == "TCE_STAGE2" and beat.pid == proc.pid
    assert beat.port == data["stage2"]["port"]  # its C-ECHO SCP (see test_echo.py)
    assert len(exported) == 4 and all(s is not None and s.startswith("job-") for s in exported)
    log = (root / "logs" / "tce.log").read_text()
    assert '"event": "media.imported"' in log and '"event": "stage2.stopped"' in log
    assert "usb-stick" not in log  # folders are logged by hash, never by name


def _count(engine: object, model: type) -> int:
    from sqlalchemy import func

    try:
        with engine.connect() as conn:  # type: ignore[attr-defined]
            return int(conn.scalar(select(func.count()).select_from(model)) or 0)
    except Exception:
        return 0  # schema not created yet


def _states(engine: object) -> list[JobState]:
    with engine.connect() as conn:  # type: ignore[attr-defined]
        return [JobState(s) for s in conn.scalars(select(Job.state))]
