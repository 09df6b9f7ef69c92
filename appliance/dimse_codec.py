"""Hand-written encodings the streaming SCP needs per instance: commands, responses, File Meta.

Why by hand: building a pydicom Dataset for every command set, response and File Meta header,
and encoding it, was most of the CPU an SCP spent per instance (see
:mod:`appliance.streaming_scp`). These are a dozen fixed elements: the command group is always
Implicit VR Little Endian (PS3.7 6.3.1), the File Meta group always Explicit VR Little Endian
(PS3.10 7.1), so each is a few ``struct`` calls. Values are padded to even length as the
standard requires: UIDs with NUL, text with a space.
"""

from __future__ import annotations

import struct

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

__all__ = ["NO_DATASET", "MalformedCommand", "command_value", "p_data_command", "parse_command",
           "part10_header", "response_command", "us_value"]

P_DATA_TF_TYPE = 0x04
NO_DATASET = 0x0101
_ELEMENT = struct.Struct("<HHL")
_US = struct.Struct("<H")
_PDU_HEADER = struct.Struct(">BxL")
_PDV_LENGTH = struct.Struct(">L")


class MalformedCommand(ValueError):
    """A command set whose elements overrun it, or that holds another group."""


def parse_command(data: bytes) -> dict[int, bytes]:
    """Group 0000 elements (Implicit VR Little Endian) by element number."""
    elements: dict[int, bytes] = {}
    pos, end = 0, len(data)
    while pos + 8 <= end:
        group, element, length = _ELEMENT.unpack_from(data, pos)
        stop = pos + 8 + length
        if group != 0 or stop > end:
            raise MalformedCommand("command element out of bounds")
        elements[element] = data[pos + 8:stop]
        pos = stop
    return elements


def us_value(value: bytes | None, default: int = -1) -> int:
    return int(_US.unpack_from(value)[0]) if value and len(value) >= 2 else default


def command_value(value: bytes | None) -> str:
    """A UI or AE value of a command, without its padding."""
    return (value or b"").decode("latin-1").strip("\x00 ")


def response_command(field: int, message_id: int, sop_class: str, sop_instance: str | None,
                     status: int) -> bytes:
    """A C-STORE-RSP or C-ECHO-RSP command set (no dataset follows)."""
    elements = [(0x0002, _uid(sop_class)), (0x0100, _US.pack(field)),
                (0x0120, _US.pack(message_id)), (0x0800, _US.pack(NO_DATASET)),
                (0x0900, _US.pack(status))]
    if sop_instance is not None:
        elements.append((0x1000, _uid(sop_instance)))
    body = b"".join(_ELEMENT.pack(0, element, len(value)) + value for element, value in elements)
    return _ELEMENT.pack(0, 0, 4) + struct.pack("<L", len(body)) + body


def p_data_command(context_id: int, command: bytes) -> bytes:
    """A P-DATA-TF PDU carrying ``command`` whole, as the last command fragment."""
    pdv = _PDV_LENGTH.pack(len(command) + 2) + bytes((context_id, 0x03)) + command
    return _PDU_HEADER.pack(P_DATA_TF_TYPE, len(pdv)) + pdv


def part10_header(sop_class: str, sop_instance: str, transfer_syntax: str) -> bytes:
    """Preamble and File Meta Information for a received dataset, as pynetdicom writes them."""
    elements = b"".join((
        struct.pack("<HH2s2xL", 2, 0x0001, b"OB", 2), b"\x00\x01",
        _meta_element(0x0002, b"UI", _uid(sop_class)),
        _meta_element(0x0003, b"UI", _uid(sop_instance)),
        _meta_element(0x0010, b"UI", _uid(transfer_syntax)),
        _meta_element(0x0012, b"UI", _uid(PYNETDICOM_IMPLEMENTATION_UID)),
        _meta_element(0x0013, b"SH", _text(PYNETDICOM_IMPLEMENTATION_VERSION)),
    ))
    return (b"\x00" * 128 + b"DICM"
            + _meta_element(0x0000, b"UL", struct.pack("<L", len(elements))) + elements)


def _uid(value: str) -> bytes:
    raw = value.encode("latin-1")
    return raw + b"\x00" if len(raw) % 2 else raw


def _text(value: str) -> bytes:
    raw = value.encode("latin-1")
    return raw + b" " if len(raw) % 2 else raw


def _meta_element(element: int, vr: bytes, value: bytes) -> bytes:
    return struct.pack("<HH2sH", 2, element, vr, len(value)) + value
