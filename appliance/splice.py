"""De-identify a file without reading its pixels into Python.

Most of an image file is Pixel Data, which no de-identification profile changes (pixel cleaning
is a separate, explicit step). So the header is parsed up to the top-level Pixel Data element,
de-identified, written, and the Pixel Data element's bytes are copied from the input file to the
output file by the kernel (``os.copy_file_range``). This avoids two full decode/encode passes
over half a megabyte per CT image, which is most of the cost of a pydicom read-and-write.

The splice is used only when it is exactly equivalent to a full rewrite: little-endian,
non-deflated transfer syntax, and Pixel Data the last element of the file (defined length, or
an encapsulated sequence that ends at end of file). Anything else (trailing elements such as
Digital Signatures, deflate, big endian) returns ``None`` and the caller takes the full path.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian

from appliance.tokenizer import Unsupported, read_explicit_le_header

_PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UN", b"UC", b"UR", b"UT", b"SV",
             b"UV"}
_ITEM, _SEQ_END = 0xE000FFFE, 0xE0DDFFFE  # as read little-endian (group, element swapped)


class Truncated(ValueError):
    """Pixel Data is shorter than its declared length."""


@dataclass(frozen=True)
class PixelSpan:
    """Where the top-level Pixel Data element lies in the input file."""

    start: int
    end: int
    value_length: int  # bytes of value (native) or of fragments (encapsulated)
    encapsulated: bool


def read_header(fp: BinaryIO, size: int) -> tuple[Dataset, PixelSpan | None] | None:
    """Parse ``fp`` up to Pixel Data. None if the splice does not apply (see module docstring).

    Returns the dataset (without Pixel Data) and the span of the Pixel Data element, or a
    ``None`` span when the file has no Pixel Data (then the dataset is complete).
    """
    try:
        ds, _ = read_explicit_le_header(fp, size)
    except Unsupported:
        fp.seek(0)
        ds = dcmread(fp, stop_before_pixels=True)
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax is None or syntax in (DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian):
        return None
    start = fp.tell()
    if start >= size:
        return ds, None
    head = fp.read(12)
    if len(head) < 8:
        raise Truncated("element header cut short")
    tag = struct.unpack("<HH", head[:4])
    tag_int = (tag[0] << 16) | tag[1]
    if tag_int not in _PIXEL_TAGS:
        return None  # stopped elsewhere: not our case
    if syntax.is_implicit_VR:
        length, header = struct.unpack("<I", head[4:8])[0], 8
    elif head[4:6] in _LONG_VRS:
        length, header = struct.unpack("<I", head[8:12])[0], 12
    else:
        length, header = struct.unpack("<H", head[6:8])[0], 8
    if length != 0xFFFFFFFF:
        end = start + header + length
        if end > size:
            raise Truncated("Pixel Data shorter than its declared length")
        if end != size:
            return None  # elements follow Pixel Data
        return ds, PixelSpan(start, end, length, encapsulated=False)
    end = _end_of_fragments(fp, start + header, size)
    if end != size:
        return None
    return ds, PixelSpan(start, end, end - start - header, encapsulated=True)


def _end_of_fragments(fp: BinaryIO, position: int, size: int) -> int:
    """Walk the items of encapsulated Pixel Data to the Sequence Delimitation Item."""
    while True:
        fp.seek(position)
        head = fp.read(8)
        if len(head) < 8:
            raise Truncated("encapsulated Pixel Data ends without a delimiter")
        marker, length = struct.unpack("<II", head)
        position += 8
        if marker == _SEQ_END:
            return position
        if marker != _ITEM or position + length > size:
            raise Truncated("encapsulated Pixel Data fragment cut short")
        position += length


def copy_span(src: BinaryIO, dst: BinaryIO, span: PixelSpan) -> None:
    """Append the Pixel Data element bytes of ``src`` to ``dst``, in the kernel if possible."""
    dst.flush()
    remaining = span.end - span.start
    in_fd, out_fd = src.fileno(), dst.fileno()
    offset = span.start
    try:
        out_offset = os.lseek(out_fd, 0, os.SEEK_END)
        while remaining:
            copied = os.copy_file_range(in_fd, out_fd, remaining, offset, out_offset)
            if copied == 0:
                raise Truncated("input ended while copying Pixel Data")
            offset += copied
            out_offset += copied
            remaining -= copied
        os.lseek(out_fd, out_offset, os.SEEK_SET)
    except OSError:  # copy_file_range unsupported here (other file systems): plain copy
        src.seek(offset)
        while remaining:
            chunk = src.read(min(remaining, 1 << 20))
            if not chunk:
                raise Truncated("input ended while copying Pixel Data") from None
            dst.write(chunk)
            remaining -= len(chunk)
        dst.flush()
