"""Run a DICOM node (``tce stage1 serve``, ``tce receiver serve``) as a child process.

Why a runner of its own: the demo, and the test harnesses after it, need the real node exactly
as an operator runs it (its own process, its own ``tce.yaml``, stopped by SIGTERM), not an
imitation in the caller's process. So :meth:`NodeProcess.start` launches
``tce --config CONFIG ROLE serve --port N --ae-title AET`` on a free loopback port, and
returns only once the node answers C-ECHO (listening is not enough: the SCP must be serving).
:meth:`NodeProcess.stop` sends SIGTERM and requires exit status 0, since a node that cannot stop
cleanly has lost or half-written something; the error then carries the tail of its log.
The command is the ``tce`` script installed beside this Python, else the same entry point run
through ``python -c`` (not ``-m appliance.cli``, which would load the CLI module twice).

The child runs in its own session, so a Ctrl-C on the terminal reaches only the caller, which
then stops its nodes in order; and without ``TCE_DATABASE_URL``, so a node made by ``tce init``
for a demo or test never writes into the database a user configured for real work.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from appliance.settings import DATABASE_URL_ENV, Settings, load

SERVING_ROLES = ("stage1", "receiver")  # the roles that listen for associations
LOOPBACK = "127.0.0.1"
ECHO_CALLING = "TCE_ECHO"
SUCCESS = 0x0000
START_ATTEMPTS = 3  # a free port can be taken between choosing it and the node binding it
LOG_TAIL_CHARACTERS = 3000
WILDCARD_BINDS = ("", "0.0.0.0", "::")


class NodeError(Exception):
    """A node did not start, did not answer, or did not stop with exit status 0."""


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nothing listens on right now (the kernel's choice of an ephemeral port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def echo(host: str, port: int, called: str, *, calling: str = ECHO_CALLING,
         bind_address: tuple[str, int] | None = None, timeout: float = 5.0) -> int | None:
    """C-ECHO with pynetdicom; the status, or None when no association was established."""
    from pynetdicom import AE

    from appliance.dimse import VERIFICATION_SOP_CLASS, quiet_identifiers

    quiet_identifiers()
    ae = AE(ae_title=calling)
    ae.add_requested_context(VERIFICATION_SOP_CLASS)
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = timeout
    kwargs: dict[str, Any] = {"bind_address": bind_address} if bind_address else {}
    assoc = ae.associate(host, port, ae_title=called, **kwargs)
    if not assoc.is_established:
        return None
    try:
        status = assoc.send_c_echo()
        return int(status.Status) if "Status" in status else None
    finally:
        assoc.release()


@contextlib.contextmanager
def _quiet_connect_errors() -> Iterator[None]:
    """While polling a starting node, "connection refused" is expected: do not log it.

    (A bare TCP connect would be quieter still, but pynetdicom keeps such a connection as an
    association until its ACSE timeout, which then delays the node's graceful stop.)
    """
    logger = logging.getLogger("pynetdicom.transport")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def echo_caller(allowed_callers: Sequence[str], default: str = ECHO_CALLING
                ) -> tuple[str, tuple[str, int] | None]:
    """A calling AE title (and source address) that a node with this allow-list accepts."""
    if not allowed_callers:
        return default, None
    calling, _, host = allowed_callers[0].partition("@")
    return calling, ((host, 0) if host else None)


def wait_answering(proc: subprocess.Popen[bytes], host: str, port: int, called: str, *,
                   calling: str = ECHO_CALLING, bind_address: tuple[str, int] | None = None,
                   timeout: float = 60.0, what: str = "node",
                   log: Callable[[], str] | None = None) -> None:
    """Until the node ``proc`` answers C-ECHO at ``host:port``; raises :class:`NodeError` if it
    exits first or stays mute for ``timeout`` seconds (the error ends with ``log()``).

    Shared by :class:`NodeProcess` and the test harnesses, which start nodes their own way."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise NodeError(f"{what} exited with status {proc.returncode} before answering"
                            f" C-ECHO on port {port}:\n{log() if log else ''}")
        with _quiet_connect_errors():
            status = echo(host, port, called, calling=calling, bind_address=bind_address,
                          timeout=2)
        if status == SUCCESS:
            return
        time.sleep(0.1)
    raise NodeError(f"{what} did not answer C-ECHO on port {port} within {timeout:.0f} s:\n"
                    f"{log() if log else ''}")


def tce_command() -> list[str]:
    """argv prefix that runs ``tce`` with this interpreter."""
    script = Path(sys.executable).parent / "tce"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-c", "import sys; from appliance.cli import main; sys.exit(main())"]


def child_environment(config: Path) -> dict[str, str]:
    """The environment of a node child process: this one's, pinned to ``config``."""
    env = {k: v for k, v in os.environ.items() if k != DATABASE_URL_ENV}
    env["TCE_CONFIG"] = str(config)
    return env


@dataclass
class NodeProcess:
    """One running ``tce ROLE serve``; use :meth:`start`, then :meth:`stop` (or ``with``)."""

    role: str
    config: Path
    settings: Settings
    host: str
    port: int
    ae_title: str
    output_path: Path  # the child's stdout and stderr
    proc: subprocess.Popen[bytes]
    _output: IO[bytes] = field(repr=False)
    returncode: int | None = None

    @classmethod
    def start(cls, role: str, config: Path, *, port: int | None = None,
              ae_title: str | None = None, output: Path | None = None,
              timeout: float = 60.0) -> NodeProcess:
        """Start the node and wait until it answers C-ECHO; raises :class:`NodeError`.

        Without ``port`` a free loopback port is chosen, and chosen again if the node exits
        because the address is in use (another process may have taken it in between).
        """
        if role not in SERVING_ROLES:
            raise ValueError(f"role {role!r} does not serve; use one of {SERVING_ROLES}")
        config = config.absolute()
        settings = load(config, environ={})
        section = settings.stage1 if role == "stage1" else settings.receiver
        ae_title = ae_title or section.ae_title
        output = output or config.parent / f"{role}-serve.out"
        attempts = 1 if port is not None else START_ATTEMPTS
        for attempt in range(1, attempts + 1):
            host = LOOPBACK if section.bind in WILDCARD_BINDS else section.bind
            chosen = port if port is not None else free_port(host)
            node = cls._launch(role, config, settings, host, chosen, ae_title, output)
            try:
                node.wait_ready(timeout)
                return node
            except NodeError:
                node.kill()
                if attempt == attempts or "in use" not in node.log_tail():
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    @classmethod
    def _launch(cls, role: str, config: Path, settings: Settings, host: str, port: int,
                ae_title: str, output: Path) -> NodeProcess:
        argv = [*tce_command(), "--config", str(config), role, "serve", "--port", str(port),
                "--ae-title", ae_title]
        output.parent.mkdir(parents=True, exist_ok=True)
        sink = open(output, "ab")  # noqa: SIM115 - closed when the node has stopped
        proc = subprocess.Popen(argv, env=child_environment(config), stdin=subprocess.DEVNULL,
                                stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        return cls(role, config, settings, host, port, ae_title, output, proc, sink)

    @property
    def address(self) -> str:
        """``AE@HOST:PORT``, as ``tce stage2 export --to`` takes it."""
        return f"{self.ae_title}@{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.returncode is None and self.proc.poll() is None

    @property
    def log_file(self) -> Path | None:
        """The node's own JSON-lines log (``log_file`` in its tce.yaml), if it has one."""
        return self.settings.log_file

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until a C-ECHO succeeds; raises :class:`NodeError` if the node exits or stays mute."""
        section = self.settings.stage1 if self.role == "stage1" else self.settings.receiver
        calling, bind = echo_caller(section.allowed_callers)
        wait_answering(self.proc, self.host, self.port, self.ae_title, calling=calling,
                       bind_address=bind, timeout=timeout, what=self.role, log=self.log_tail)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, as an operator or systemd would; raises :class:`NodeError` unless exit 0."""
        if self.returncode is None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.returncode = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise NodeError(f"{self.role} did not stop within {timeout:.0f} s of SIGTERM and"
                                f" was killed:\n{self.log_tail()}") from None
            finally:
                self._output.close()
        if self.returncode != 0:
            raise NodeError(f"{self.role} stopped with exit status {self.returncode}"
                            f" (expected 0):\n{self.log_tail()}")
        return self.returncode

    def kill(self) -> None:
        """SIGKILL, for a node that must not outlive a failed start."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.returncode = self.proc.wait(30)
        self._output.close()

    def log(self) -> str:
        """The node's output and its log file, as text."""
        parts = []
        for path in (self.output_path, self.log_file):
            if path is not None and path.is_file():
                parts.append(path.read_text(encoding="utf-8", errors="replace"))
        return "\n".join(parts)

    def log_tail(self) -> str:
        return self.log()[-LOG_TAIL_CHARACTERS:]

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if kind is None:
            self.stop()
        elif self.returncode is None:  # already failing: stop, but do not mask the error
            with contextlib.suppress(NodeError):
                self.stop()
