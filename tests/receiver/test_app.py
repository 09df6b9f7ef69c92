"""The Receiver as an operator runs it: who may connect, its heartbeat, how it stops.

A calling AE title not on ``receiver.allowed_callers`` (or calling from another host than its
entry names) must be rejected with A-ASSOCIATE-RJ rejected-permanent / service-user /
calling-AE-title-not-recognised (1/1/3). SIGTERM must stop accepting, let an open association
finish, and exit 0.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # made at import
from sqlalchemy import select

from appliance.models import Heartbeat
from tests.receiver.harness import (
    SUCCESS,
    ReceiverFactory,
    RunningReceiver,
    ct_instances,
    echo,
    echoscu,
    negotiate,
    send,
    storescu,
    write,
)

VERIFICATION = [(str(Verification), ["1.2.840.10008.1.2"])]


@pytest.fixture(scope="module")
def guarded(module_receivers: ReceiverFactory) -> RunningReceiver:
    folder = module_receivers.folder("allowlist",
                                     allowed_callers=["STAGE2", "CTHOST@127.0.0.2"])
    return module_receivers.start(folder, ae_title="RCV_OVERRIDE", echo_as="STAGE2")


def _assert_unknown_caller(port: int, calling: str,
                           bind: tuple[str, int] | None = None) -> None:
    outcome = negotiate(port, VERIFICATION, calling=calling, bind_address=bind)
    assert outcome.rejected and not outcome.established
    assert (outcome.result, outcome.source, outcome.reason) == (1, 1, 3)


def test_unlisted_caller_is_rejected_with_1_1_3(guarded: RunningReceiver) -> None:
    done = echoscu(guarded.port, calling="OTHER")
    assert done.returncode != 0
    assert "Calling AE Title Not Recognized" in done.stdout + done.stderr
    _assert_unknown_caller(guarded.port, "OTHER")


def test_listed_callers_are_accepted_only_from_their_host(guarded: RunningReceiver) -> None:
    assert echoscu(guarded.port, calling="STAGE2").returncode == 0
    _assert_unknown_caller(guarded.port, "CTHOST")  # from 127.0.0.1, not 127.0.0.2
    assert echo(guarded.port, calling="CTHOST", bind_address=("127.0.0.2", 0)) == SUCCESS


def test_rejected_store_leaves_nothing_and_the_node_keeps_serving(
        guarded: RunningReceiver, tmp_path: Path) -> None:
    path = write(ct_instances("intruder", 1)[0], tmp_path / "x.dcm")
    done = storescu(guarded.port, [path], calling="INTRUDER")
    assert done.returncode != 0
    assert not guarded.node.store_files()
    assert send(guarded.port, ct_instances("allowed", 1), calling="STAGE2") == [SUCCESS]
    assert guarded.running


def test_heartbeat_names_the_overridden_ae_title_and_port(guarded: RunningReceiver) -> None:
    with guarded.node.engine.connect() as conn:
        beat = conn.execute(select(Heartbeat.__table__)
                            .where(Heartbeat.node == "receiver")).one()
    assert (beat.ae_title, beat.port, beat.pid) == ("RCV_OVERRIDE", guarded.port,
                                                    guarded.proc.pid)
    assert datetime.now(UTC) - beat.beat_at.replace(tzinfo=UTC) < timedelta(seconds=30)
    assert '"ae_title": "RCV_OVERRIDE"' in guarded.log()


def test_studies_lists_what_was_received(guarded: RunningReceiver) -> None:
    ds = ct_instances("listed", 2)
    assert send(guarded.port, ds, calling="STAGE2") == [SUCCESS, SUCCESS]
    done = guarded.node.tce("receiver", "studies")
    assert done.returncode == 0, done.stderr
    [line] = [x for x in done.stdout.splitlines() if x.startswith(ds[0].StudyInstanceUID)]
    assert "RECEIVING" in line and "2 instances" in line


def test_sigterm_when_idle_exits_0_at_once(receivers: ReceiverFactory) -> None:
    running = receivers.start(receivers.folder())
    started = time.monotonic()
    assert running.stop(timeout=30) == 0
    assert time.monotonic() - started < 5
    assert '"event": "receiver.stopped"' in running.log()


def test_sigterm_during_an_association_lets_it_finish(receivers: ReceiverFactory) -> None:
    folder = receivers.folder()
    running = receivers.start(folder)
    datasets = ct_instances("during", 60)
    halfway = threading.Event()
    statuses: list[int | None] = []

    def between(index: int) -> None:
        if index == 20:
            halfway.set()
            time.sleep(0.5)  # SIGTERM arrives while this association is open

    sender = threading.Thread(target=lambda: statuses.extend(
        send(running.port, datasets, between=between)))
    sender.start()
    assert halfway.wait(60)
    running.proc.send_signal(15)
    sender.join(120)
    assert running.stop() == 0
    assert statuses == [SUCCESS] * 60
    assert len(folder.instances()) == 60
    assert len(folder.store_files()) == 60
    assert echo(running.port, timeout=2) is None  # and it no longer listens
    events = [json.loads(line) for line in running.log().splitlines()]
    names = [e["event"] for e in events]
    [closed] = [i for i, e in enumerate(events) if e["event"] == "receiver.association_closed"
                and e["calling_ae"] == "PYSEND"]
    assert names.index("receiver.stopping") < closed < names.index("receiver.stopped")
    assert (events[closed]["how"], events[closed]["stored"]) == ("released", 60)
