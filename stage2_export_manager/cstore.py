"""The C-STORE wire path of the stage-2 SCU, on pynetdicom's association and DUL.

pynetdicom negotiates, frames PDUs, runs the state machine and handles release and abort. Four
things are changed for the associations this module makes (:class:`StreamingAE`), each because
a measurement on a 2-core machine showed it mattered (numbers in benchmarks/stage2_export.py):

* :class:`WakingDUL`: pynetdicom's DUL thread sleeps 1 ms whenever it finds nothing to do, so
  each C-STORE waited up to a millisecond to start and again to see its response. This DUL waits
  in ``select()`` on the socket and on a pipe written when a PDU is queued.
* :class:`appliance.dimse.HeldCheckpoint` (through :class:`appliance.dimse.HeldReactorAE`):
  ``send_c_store`` pauses the requestor's reactor thread by clearing an Event and polling a flag
  that can still be stale from the previous call; the reactor then takes the C-STORE-RSP off the
  queue itself ("Received unexpected C-STORE service message") and the SCU waits out the DIMSE
  timeout and gets an empty status, after which the association is aborted. With four parallel
  associations it lost 232 of 2,000 instances in one run. Here the reactor stays paused for the
  life of the association (:func:`appliance.dimse.hold_reactor`).
* :func:`c_store`: the C-STORE-RQ command set (7 elements) is packed with ``struct`` and the
  staged file's data set streamed from disk in PDU-sized P-DATA fragments. ``send_c_store(path)``
  streams too, but encodes the command set twice through pydicom and re-reads the file meta per
  call: 40 % of the CPU per instance, and the CPU is what four parallel associations run out of.
* :class:`StoreResponseDIMSE`: a C-STORE-RSP that arrives whole in one PDV is read with
  ``struct``; anything else goes through pynetdicom's decoder as before.

The bytes on the wire are those pynetdicom would send (a test compares them).
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pynetdicom import evt
from pynetdicom._handlers import (
    standard_dimse_recv_handler,
    standard_dimse_sent_handler,
    standard_pdu_recv_handler,
    standard_pdu_sent_handler,
)
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dsutils import split_dataset
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.pdu_primitives import P_DATA

# Re-exported: the SCU, the benchmark and the tests take them from here.
from appliance.dimse import HeldReactorAE

C_STORE_RQ, C_STORE_RSP = 0x0001, 0x8001
PRIORITY_MEDIUM = 0x0000
MAX_QUEUED_FRAGMENTS = 16  # 2 MiB at storescp's 128 KiB PDUs, 64 MiB at our Receiver's 4 MiB
DATA_SET_PRESENT = 0x0001
_ELEMENT = struct.Struct("<HHI")  # implicit VR little endian: group, element, length
_US, _UL = struct.Struct("<H"), struct.Struct("<I")
# PDV message control header (PS3.8 E.2): bit 0 command/data set, bit 1 last fragment
_COMMAND_LAST, _DATA, _DATA_LAST = b"\x03", b"\x00", b"\x02"


class WakingDUL(DULServiceProvider):
    """pynetdicom's DUL reactor, waiting in ``select()`` instead of sleeping 1 ms when idle.

    The loop is ``DULServiceProvider.run_reactor`` of pynetdicom 3.0 with only the idle wait
    changed. It wakes when the peer sends data or a primitive is queued, and at least every
    :attr:`MAX_WAIT` seconds to look at its timers.
    """

    MAX_WAIT = 0.01

    def __init__(self, assoc: Any) -> None:
        super().__init__(assoc)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._wake_lock = threading.Lock()
        self._wake_open = True

    def _wake(self) -> None:
        with self._wake_lock:  # never write to a closed (perhaps reused) descriptor
            if self._wake_open:
                with contextlib.suppress(BlockingIOError):
                    os.write(self._wake_w, b"\0")

    def send_pdu(self, primitive: Any) -> None:
        super().send_pdu(primitive)
        self._wake()

    def kill_dul(self) -> None:
        super().kill_dul()
        self._wake()

    def _idle_wait(self) -> None:
        if self.to_provider_queue.qsize() or self.event_queue.qsize():
            return
        sock = getattr(self.socket, "socket", None)
        watched: list[Any] = [self._wake_r]
        if sock is not None and sock.fileno() >= 0:
            watched.append(sock)
        try:
            ready, _, _ = select.select(watched, [], [], self.MAX_WAIT)
        except (OSError, ValueError):  # the socket closed under us: the loop notices
            time.sleep(0.001)
            return
        if self._wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(self._wake_r, 4096):
                    pass

    def run_reactor(self) -> None:
        try:
            self._reactor_loop()
        finally:
            with self._wake_lock:
                self._wake_open = False
                os.close(self._wake_r)
                os.close(self._wake_w)

    def _reactor_loop(self) -> None:
        self._idle_timer.start()
        idle = False
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
            if idle:
                self._idle_wait()
            if self._kill_thread:
                break
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception:  # as pynetdicom does: abort, bypassing the state machine
                abort = A_ABORT_RQ()
                abort.source, abort.reason_diagnostic = 0x02, 0x00
                if self.socket is not None:
                    with contextlib.suppress(Exception):
                        self.socket.send(abort.encode())
                self.assoc.is_aborted = True
                self.assoc.is_established = False
                self.assoc._kill = True
                self._kill_thread = True
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                idle = True
                continue
            self.state_machine.do_action(event)
            idle = False


@dataclass(frozen=True)
class StoreResponse:
    """The two fields of a C-STORE-RSP the SCU acts on."""

    Status: int
    MessageIDBeingRespondedTo: int


class StoreResponseDIMSE(DIMSEServiceProvider):
    """DIMSE provider that reads a whole, single-PDV C-STORE-RSP with ``struct``."""

    def receive_primitive(self, primitive: P_DATA) -> None:
        pdvs = primitive.presentation_data_value_list
        if self.message is None and len(pdvs) == 1 and pdvs[0][1][:1] == _COMMAND_LAST:
            fields = parse_command(pdvs[0][1][1:])
            if (fields is not None and fields.get(0x0100) == _US.pack(C_STORE_RSP)
                    and len(fields.get(0x0900, b"")) == 2
                    and len(fields.get(0x0120, b"")) == 2):
                response = StoreResponse(_US.unpack(fields[0x0900])[0],
                                         _US.unpack(fields[0x0120])[0])
                self.msg_queue.put((pdvs[0][0], response))  # type: ignore[arg-type]
                return
        super().receive_primitive(primitive)


class StreamingAE(HeldReactorAE):
    """An AE whose requestor associations use the pieces above, and a held reactor.

    ``_create_socket`` is the one hook pynetdicom calls between building a requestor
    Association and starting its threads.
    """

    def _create_socket(self, assoc: Any, address: Any, tls_args: Any) -> Any:
        assoc.dul = WakingDUL(assoc)
        assoc.dimse = StoreResponseDIMSE(assoc)
        assoc.acse_timeout = assoc.acse_timeout  # the setters push timeouts into the new DUL
        assoc.network_timeout = assoc.network_timeout
        for event, handler in ((evt.EVT_DIMSE_RECV, standard_dimse_recv_handler),
                               (evt.EVT_DIMSE_SENT, standard_dimse_sent_handler),
                               (evt.EVT_PDU_RECV, standard_pdu_recv_handler),
                               (evt.EVT_PDU_SENT, standard_pdu_sent_handler)):
            assoc.unbind(event, handler)  # debug-log formatting of every PDU: pure overhead
        return super()._create_socket(assoc, address, tls_args)


# --- C-STORE ------------------------------------------------------------------------------


def _element(element: int, value: bytes) -> bytes:
    return _ELEMENT.pack(0x0000, element, len(value)) + value


def _uid(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def encode_store_rq(message_id: int, sop_class_uid: str, sop_instance_uid: str,
                    priority: int = PRIORITY_MEDIUM) -> bytes:
    """The C-STORE-RQ command set (PS3.7 9.3.1.1), implicit VR little endian."""
    body = b"".join((
        _element(0x0002, _uid(sop_class_uid)),
        _element(0x0100, _US.pack(C_STORE_RQ)),
        _element(0x0110, _US.pack(message_id)),
        _element(0x0700, _US.pack(priority)),
        _element(0x0800, _US.pack(DATA_SET_PRESENT)),
        _element(0x1000, _uid(sop_instance_uid)),
    ))
    return _element(0x0000, _UL.pack(len(body))) + body


def parse_command(data: bytes) -> dict[int, bytes] | None:
    """Group 0000 elements of a command set by element number; None if it is not one."""
    fields: dict[int, bytes] = {}
    position, end = 0, len(data)
    while position + 8 <= end:
        group, element, length = _ELEMENT.unpack_from(data, position)
        position += 8
        if group != 0x0000 or position + length > end:
            return None
        fields[element] = data[position:position + length]
        position += length
    return fields if position == end else None


def data_set_offset(path: Path, fh: Any) -> int:
    """Where the data set starts in a Part 10 file (after preamble and File Meta)."""
    head = fh.read(144)
    if (len(head) == 144 and head[128:132] == b"DICM" and head[132:138] == b"\x02\x00\x00\x00UL"
            and head[138:140] == b"\x04\x00"):
        return 144 + int(_UL.unpack_from(head, 140)[0])
    return int(split_dataset(path)[1])  # no group length: let pydicom walk the meta


def _wait_for_room(assoc: Any) -> bool:
    """Back-pressure: a large file is not read into memory faster than the DUL sends it."""
    while assoc.dul.to_provider_queue.qsize() >= MAX_QUEUED_FRAGMENTS:
        if not assoc.is_established:
            return False
        time.sleep(0.0005)
    return True


def c_store(assoc: Any, context_id: int, message_id: int, path: Path, sop_class_uid: str,
            sop_instance_uid: str) -> Any | None:
    """Send one C-STORE-RQ with the data set of the file at ``path``; the response, or None.

    None means no response: the peer aborted, the connection dropped or the DIMSE timeout
    expired. The data set goes out in fragments of the peer's maximum PDU length, at most
    :data:`MAX_QUEUED_FRAGMENTS` of them waiting in memory at a time.
    """
    dul = assoc.dul
    command = P_DATA()
    command.presentation_data_value_list.append(
        (context_id, _COMMAND_LAST + encode_store_rq(message_id, sop_class_uid,
                                                     sop_instance_uid)))
    dul.send_pdu(command)
    limit = int(assoc.acceptor.maximum_length or 0)
    with open(path, "rb", buffering=0) as fh:
        offset = data_set_offset(path, fh)
        remaining = os.fstat(fh.fileno()).st_size - offset
        fh.seek(offset)
        chunk = limit - 6 if limit else max(remaining, 1)
        while True:
            data = fh.read(min(chunk, remaining)) if remaining > 0 else b""
            if remaining > 0 and not data:
                raise OSError(f"{path.name} ended early")
            remaining -= len(data)
            fragment = P_DATA()
            fragment.presentation_data_value_list.append(
                (context_id, (_DATA_LAST if remaining <= 0 else _DATA) + data))
            if not _wait_for_room(assoc):
                return None
            dul.send_pdu(fragment)
            if remaining <= 0:
                break
    _context, response = assoc.dimse.get_msg(block=True)
    return response
