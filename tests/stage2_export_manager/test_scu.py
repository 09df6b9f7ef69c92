"""The C-STORE SCU against real peers: dcmtk storescp and an in-process pynetdicom SCP.

Also home of the peers the other stage-2 export tests use: :class:`Storescp` writes every
C-STORE it accepts to its own file (``+uf``), so counting files counts receptions, and
:class:`RecordingSCP` records each request, can refuse SOP classes, answer chosen statuses, or
abort the association after N instances (a Receiver going down in the middle of a study).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_file_meta_info
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)
from pynetdicom import AE, AllStoragePresentationContexts, evt

from stage2_export_manager.scu import (
    NOT_ACCEPTED,
    AssociationFailed,
    Peer,
    StoreItem,
    StoreResult,
    Timeouts,
    parse_peer,
    send_study,
)

RECEIVER = "TCE_RECEIVER"
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}  # Debian's dcmtk leaves Nagle on otherwise

if shutil.which("storescp") is None:  # pragma: no cover - CI installs dcmtk
    pytest.skip("dcmtk's storescp is not installed (apt-get install dcmtk)",
                allow_module_level=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(pid: int, port: int) -> bool:
    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in connections)


class Storescp:
    """dcmtk ``storescp`` on a free port; every accepted C-STORE becomes one file."""

    def __init__(self, folder: Path, port: int | None = None, *args: str) -> None:
        self.folder, self.port = folder, port or free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["storescp", "-aet", RECEIVER, "-od", str(folder), "+uf", *args, str(self.port)],
            env=DCMTK_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not _listening(self.proc.pid, self.port):
            assert self.proc.poll() is None, "storescp exited at start"
            assert time.monotonic() < deadline, "storescp did not start listening"
            time.sleep(0.02)

    @property
    def peer(self) -> Peer:
        return Peer(RECEIVER, "127.0.0.1", self.port)

    def received(self) -> Counter[str]:
        """SOP Instance UID → how many times it arrived."""
        return Counter(str(read_file_meta_info(p).MediaStorageSOPInstanceUID)
                       for p in self.folder.iterdir() if p.is_file())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def __enter__(self) -> Storescp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RecordingSCP:
    """A pynetdicom storage SCP in this process that records what it is sent."""

    def __init__(self, port: int | None = None, *, refuse: tuple[str, ...] = (),
                 statuses: dict[str, int] | None = None, abort_after: int | None = None) -> None:
        self.port = port or free_port()
        self.requests: list[str] = []  # every C-STORE-RQ, answered or not
        self.stored: list[str] = []  # answered with a success status
        self.statuses = statuses or {}
        self.abort_after = abort_after
        self.lock = threading.Lock()
        ae = AE(ae_title=RECEIVER)
        for context in AllStoragePresentationContexts:
            assert context.abstract_syntax is not None  # pynetdicom's list names every one
            if context.abstract_syntax not in refuse:
                ae.add_supported_context(context.abstract_syntax,
                                         [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        server = ae.start_server(("127.0.0.1", self.port), block=False,
                                 evt_handlers=[(evt.EVT_C_STORE, self._store)])
        assert server is not None  # block=False returns the running server
        self.server = server

    def _store(self, event: Any) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        with self.lock:
            self.requests.append(uid)
            if self.abort_after is not None and len(self.stored) >= self.abort_after:
                event.assoc.abort()  # gone before answering: not acknowledged
                return 0xA700
            status = self.statuses.get(str(event.request.AffectedSOPClassUID), 0x0000)
            if status in (0x0000, 0xB000, 0xB006, 0xB007):
                self.stored.append(uid)
            return status

    @property
    def peer(self) -> Peer:
        return Peer(RECEIVER, "127.0.0.1", self.port)

    def stop(self) -> None:
        self.server.shutdown()

    def __enter__(self) -> RecordingSCP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- files to send ------------------------------------------------------------------------


def write_instance(folder: Path, sop_class: str = CTImageStorage,
                   syntax: UID = ExplicitVRLittleEndian, pixels: int = 64 * 64) -> Path:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "2.25.1", "2.25.2"
    ds.PatientID, ds.Modality = "PSN1", "CT" if sop_class == CTImageStorage else "MR"
    ds.Rows = ds.Columns = int(pixels ** 0.5)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = os.urandom(pixels * 2)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def items_for(paths: list[Path]) -> list[StoreItem]:
    items = []
    for key, path in enumerate(paths):
        meta = read_file_meta_info(path)
        items.append(StoreItem(key, path, str(meta.MediaStorageSOPClassUID),
                               str(meta.TransferSyntaxUID),
                               str(meta.MediaStorageSOPInstanceUID)))
    return items


def uid_of(path: Path) -> str:
    return str(read_file_meta_info(path).MediaStorageSOPInstanceUID)


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "outbox"
    folder.mkdir()
    return ([write_instance(folder) for _ in range(6)]
            + [write_instance(folder, syntax=ImplicitVRLittleEndian) for _ in range(2)]
            + [write_instance(folder, MRImageStorage) for _ in range(2)])


def send(peer: Peer, items: list[StoreItem], **kwargs: Any) -> list[StoreResult]:
    results: list[StoreResult] = []
    send_study(peer, "TCE_STAGE2", items, results.append, **kwargs)
    return results


# --- tests --------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("TCE_RECEIVER@10.0.0.7:11114", Peer("TCE_RECEIVER", "10.0.0.7", 11114)),
    ("ORTHANC@pacs.example.org:4242", Peer("ORTHANC", "pacs.example.org", 4242)),
    ("AE@[::1]:104", Peer("AE", "::1", 104)),
])
def test_parse_peer(text: str, expected: Peer) -> None:
    assert parse_peer(text) == expected
    assert str(expected) in (text, text.replace("[::1]", "::1"))


@pytest.mark.parametrize(("text", "complaint"), [
    ("10.0.0.7:11114", "names no AE title"),
    ("TCE_RECEIVER@10.0.0.7", "names no host and port"),
    ("TCE_RECEIVER@10.0.0.7:0", "must be a number in 1..65535"),
    ("TCE_RECEIVER@host:http", "must be a number in 1..65535"),
    ("A_TITLE_FAR_TOO_LONG@host:104", "1 to 16 ASCII characters"),
])
def test_parse_peer_explains_what_is_wrong(text: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint) as info:
        parse_peer(text)
    assert "AE@HOST:PORT" in str(info.value)


def test_streams_every_file_once_to_storescp(tmp_path: Path, files: list[Path]) -> None:
    with Storescp(tmp_path / "rx") as scp:
        results = send(scp.peer, items_for(files))
        received = scp.received()
    assert [r.sent for r in results] == [True] * len(files)
    assert {r.status for r in results} == {0x0000}
    assert received == Counter({uid_of(p): 1 for p in files})
    for path in files:  # bit for bit: the staged file was streamed, not re-encoded
        arrived = next(p for p in (tmp_path / "rx").iterdir()
                       if uid_of(p) == uid_of(path))
        assert arrived.read_bytes()[-4096:] == path.read_bytes()[-4096:]


def test_large_instance_in_small_pdus(tmp_path: Path) -> None:
    """8 MB in 4 KiB PDUs: 2,000 fragments, never all in memory, arriving whole."""
    folder = tmp_path / "outbox"
    folder.mkdir()
    big = write_instance(folder, pixels=2048 * 2048)
    with Storescp(tmp_path / "rx", None, "-pdu", "4096", "+B") as scp:
        [result] = send(scp.peer, items_for([big]))
        [arrived] = list((tmp_path / "rx").iterdir())
    assert result.sent
    assert arrived.read_bytes()[-(2048 * 2048 * 2):] == big.read_bytes()[-(2048 * 2048 * 2):]


def test_rejected_context_fails_only_its_instances(tmp_path: Path, files: list[Path]) -> None:
    with RecordingSCP(refuse=(MRImageStorage,)) as scp:
        results = send(scp.peer, items_for(files))
    by_key = {r.key: r for r in results}
    mr = {i for i, p in enumerate(files) if read_file_meta_info(p).MediaStorageSOPClassUID
          == MRImageStorage}
    assert len(mr) == 2
    for key, result in by_key.items():
        if key in mr:
            assert not result.sent and result.reason.startswith(NOT_ACCEPTED)
            assert "MR Image Storage" in result.reason
        else:
            assert result.sent
    assert sorted(scp.stored) == sorted(uid_of(p) for i, p in enumerate(files) if i not in mr)


def test_warnings_count_as_sent_failures_do_not(tmp_path: Path, files: list[Path]) -> None:
    with RecordingSCP(statuses={CTImageStorage: 0xB007, MRImageStorage: 0xA900}) as scp:
        results = send(scp.peer, items_for(files))
    sent = [r for r in results if r.sent]
    failed = [r for r in results if not r.sent]
    assert {r.status for r in sent} == {0xB007} and len(sent) == 8
    assert {r.status for r in failed} == {0xA900} and len(failed) == 2
    assert all("0xA900" in r.reason for r in failed)


def test_abort_before_the_answer_is_not_success(tmp_path: Path, files: list[Path]) -> None:
    """A peer that aborts instead of answering: nothing is reported sent for that instance."""
    with RecordingSCP(abort_after=3) as scp:
        results: list[StoreResult] = []
        with pytest.raises(AssociationFailed, match=r"no C-STORE response|ended the association"):
            send_study(scp.peer, "TCE_STAGE2", items_for(files), results.append,
                       timeouts=Timeouts(5, 5, 5))
    assert [r.sent for r in results] == [True, True, True]
    assert len(scp.requests) == 4  # the fourth arrived but was never acknowledged
    assert scp.stored == [uid_of(p) for p in files[:3]]


def test_unreachable_and_refusing_receivers(tmp_path: Path, files: list[Path]) -> None:
    nobody = Peer(RECEIVER, "127.0.0.1", free_port())
    with pytest.raises(AssociationFailed, match="not reachable"):
        send(nobody, items_for(files), timeouts=Timeouts(5, 5, 5))
    ae = AE(ae_title="SOMEONE_ELSE")  # rejects A-ASSOCIATE-RQs called TCE_RECEIVER
    ae.require_called_aet = True
    ae.add_supported_context(CTImageStorage, ExplicitVRLittleEndian)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False)
    assert server is not None  # block=False returns the running server
    try:
        with pytest.raises(AssociationFailed, match="rejected the association") as info:
            send(Peer(RECEIVER, "127.0.0.1", port), items_for(files), timeouts=Timeouts(5, 5, 5))
    finally:
        server.shutdown()
    assert "Called AE title not recognised" in str(info.value)


def test_parallel_associations_lose_nothing(tmp_path: Path) -> None:
    """Four studies at once: all arrive, once each.

    Without the held reactor (see stage2_export_manager.scu) this failed about every other run
    on a 2-core machine: pynetdicom's requestor reactor took a C-STORE-RSP, the association was
    aborted after the DIMSE timeout, and the rest of that study was not sent.
    """
    studies = []
    for n in range(4):
        folder = tmp_path / f"study{n}"
        folder.mkdir()
        studies.append([write_instance(folder, pixels=256 * 256) for _ in range(150)])
    outcomes: dict[int, list[StoreResult]] = {}
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            outcomes[n] = send(scp.peer, items_for(studies[n]), timeouts=Timeouts(10, 10, 10))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    with Storescp(tmp_path / "rx", None, "--fork") as scp:
        threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        time.sleep(0.2)  # forked children finish writing their last file
        received = scp.received()
    assert not errors
    assert all(r.sent for n in range(4) for r in outcomes[n])
    assert received == Counter({uid_of(p): 1 for study in studies for p in study})


def test_held_checkpoint_ignores_send_c_store_reopening_it() -> None:
    from appliance.dimse import HeldCheckpoint

    checkpoint = HeldCheckpoint()
    assert checkpoint.is_set()
    checkpoint.hold()
    checkpoint.set()  # what send_c_store does when it is done
    assert not checkpoint.is_set()
    checkpoint.release()
    assert checkpoint.is_set()


def test_more_than_128_contexts_take_several_associations(tmp_path: Path) -> None:
    from stage2_export_manager import scu

    items = [StoreItem(n, Path("x"), f"1.2.3.{n}", ExplicitVRLittleEndian, f"2.25.{n}")
             for n in range(130)]
    batches = scu._batches(items)
    assert [len(b) for b in batches] == [128, 2]
    assert len(scu._contexts(batches[0])) == 128


def test_receiver_fixture_counts_duplicates(tmp_path: Path, files: list[Path]) -> None:
    """The counting the export tests rely on: a resent instance shows up twice."""
    with Storescp(tmp_path / "rx") as scp:
        send(scp.peer, items_for(files[:2]))
        send(scp.peer, items_for(files[:1]))
        received = scp.received()
    assert received[uid_of(files[0])] == 2 and received[uid_of(files[1])] == 1
