"""``tce stage2 serve`` answers C-ECHO and refuses everything else, against real peers.

The node is the real command in its own process (``tce init --role stage2`` folder, a free
loopback port), stopped with SIGTERM and required to exit 0. The peers are dcmtk's ``echoscu``
and ``storescu`` and a pynetdicom requestor that reads the presentation context results.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE

from appliance.demo.nodes import LOOPBACK, free_port, wait_answering
from appliance.dimse import VERIFICATION_SOP_CLASS
from tests.e2e import TCE, Stage2Dir
from tests.receiver.harness import ct_instances, write

CALLED = "TCE_STAGE2"
CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
ABSTRACT_SYNTAX_NOT_SUPPORTED = 0x03  # PS3.8 9.3.3.2, presentation context result

needs_dcmtk = pytest.mark.skipif(not (shutil.which("echoscu") and shutil.which("storescu")),
                                 reason="dcmtk's echoscu/storescu are not installed")


class RunningStage2:
    """``tce stage2 serve --port PORT [OPTION...]``, returned once it answers C-ECHO."""

    def __init__(self, node: Stage2Dir, *options: str, port: int | None = None,
                 ae_title: str = CALLED, echo_as: str = "PYECHO") -> None:
        self.node, self.ae_title = node, ae_title
        self.port = port or free_port()
        self.log_path = node.root / f"serve-{self.port}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(TCE), "stage2", "serve", "--port", str(self.port), *options], env=node.env,
            stdout=self._log, stderr=subprocess.STDOUT)
        try:
            wait_answering(self.proc, LOOPBACK, self.port, ae_title, calling=echo_as,
                           timeout=60, what="stage2", log=self.log)
        except BaseException:
            self.stop()
            raise

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, unless it has ended already; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._log.close()
        return code

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def __enter__(self) -> RunningStage2:
        return self

    def __exit__(self, *exc: object) -> None:
        code = self.stop()
        assert code == 0, f"stage2 serve exited {code}:\n{self.log()[-3000:]}"


def dcmtk(tool: str, port: int, *files: Path, calling: str = "DCMTK"
          ) -> subprocess.CompletedProcess[str]:
    """``echoscu`` or ``storescu`` to the node, verbose (every response is listed)."""
    return subprocess.run([tool, "-v", "-aet", calling, "-aec", CALLED, LOOPBACK, str(port),
                           *map(str, files)], capture_output=True, text=True, timeout=60,
                          check=False, env={**os.environ, "TCP_NODELAY": "1"})


def propose(port: int, *abstract_syntaxes: str, calling: str = "PYSEND"
            ) -> tuple[list[str], list[tuple[str, int]]]:
    """Request an association proposing these SOP classes (Explicit VR Little Endian) and end
    it; what A-ASSOCIATE-AC said: (accepted SOP classes, (rejected SOP class, result) pairs).

    With no context accepted, pynetdicom aborts the (accepted) association itself.
    """
    ae = AE(ae_title=calling)
    for uid in abstract_syntaxes:
        ae.add_requested_context(uid, [EXPLICIT])
    assoc = ae.associate(LOOPBACK, port, ae_title=CALLED)
    assert not assoc.is_rejected, "stage 2 rejected the association as a whole"
    accepted = [str(cx.abstract_syntax) for cx in assoc.accepted_contexts]
    rejected = []
    for cx in assoc.rejected_contexts:
        assert cx.result is not None  # the A-ASSOCIATE-AC gives every rejected context one
        rejected.append((str(cx.abstract_syntax), int(cx.result)))
    assert assoc.is_established == bool(accepted)
    if assoc.is_established:
        assoc.release()
    return accepted, rejected


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Stage2Dir]:
    folder = Stage2Dir(tmp_path / "stage2")
    yield folder
    folder.dispose()


@needs_dcmtk
def test_echoscu_is_answered_and_storescu_finds_no_presentation_context(
        node: Stage2Dir, tmp_path: Path) -> None:
    ds = ct_instances("stage2-echo", 1)[0]
    ct = write(ds, tmp_path / "ct.dcm")
    with RunningStage2(node) as running:
        echoed = dcmtk("echoscu", running.port)
        assert echoed.returncode == 0, echoed.stderr
        assert "Received Echo Response (Success)" in echoed.stderr

        stored = dcmtk("storescu", running.port, ct)
        assert stored.returncode != 0
        assert "No Acceptable Presentation Contexts" in stored.stderr, stored.stderr
        assert "Store Response" not in stored.stderr

        # The association is accepted; each non-Verification context is refused in it.
        accepted, rejected = propose(running.port, VERIFICATION_SOP_CLASS, CT)
        assert accepted == [VERIFICATION_SOP_CLASS]
        assert rejected == [(CT, ABSTRACT_SYNTAX_NOT_SUPPORTED)]
        assert propose(running.port, CT) == ([], [(CT, ABSTRACT_SYNTAX_NOT_SUPPORTED)])
        assert echoscu_still_works(running.port)
    assert running.returncode == 0
    assert not any(p.is_file() for p in node.settings.stage2.store_dir.rglob("*"))
    assert node.jobs() == []
    log = running.log()
    assert '"event": "stage2.listening"' in log and '"event": "stage2.stopped"' in log
    assert log.count('"event": "stage2.association_refused"') == 2  # storescu, then CT alone
    assert '"sop_classes": ["1.2.840.10008.5.1.4.1.1.2"]' in log
    assert str(ds.PatientName) not in log and str(ds.PatientID) not in log


def echoscu_still_works(port: int) -> bool:
    return dcmtk("echoscu", port).returncode == 0


@needs_dcmtk
def test_allowed_callers_and_the_command_line_overrides(node: Stage2Dir) -> None:
    node.configure(allowed_callers=["MONITOR"])
    with RunningStage2(node, "--ae-title", "S2_ECHO", ae_title="S2_ECHO",
                       echo_as="MONITOR") as running:
        assert dcmtk("echoscu", running.port, calling="MONITOR").returncode == 0
        refused = dcmtk("echoscu", running.port, calling="INTRUDER")
        assert refused.returncode != 0 and "Association Rejected" in refused.stderr
        # The override is the node's one AE title: its heartbeat (where tce status looks).
        status = node.tce("status", "--echo", "--calling-ae", "MONITOR")
        assert status.returncode == 0, status.stdout
        assert f"S2_ECHO port {running.port}" in status.stdout
        assert "C-ECHO: status 0x0000" in status.stdout
    assert '"event": "stage2.association_rejected"' in running.log()


def test_a_port_in_use_is_a_clear_error_and_nothing_keeps_running(node: Stage2Dir,
                                                                   tmp_path: Path) -> None:
    other = Stage2Dir(tmp_path / "other")
    with RunningStage2(node) as running:
        second = other.tce("stage2", "serve", "--port", str(running.port), timeout=60)
        assert second.returncode == 1
        assert f"cannot listen on 127.0.0.1:{running.port} for C-ECHO" in second.stderr
        assert "cannot start stage 2" in second.stderr
        # The same configuration on a free port: refused before it touches anything.
        twin = node.tce("stage2", "serve", "--port", str(free_port()), timeout=60)
        assert twin.returncode == 1
        assert "already running with this configuration" in twin.stderr
        # The failed start left the running node's heartbeat alone: still alive, still echoed.
        status = node.tce("status", "--echo", "--require-running")
        assert status.returncode == 0, status.stdout
        assert f"pid {running.proc.pid} " in status.stdout
    bad = node.tce("stage2", "serve", "--ae-title", "A" * 17, timeout=60)
    assert bad.returncode == 1 and "cannot start stage 2: AE title" in bad.stderr
    other.dispose()
