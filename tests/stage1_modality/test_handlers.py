"""C-STORE handling: what a sender sees for bad input, duplicates and a broken write path.

Bad datasets are sent as files streamed byte for byte (pynetdicom's chunked send), because
pynetdicom would refuse to encode them itself: this is what a buggy modality puts on the wire.
Each one must get a failure status in the 0xC000 range, land in the quarantine folder with a
reason file and a ``quarantine_items`` row, and leave the node serving. Unsupported SOP classes
and transfer syntaxes are refused earlier, during association negotiation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)
from pynetdicom import _config
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from sqlalchemy import select

from appliance.models import InstanceState, QuarantineItem
from tests.stage1_modality.harness import (
    SUCCESS,
    NodeDir,
    NodeFactory,
    RunningNode,
    ct_instances,
    negotiate,
    open_association,
    send,
    status_of,
)

CANNOT_UNDERSTAND = range(0xC000, 0x10000)
OUT_OF_RESOURCES = 0xA700
ABSTRACT_SYNTAX_NOT_SUPPORTED, TRANSFER_SYNTAXES_NOT_SUPPORTED = 3, 4
UNKNOWN_SOP_CLASS = "1.2.3.4.5.6"
CT = [(str(CTImageStorage), [ExplicitVRLittleEndian])]


@pytest.fixture(scope="module")
def strict(module_nodes: NodeFactory) -> tuple[NodeDir, RunningNode]:
    """A node that accepts Explicit VR Little Endian only."""
    node = module_nodes.folder("strict", transfer_syntaxes=[str(ExplicitVRLittleEndian)])
    return node, module_nodes.start(node)


@pytest.fixture
def chunked() -> Iterator[None]:
    """Send files as they are on disk, without pynetdicom decoding them first."""
    saved = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        yield
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = saved


def _send_file(port: int, path: Path) -> int | None:
    assoc = open_association(port, CT)
    try:
        return status_of(assoc.send_c_store(path))
    finally:
        assoc.release()


def _quarantine(node: NodeDir) -> dict[str, str]:
    """{stored file name: reason} from the quarantine_items table, checked against the folder."""
    with node.engine.connect() as conn:
        rows = list(conn.execute(select(QuarantineItem.stored_path, QuarantineItem.reason,
                                        QuarantineItem.size_bytes)))
    items = {}
    for stored, reason, size in rows:
        path = Path(stored)
        assert path.parent == node.settings.quarantine_dir
        assert path.stat().st_size == size
        beside = json.loads(Path(f"{path}.reason.json").read_text(encoding="utf-8"))
        assert beside["reason"] == reason
        items[path.name] = reason
    return items


def _send_bad_file(node: NodeDir, port: int, path: Path) -> tuple[int | None, list[str]]:
    """Send ``path``; the status the node answered and the quarantine reasons it added."""
    before = _quarantine(node)
    status = _send_file(port, path)
    return status, [reason for name, reason in _quarantine(node).items() if name not in before]


def _good_instance_still_stored(port: int, label: str) -> None:
    results = send(port, ct_instances(label, 1))
    assert [status for _uid, status in results] == [SUCCESS]


def _write(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.usefixtures("chunked")
def test_truncated_dataset_is_refused_and_quarantined(strict: tuple[NodeDir, RunningNode],
                                                      tmp_path: Path) -> None:
    node, running = strict
    path = _write(ct_instances("truncated", 1)[0], tmp_path / "whole.dcm")
    path.write_bytes(path.read_bytes()[:-3000])  # an interrupted copy: PixelData cut short
    status, new = _send_bad_file(node, running.port, path)
    assert status in CANNOT_UNDERSTAND
    assert len(new) == 1
    assert "truncated" in new[0]
    _good_instance_still_stored(running.port, "after-truncated")


@pytest.mark.usefixtures("chunked")
def test_dataset_cut_inside_a_sequence_header_is_refused_and_quarantined(
        strict: tuple[NodeDir, RunningNode], tmp_path: Path) -> None:
    node, running = strict
    path = _write(ct_instances("cut-in-sequence", 1)[0], tmp_path / "whole.dcm")
    data = path.read_bytes()
    sequence = data.index(b"\x40\x00\x75\x02SQ")  # RequestAttributesSequence (0040,0275)
    path.write_bytes(data[:sequence + 10])  # ends inside the sequence's length field
    status, new = _send_bad_file(node, running.port, path)
    assert status in CANNOT_UNDERSTAND
    assert len(new) == 1 and new[0].startswith("dataset")
    _good_instance_still_stored(running.port, "after-cut-in-sequence")


@pytest.mark.usefixtures("chunked")
def test_dataset_without_sop_instance_uid_is_refused_and_quarantined(
        strict: tuple[NodeDir, RunningNode], tmp_path: Path) -> None:
    node, running = strict
    ds = ct_instances("no-uid", 1)[0]
    del ds.SOPInstanceUID  # the file meta still names one, so the request carries it
    path = _write(ds, tmp_path / "no-uid.dcm")
    status, new = _send_bad_file(node, running.port, path)
    assert status in CANNOT_UNDERSTAND
    assert new == ["dataset has no SOP Instance UID"]
    _good_instance_still_stored(running.port, "after-no-uid")


@pytest.mark.usefixtures("chunked")
def test_dataset_whose_uid_differs_from_the_request_is_refused(
        strict: tuple[NodeDir, RunningNode], tmp_path: Path) -> None:
    node, running = strict
    ds = ct_instances("mismatch", 1)[0]
    path = _write(ds, tmp_path / "mismatch.dcm")
    data = path.read_bytes()  # the request takes the file meta's UID; change the body's
    meta_end = 144 + int.from_bytes(data[140:144], "little")
    uid = str(ds.SOPInstanceUID).encode()
    other = uid[:-1] + (b"1" if uid[-1:] != b"1" else b"2")
    path.write_bytes(data[:meta_end] + data[meta_end:].replace(uid, other))
    status, new = _send_bad_file(node, running.port, path)
    assert status in CANNOT_UNDERSTAND
    assert new == ["SOP Instance UID differs from the C-STORE request"]


@pytest.mark.usefixtures("chunked")
def test_malformed_value_the_check_reads_is_refused_not_a_handler_crash(
        strict: tuple[NodeDir, RunningNode], tmp_path: Path) -> None:
    """Rows with a 1-byte value: the old pydicom-based check raised instead of refusing."""
    node, running = strict
    path = _write(ct_instances("odd-rows", 1)[0], tmp_path / "odd-rows.dcm")
    data = path.read_bytes()
    rows = data.index(b"\x28\x00\x10\x00US\x02\x00")
    path.write_bytes(data[:rows + 6] + b"\x01\x00" + data[rows + 8:rows + 9] + data[rows + 10:])
    status, new = _send_bad_file(node, running.port, path)
    assert status == 0xC210
    assert new == ["dataset has an invalid Rows"]
    _good_instance_still_stored(running.port, "after-odd-rows")


@pytest.mark.usefixtures("chunked")
def test_garbage_after_the_file_meta_is_refused(strict: tuple[NodeDir, RunningNode],
                                               tmp_path: Path) -> None:
    node, running = strict
    path = _write(ct_instances("garbage", 1)[0], tmp_path / "garbage.dcm")
    data = path.read_bytes()
    meta_end = 144 + int.from_bytes(data[140:144], "little")  # after (0002,0000)'s value
    path.write_bytes(data[:meta_end] + b"\x08\x00\x16\x00UI\xff\xff" + b"\xee" * 64)
    status, new = _send_bad_file(node, running.port, path)
    assert status in CANNOT_UNDERSTAND
    assert len(new) == 1
    _good_instance_still_stored(running.port, "after-garbage")


def test_unknown_sop_class_is_refused_in_negotiation(
        strict: tuple[NodeDir, RunningNode]) -> None:
    _node, running = strict
    outcome = negotiate(running.port, [(UNKNOWN_SOP_CLASS, [ExplicitVRLittleEndian]),
                                       (str(Verification), [ImplicitVRLittleEndian])])
    assert outcome.established
    assert outcome.accepted == [str(Verification)]
    assert outcome.rejected_contexts == [(UNKNOWN_SOP_CLASS, ABSTRACT_SYNTAX_NOT_SUPPORTED)]
    assoc = open_association(running.port, [(UNKNOWN_SOP_CLASS, [ExplicitVRLittleEndian]),
                                            *CT])
    try:
        ds = ct_instances("unknown-class", 1)[0]
        ds.SOPClassUID = UNKNOWN_SOP_CLASS
        with pytest.raises(ValueError, match="No presentation context"):
            assoc.send_c_store(ds)
    finally:
        assoc.release()
    _good_instance_still_stored(running.port, "after-unknown-class")


def test_transfer_syntax_not_configured_is_refused_in_negotiation(
        strict: tuple[NodeDir, RunningNode]) -> None:
    _node, running = strict
    outcome = negotiate(running.port, [(str(CTImageStorage), [JPEGBaseline8Bit]),
                                       (str(Verification), [ImplicitVRLittleEndian])])
    assert outcome.rejected_contexts == [(str(CTImageStorage), TRANSFER_SYNTAXES_NOT_SUPPORTED)]
    outcome = negotiate(running.port, [(str(CTImageStorage),
                                        [JPEGBaseline8Bit, ExplicitVRLittleEndian])])
    assert outcome.accepted == [str(CTImageStorage)]
    _good_instance_still_stored(running.port, "after-syntax")


def test_duplicate_instance_is_acknowledged_and_stored_once(
        strict: tuple[NodeDir, RunningNode]) -> None:
    node, running = strict
    ds = ct_instances("duplicate", 1)[0]
    node.settle()
    rows_before, files_before = node.count(), len(node.store_files())
    assert [s for _u, s in send(running.port, [ds, ds])] == [SUCCESS] * 2  # on one association
    assert [s for _u, s in send(running.port, [ds])] == [SUCCESS]  # and on another
    node.settle()
    assert node.count() == rows_before + 1
    assert len(node.store_files()) == files_before + 1


def test_write_failure_answers_out_of_resources_and_the_node_recovers(
        strict: tuple[NodeDir, RunningNode]) -> None:
    node, running = strict
    spool = node.settings.stage1.spool_dir
    node.settle()
    aside = spool.with_name("spool-aside")
    spool.rename(aside)
    spool.write_bytes(b"")  # a file where the folder should be: every spool write fails
    try:
        results = send(running.port, ct_instances("disk-trouble", 2))
    finally:
        spool.unlink()
        aside.rename(spool)
    assert [status for _uid, status in results] == [OUT_OF_RESOURCES] * 2
    assert node.count(InstanceState.RECEIVED, InstanceState.PROCESSING) == 0
    results = send(running.port, ct_instances("disk-trouble", 2))  # the same instances again
    assert [status for _uid, status in results] == [SUCCESS] * 2

