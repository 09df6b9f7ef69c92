"""The streaming storage SCP on loopback, against real peers: dcmtk and pynetdicom.

The SCP runs in this process with a handler that keeps what arrives in files, so the tests see
exactly the bytes a node's handler is given. What a peer sees is checked the way the peer sees
it: statuses, association results and reasons, aborts and closed connections.
"""

from __future__ import annotations

import io
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from appliance.dimse import CallerRule, scp_contexts
from appliance.streaming_scp import ScpOptions, StoreRequest, StreamingScp
from appliance.synthetic import _uid, make_ct_instance, sample_patients
from tests.stage1_modality.harness import negotiate

EXPLICIT, IMPLICIT = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
CT = [(str(CTImageStorage), [EXPLICIT])]
CALLED = "STREAMER"
DCMTK_ENV = {"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"}

pytestmark = pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk not installed")


@dataclass
class Sink:
    """A handler that keeps each dataset as ``<SOP Instance UID>.dcm`` (header + bytes)."""

    folder: Path
    answers: dict[str, int] = field(default_factory=dict)  # refuse these at once
    failing: set[str] = field(default_factory=set)  # raise in complete()
    abandoned: list[str] = field(default_factory=list)
    started: threading.Event = field(default_factory=threading.Event)

    def __call__(self, request: StoreRequest) -> _Kept | int:
        self.started.set()
        if request.sop_instance_uid in self.answers:
            return self.answers[request.sop_instance_uid]
        return _Kept(self, request)


class _Kept:
    def __init__(self, sink: Sink, request: StoreRequest) -> None:
        self.sink, self.request = sink, request
        self.data = bytearray(request.part10_header())

    def write(self, fragment: memoryview) -> None:
        self.data += fragment

    def complete(self) -> int:
        if self.request.sop_instance_uid in self.sink.failing:
            raise RuntimeError("handler bug")
        (self.sink.folder / f"{self.request.sop_instance_uid}.dcm").write_bytes(self.data)
        return 0

    def abandon(self) -> None:
        self.sink.abandoned.append(self.request.sop_instance_uid)


@dataclass
class Running:
    scp: StreamingScp
    sink: Sink
    port: int


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Any]:
    servers: list[StreamingScp] = []

    def _start(**options: Any) -> Running:
        sink = Sink(tmp_path / f"kept{len(servers)}")
        sink.folder.mkdir()
        contexts = scp_contexts([str(CTImageStorage)], options.pop("syntaxes", [EXPLICIT,
                                                                              IMPLICIT]))
        scp = StreamingScp(ScpOptions(CALLED, contexts, **options), sink)
        port = _free_port()
        scp.start("127.0.0.1", port)
        servers.append(scp)
        return Running(scp, sink, port)

    yield _start
    for scp in servers:
        scp.shutdown()


def _ct(label: str, n: int = 1, size: int = 64) -> list[Dataset]:
    return [make_ct_instance(i, _uid(3, label, "study"), _uid(3, label, "series"),
                             sample_patients(0)[0], size, size) for i in range(n)]


def _write(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def _dataset_part(data: bytes) -> bytes:
    return data[144 + int.from_bytes(data[140:144], "little"):]


def _associate(port: int, contexts: list[tuple[str, list[str]]] = CT, calling: str = "PYSCU",
               **kwargs: Any) -> Association:
    ae = AE(ae_title=calling)
    for abstract, syntaxes in contexts:
        ae.add_requested_context(abstract, syntaxes)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    return ae.associate("127.0.0.1", port, ae_title=CALLED, **kwargs)


def _rejection(port: int, calling: str = "PYSCU",
               bind_address: tuple[str, int] | None = None) -> tuple[int, int, int] | None:
    """(result, source, reason) of an A-ASSOCIATE-RJ, or None when the association was accepted.

    Through the stage-1 harness's ``negotiate``, which also reads a rejection that pynetdicom's
    requestor received but mistook for an abort (a race it has with SCPs that reject at once).
    """
    outcome = negotiate(port, CT, calling=calling, called=CALLED, bind_address=bind_address)
    if outcome.established:
        return None
    assert outcome.rejected, f"neither accepted nor rejected: {outcome}"
    assert outcome.result is not None and outcome.source is not None
    assert outcome.reason is not None
    return outcome.result, outcome.source, outcome.reason


# --- data ----------------------------------------------------------------------------------------


def test_storescu_files_arrive_as_sent_with_a_readable_header(start: Any, tmp_path: Path) -> None:
    running = start()
    datasets = _ct("storescu", 3)
    paths = [_write(ds, tmp_path / f"in{i}.dcm") for i, ds in enumerate(datasets)]
    done = subprocess.run(["storescu", "-aec", CALLED, "127.0.0.1", str(running.port),
                           *map(str, paths)], capture_output=True, text=True, env=DCMTK_ENV)
    assert done.returncode == 0, done.stdout + done.stderr
    for ds, source in zip(datasets, paths, strict=True):
        kept = running.sink.folder / f"{ds.SOPInstanceUID}.dcm"
        assert _dataset_part(kept.read_bytes()) == _dataset_part(source.read_bytes())
        read = pydicom.dcmread(kept)
        assert read.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert read.file_meta.MediaStorageSOPClassUID == CTImageStorage
        assert read.file_meta.TransferSyntaxUID == EXPLICIT
        assert read.PixelData == ds.PixelData


def test_small_pdus_are_reassembled(start: Any) -> None:
    running = start(max_pdu=4096)
    ds = _ct("small-pdu", size=128)[0]  # 32 KiB of pixels: nine or more PDUs
    assoc = _associate(running.port)
    try:
        assert assoc.acceptor.maximum_length == 4096
        assert assoc.send_c_store(ds).Status == 0
    finally:
        assoc.release()
    kept = pydicom.dcmread(running.sink.folder / f"{ds.SOPInstanceUID}.dcm")
    assert kept.PixelData == ds.PixelData and kept.PatientName == ds.PatientName


def test_echo_from_dcmtk_and_pynetdicom(start: Any) -> None:
    running = start()
    done = subprocess.run(["echoscu", "-aec", CALLED, "127.0.0.1", str(running.port)],
                          capture_output=True, text=True, env=DCMTK_ENV)
    assert done.returncode == 0, done.stdout + done.stderr
    assoc = _associate(running.port, [(str(Verification), [IMPLICIT])])
    try:
        assert assoc.send_c_echo().Status == 0
    finally:
        assoc.release()
    assert assoc.is_released


def test_handler_statuses_reach_the_sender_and_the_association_goes_on(start: Any) -> None:
    running = start()
    refused, failing, good = _ct("statuses", 3)
    running.sink.answers[str(refused.SOPInstanceUID)] = 0xA700
    running.sink.failing.add(str(failing.SOPInstanceUID))
    assoc = _associate(running.port)
    try:
        assert [assoc.send_c_store(ds).Status for ds in (refused, failing, good)] == [
            0xA700, 0x0110, 0x0000]
    finally:
        assoc.release()
    assert sorted(p.stem for p in running.sink.folder.iterdir()) == [str(good.SOPInstanceUID)]


# --- negotiation -------------------------------------------------------------------------------


def test_contexts_are_negotiated_with_the_standard_results(start: Any) -> None:
    running = start(syntaxes=[EXPLICIT])
    assoc = _associate(running.port, [("1.2.3.4.5.6", [EXPLICIT]),
                                      (str(CTImageStorage), [JPEG_BASELINE]),
                                      (str(Verification), [IMPLICIT])])
    try:
        assert assoc.is_established
        assert [str(cx.abstract_syntax) for cx in assoc.accepted_contexts] == [
            str(Verification)]
        assert sorted((str(cx.abstract_syntax), cx.result) for cx in assoc.rejected_contexts) \
            == sorted([("1.2.3.4.5.6", 3), (str(CTImageStorage), 4)])
    finally:
        assoc.release()


def test_unknown_callers_are_rejected_permanently(start: Any) -> None:
    running = start(allowed_callers=[CallerRule("MODALITY", None),
                                     CallerRule("CTHOST", "127.0.0.2")])
    assert _rejection(running.port, calling="OTHER") == (1, 1, 3)
    assert _rejection(running.port, calling="CTHOST") == (1, 1, 3)  # from 127.0.0.1
    assert _rejection(running.port, calling="MODALITY") is None
    assert _rejection(running.port, calling="CTHOST", bind_address=("127.0.0.2", 0)) is None


def test_associations_beyond_the_maximum_are_rejected_transiently(start: Any) -> None:
    running = start(max_associations=1)
    first = _associate(running.port)
    assert first.is_established
    try:
        assert _rejection(running.port) == (2, 3, 2)
    finally:
        first.release()
    deadline = time.monotonic() + 5
    while running.scp.active_associations and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _rejection(running.port) is None


# --- what goes wrong ---------------------------------------------------------------------------


def test_an_abort_mid_dataset_abandons_it(start: Any) -> None:
    running = start()
    ds = _ct("aborted")[0]
    assoc = _associate(running.port)
    context_id = int(assoc.accepted_contexts[0].context_id or 0)
    _send_pdv(assoc, int(context_id or 0), 0x03, _c_store_command(str(ds.SOPInstanceUID)))
    _send_pdv(assoc, int(context_id or 0), 0x00, b"\x08\x00\x16\x00UI\x1a\x00")  # not the last
    assert running.sink.started.wait(5)
    assoc.abort()
    deadline = time.monotonic() + 5
    while not running.sink.abandoned and time.monotonic() < deadline:
        time.sleep(0.02)
    assert running.sink.abandoned == [str(ds.SOPInstanceUID)]
    assert not list(running.sink.folder.iterdir())
    _still_serving(running)


def _c_store_command(sop_instance_uid: str) -> bytes:
    """A C-STORE-RQ command set (Implicit VR Little Endian), as a sender encodes it."""
    def element(number: int, value: bytes) -> bytes:
        value += b"\x00" * (len(value) % 2)
        return b"\x00\x00" + number.to_bytes(2, "little") + len(value).to_bytes(4, "little") \
            + value
    body = b"".join((element(0x0002, str(CTImageStorage).encode()),
                     element(0x0100, (0x0001).to_bytes(2, "little")),
                     element(0x0110, (7).to_bytes(2, "little")),
                     element(0x0700, (0).to_bytes(2, "little")),
                     element(0x0800, (0).to_bytes(2, "little")),
                     element(0x1000, sop_instance_uid.encode())))
    return element(0x0000, len(body).to_bytes(4, "little")) + body


def _send_pdv(assoc: Association, context_id: int, control: int, data: bytes) -> None:
    """One P-DATA-TF PDU with one PDV, written straight to the association's socket."""
    pdv = (len(data) + 2).to_bytes(4, "big") + bytes((context_id, control)) + data
    raw = assoc.dul.socket.socket if assoc.dul.socket else None
    assert raw is not None
    raw.sendall(b"\x04\x00" + len(pdv).to_bytes(4, "big") + pdv)


def test_garbage_instead_of_a_pdu_gets_an_abort(start: Any) -> None:
    running = start()
    with socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock:
        sock.sendall(b"\x09\x00\x00\x00\x00\x02ab")
        answer = _read_until_closed(sock)
    assert answer[:1] == b"\x07"  # A-ABORT
    _still_serving(running)


def test_a_silent_connection_is_dropped_after_the_acse_timeout(start: Any) -> None:
    running = start(acse_timeout=0.5)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
        assert _read_until_closed(sock) == b""
    assert time.monotonic() - started < 5


def test_a_dataset_fragment_without_a_command_is_a_protocol_error(start: Any) -> None:
    running = start()
    assoc = _associate(running.port)
    try:
        _send_pdv(assoc, int(assoc.accepted_contexts[0].context_id or 0), 0x02, b"x")
        deadline = time.monotonic() + 5
        while assoc.is_established and time.monotonic() < deadline:
            time.sleep(0.02)
        assert assoc.is_aborted
    finally:
        if assoc.is_established:
            assoc.abort()
    _still_serving(running)


def test_shutdown_stops_accepting_and_lets_open_associations_finish(start: Any) -> None:
    running = start()
    assoc = _associate(running.port)
    assert assoc.is_established
    running.scp.shutdown()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", running.port), timeout=2).close()
    ds = _ct("after-shutdown")[0]
    assert assoc.send_c_store(ds).Status == 0
    assoc.release()
    deadline = time.monotonic() + 5
    while running.scp.active_associations and time.monotonic() < deadline:
        time.sleep(0.02)
    assert running.scp.active_associations == 0


def _read_until_closed(sock: socket.socket) -> bytes:
    data = io.BytesIO()
    while chunk := sock.recv(65536):
        data.write(chunk)
    return data.getvalue()


def _still_serving(running: Running) -> None:
    assoc = _associate(running.port, [(str(Verification), [IMPLICIT])])
    try:
        assert assoc.send_c_echo().Status == 0
    finally:
        assoc.release()


def test_a_message_stalled_midway_is_aborted_after_the_dimse_timeout(start: Any) -> None:
    """Idle between messages, an association may wait for the network timeout; a C-STORE whose
    dataset stops arriving is given up after the (shorter) DIMSE timeout: A-ABORT, nothing kept."""
    running = start(dimse_timeout=0.5, network_timeout=30)
    idle = _associate(running.port)
    ds = _ct("stalled")[0]
    stalled = _associate(running.port)
    try:
        context_id = int(stalled.accepted_contexts[0].context_id or 0)
        _send_pdv(stalled, context_id, 0x03, _c_store_command(str(ds.SOPInstanceUID)))
        _send_pdv(stalled, context_id, 0x00, b"\x08\x00\x16\x00UI\x1a\x00")  # then silence
        deadline = time.monotonic() + 10
        while stalled.is_established and time.monotonic() < deadline:
            time.sleep(0.02)
        assert stalled.is_aborted
        assert running.sink.abandoned == [str(ds.SOPInstanceUID)]
        assert not list(running.sink.folder.iterdir())
        assert idle.is_established  # silent for as long, but between messages
        assert idle.send_c_store(_ct("idle")[0]).Status == 0
    finally:
        for assoc in (idle, stalled):
            if assoc.is_established:
                assoc.release()
    _still_serving(running)
