"""The node as an operator runs it: who may connect, and how it stops.

An association from a calling AE title that is not on ``stage1.allowed_callers`` (or that comes
from another host than the one its entry names) must be rejected with A-ASSOCIATE-RJ
"rejected-permanent / service-user / calling-AE-title-not-recognized" (1/1/3), so the sending
modality shows a clear configuration error. SIGTERM must stop the node cleanly: exit 0, nothing
acknowledged left unprocessed.
"""

from __future__ import annotations

import threading
import time

import pytest
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # made at import

from appliance.demo.nodes import free_port
from appliance.models import InstanceState
from tests.stage1_modality.harness import (
    SUCCESS,
    NodeFactory,
    RunningNode,
    echo,
    echoscu,
    negotiate,
    send,
)

REJECTED_PERMANENT, SERVICE_USER, CALLING_AE_NOT_RECOGNIZED = 1, 1, 3
VERIFICATION = [(str(Verification), ["1.2.840.10008.1.2"])]


@pytest.fixture(scope="module")
def guarded(module_nodes: NodeFactory) -> RunningNode:
    node = module_nodes.folder("allowlist",
                               allowed_callers=["MODALITY", "CTHOST@127.0.0.2"])
    return module_nodes.start(node)


def _assert_rejected_as_unknown_caller(port: int, calling: str,
                                       bind: tuple[str, int] | None = None) -> None:
    outcome = negotiate(port, VERIFICATION, calling=calling, bind_address=bind)
    assert outcome.rejected and not outcome.established
    assert (outcome.result, outcome.source, outcome.reason) == (
        REJECTED_PERMANENT, SERVICE_USER, CALLING_AE_NOT_RECOGNIZED)


def test_echoscu_from_an_unlisted_ae_title_is_rejected(guarded: RunningNode) -> None:
    done = echoscu(guarded.port, calling="OTHER")
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "Association Rejected" in output
    assert "Calling AE Title Not Recognized" in output


def test_pynetdicom_sees_the_standard_reject_reason(guarded: RunningNode) -> None:
    _assert_rejected_as_unknown_caller(guarded.port, "OTHER")


def test_listed_ae_title_is_accepted_from_any_host(guarded: RunningNode) -> None:
    done = echoscu(guarded.port, calling="MODALITY")
    assert done.returncode == 0, done.stdout + done.stderr
    assert echo(guarded.port, calling="MODALITY", bind_address=("127.0.0.2", 0)) == SUCCESS


def test_ae_title_bound_to_a_host_is_rejected_from_another_host(guarded: RunningNode) -> None:
    _assert_rejected_as_unknown_caller(guarded.port, "CTHOST")  # from 127.0.0.1
    assert echo(guarded.port, calling="CTHOST", bind_address=("127.0.0.2", 0)) == SUCCESS


def test_rejections_do_not_stop_the_node(guarded: RunningNode) -> None:
    for _ in range(3):
        _assert_rejected_as_unknown_caller(guarded.port, "INTRUDER")
    assert echo(guarded.port, calling="MODALITY") == SUCCESS
    assert guarded.running


def test_sigterm_when_idle_exits_0_within_seconds(nodes: NodeFactory) -> None:
    running = nodes.start(nodes.folder())
    started = time.monotonic()
    assert running.stop(timeout=30) == 0
    assert time.monotonic() - started < 5
    assert '"event": "stage1.stopped"' in running.log()


def test_sigterm_after_a_burst_processes_everything_acknowledged(nodes: NodeFactory) -> None:
    node = nodes.folder()
    running = nodes.start(node)
    results = send(running.port, _burst("after-burst", 150))
    assert running.stop() == 0  # at once: most instances are still queued for workers
    acknowledged = [uid for uid, status in results if status == SUCCESS]
    assert len(acknowledged) == 150
    assert node.count(InstanceState.PROCESSED) == 150
    assert node.count() == 150
    assert not node.spool_files()
    assert len(node.store_files()) == 150


def test_sigterm_during_an_association_lets_it_finish(nodes: NodeFactory) -> None:
    node = nodes.folder()
    running = nodes.start(node)
    halfway = threading.Event()
    datasets = _burst("during", 120)

    def on_status(ds: object, status: int | None) -> None:
        if ds is datasets[40]:
            halfway.set()

    results: list[tuple[str, int | None]] = []
    sender = threading.Thread(target=lambda: results.extend(
        send(running.port, datasets, on_status=on_status)), daemon=True)
    sender.start()
    assert halfway.wait(60)
    running.proc.send_signal(15)  # SIGTERM while the association is open
    sender.join(120)
    assert running.stop() == 0
    assert [status for _uid, status in results] == [SUCCESS] * 120
    assert node.count(InstanceState.PROCESSED) == 120
    assert not node.spool_files()
    assert echo(running.port, timeout=2) is None  # and it no longer listens


def _burst(label: str, count: int) -> list:  # type: ignore[type-arg]
    from tests.stage1_modality.harness import ct_instances

    return ct_instances(label, count)


def test_a_second_node_on_the_same_folder_refuses_to_start(guarded: RunningNode) -> None:
    """Same configuration, another port: it must not sweep the running node's spool, queue its
    work or touch its heartbeat; it says why and exits 1, and the first node keeps serving."""
    done = guarded.node.tce("stage1", "serve", "--port", str(free_port()), timeout=30)
    assert done.returncode == 1
    assert "already running with this configuration" in done.stderr
    assert f"pid {guarded.proc.pid}" in done.stderr
    assert echo(guarded.port, calling="MODALITY") == SUCCESS
    status = guarded.node.tce("status", "--json")
    assert '"state": "alive"' in status.stdout, status.stdout
