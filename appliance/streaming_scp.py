"""A storage SCP whose data path streams each received dataset straight into a file.

Why not pynetdicom's association machinery for this: profiled on the stage-1 ingest benchmark
(2,000 CT instances of 0.5 MB), a pynetdicom SCP that does nothing but write the received bytes
spends about 3 ms of CPU per instance, and waits on 1 ms polling sleeps in two threads per
association; most of the CPU goes to building pydicom datasets for every command, response and
File Meta header, and to holding each dataset in memory several times over. That alone left no
room for the fsyncs an acknowledgement needs within a third of dcmtk storescp's rate. Here each
association is one thread that blocks on its socket: a P-DATA-TF PDU is read into one reused
buffer and each Presentation Data Value is handed, as a memoryview of that buffer, to the
handler's :class:`Incoming` (which writes it to its spool file); commands and responses are
encoded by hand (:mod:`appliance.dimse_codec`); nothing is decoded that the answer does not
need. Memory per association is one buffer, whatever the size of the instances.

pynetdicom still does everything of the association phase that it does well: decoding the
A-ASSOCIATE-RQ, presentation context and SCP/SCU role negotiation, and encoding the AC, RJ and
abort PDUs. Association rejections use the standard reasons (calling AE title not recognised,
local limit exceeded), so a peer sees the same answers as from any pynetdicom SCP. Only C-STORE
and C-ECHO are served, as the accepted contexts allow nothing else.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom._globals import APPLICATION_CONTEXT_NAME
from pynetdicom.pdu import A_ABORT_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    A_P_ABORT,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import PresentationContext, negotiate_as_acceptor

from appliance.dimse import MAX_PDU, CallerRule, Status
from appliance.dimse_codec import (
    NO_DATASET,
    MalformedCommand,
    command_value,
    p_data_command,
    parse_command,
    part10_header,
    response_command,
    us_value,
)
from appliance.logging import get_logger

__all__ = ["Incoming", "ScpOptions", "StoreHandler", "StoreRequest", "StreamingScp"]

LOG = get_logger("tce.scp")

A_ASSOCIATE_RQ_TYPE, P_DATA_TF_TYPE, A_RELEASE_RQ_TYPE, A_ABORT_TYPE = 0x01, 0x04, 0x05, 0x07
C_STORE_RQ, C_ECHO_RQ, C_STORE_RSP, C_ECHO_RSP = 0x0001, 0x0030, 0x8001, 0x8030
_PDU_HEADER = struct.Struct(">BxL")
_PDV_LENGTH = struct.Struct(">L")
_RELEASE_RP = b"\x06\x00\x00\x00\x00\x04\x00\x00\x00\x00"
_MAX_PDU_ACCEPTED = 64 * 1024 * 1024  # larger than announced is tolerated, up to this
_UNRECOGNISED_PDU, _UNEXPECTED_PDU, _INVALID_PARAMETER = 0x01, 0x02, 0x06


@dataclass(frozen=True)
class StoreRequest:
    """A C-STORE request whose dataset is about to arrive (values stripped of padding)."""

    message_id: int
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    calling_ae: str
    peer: str

    def part10_header(self) -> bytes:
        """Preamble and File Meta Information for the dataset, as pynetdicom writes them."""
        return part10_header(self.sop_class_uid, self.sop_instance_uid,
                             self.transfer_syntax_uid)


class Incoming(Protocol):
    """Where one dataset goes while it arrives; :meth:`complete` returns the DIMSE status."""

    def write(self, fragment: memoryview) -> None: ...

    def complete(self) -> int: ...

    def abandon(self) -> None: ...


# Given a request, where its dataset goes, or at once the status to answer (after draining).
StoreHandler = Callable[[StoreRequest], "Incoming | int"]


@dataclass(frozen=True)
class ScpOptions:
    ae_title: str
    contexts: Sequence[PresentationContext]
    allowed_callers: Sequence[CallerRule] = ()
    max_associations: int = 10
    acse_timeout: float = 30
    network_timeout: float = 60  # idle between messages
    dimse_timeout: float = 60  # for the rest of a message once its first fragment came
    max_pdu: int = MAX_PDU


class StreamingScp:
    """Accepts associations on one listening socket, one thread per association."""

    def __init__(self, options: ScpOptions, on_store: StoreHandler) -> None:
        self.options = options
        self.on_store = on_store
        self._listener: socket.socket | None = None
        self._active: set[_Association] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, bind: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in bind else socket.AF_INET
        listener = socket.create_server((bind, port), family=family, backlog=64)
        self._listener = listener
        self._thread = threading.Thread(target=self._accept_loop, name="scp-accept",
                                        daemon=True)
        self._thread.start()

    @property
    def active_associations(self) -> int:
        with self._lock:
            return len(self._active)

    def shutdown(self) -> None:
        """Stop accepting; associations in progress run to their end."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def _accept_loop(self) -> None:
        assert self._listener is not None
        listener = self._listener
        while not self._stopping.is_set():
            ready, _, _ = select.select([listener], [], [], 0.2)
            if not ready:
                continue
            try:
                conn, address = listener.accept()
            except OSError:
                continue
            association = _Association(self, conn, str(address[0]))
            with self._lock:
                self._active.add(association)
            threading.Thread(target=association.run, name=f"scp-{address[0]}:{address[1]}",
                             daemon=True).start()

    def _ended(self, association: _Association) -> None:
        with self._lock:
            self._active.discard(association)


class _Closed(Exception):
    """The peer closed the connection, or the association ended."""


class _Abort(Exception):
    """A protocol error: answer with an A-ABORT (source 2, ``reason``) and close."""

    def __init__(self, reason: int) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Pending:
    context_id: int
    request: StoreRequest
    incoming: Incoming | None
    status: int  # the answer when ``incoming`` is None (refused at once, or its write failed)


class _Association:
    def __init__(self, server: StreamingScp, sock: socket.socket, peer: str) -> None:
        self.server = server
        self.options = server.options
        self.sock = sock
        self.peer = peer
        self.calling_ae = ""
        self.contexts: dict[int, PresentationContext] = {}
        self.pending: _Pending | None = None
        self.command = bytearray()
        self.buffer = bytearray(self.options.max_pdu)
        self.header = bytearray(6)
        self.instances = 0

    # -- the thread ---------------------------------------------------------------------------
    def run(self) -> None:
        started, how = time.monotonic(), "closed"
        try:
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._negotiate():
                how = self._transfer()
        except _Abort as exc:
            how = "aborted"
            self._send_abort(exc.reason)
        except TimeoutError:  # silent peer: before an association just close (ARTIM), else abort
            how = "timed out" if self.calling_ae else "closed"
            if self.calling_ae:
                self._send_abort(0)
        except (_Closed, OSError):  # peer gone
            how = "aborted" if self.calling_ae else "closed"
        except Exception as exc:  # a bug here must not take the node down
            how = "aborted"
            LOG.error("scp.association_failed", error=type(exc).__name__)
            self._send_abort(0)
        finally:
            if self.pending is not None and self.pending.incoming is not None:
                self.pending.incoming.abandon()
            with contextlib.suppress(OSError):
                self.sock.close()
            self.server._ended(self)
            if self.contexts:
                LOG.info("scp.association_ended", how=how, calling_ae=self.calling_ae,
                         peer=self.peer, instances=self.instances,
                         seconds=round(time.monotonic() - started, 3))

    # -- association phase --------------------------------------------------------------------
    def _negotiate(self) -> bool:
        self.sock.settimeout(self.options.acse_timeout)
        kind, length = self._read_header()
        if kind != A_ASSOCIATE_RQ_TYPE:
            raise _Abort(_UNEXPECTED_PDU)
        pdu = A_ASSOCIATE_RQ()
        pdu.decode(bytes(self.header) + bytes(self._read_payload(length)))
        request = pdu.to_primitive()
        self.calling_ae = str(request.calling_ae_title).strip()
        if not self._caller_allowed():
            return self._reject(request, (0x01, 0x01, 0x03), "calling AE title not recognised")
        if self.server.active_associations > self.options.max_associations:
            return self._reject(request, (0x02, 0x03, 0x02), "too many associations")
        roles = {item.sop_class_uid: (item.scu_role, item.scp_role)
                 for item in request.user_information
                 if isinstance(item, SCP_SCU_RoleSelectionNegotiation)
                 and item.sop_class_uid is not None}
        results, role_items = negotiate_as_acceptor(
            request.presentation_context_definition_list, list(self.options.contexts), roles)
        accept = A_ASSOCIATE()
        accept.application_context_name = APPLICATION_CONTEXT_NAME
        accept.calling_ae_title = request.calling_ae_title
        accept.called_ae_title = request.called_ae_title
        accept.result, accept.result_source = 0x00, 0x01
        accept.presentation_context_definition_results_list = results
        maximum = MaximumLengthNotification()
        maximum.maximum_length_received = self.options.max_pdu
        implementation = ImplementationClassUIDNotification()
        implementation.implementation_class_uid = PYNETDICOM_IMPLEMENTATION_UID
        version = ImplementationVersionNameNotification()
        version.implementation_version_name = PYNETDICOM_IMPLEMENTATION_VERSION
        accept.user_information = [maximum, implementation, version, *role_items]
        answer = A_ASSOCIATE_AC()
        answer.from_primitive(accept)
        self.sock.sendall(answer.encode())
        self.contexts = {int(cx.context_id or 0): cx for cx in results if cx.result == 0x00}
        LOG.info("scp.association_accepted", calling_ae=self.calling_ae, peer=self.peer,
                 contexts=len(self.contexts), rejected_contexts=len(results) - len(self.contexts))
        return True

    def _caller_allowed(self) -> bool:
        rules = self.options.allowed_callers
        return not rules or any(rule.ae_title == self.calling_ae
                                and rule.host in (None, self.peer) for rule in rules)

    def _reject(self, request: A_ASSOCIATE, reason: tuple[int, int, int], why: str) -> bool:
        reject = A_ASSOCIATE()
        reject.result, reject.result_source, reject.diagnostic = reason
        pdu = A_ASSOCIATE_RJ()
        pdu.from_primitive(reject)
        self.sock.sendall(pdu.encode())
        LOG.warning("scp.association_rejected", calling_ae=self.calling_ae, peer=self.peer,
                    reason=why)
        self._linger()
        return False

    # -- data transfer phase ------------------------------------------------------------------
    def _transfer(self) -> str:
        idle, busy = self.options.network_timeout, self.options.dimse_timeout
        current = idle
        self.sock.settimeout(current)
        while True:
            # Between messages the association may idle for the network timeout; once a
            # message has begun, its next fragment must come within the DIMSE timeout.
            wanted = busy if self.pending is not None or self.command else idle
            if wanted != current:
                current = wanted
                self.sock.settimeout(current)
            kind, length = self._read_header()
            if kind == P_DATA_TF_TYPE:
                self._p_data(self._read_payload(length))
            elif kind == A_RELEASE_RQ_TYPE:
                self._read_payload(length)
                self.sock.sendall(_RELEASE_RP)
                self._linger()
                return "released"
            elif kind == A_ABORT_TYPE:
                self._read_payload(length)
                return "aborted"
            else:
                raise _Abort(_UNEXPECTED_PDU if 0x01 <= kind <= 0x07 else _UNRECOGNISED_PDU)

    def _p_data(self, payload: memoryview) -> None:
        pos, end = 0, len(payload)
        while pos < end:
            if pos + 6 > end:
                raise _Abort(_INVALID_PARAMETER)
            length = _PDV_LENGTH.unpack_from(payload, pos)[0]
            stop = pos + 4 + length
            if length < 2 or stop > end:
                raise _Abort(_INVALID_PARAMETER)
            context_id, control = payload[pos + 4], payload[pos + 5]
            if context_id not in self.contexts:
                raise _Abort(_INVALID_PARAMETER)
            fragment = payload[pos + 6:stop]
            pos = stop
            if control & 0x01:
                self.command += fragment
                if control & 0x02:
                    command, self.command = bytes(self.command), bytearray()
                    try:
                        elements = parse_command(command)
                    except MalformedCommand:
                        raise _Abort(_INVALID_PARAMETER) from None
                    self._on_command(context_id, elements)
            else:
                self._on_dataset(context_id, fragment, last=bool(control & 0x02))

    def _on_command(self, context_id: int, command: dict[int, bytes]) -> None:
        if self.pending is not None:
            raise _Abort(_UNEXPECTED_PDU)  # a new command before the last dataset fragment
        field = us_value(command.get(0x0100))
        message_id = us_value(command.get(0x0110))
        sop_class = command_value(command.get(0x0002))
        has_dataset = us_value(command.get(0x0800), NO_DATASET) != NO_DATASET
        if field == C_ECHO_RQ and not has_dataset:
            self._respond(context_id, C_ECHO_RSP, message_id, sop_class, None, Status.SUCCESS)
            return
        if field != C_STORE_RQ or not has_dataset:
            raise _Abort(_INVALID_PARAMETER)
        context = self.contexts[context_id]
        request = StoreRequest(message_id, sop_class, command_value(command.get(0x1000)),
                               str(context.transfer_syntax[0]), self.calling_ae, self.peer)
        try:
            outcome = self.server.on_store(request)
        except Exception as exc:  # the handler's bug: the sender hears a failure, not silence
            LOG.error("scp.store_handler_failed", error=type(exc).__name__)
            outcome = int(Status.PROCESSING_FAILURE)
        if isinstance(outcome, int):
            self.pending = _Pending(context_id, request, None, outcome)
        else:
            self.pending = _Pending(context_id, request, outcome, int(Status.SUCCESS))

    def _on_dataset(self, context_id: int, fragment: memoryview, *, last: bool) -> None:
        pending = self.pending
        if pending is None or pending.context_id != context_id:
            raise _Abort(_UNEXPECTED_PDU)
        if pending.incoming is not None:
            try:
                pending.incoming.write(fragment)
            except OSError as exc:  # disk full: keep reading, answer out of resources
                LOG.error("scp.write_failed", error=type(exc).__name__)
                pending.incoming.abandon()
                pending.incoming, pending.status = None, int(Status.OUT_OF_RESOURCES)
        if not last:
            return
        status = pending.status
        if pending.incoming is not None:
            try:
                status = pending.incoming.complete()
            except Exception as exc:
                LOG.error("scp.store_handler_failed", error=type(exc).__name__)
                status = int(Status.PROCESSING_FAILURE)
        self.pending = None
        self.instances += 1
        request = pending.request
        self._respond(context_id, C_STORE_RSP, request.message_id, request.sop_class_uid,
                      request.sop_instance_uid, status)

    def _respond(self, context_id: int, field: int, message_id: int, sop_class: str,
                 sop_instance: str | None, status: int) -> None:
        command = response_command(field, message_id, sop_class, sop_instance, status)
        self.sock.sendall(p_data_command(context_id, command))

    # -- the socket ---------------------------------------------------------------------------
    def _read_header(self) -> tuple[int, int]:
        self._recv_into(memoryview(self.header))
        kind, length = _PDU_HEADER.unpack(self.header)
        return int(kind), int(length)

    def _read_payload(self, length: int) -> memoryview:
        if length > len(self.buffer):
            if length > _MAX_PDU_ACCEPTED:
                raise _Abort(_INVALID_PARAMETER)
            self.buffer = bytearray(length)
        view = memoryview(self.buffer)[:length]
        self._recv_into(view)
        return view

    def _recv_into(self, view: memoryview) -> None:
        got, size = 0, len(view)
        while got < size:
            n = self.sock.recv_into(view[got:], size - got)
            if not n:
                raise _Closed
            got += n

    def _send_abort(self, reason: int) -> None:
        """A-ABORT from the service provider (source 2); reason 0: not specified."""
        abort = A_P_ABORT()
        abort.provider_reason = reason
        pdu = A_ABORT_RQ()
        pdu.from_primitive(abort)
        with contextlib.suppress(OSError):
            self.sock.sendall(pdu.encode())
        self._linger()

    def _linger(self) -> None:
        """Let the peer close first, as it must after RJ, RP or an abort (for up to 2 s).

        Closing (or even half-closing) first can make a peer see "connection closed" before
        it has read the PDU just sent, and report an abort instead of the rejection."""
        with contextlib.suppress(OSError):
            self.sock.settimeout(min(self.options.acse_timeout, 2.0))
            while self.sock.recv(65536):
                pass

