"""Write a de-identified dataset, copying the elements the policy left alone as raw byte runs.

pydicom writes element by element, with a buffer and several calls per element; for a CT header
of ~90 elements that costs more than the de-identification itself. Elements still held as
pydicom ``RawDataElement`` (never decoded: the policy left them alone, or the engine stored an
already-encoded value) are framed here with one ``struct.pack`` each and written in one call per
run; only decoded elements go through pydicom's encoder. The bytes are identical to pydicom's
own output: a raw element is written as tag, VR, length and value.

Decoded elements of the simple kinds (ASCII strings of the VRs pydicom always writes as ASCII,
integers, OB) and the File Meta Information are encoded here too. Falls back to pydicom's writer
when the dataset's character set or encoding changed (every text element must then be
re-encoded) and for big endian; a deflated dataset is encoded in memory and compressed as one
raw deflate stream.
"""

from __future__ import annotations

import struct
import zlib
from typing import BinaryIO

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO, DicomFileLike
from pydicom.filewriter import write_data_element, write_dataset, write_file_meta_info
from pydicom.multival import MultiValue

from policies.values import ascii_encoded

_LONG_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "SQ", "UN", "UC", "UR", "UT", "SV",
                       "UV"})
_UNDEFINED = 0xFFFFFFFF
# Written by pydicom as ASCII in the default encoding (write_string), whatever the charset.
_ASCII_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UI"})
_TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC"})
# Character sets (Python codec names, as pydicom holds them) that encode ASCII text as ASCII.
_ASCII_SUPERSETS = frozenset({"iso8859", "latin_1", "utf_8", *(f"iso8859_{n}" for n in
                                                                (2, 3, 4, 5, 6, 7, 8, 9, 11, 15))})
_INTEGER_VRS = {"US": "H", "SS": "h", "UL": "I", "SL": "i"}
_REQUIRED_META = (0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012)
_PACK_TAG, _PACK_UL, _PACK_US = (struct.Struct("<HH").pack, struct.Struct("<I").pack,
                                 struct.Struct("<H").pack)


def write_instance(ds: Dataset, out: BinaryIO, source_fd: int | None = None) -> None:
    """Write preamble, File Meta Information and ``ds`` to ``out`` (Part 10).

    ``source_fd`` is accepted for callers that splice Pixel Data; raw elements are written from
    the bytes pydicom already holds, so it is not needed here.
    """
    syntax = ds.file_meta.TransferSyntaxUID
    fp = DicomFileLike(out)
    fp.write(b"\x00" * 128 + b"DICM")
    fp.is_little_endian, fp.is_implicit_VR = True, False
    _write_file_meta(fp, ds.file_meta)
    fp.is_little_endian, fp.is_implicit_VR = syntax.is_little_endian, syntax.is_implicit_VR
    same_encoding = (ds.original_encoding == (syntax.is_implicit_VR, syntax.is_little_endian)
                     and ds.original_character_set == ds._character_set)
    if syntax.is_deflated:
        _write_deflated(fp, ds)
        return
    if not same_encoding or not syntax.is_little_endian:
        write_dataset(fp, ds)
        return
    _write_raw_runs(fp, ds, syntax.is_implicit_VR)


def _write_raw_runs(fp: DicomFileLike, ds: Dataset, implicit: bool) -> None:
    encodings = ds.get("SpecificCharacterSet", "iso8859")
    charset = ds._character_set
    ascii_text = all(codec in _ASCII_SUPERSETS
                     for codec in ([charset] if isinstance(charset, str) else charset))
    pending: list[bytes] = []
    for tag in sorted(ds.keys()):
        if tag.element == 0 and tag.group > 6:  # retired group lengths are not written
            continue
        elem = ds.get_item(tag)
        if isinstance(elem, RawDataElement):
            framed = None
            if (elem.length != _UNDEFINED and elem.value is not None
                    and len(elem.value) == elem.length and (implicit or elem.VR)):
                framed = _frame(tag, elem.VR, elem.value, implicit)
        else:
            value = _simple_value(elem, ascii_text)
            framed = None if value is None else _frame(tag, elem.VR, value, implicit)
        if framed is None:
            _flush(fp, pending)
            write_data_element(fp, elem, encodings)
        else:
            pending.extend(framed)
    _flush(fp, pending)


def _frame(tag: int, vr: str | None, value: bytes, implicit: bool) -> tuple[bytes, ...] | None:
    """Tag, VR and length before ``value``; None when only pydicom knows (a short-VR value
    too long for its 16-bit length becomes UN there)."""
    head = _PACK_TAG(tag >> 16, tag & 0xFFFF)
    if implicit:
        return head, _PACK_UL(len(value)), value
    assert vr is not None
    if vr in _LONG_VRS:
        return head, vr.encode("ascii"), b"\x00\x00", _PACK_UL(len(value)), value
    if len(value) > 0xFFFF:
        return None
    return head, vr.encode("ascii"), _PACK_US(len(value)), value


def _simple_value(elem: DataElement, ascii_text: bool) -> bytes | None:
    """The encoded value of a decoded element of the common simple kinds, as pydicom encodes it:
    ASCII strings of the VRs pydicom writes in the default encoding (and of the text VRs, when
    ``ascii_text`` says the character set encodes ASCII as ASCII), binary integers and OB bytes.
    None for anything else (then pydicom's own encoder runs)."""
    vr, value = elem.VR, elem.value
    if elem.is_undefined_length:  # encapsulated Pixel Data, sequences
        return None
    if vr in _ASCII_VRS or (ascii_text and vr in _TEXT_VRS):
        return ascii_encoded(vr, value)
    code = _INTEGER_VRS.get(vr)
    if code is not None:
        if value is None or value == "":
            return b""
        if type(value) is int:
            return struct.pack("<" + code, value)
        if isinstance(value, MultiValue) and all(type(v) is int for v in value):
            return struct.pack(f"<{len(value)}{code}", *value)
        return None
    if vr == "OB" and type(value) is bytes:
        return value + b"\x00" * (len(value) % 2)
    return None


def _write_file_meta(fp: DicomFileLike, meta: FileMetaDataset) -> None:
    """File Meta Information as ``write_file_meta_info(enforce_standard=True)`` writes it.

    pydicom's own writer is used whenever it would add or complain about something (a required
    element missing or empty) or an element is not of the simple kinds above."""
    body: list[bytes] = []
    simple = all(meta.get(tag) is not None and not meta[tag].is_empty
                 for tag in _REQUIRED_META) and 0x00020013 in meta
    for tag in sorted(meta.keys()) if simple else ():
        if tag == 0x00020000:
            continue
        elem = meta[tag]
        value = _simple_value(elem, True) if tag.group == 2 else None  # File Meta is ASCII
        framed = None if value is None else _frame(tag, elem.VR, value, False)
        if framed is None:
            simple = False
            break
        body.extend(framed)
    if not simple:
        write_file_meta_info(fp, meta, enforce_standard=True)
        return
    data = b"".join(body)
    meta.FileMetaInformationGroupLength = len(data)  # as pydicom leaves it
    fp.write(_PACK_TAG(2, 0) + b"UL" + _PACK_US(4) + _PACK_UL(len(data)) + data)


def _write_deflated(fp: DicomFileLike, ds: Dataset) -> None:
    """Deflated Explicit VR Little Endian: the dataset (not the File Meta) is a raw deflate
    stream (PS3.5 A.5), so encode it in memory first and compress it as a whole."""
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = compressor.compress(buffer.getvalue()) + compressor.flush()
    fp.write(deflated + b"\x00" * (len(deflated) % 2))  # a Part 10 file has an even length


def _flush(fp: DicomFileLike, pending: list[bytes]) -> None:
    if pending:
        fp.write(b"".join(pending))
        pending.clear()
