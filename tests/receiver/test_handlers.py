"""C-STORE into the Receiver: where files land, what the index says, and what bad input gets.

Every test talks to a real ``tce receiver serve`` process. Bad datasets are streamed from files
byte for byte (pynetdicom's chunked send), because pynetdicom would refuse to encode some of
them: that is what a buggy sender puts on the wire. Each must get 0xC210, land in quarantine
with a ``quarantine_items`` row, leave nothing in the store, and leave the node serving.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)
from pynetdicom import _config
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # made at import

from appliance.synthetic import planted_phi, sample_patients
from tests.receiver.harness import (
    SUCCESS,
    ReceiverDir,
    ReceiverFactory,
    RunningReceiver,
    ct_instances,
    dataset_part,
    negotiate,
    send,
    storescu,
    write,
)

CANNOT_UNDERSTAND = 0xC210
OUT_OF_RESOURCES = 0xA700
ABSTRACT_SYNTAX_NOT_SUPPORTED, TRANSFER_SYNTAXES_NOT_SUPPORTED = 3, 4
CT = [(str(CTImageStorage), [ExplicitVRLittleEndian])]

Node = tuple[ReceiverDir, RunningReceiver]


@pytest.fixture(scope="module")
def node(module_receivers: ReceiverFactory) -> Node:
    """A Receiver that accepts Explicit VR Little Endian only."""
    folder = module_receivers.folder("handlers",
                                     transfer_syntaxes=[str(ExplicitVRLittleEndian)])
    return folder, module_receivers.start(folder)


@pytest.fixture
def chunked() -> Iterator[None]:
    """Send files as they are on disk, without pynetdicom decoding them first."""
    saved = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        yield
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = saved


def _path(folder: ReceiverDir, ds: Dataset) -> Path:
    return (folder.store / str(ds.StudyInstanceUID) / str(ds.SeriesInstanceUID)
            / f"{ds.SOPInstanceUID}.dcm")


def _assert_indexed(folder: ReceiverDir, ds: Dataset, calling: str) -> None:
    row = folder.instances()[str(ds.SOPInstanceUID)]
    data = _path(folder, ds).read_bytes()
    assert (row.node, row.state) == ("receiver", "STORED")
    assert (row.new_study_instance_uid, row.new_series_instance_uid) == (
        ds.StudyInstanceUID, ds.SeriesInstanceUID)
    assert row.store_path == str(_path(folder, ds))
    assert (row.sha256, row.size_bytes) == (hashlib.sha256(data).hexdigest(), len(data))
    assert (row.sop_class_uid, row.transfer_syntax_uid) == (ds.SOPClassUID,
                                                            ExplicitVRLittleEndian)
    assert row.calling_ae == calling
    stored = pydicom.dcmread(_path(folder, ds))
    assert stored.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


def _new_quarantine(folder: ReceiverDir, before: int) -> list[str]:
    """Reasons of quarantine rows added since ``before``, checked against the folder."""
    reasons = []
    for row in folder.quarantine()[before:]:
        stored = Path(row.stored_path)
        assert row.node == "receiver" and row.stage == "receive"
        assert stored.parent == folder.settings.quarantine_dir
        assert stored.stat().st_size == row.size_bytes
        assert json.loads(Path(f"{stored}.reason.json").read_text())["reason"] == row.reason
        reasons.append(row.reason)
    return reasons


def _still_serving(running: RunningReceiver, label: str) -> None:
    assert send(running.port, ct_instances(label, 1)) == [SUCCESS]


def _send_file(running: RunningReceiver, path: Path) -> int | None:
    return send(running.port, [path], contexts=CT)[0]


# --- what arrives, and where -----------------------------------------------------------------


def test_storescu_files_land_at_uid_paths_byte_for_byte(node: Node, tmp_path: Path) -> None:
    folder, running = node
    datasets = ct_instances("storescu-a", 2) + ct_instances("storescu-b", 1)
    paths = [write(ds, tmp_path / f"in{i}.dcm") for i, ds in enumerate(datasets)]
    done = storescu(running.port, paths)
    assert done.returncode == 0, done.stdout + done.stderr
    for ds, source in zip(datasets, paths, strict=True):
        assert dataset_part(_path(folder, ds).read_bytes()) == dataset_part(source.read_bytes())
        _assert_indexed(folder, ds, "STORESCU")
    studies = folder.studies()
    first, second = studies[datasets[0].StudyInstanceUID], studies[datasets[2].StudyInstanceUID]
    assert (first.instance_count, first.state) == (2, "RECEIVING")
    assert (second.instance_count, second.state) == (1, "RECEIVING")
    assert first.last_received_at >= first.first_received_at


def test_pynetdicom_datasets_are_stored_as_encoded_on_the_wire(node: Node) -> None:
    folder, running = node
    datasets = ct_instances("pynetdicom", 3)
    assert send(running.port, datasets, calling="RESEARCH_PACS") == [SUCCESS] * 3
    for ds in datasets:
        sent = encode(ds, is_implicit_vr=False, is_little_endian=True)
        assert dataset_part(_path(folder, ds).read_bytes()) == sent
        _assert_indexed(folder, ds, "RESEARCH_PACS")
    assert folder.studies()[datasets[0].StudyInstanceUID].instance_count == 3


@pytest.mark.usefixtures("chunked")
def test_a_file_streamed_as_is_is_stored_as_is(node: Node, tmp_path: Path) -> None:
    folder, running = node
    ds = ct_instances("chunked", 1)[0]
    path = write(ds, tmp_path / "as-is.dcm")
    assert _send_file(running, path) == SUCCESS
    assert dataset_part(_path(folder, ds).read_bytes()) == dataset_part(path.read_bytes())


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("chunked")
def test_truncated_dataset_is_refused_and_quarantined(node: Node, tmp_path: Path) -> None:
    folder, running = node
    ds = ct_instances("truncated", 1)[0]
    path = write(ds, tmp_path / "whole.dcm")
    path.write_bytes(path.read_bytes()[:-3000])  # an interrupted copy: PixelData cut short
    before, files = len(folder.quarantine()), folder.store_files()
    assert _send_file(running, path) == CANNOT_UNDERSTAND
    [reason] = _new_quarantine(folder, before)
    assert "truncated" in reason
    assert folder.store_files() == files
    assert str(ds.SOPInstanceUID) not in folder.instances()
    _still_serving(running, "after-truncated")


@pytest.mark.usefixtures("chunked")
def test_dataset_without_sop_instance_uid_is_refused(node: Node, tmp_path: Path) -> None:
    folder, running = node
    ds = ct_instances("no-uid", 1)[0]
    del ds.SOPInstanceUID  # the file meta still names one, so the request carries it
    path = write(ds, tmp_path / "no-uid.dcm")
    before, files = len(folder.quarantine()), folder.store_files()
    assert _send_file(running, path) == CANNOT_UNDERSTAND
    assert _new_quarantine(folder, before) == ["dataset has no SOP Instance UID"]
    assert folder.store_files() == files
    assert folder.audit("instance.quarantined")
    _still_serving(running, "after-no-uid")


@pytest.mark.usefixtures("chunked")
def test_dataset_whose_uid_differs_from_the_request_is_refused(node: Node,
                                                               tmp_path: Path) -> None:
    folder, running = node
    ds = ct_instances("mismatch", 1)[0]
    path = write(ds, tmp_path / "mismatch.dcm")
    data = path.read_bytes()  # the request takes the file meta's UID; change the body's
    meta_end = len(data) - len(dataset_part(data))
    uid = str(ds.SOPInstanceUID).encode()
    other = uid[:-1] + (b"1" if uid[-1:] != b"1" else b"2")
    path.write_bytes(data[:meta_end] + data[meta_end:].replace(uid, other))
    before = len(folder.quarantine())
    assert _send_file(running, path) == CANNOT_UNDERSTAND
    assert _new_quarantine(folder, before) == [
        "SOP Instance UID differs from the C-STORE request"]
    assert str(ds.SOPInstanceUID) not in folder.instances()
    _still_serving(running, "after-mismatch")


@pytest.mark.usefixtures("chunked")
def test_malformed_value_the_check_reads_is_refused_not_a_handler_crash(
        node: Node, tmp_path: Path) -> None:
    """Rows with a 1-byte value: the old pydicom-based check raised instead of refusing."""
    folder, running = node
    ds = ct_instances("odd-rows", 1)[0]
    path = write(ds, tmp_path / "odd-rows.dcm")
    data = path.read_bytes()
    rows = data.index(b"\x28\x00\x10\x00US\x02\x00")
    path.write_bytes(data[:rows + 6] + b"\x01\x00" + data[rows + 8:rows + 9] + data[rows + 10:])
    before, files = len(folder.quarantine()), folder.store_files()
    assert _send_file(running, path) == CANNOT_UNDERSTAND
    assert _new_quarantine(folder, before) == ["dataset has an invalid Rows"]
    assert folder.store_files() == files
    assert str(ds.SOPInstanceUID) not in folder.instances()
    _still_serving(running, "after-odd-rows")


def test_unknown_sop_class_and_unaccepted_syntax_are_refused_in_negotiation(
        node: Node) -> None:
    _folder, running = node
    unknown = "1.2.3.4.5.6"
    outcome = negotiate(running.port, [(unknown, [ExplicitVRLittleEndian]),
                                       (str(CTImageStorage), [JPEGBaseline8Bit]),
                                       (str(Verification), [ImplicitVRLittleEndian])])
    assert outcome.established
    assert outcome.accepted == [str(Verification)]
    assert sorted(outcome.rejected_contexts) == sorted([
        (unknown, ABSTRACT_SYNTAX_NOT_SUPPORTED),
        (str(CTImageStorage), TRANSFER_SYNTAXES_NOT_SUPPORTED)])
    _still_serving(running, "after-negotiation")


def test_write_failure_answers_out_of_resources_and_the_node_recovers(node: Node) -> None:
    folder, running = node
    store = folder.store
    aside = store.with_name("store-aside")
    store.rename(aside)
    store.write_bytes(b"")  # a file where the folder should be: every store write fails
    datasets = ct_instances("disk-trouble", 2)
    try:
        statuses = send(running.port, datasets)
    finally:
        store.unlink()
        aside.rename(store)
    assert statuses == [OUT_OF_RESOURCES] * 2
    assert not {str(ds.SOPInstanceUID) for ds in datasets} & set(folder.instances())
    assert send(running.port, datasets) == [SUCCESS] * 2  # the same instances, re-sent
    for ds in datasets:
        _assert_indexed(folder, ds, "PYSEND")


# --- duplicates --------------------------------------------------------------------------------


def test_identical_duplicate_is_acknowledged_and_kept_once(node: Node) -> None:
    folder, running = node
    ds = ct_instances("duplicate", 1)[0]
    assert send(running.port, [ds]) == [SUCCESS]
    path = _path(folder, ds)
    first = path.stat()
    assert send(running.port, [ds, ds]) == [SUCCESS, SUCCESS]  # twice on one association
    assert send(running.port, [ds]) == [SUCCESS]  # and on another
    rows = [r for r in folder.instances().values() if r.new_sop_instance_uid == ds.SOPInstanceUID]
    assert len(rows) == 1
    assert sorted(path.parent.iterdir()) == [path]
    assert path.stat().st_ino == first.st_ino  # the file was kept, not rewritten
    assert folder.studies()[ds.StudyInstanceUID].instance_count == 1
    assert not [e for e in folder.audit("instance.replaced") if e.subject == ds.SOPInstanceUID]


def test_duplicate_with_new_content_replaces_the_file_and_is_audited(node: Node) -> None:
    folder, running = node
    old = ct_instances("replaced", 1)[0]
    assert send(running.port, [old]) == [SUCCESS]
    old_sha = folder.instances()[str(old.SOPInstanceUID)].sha256
    new = ct_instances("replaced", 1)[0]
    new.ImageComments = "re-sent after correction"
    assert send(running.port, [new]) == [SUCCESS]
    row = folder.instances()[str(new.SOPInstanceUID)]
    data = _path(folder, new).read_bytes()
    assert dataset_part(data) == encode(new, is_implicit_vr=False, is_little_endian=True)
    assert row.sha256 == hashlib.sha256(data).hexdigest() != old_sha
    [event] = [e for e in folder.audit("instance.replaced") if e.subject == new.SOPInstanceUID]
    details = json.loads(event.details)
    assert (details["previous_sha256"], details["sha256"]) == (old_sha, row.sha256)
    assert details["moved"] is False
    assert folder.studies()[new.StudyInstanceUID].instance_count == 1


def test_duplicate_moved_to_another_series_leaves_one_file(node: Node) -> None:
    folder, running = node
    ds = ct_instances("moving", 1)[0]
    assert send(running.port, [ds]) == [SUCCESS]
    old_path = _path(folder, ds)
    ds.SeriesInstanceUID = ct_instances("moving-target", 1)[0].SeriesInstanceUID
    assert send(running.port, [ds]) == [SUCCESS]
    assert _path(folder, ds).is_file()
    assert not old_path.exists() and not old_path.parent.exists()
    row = folder.instances()[str(ds.SOPInstanceUID)]
    assert row.new_series_instance_uid == ds.SeriesInstanceUID
    assert folder.studies()[ds.StudyInstanceUID].instance_count == 1


# --- path traversal ----------------------------------------------------------------------------


def _set_invalid(ds: Dataset, keyword: str, value: str) -> None:
    """Set a UID pydicom warns about (and still sends: pynetdicom only checks the length)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        setattr(ds, keyword, value)
        if keyword == "SOPInstanceUID":
            ds.file_meta.MediaStorageSOPInstanceUID = UID(value)


def _evil_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if "evil" in p.name]


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI:UserWarning")
@pytest.mark.parametrize(("keyword", "value"), [
    ("SOPInstanceUID", "../../../../../../evil"),
    ("SOPInstanceUID", "1.2/../../evil"),
    ("StudyInstanceUID", "../../../evil-study"),
    ("SeriesInstanceUID", "/tmp/evil-series"),
])
def test_path_traversal_uid_is_refused_and_writes_nothing_outside(
        node: Node, keyword: str, value: str) -> None:
    folder, running = node
    ds = ct_instances(f"traversal-{keyword}-{value}", 1)[0]
    _set_invalid(ds, keyword, value)
    before, files = len(folder.quarantine()), folder.store_files()
    evil_before = set(_evil_files(folder.root.parent))  # other tests may own such names
    assert send(running.port, [ds]) == [CANNOT_UNDERSTAND]
    label = {"SOPInstanceUID": "SOP Instance UID", "StudyInstanceUID": "Study Instance UID",
             "SeriesInstanceUID": "Series Instance UID"}[keyword]
    assert _new_quarantine(folder, before) == [f"{label} is not a valid UID"]
    assert folder.store_files() == files
    naive = os.path.normpath(f"{folder.store}/{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/"
                             f"{ds.SOPInstanceUID}.dcm")  # where a plain join would write
    assert not [p for p in (Path(naive), *Path(naive).parents)
                if "evil" in p.name and p.exists()]
    assert set(_evil_files(folder.root.parent)) == evil_before
    _still_serving(running, f"after-traversal-{keyword}-{value}")


@pytest.mark.usefixtures("chunked")
def test_traversal_uid_in_the_body_of_a_valid_request_is_refused(node: Node,
                                                                 tmp_path: Path) -> None:
    folder, running = node
    ds = ct_instances("traversal-mismatch", 1)[0]
    path = write(ds, tmp_path / "request-ok.dcm")
    data = path.read_bytes()
    meta_end = len(data) - len(dataset_part(data))
    uid = str(ds.SOPInstanceUID).encode()
    evil = b"../../../../../evil"
    evil += b"\x00" * (len(uid) - len(evil))  # same length: the element stays well-formed
    path.write_bytes(data[:meta_end] + data[meta_end:].replace(uid, evil))
    before, files = len(folder.quarantine()), folder.store_files()
    evil_before = set(_evil_files(folder.root.parent))
    assert _send_file(running, path) == CANNOT_UNDERSTAND
    assert _new_quarantine(folder, before) == [
        "SOP Instance UID differs from the C-STORE request"]
    assert folder.store_files() == files
    assert set(_evil_files(folder.root.parent)) == evil_before


# --- logs --------------------------------------------------------------------------------------


def test_logs_are_json_per_association_and_instance_without_phi(node: Node) -> None:
    folder, running = node
    datasets = ct_instances("logged", 2)
    bad = ct_instances("logged-bad", 1)[0]
    _set_invalid(bad, "SeriesInstanceUID", "../evil-logged")
    statuses = send(running.port, [*datasets, bad], calling="LOGGED_SCU")
    assert statuses == [SUCCESS, SUCCESS, CANNOT_UNDERSTAND]
    events = [json.loads(line) for line in running.log().splitlines() if line.strip()]
    stored = [e for e in events if e["event"] == "receiver.stored"
              and e["sop_instance_uid"] in {str(ds.SOPInstanceUID) for ds in datasets}]
    assert len(stored) == 2
    closed = [e for e in events if e["event"] == "receiver.association_closed"
              and e["calling_ae"] == "LOGGED_SCU"]
    assert [(e["how"], e["instances"], e["stored"], e["refused"]) for e in closed] == [
        ("released", 3, 2, 1)]
    text = running.log()
    leaked = [value for value in planted_phi(sample_patients(0)[:1]) if value in text]
    assert not leaked
    assert "[refused]" not in text
    assert folder.instances()  # and the node indexed what it logged
