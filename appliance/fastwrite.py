"""Write a de-identified dataset, copying the elements the policy left alone as raw byte runs.

pydicom writes element by element, with a buffer and several calls per element; for a CT header
of ~90 elements that costs more than the de-identification itself. Elements still held as
pydicom ``RawDataElement`` (never decoded: the policy left them alone, or the engine stored an
already-encoded value) are framed here with one ``struct.pack`` each and written in one call per
run; only decoded elements go through pydicom's encoder. The bytes are identical to pydicom's
own output: a raw element is written as tag, VR, length and value.

Falls back to pydicom's writer when the dataset's character set or encoding changed (every text
element must then be re-encoded) and for big endian; a deflated dataset is encoded in memory and
compressed as one raw deflate stream.
"""

from __future__ import annotations

import struct
import zlib
from typing import BinaryIO

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO, DicomFileLike
from pydicom.filewriter import write_data_element, write_dataset, write_file_meta_info

_LONG_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "SQ", "UN", "UC", "UR", "UT", "SV",
                       "UV"})
_UNDEFINED = 0xFFFFFFFF


def write_instance(ds: Dataset, out: BinaryIO, source_fd: int | None = None) -> None:
    """Write preamble, File Meta Information and ``ds`` to ``out`` (Part 10).

    ``source_fd`` is accepted for callers that splice Pixel Data; raw elements are written from
    the bytes pydicom already holds, so it is not needed here.
    """
    syntax = ds.file_meta.TransferSyntaxUID
    fp = DicomFileLike(out)
    fp.write(b"\x00" * 128 + b"DICM")
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_file_meta_info(fp, ds.file_meta, enforce_standard=True)
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
    pending: list[bytes] = []
    pack_tag, pack_ul, pack_us = struct.Struct("<HH").pack, struct.Struct("<I").pack, \
        struct.Struct("<H").pack
    for tag in sorted(ds.keys()):
        if tag.element == 0 and tag.group > 6:  # retired group lengths are not written
            continue
        elem = ds.get_item(tag)
        if (isinstance(elem, RawDataElement) and elem.length != _UNDEFINED
                and elem.value is not None and len(elem.value) == elem.length
                and (implicit or elem.VR)):
            pending.append(pack_tag(tag.group, tag.element))
            if implicit:
                pending.append(pack_ul(elem.length))
            elif elem.VR in _LONG_VRS:
                pending.append(elem.VR.encode("ascii") + b"\x00\x00" + pack_ul(elem.length))
            elif elem.length > 0xFFFF:
                _flush(fp, pending)
                write_data_element(fp, elem, encodings)
                continue
            else:
                pending.append(elem.VR.encode("ascii") + pack_us(elem.length))
            pending.append(elem.value)
            continue
        _flush(fp, pending)
        write_data_element(fp, elem, encodings)
    _flush(fp, pending)


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
