"""Spool → pseudonymize under load and across a crash: nothing lost, nothing done twice.

A success status is a promise: the instance is on disk (in the spool, where a restart finds it
even if its row was not committed yet). With four senders
at once every acknowledged instance must be found as a spool file at the moment its success
arrives (or already processed), and end as exactly one row and one pseudonymized file. After a
SIGKILL in the middle of a transfer and a restart, every instance acknowledged before the crash
is processed exactly once (one row, one audit event, one file), and the node leaves no spool
or temporary files behind once the sender has re-sent everything.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from sqlalchemy import select

from appliance.keys import KeyRing
from appliance.models import AuditEvent, Instance, InstanceState, QuarantineItem
from appliance.synthetic import make_sample_study_set
from appliance.validation import receipt_key
from tests.stage1_modality.harness import SUCCESS, NodeDir, NodeFactory, ct_instances, send

SENDERS, PER_SENDER = 4, 200


def _processed_with_file(node: NodeDir, key: str) -> bool:
    with node.engine.connect() as conn:
        row = conn.execute(select(Instance.state, Instance.store_path).where(
            Instance.received_key == key)).first()
    return row is not None and row.state == InstanceState.PROCESSED and \
        Path(row.store_path).is_file()


def _assert_every_row_has_its_file(node: NodeDir, expected: int) -> None:
    rows = node.instance_rows()
    assert len(rows) == expected
    assert {row.state for row in rows} == {InstanceState.PROCESSED}
    assert len({row.received_key for row in rows}) == expected
    assert len({row.new_sop_instance_uid for row in rows}) == expected
    stored = {Path(row.store_path) for row in rows}
    assert stored == set(node.store_files())
    assert not node.spool_files()
    assert not node.temporary_files()


def test_four_concurrent_associations_lose_and_duplicate_nothing(nodes: NodeFactory) -> None:
    node = nodes.folder()
    running = nodes.start(node)
    key = KeyRing.load(node.settings.key_ring).subkey("pseudonym")
    spool = node.settings.stage1.spool_dir
    batches = [ct_instances(f"concurrent-{n}", PER_SENDER) for n in range(SENDERS)]
    not_on_disk: list[str] = []

    def on_status(ds: Dataset, status: int | None) -> None:
        if status != SUCCESS:
            return
        receipt = receipt_key(key, str(ds.SOPInstanceUID))
        # spool first: it is removed only after the PROCESSED row is committed
        if not (spool / f"{receipt}.dcm").is_file() and not _processed_with_file(node, receipt):
            not_on_disk.append(str(ds.SOPInstanceUID))

    results: list[list[tuple[str, int | None]]] = [[] for _ in batches]
    threads = [threading.Thread(target=lambda n=n: results[n].extend(
        send(running.port, batches[n], calling=f"SENDER{n}", on_status=on_status)),
        daemon=True) for n in range(SENDERS)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    elapsed = time.monotonic() - started
    statuses = [status for batch in results for _uid, status in batch]
    assert statuses == [SUCCESS] * SENDERS * PER_SENDER, Counter(statuses)
    assert not not_on_disk, f"{len(not_on_disk)} acknowledged instances had no file on disk"
    node.wait_processed(SENDERS * PER_SENDER, timeout=60)
    _assert_every_row_has_its_file(node, SENDERS * PER_SENDER)
    assert elapsed < 60


def test_sigkill_mid_transfer_then_resend_processes_acknowledged_instances_once(
        nodes: NodeFactory) -> None:
    node = nodes.folder()
    running = nodes.start(node)
    datasets = ct_instances("crash", 300)
    acknowledged: list[str] = []
    enough = threading.Event()

    def on_status(ds: Dataset, status: int | None) -> None:
        if status == SUCCESS:
            acknowledged.append(str(ds.SOPInstanceUID))
            if len(acknowledged) == 120:
                enough.set()

    sender = threading.Thread(target=send, args=(running.port, datasets), daemon=True,
                              kwargs={"on_status": on_status, "timeout": 3})
    sender.start()
    assert enough.wait(60)
    running.kill()  # mid-transfer: the sender is still sending
    sender.join(60)
    assert not sender.is_alive()
    first_run = list(acknowledged)
    assert 120 <= len(first_run) < len(datasets)
    # What a kill can also leave, at instants too short to hit reliably: an interrupted write
    # in the spool and in the store, and a spool file whose row was never committed (the
    # instance was durable, and maybe acknowledged: the restart must adopt it).
    s1 = node.settings.stage1
    key = KeyRing.load(node.settings.key_ring).subkey("pseudonym")
    unacknowledged = datasets[len(first_run)]
    orphan = s1.spool_dir / f"{receipt_key(key, str(unacknowledged.SOPInstanceUID))}.dcm"
    if not orphan.exists():
        unacknowledged.save_as(orphan, enforce_file_format=True)
    planted = [s1.spool_dir / f".{'a' * 64}.dcm.0badc0de.tmp", s1.spool_dir / ".spare-1.tmp",
               s1.store_dir / ".2.25.1.dcm.0badc0de.tmp"]
    for path in planted:
        path.write_bytes(b"\0" * 4096)
    restarted_at = datetime.now(UTC)

    running = nodes.start(node)
    results = send(running.port, datasets)  # everything again, as a modality would
    assert [status for _uid, status in results] == [SUCCESS] * len(datasets)
    node.wait_processed(len(datasets), timeout=60)
    assert running.stop() == 0
    _assert_every_row_has_its_file(node, len(datasets))
    assert not any(path.exists() for path in [*planted, orphan])

    rows = {row.received_key: row for row in node.instance_rows()}
    for uid in [*first_run, str(unacknowledged.SOPInstanceUID)]:
        # kept by the node itself: a row from before the crash, or one the restart adopted from
        # the spool (no calling AE); never a fresh receipt of what the sender sent again
        row = rows[receipt_key(key, uid)]
        assert row.received_at < restarted_at or row.calling_ae == "", uid
    with node.engine.connect() as conn:
        done = Counter(conn.scalars(select(AuditEvent.subject).where(
            AuditEvent.action == "instance.pseudonymized")))
    assert set(done) == {row.new_sop_instance_uid for row in rows.values()}
    assert set(done.values()) == {1}, "an instance was pseudonymized twice"


def test_instance_the_policy_refuses_is_acknowledged_then_quarantined(
        nodes: NodeFactory) -> None:
    """Receipt and processing are separate: the sender gets success (the instance is safely
    kept), and the policy's refusal puts the spooled instance in quarantine with its reason."""
    node = nodes.folder(policy="safe-harbor")  # Clean Pixel Data: burned-in text is refused
    running = nodes.start(node)
    sample = make_sample_study_set(0)
    burned = [ds for ds in sample if ds.get("BurnedInAnnotation") == "YES"]
    clean = [ds for ds in sample if ds.get("BurnedInAnnotation") == "NO"][:2]
    assert len(burned) == 1
    results = send(running.port, burned + clean)
    assert [status for _uid, status in results] == [SUCCESS] * 3
    node.settle()
    states = Counter(row.state for row in node.instance_rows())
    assert states == {InstanceState.PROCESSED: 2, InstanceState.QUARANTINED: 1}
    with node.engine.connect() as conn:
        items = list(conn.execute(select(QuarantineItem.stored_path, QuarantineItem.reason,
                                         QuarantineItem.stage)))
    assert len(items) == 1
    stored, reason, stage = items[0]
    assert stage == "stage1" and "BurnedInAnnotation is YES" in reason
    assert Path(stored).is_file() and Path(f"{stored}.reason.json").is_file()
    assert not node.spool_files()
    assert len(node.store_files()) == 2


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_node_on_postgresql_receives_processes_and_writes_media(
        nodes: NodeFactory, db_url: str, tmp_path: Path) -> None:
    """The same node with ``database_url`` on a real PostgreSQL server (see tests/pg.py)."""
    node = nodes.folder(quiet_period_seconds=3600)
    node.configure_top(database_url=db_url)
    assert node.engine.dialect.name == "postgresql"
    running = nodes.start(node)
    batches = [ct_instances(f"pg-{n}", 50) for n in range(SENDERS)]
    results: list[list[tuple[str, int | None]]] = [[] for _ in batches]
    threads = [threading.Thread(target=lambda n=n: results[n].extend(
        send(running.port, batches[n] + batches[n][:5], calling=f"SENDER{n}")), daemon=True)
        for n in range(SENDERS)]  # each re-sends five of its instances: duplicates
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert [s for batch in results for _u, s in batch] == [SUCCESS] * SENDERS * 55
    node.wait_processed(SENDERS * 50, timeout=60)
    _assert_every_row_has_its_file(node, SENDERS * 50)
    done = node.tce("stage1", "media", "write", str(tmp_path / "media"), "--all")
    assert done.returncode == 0, done.stderr
    assert f"{SENDERS * 50} instances" in done.stdout
    assert running.stop() == 0


def test_media_right_after_a_crash_processes_what_the_node_left(nodes: NodeFactory,
                                                                tmp_path: Path) -> None:
    """``media write --all`` with the node just killed: its heartbeat is still fresh, but the
    command sees the process is gone and finishes the queued instances itself."""
    node = nodes.folder(quiet_period_seconds=3600)
    running = nodes.start(node)
    datasets = ct_instances("left-behind", 150)
    acknowledged: list[str] = []
    enough = threading.Event()

    def on_status(ds: Dataset, status: int | None) -> None:
        if status == SUCCESS:
            acknowledged.append(str(ds.SOPInstanceUID))
            if len(acknowledged) == 60:
                enough.set()

    sender = threading.Thread(target=send, args=(running.port, datasets), daemon=True,
                              kwargs={"on_status": on_status, "timeout": 3})
    sender.start()
    assert enough.wait(60)
    running.kill()
    sender.join(60)
    started = time.monotonic()
    done = node.tce("stage1", "media", "write", str(tmp_path / "media"), "--all", timeout=60)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 30
    rows = node.instance_rows()
    assert len(rows) >= len(acknowledged)
    assert {row.state for row in rows} == {InstanceState.PROCESSED}
    assert f"{len(rows)} instances" in done.stdout


def test_spool_file_without_a_row_is_adopted_at_the_next_start(nodes: NodeFactory) -> None:
    """The success status is answered once the spool file is durable; the row follows. A crash
    in between leaves a spool file without a row: the next start records and processes it."""
    node = nodes.folder()
    key = KeyRing.load(node.settings.key_ring).subkey("pseudonym")
    ds = ct_instances("adopted", 1)[0]
    spool = node.settings.stage1.spool_dir
    spool.mkdir(parents=True, exist_ok=True)
    orphan = spool / f"{receipt_key(key, str(ds.SOPInstanceUID))}.dcm"
    ds.save_as(orphan, enforce_file_format=True)
    running = nodes.start(node)
    node.wait_processed(1, timeout=60)
    [row] = node.instance_rows()
    assert (row.state, row.received_key, row.calling_ae) == (
        InstanceState.PROCESSED, orphan.stem, "")
    assert not orphan.exists()
    assert send(running.port, [ds]) == [(str(ds.SOPInstanceUID), SUCCESS)]  # a duplicate now
    node.settle()
    assert node.count() == 1 and len(node.store_files()) == 1
    assert running.stop() == 0
