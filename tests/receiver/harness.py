"""Run the real Receiver as a subprocess and talk to it with real DICOM peers.

:class:`ReceiverDir` is a folder made by ``tce init --role receiver``; :class:`RunningReceiver`
is ``tce receiver serve --port PORT`` in its own process, stopped with SIGTERM like an operator
or systemd would. Peers are dcmtk's ``storescu``/``echoscu`` and pynetdicom. Tests read the
node's SQLite database with a plain engine (NullPool), which never takes the write lock.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.association import Association
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.pool import NullPool

from appliance.demo.nodes import LOOPBACK, child_environment, free_port, wait_answering
from appliance.demo.nodes import echo as node_echo
from appliance.dimse import set_nodelay
from appliance.models import AuditEvent, Instance, Node, QuarantineItem, Study
from appliance.settings import Settings, load
from appliance.synthetic import make_ct_instance, sample_patients
from tests.stage1_modality.harness import Negotiation
from tests.stage1_modality.harness import negotiate as stage1_negotiate

TCE = Path(sys.executable).parent / "tce"
CALLED = "TCE_RECEIVER"
SUCCESS = 0x0000
DCMTK_ENV = {"TCP_NODELAY": "1"}  # Debian's dcmtk leaves Nagle on otherwise (45 ms per store)


def dataset_part(data: bytes) -> bytes:
    """The bytes after the File Meta Information of a Part 10 file (as sent in a C-STORE)."""
    assert data[128:132] == b"DICM" and data[132:136] == b"\x02\x00\x00\x00"
    return data[144 + int.from_bytes(data[140:144], "little"):]


class ReceiverDir:
    """A Receiver folder made by ``tce init --role receiver``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "tce.yaml"
        done = subprocess.run([str(TCE), "init", str(root), "--role", "receiver"],
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        self._engine: Engine | None = None

    def configure(self, **receiver: Any) -> None:
        """Change ``receiver.*`` settings in tce.yaml (read when the node starts)."""
        data = yaml.safe_load(self.config.read_text(encoding="utf-8"))
        data["receiver"].update(receiver)
        self.config.write_text(yaml.safe_dump(data), encoding="utf-8")

    @property
    def settings(self) -> Settings:
        return load(self.config, environ={})

    @property
    def store(self) -> Path:
        return self.settings.receiver.store_dir

    @property
    def env(self) -> dict[str, str]:
        return child_environment(self.config)

    def tce(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(TCE), *args], capture_output=True, text=True,
                              timeout=timeout, env=self.env, check=False)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = create_engine(str(self.settings.database_url), poolclass=NullPool)
        return self._engine

    def _rows(self, query: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def instances(self) -> dict[str, Any]:
        """Instance rows of the Receiver by SOP Instance UID."""
        rows = self._rows(select(Instance.__table__).where(Instance.node == Node.RECEIVER))
        return {row.new_sop_instance_uid: row for row in rows}

    def studies(self) -> dict[str, Any]:
        rows = self._rows(select(Study.__table__).where(Study.node == Node.RECEIVER))
        return {row.new_study_instance_uid: row for row in rows}

    def quarantine(self) -> list[Any]:
        return self._rows(select(QuarantineItem.__table__).order_by(QuarantineItem.id))

    def audit(self, action: str) -> list[Any]:
        return self._rows(select(AuditEvent.__table__).where(AuditEvent.action == action)
                          .order_by(AuditEvent.id))

    def store_files(self) -> list[Path]:
        return sorted(p for p in self.store.rglob("*") if p.is_file())

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


class RunningReceiver:
    """``tce receiver serve --port PORT [--ae-title AET]`` as a child process."""

    def __init__(self, node: ReceiverDir, port: int, ae_title: str | None = None,
                 echo_as: str = "PYECHO", echo_from: str | None = None) -> None:
        self.node = node
        self.port = port
        self.ae_title = ae_title or CALLED
        self.log_path = node.root / f"serve-{port}.log"
        argv = [str(TCE), "receiver", "serve", "--port", str(port)]
        if ae_title:
            argv += ["--ae-title", ae_title]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, env=node.env, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        self.returncode: int | None = None
        self.wait_ready(echo_as, echo_from)

    def wait_ready(self, calling: str, host: str | None, timeout: float = 60) -> None:
        """Until a C-ECHO succeeds (:func:`appliance.demo.nodes.wait_answering`)."""
        wait_answering(self.proc, LOOPBACK, self.port, self.ae_title, calling=calling,
                       bind_address=(host, 0) if host else None, timeout=timeout,
                       what="receiver", log=self.log)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM; returns the exit status."""
        if self.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            self.returncode = self.proc.wait(timeout)
            self._log.close()
        return self.returncode

    @property
    def running(self) -> bool:
        return self.returncode is None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@dataclass
class ReceiverFactory:
    """Makes Receiver folders and starts nodes; stops whatever still runs at teardown."""

    make_dir: Callable[[str], Path]
    started: list[RunningReceiver] = field(default_factory=list)
    dirs: list[ReceiverDir] = field(default_factory=list)

    def folder(self, name: str = "receiver", **receiver: Any) -> ReceiverDir:
        node = ReceiverDir(self.make_dir(name))
        if receiver:
            node.configure(**receiver)
        self.dirs.append(node)
        return node

    def start(self, node: ReceiverDir, port: int | None = None, **kwargs: Any) -> RunningReceiver:
        running = RunningReceiver(node, port or free_port(), **kwargs)
        self.started.append(running)
        return running

    def close(self) -> list[str]:
        """Stop every node still running; the problems found (non-zero exits)."""
        problems = []
        for running in self.started:
            if running.returncode is None:
                code = running.stop()
                if code != 0:
                    problems.append(f"receiver on port {running.port} exited {code}:\n"
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


def negotiate(port: int, contexts: Sequence[tuple[str, Sequence[str]]], *,
              calling: str = "PYSEND", bind_address: tuple[str, int] | None = None
              ) -> Negotiation:
    """Request an association with ``contexts`` and release it; what the acceptor answered."""
    return stage1_negotiate(port, contexts, calling=calling, called=CALLED,
                            bind_address=bind_address)


def store_contexts(datasets: Iterable[Dataset]) -> list[tuple[str, list[str]]]:
    classes = sorted({str(ds.SOPClassUID) for ds in datasets})
    return [(uid, [ExplicitVRLittleEndian]) for uid in classes]


def open_association(port: int, contexts: Sequence[tuple[str, Sequence[str]]], *,
                     calling: str = "PYSEND", timeout: float = 30) -> Association:
    ae = AE(ae_title=calling)
    for abstract, syntaxes in contexts:
        ae.add_requested_context(abstract, list(syntaxes))
    ae.dimse_timeout = ae.network_timeout = ae.acse_timeout = timeout
    assoc = ae.associate("127.0.0.1", port, ae_title=CALLED,
                         evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay)])
    assert assoc.is_established, "the Receiver refused an association it should accept"
    return assoc


def status_of(result: Dataset) -> int | None:
    """The C-STORE response status, or None when no response came."""
    return int(result.Status) if "Status" in result else None


def send(port: int, items: Sequence[Dataset | Path], *, calling: str = "PYSEND",
         contexts: Sequence[tuple[str, Sequence[str]]] | None = None,
         between: Callable[[int], None] | None = None) -> list[int | None]:
    """C-STORE datasets (or files, sent as they are when chunked sending is on) on one
    association; the status of each. ``between(i)`` runs after the i-th response."""
    if contexts is None:
        contexts = store_contexts(i for i in items if isinstance(i, Dataset))
    assoc = open_association(port, contexts, calling=calling)
    statuses: list[int | None] = []
    try:
        for index, item in enumerate(items):
            statuses.append(status_of(assoc.send_c_store(item)))
            if between is not None:
                between(index)
    finally:
        if assoc.is_established:
            assoc.release()
    return statuses


def storescu(port: int, paths: Sequence[Path | str], *options: str,
             calling: str = "STORESCU") -> subprocess.CompletedProcess[str]:
    """dcmtk storescu, verbose so that every response status is listed."""
    return subprocess.run(["storescu", "-v", "-aet", calling, "-aec", CALLED, *options,
                           "127.0.0.1", str(port), *map(str, paths)],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, **DCMTK_ENV})


def echoscu(port: int, *, calling: str = "ECHOSCU") -> subprocess.CompletedProcess[str]:
    return subprocess.run(["echoscu", "-v", "-aet", calling, "-aec", CALLED, "127.0.0.1",
                           str(port)], capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, **DCMTK_ENV})


# --- instances -------------------------------------------------------------------------------


def ct_instances(label: str, count: int, *, size: int = 64) -> list[Dataset]:
    """``count`` small CT images of one new series (UIDs distinct per ``label``)."""
    study = generate_uid(entropy_srcs=["receiver-test-study", label])
    series = generate_uid(entropy_srcs=["receiver-test-series", label])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the phantom's x/0 at its centre
        return [make_ct_instance(i, study, series, sample_patients(0)[0], size, size)
                for i in range(count)]


def write(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
