"""Run the real stage-1 node as a subprocess and talk to it with real DICOM peers.

Nothing here imitates the node: :class:`NodeDir` is a folder made by ``tce init``, and
:class:`RunningNode` is ``tce stage1 serve`` in its own process, stopped with SIGTERM (or killed
with SIGKILL) like an operator or a crash would. The peers are dcmtk's ``storescu``/``echoscu``
and pynetdicom. Tests read the node's SQLite database with a plain SQLAlchemy engine, which
reads without taking the write lock the node's own engine takes.

dcmtk as packaged by Debian leaves Nagle's algorithm on unless ``TCP_NODELAY=1`` is set, which
costs ~45 ms of delayed-ACK wait per C-STORE; the peers here switch it off (dcmtk through the
environment, pynetdicom through a socket option) so the tests measure the node, not the wait.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.association import Association
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.pool import NullPool

from appliance.demo.nodes import (
    LOOPBACK,
    child_environment,
    echo_caller,
    free_port,
    wait_answering,
)
from appliance.demo.nodes import echo as node_echo
from appliance.dimse import set_nodelay
from appliance.models import Instance, InstanceState, Node
from appliance.settings import Settings, load
from appliance.synthetic import make_ct_instance, sample_patients

BIN = Path(sys.executable).parent
TCE = BIN / "tce"
CALLED = "TCE_STAGE1"
DCMTK_ENV = {"TCP_NODELAY": "1"}
SUCCESS = 0x0000


def _spare(path: Path) -> bool:
    """An empty file a running node keeps ready in its spool (removed when it stops)."""
    try:
        return path.name.startswith(".spare-") and path.stat().st_size == 0
    except FileNotFoundError:  # taken meanwhile
        return True


def _status(proc: psutil.Process) -> str | None:
    """A process's status; None once it is gone (a zombie has ended, only unreaped)."""
    try:
        return str(proc.status())
    except psutil.Error:
        return None


# --- the node --------------------------------------------------------------------------------


class NodeDir:
    """A node folder made by ``tce init`` (config, key ring, SQLite database, working folders)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "tce.yaml"
        done = subprocess.run([str(TCE), "init", str(root), "--role", "stage1"],
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        self._engine: Engine | None = None

    def configure(self, **stage1: Any) -> None:
        """Change ``stage1.*`` settings in tce.yaml (the node reads them when it starts)."""
        data = yaml.safe_load(self.config.read_text(encoding="utf-8"))
        data["stage1"].update(stage1)
        self.config.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")

    def configure_top(self, **settings: Any) -> None:
        """Change top-level settings in tce.yaml (e.g. ``database_url``)."""
        data = yaml.safe_load(self.config.read_text(encoding="utf-8"))
        data.update(settings)
        self.config.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")

    @property
    def settings(self) -> Settings:
        return load(self.config, environ={})

    @property
    def env(self) -> dict[str, str]:
        return child_environment(self.config)

    def tce(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``tce ARGS`` against this node's config; returns the finished process."""
        return subprocess.run([str(TCE), *args], capture_output=True, text=True,
                              timeout=timeout, env=self.env, check=False)

    def start(self, port: int | None = None, *, ae_title: str | None = None) -> RunningNode:
        return RunningNode(self, port or free_port(), ae_title)

    # -- what the node left in its database and folders --------------------------------------
    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = create_engine(str(self.settings.database_url), poolclass=NullPool)
        return self._engine

    def instance_rows(self) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(Instance.__table__).where(
                Instance.node == Node.STAGE1)))

    def count(self, *states: InstanceState) -> int:
        query = select(func.count()).select_from(Instance).where(Instance.node == Node.STAGE1)
        if states:
            query = query.where(Instance.state.in_(states))
        with self.engine.connect() as conn:
            return int(conn.scalar(query) or 0)

    def wait_processed(self, expected: int, timeout: float = 60) -> None:
        """Wait until ``expected`` instances are PROCESSED and nothing is queued."""
        deadline = time.monotonic() + timeout
        busy = (InstanceState.RECEIVED, InstanceState.PROCESSING)
        while time.monotonic() < deadline:
            if self.count(InstanceState.PROCESSED) >= expected and not self.count(*busy):
                return
            time.sleep(0.2)
        raise AssertionError(f"{self.count(InstanceState.PROCESSED)} of {expected} instances"
                             f" PROCESSED after {timeout} s ({self.count(*busy)} still queued)")

    def settle(self, timeout: float = 60) -> None:
        """Wait until nothing is queued (every acknowledged instance has been processed).

        An acknowledged instance is a spool file first and a row a moment later, so both must
        be gone."""
        deadline = time.monotonic() + timeout
        while self.spool_files() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.wait_processed(0, max(1.0, deadline - time.monotonic()))

    def files(self, folder: Path) -> list[Path]:
        return sorted(p for p in folder.rglob("*") if p.is_file())

    def spool_files(self) -> list[Path]:
        return [p for p in self.files(self.settings.stage1.spool_dir) if not _spare(p)]

    def store_files(self) -> list[Path]:
        return self.files(self.settings.stage1.store_dir)

    def temporary_files(self) -> list[Path]:
        s1 = self.settings.stage1
        return [p for p in self.files(s1.spool_dir) + self.files(s1.store_dir)
                if p.name.endswith(".tmp") and not _spare(p)]

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


class RunningNode:
    """``tce stage1 serve --port PORT`` as a child process, its log in a file."""

    def __init__(self, node: NodeDir, port: int, ae_title: str | None) -> None:
        self.node = node
        self.port = port
        self.ae_title = ae_title or CALLED
        self.log_path = node.root / f"serve-{port}.log"
        argv = [str(TCE), "stage1", "serve", "--port", str(port)]
        if ae_title:
            argv += ["--ae-title", ae_title]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in _reap
        self.proc = subprocess.Popen(argv, env=node.env, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        self.returncode: int | None = None
        try:
            self.wait_ready()
        except BaseException:
            self.kill()  # a node that never answered must not outlive the test
            raise

    def wait_ready(self, timeout: float = 60) -> None:
        """Until a C-ECHO succeeds (the SCP is listening and answering), as a caller the
        allow-list accepts (:func:`appliance.demo.nodes.wait_answering`)."""
        calling, bind = echo_caller(self.node.settings.stage1.allowed_callers, "PYECHO")
        wait_answering(self.proc, LOOPBACK, self.port, self.ae_title, calling=calling,
                       bind_address=bind, timeout=timeout, log=self.log)

    def descendants(self) -> list[psutil.Process]:
        try:
            children: list[psutil.Process] = psutil.Process(self.proc.pid).children(
                recursive=True)
            return children
        except psutil.NoSuchProcess:
            return []

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, as an operator or systemd would; returns the exit status."""
        if self.returncode is None:
            children = self.descendants()
            self.proc.send_signal(signal.SIGTERM)
            self.returncode = self.proc.wait(timeout)
            self._reap(children)
        return self.returncode

    def kill(self) -> None:
        """SIGKILL: the crash the node must survive (nothing of it runs any more code)."""
        children = self.descendants()
        self.proc.send_signal(signal.SIGKILL)
        self.returncode = self.proc.wait(30)
        self._reap(children)

    def _reap(self, children: list[psutil.Process], timeout: float = 15) -> None:
        """The node's worker processes must end with it; fail (after cleaning up) if not."""
        self._log.close()
        _gone, alive = psutil.wait_procs(children, timeout=timeout)
        alive = [p for p in alive if _status(p) not in (psutil.STATUS_ZOMBIE, None)]
        for proc in alive:  # our own descendants, by pid
            with contextlib.suppress(psutil.Error):
                proc.kill()
        assert not alive, f"worker processes outlived the node: {[p.pid for p in alive]}"

    @property
    def running(self) -> bool:
        return self.returncode is None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@dataclass
class NodeFactory:
    """Makes node folders and starts nodes; stops whatever still runs at teardown."""

    make_dir: Callable[[str], Path]
    started: list[RunningNode] = field(default_factory=list)
    dirs: list[NodeDir] = field(default_factory=list)

    def folder(self, name: str = "node", **stage1: Any) -> NodeDir:
        node = NodeDir(self.make_dir(name))
        if stage1:
            node.configure(**stage1)
        self.dirs.append(node)
        return node

    def start(self, node: NodeDir, port: int | None = None, **kwargs: Any) -> RunningNode:
        running = node.start(port, **kwargs)
        self.started.append(running)
        return running

    def close(self) -> list[str]:
        """Stop every node still running; the problems found (non-zero exits)."""
        problems = []
        for running in self.started:
            if running.returncode is None:
                code = running.stop()
                if code != 0:
                    problems.append(f"node on port {running.port} exited {code}:\n"
                                    f"{running.log()[-3000:]}")
        for node in self.dirs:
            node.dispose()
        return problems


# --- peers -----------------------------------------------------------------------------------


def echo(port: int, *, calling: str = "PYECHO", called: str = CALLED,
         bind_address: tuple[str, int] | None = None, timeout: float = 10) -> int | None:
    """C-ECHO on loopback (:func:`appliance.demo.nodes.echo`); the status, or None when no
    association was made."""
    return node_echo(LOOPBACK, port, called, calling=calling, bind_address=bind_address,
                     timeout=timeout)


@dataclass
class Negotiation:
    """How an association request ended, as the requestor saw it."""

    established: bool
    rejected: bool
    result: int | None = None  # A-ASSOCIATE-RJ result, source and reason/diag.
    source: int | None = None
    reason: int | None = None
    accepted: list[str] = field(default_factory=list)  # abstract syntaxes accepted
    rejected_contexts: list[tuple[str, int]] = field(default_factory=list)


def negotiate(port: int, contexts: Sequence[tuple[str, Sequence[str]]], *,
              calling: str = "PYSEND", called: str = CALLED,
              bind_address: tuple[str, int] | None = None) -> Negotiation:
    """Request an association with ``contexts`` and release it; what the acceptor answered."""
    ae = AE(ae_title=calling)
    for abstract, syntaxes in contexts:
        ae.add_requested_context(abstract, list(syntaxes))
    seen: list[Any] = []

    def on_acse(event: evt.Event) -> None:
        primitive = event.primitive  # type: ignore[attr-defined]  # set for ACSE events only
        if getattr(primitive, "result", None) is not None:
            seen.append(primitive)

    kwargs: dict[str, Any] = {"bind_address": bind_address} if bind_address else {}
    assoc = ae.associate("127.0.0.1", port, ae_title=called,
                         evt_handlers=[(evt.EVT_ACSE_RECV, on_acse)], **kwargs)
    if not seen and not assoc.is_established:
        seen = _unread_answer(assoc)
    outcome = Negotiation(assoc.is_established, assoc.is_rejected or any(
        p.result in (0x01, 0x02) for p in seen))
    if seen:
        outcome.result = seen[-1].result
        outcome.source = seen[-1].result_source
        outcome.reason = seen[-1].diagnostic
    if assoc.is_established:
        outcome.accepted = [str(cx.abstract_syntax) for cx in assoc.accepted_contexts]
        outcome.rejected_contexts = [(str(cx.abstract_syntax), int(cx.result or 0))
                                     for cx in assoc.rejected_contexts]
        assoc.release()
    return outcome


def _unread_answer(assoc: Association) -> list[Any]:
    """The A-ASSOCIATE answer pynetdicom received but its ACSE never read.

    A race in pynetdicom 3: the requestor's ACSE checks that the socket is connected only after
    sending the request, and an SCP that rejects at once (the streaming SCP does, in well under
    a millisecond) gets its A-ASSOCIATE-RJ read by the DUL, which closes the socket as PS3.8
    says, before that check. The ACSE then takes the closed socket for a failed connect and
    aborts, leaving the rejection in the DUL's queue; about one rejection in six, measured.
    """
    queued = list(assoc.dul.to_user_queue.queue)
    return [p for p in queued if getattr(p, "result", None) is not None]


def store_contexts(datasets: Iterable[Dataset]) -> list[tuple[str, list[str]]]:
    classes = sorted({str(ds.SOPClassUID) for ds in datasets})
    return [(uid, [ExplicitVRLittleEndian]) for uid in classes]


def open_association(port: int, contexts: Sequence[tuple[str, Sequence[str]]], *,
                     calling: str = "PYSEND", called: str = CALLED,
                     bind_address: tuple[str, int] | None = None,
                     timeout: float = 30) -> Association:
    ae = AE(ae_title=calling)
    for abstract, syntaxes in contexts:
        ae.add_requested_context(abstract, list(syntaxes))
    ae.dimse_timeout = ae.network_timeout = ae.acse_timeout = timeout
    kwargs: dict[str, Any] = {"bind_address": bind_address} if bind_address else {}
    assoc = ae.associate("127.0.0.1", port, ae_title=called,
                         evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay)], **kwargs)
    assert assoc.is_established, "the node refused an association it should accept"
    return assoc


def status_of(result: Dataset) -> int | None:
    """The C-STORE response status, or None when no response came (the peer went away)."""
    return int(result.Status) if "Status" in result else None


class _ParkedReactor(threading.Event):
    """Keeps a requestor's reactor thread parked while ``send`` stores instances.

    pynetdicom pauses the reactor of a requestor during ``send_c_store()`` by clearing an event
    and then polling a flag the reactor sets just before it waits on that event. The flag may
    still be set from the reactor's previous loop, so under load the reactor can take the C-STORE
    response off the queue first ("Received unexpected C-STORE service message"), and the store
    then waits for a response that already came. A node that answers fast makes this likely.
    The sender here issues nothing but C-STOREs, so the reactor has nothing to do: it stays
    blocked on its original event (this object replaces it and ignores ``set()``) until
    :meth:`unpark` wakes it again for the release.
    """

    def __init__(self, assoc: Association) -> None:
        super().__init__()
        self.assoc = assoc
        self.original: threading.Event = assoc._reactor_checkpoint
        self.original.clear()
        while True:  # blocked for sure once the flag stays set over a few reactor loops
            while not assoc._is_paused and assoc.is_established:
                time.sleep(0.0005)
            time.sleep(0.02)
            if assoc._is_paused or not assoc.is_established:
                break
        assoc._reactor_checkpoint = self

    def set(self) -> None:  # send_c_store() "unpauses" here: the reactor stays parked
        pass

    def unpark(self) -> None:
        self.assoc._reactor_checkpoint = self.original
        self.original.set()


def send(port: int, datasets: Sequence[Dataset], *, calling: str = "PYSEND",
         on_status: Callable[[Dataset, int | None], None] | None = None,
         stop: threading.Event | None = None,
         timeout: float = 30) -> list[tuple[str, int | None]]:
    """C-STORE ``datasets`` on one association; (original SOP Instance UID, status) each.

    Stops early (remaining instances get None) when the association is lost or ``stop`` is set.
    ``timeout`` bounds the wait for each response (pynetdicom's DIMSE timeout).
    """
    results: list[tuple[str, int | None]] = []
    assoc = open_association(port, store_contexts(datasets), calling=calling, timeout=timeout)
    parked = _ParkedReactor(assoc)
    try:
        lost = False
        for ds in datasets:
            status: int | None = None
            if not lost and assoc.is_established and not (stop and stop.is_set()):
                try:
                    status = status_of(assoc.send_c_store(ds))
                except RuntimeError:  # the association went away between check and send
                    status = None
                lost = status is None  # no response: the association is of no further use
            results.append((str(ds.SOPInstanceUID), status))
            if on_status is not None:
                on_status(ds, status)
    finally:
        parked.unpark()
        if assoc.is_established:
            assoc.release()
    return results


def storescu(port: int, paths: Sequence[Path | str], *options: str, calling: str = "STORESCU",
             called: str = CALLED) -> subprocess.CompletedProcess[str]:
    """dcmtk storescu, verbose so that every response status is listed in its output."""
    return subprocess.run(["storescu", "-v", "-aet", calling, "-aec", called, *options,
                           "127.0.0.1", str(port), *map(str, paths)],
                          capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, **DCMTK_ENV})


def echoscu(port: int, *, calling: str = "ECHOSCU",
            called: str = CALLED) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["echoscu", "-v", "-aet", calling, "-aec", called, "127.0.0.1",
                           str(port)], capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, **DCMTK_ENV})


# --- instances -------------------------------------------------------------------------------


def ct_instances(label: str, count: int, *, size: int = 64, patient: int = 0) -> list[Dataset]:
    """``count`` CT images of one new series (distinct SOP Instance UIDs per ``label``)."""
    study = generate_uid(entropy_srcs=["stage1-test-study", label])
    series = generate_uid(entropy_srcs=["stage1-test-series", label])
    who = sample_patients(0)[patient]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the phantom's x/0 at its centre
        return [make_ct_instance(i, study, series, who, size, size) for i in range(count)]
