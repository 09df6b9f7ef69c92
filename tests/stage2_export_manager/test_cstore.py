"""The C-STORE wire path: the same bytes pynetdicom would send, and responses read right."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom._globals import MODE_REQUESTOR
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode, split_dataset
from pynetdicom.pdu_primitives import P_DATA

from stage2_export_manager.cstore import (
    StoreResponse,
    StoreResponseDIMSE,
    data_set_offset,
    encode_store_rq,
    parse_command,
)


def pynetdicom_command(message_id: int, sop_class: str, sop_instance: str) -> bytes:
    request = C_STORE()
    request.MessageID, request.Priority = message_id, 0x0000
    request.AffectedSOPClassUID, request.AffectedSOPInstanceUID = sop_class, sop_instance
    request._dataset_path = (Path("x.dcm"), 0)  # a data set follows, as with send_c_store(path)
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    encoded = encode(message.command_set, True, True)
    assert encoded is not None
    return encoded


@pytest.mark.parametrize("sop_instance", ["1.2.3.4", "1.2.3.45", generate_uid()])
def test_command_set_is_what_pynetdicom_encodes(sop_instance: str) -> None:
    assert (encode_store_rq(7, CTImageStorage, sop_instance)
            == pynetdicom_command(7, CTImageStorage, sop_instance))


def test_parse_command_reads_elements_and_refuses_other_data() -> None:
    fields = parse_command(encode_store_rq(65535, CTImageStorage, "1.2.3"))
    assert fields is not None
    assert struct.unpack("<H", fields[0x0110])[0] == 65535
    assert fields[0x1000] == b"1.2.3\x00"
    assert parse_command(b"\x08\x00\x16\x00\x02\x00\x00\x00ab") is None  # not group 0000
    assert parse_command(encode_store_rq(1, CTImageStorage, "1.2.3")[:-3]) is None  # cut short


def _response(status: int, message_id: int, comment: str | None = None) -> P_DATA:
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo, primitive.Status = message_id, status
    primitive.AffectedSOPClassUID, primitive.AffectedSOPInstanceUID = CTImageStorage, "1.2.3"
    if comment:
        primitive.ErrorComment = comment  # type: ignore[assignment]  # inferred None from __init__
    message = C_STORE_RSP()
    message.primitive_to_message(primitive)
    encoded = encode(message.command_set, True, True)
    assert encoded is not None
    pdata = P_DATA()
    pdata.presentation_data_value_list.append((5, b"\x03" + encoded))
    return pdata


def _association() -> Association:
    """A real requestor Association, never connected: what the DIMSE provider belongs to."""
    return Association(AE(), MODE_REQUESTOR)


@pytest.mark.parametrize(("status", "comment"), [(0x0000, None), (0xB007, None),
                                                 (0xC210, "cannot parse")])
def test_store_responses_are_read_without_pydicom(status: int, comment: str | None) -> None:
    dimse = StoreResponseDIMSE(_association())
    dimse.receive_primitive(_response(status, 42, comment))
    # The queue is typed for pynetdicom's primitives; StoreResponseDIMSE also puts its own.
    message: tuple[int | None, object] = dimse.get_msg(block=False)
    context_id, response = message
    assert context_id == 5
    assert response == StoreResponse(status, 42)


def test_other_messages_take_pynetdicoms_decoder() -> None:
    dimse = StoreResponseDIMSE(_association())
    pdata = _response(0x0000, 3)
    whole = pdata.presentation_data_value_list[0][1][1:]
    first, second = P_DATA(), P_DATA()  # the same response in two fragments
    first.presentation_data_value_list.append((5, b"\x01" + whole[:20]))
    second.presentation_data_value_list.append((5, b"\x03" + whole[20:]))
    dimse.receive_primitive(first)
    dimse.receive_primitive(second)
    _, response = dimse.get_msg(block=False)
    assert not isinstance(response, StoreResponse)
    assert isinstance(response, C_STORE)
    assert response.Status == 0 and response.MessageIDBeingRespondedTo == 3


def test_data_set_offset_matches_pynetdicom(tmp_path: Path) -> None:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.PatientID = CTImageStorage, generate_uid(), "PSN1"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = tmp_path / "a.dcm"
    ds.save_as(path, enforce_file_format=True)
    with open(path, "rb") as fh:
        assert data_set_offset(path, fh) == split_dataset(path)[1]
    raw = path.read_bytes()
    no_length = tmp_path / "b.dcm"  # File Meta without (0002,0000): found by walking it
    meta_end = split_dataset(path)[1]
    no_length.write_bytes(raw[:132] + raw[144:meta_end] + raw[meta_end:])
    with open(no_length, "rb") as fh:
        assert data_set_offset(no_length, fh) == split_dataset(no_length)[1] == meta_end - 12
