"""A fast reader for Part 10 headers in Explicit VR Little Endian, up to Pixel Data.

Why: pydicom's ``dcmread(stop_before_pixels=True)`` costs about as much as the whole
de-identification of a CT header. Most of that is its general element generator (a file read,
a ``tell``, and several checks for every element). This module reads the header into memory in
one call and cuts it into pydicom's own element types with ``struct.unpack_from``, producing
*the same objects pydicom would*: ``RawDataElement`` for values, ``DataElement`` with a parsed
``Sequence`` for undefined-length sequences, raw bytes (parsed lazily by pydicom) for
defined-length ones, with the same character-set inheritance, item flags and file positions.
Everything downstream (the engine, :mod:`appliance.fastwrite`) therefore behaves identically.

It covers the common case only and says so by raising :class:`Unsupported`: another transfer
syntax, an unknown VR, an undefined length outside a sequence, a command group in the dataset.
The caller then uses pydicom's reader, which knows every quirk.
"""

from __future__ import annotations

import struct
from collections.abc import MutableSequence
from typing import BinaryIO

from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import DataElement, RawDataElement, empty_value_for_VR
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.filereader import ENCODED_VR
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import ExplicitVRLittleEndian
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32
from pydicom.values import convert_string

__all__ = ["Unsupported", "read_explicit_le_header"]

_ELEMENT = struct.Struct("<HH2sH")
_TAG_LENGTH = struct.Struct("<HHL")
_UL = struct.Struct("<L")
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
_SPECIFIC_CHARACTER_SET = 0x00080005
_LONG = frozenset(vr.encode("ascii") for vr in EXPLICIT_VR_LENGTH_32)
_VRS = {raw: raw.decode("ascii") for raw in ENCODED_VR}
# Raw empty values are b"" or None (for SQ), as pydicom's reader stores them.
_EMPTY: dict[str, bytes | None] = {
    vr: value if isinstance(value, bytes) or value is None else b""
    for vr in _VRS.values() for value in [empty_value_for_VR(vr, raw=True)]}
_FIRST_READ = 1 << 16
_MAX_HEADER = 1 << 26  # 64 MiB of header is not a header: leave it to pydicom

Encoding = str | MutableSequence[str]


class Unsupported(Exception):
    """Not the common case this reader covers; use pydicom's reader instead."""


class _NeedMore(Exception):
    """The header runs past the bytes read so far."""


def read_explicit_le_header(fp: BinaryIO, size: int) -> tuple[FileDataset, int]:
    """Read ``fp`` (a Part 10 file of ``size`` bytes) up to top-level Pixel Data.

    Returns the dataset without Pixel Data and the file offset where reading stopped: the start
    of the Pixel Data element, or ``size`` when there is none. ``fp`` is left at that offset.
    Raises :class:`Unsupported` for anything but Explicit VR Little Endian.
    """
    want = min(size, _FIRST_READ)
    while True:
        fp.seek(0)
        buf = fp.read(want)
        try:
            ds, stop = _parse_file(fp, buf, size)
        except _NeedMore:
            if want >= size or want >= _MAX_HEADER:
                raise Unsupported("header does not end where its lengths say") from None
            want = min(size, want * 4)
            continue
        fp.seek(stop)
        return ds, stop


def _parse_file(fp: BinaryIO, buf: bytes, size: int) -> tuple[FileDataset, int]:
    if len(buf) < 132 or buf[128:132] != b"DICM":
        raise Unsupported("no Part 10 preamble")
    meta_elements, pos = _elements(buf, 132, None, default_encoding, meta=True)
    file_meta = FileMetaDataset(Dataset(meta_elements))
    file_meta.set_original_encoding(False, True, default_encoding)
    syntax = file_meta.get("TransferSyntaxUID")
    if syntax != ExplicitVRLittleEndian:
        raise Unsupported("transfer syntax")
    if pos < size and pos >= len(buf):
        raise _NeedMore
    elements, stop = _elements(buf, pos, None, default_encoding, top=True,
                               complete=len(buf) >= size)
    dataset = Dataset(elements)
    encoding = _encoding_of(elements, default_encoding)
    ds = FileDataset(fp, dataset, buf[:128], file_meta, False, True)
    ds.set_original_encoding(False, True, encoding)
    return ds, stop


def _encoding_of(elements: dict[BaseTag, RawDataElement | DataElement],
                 parent: Encoding) -> Encoding:
    elem = elements.get(BaseTag(_SPECIFIC_CHARACTER_SET))
    if elem is None:
        return parent
    value = elem.value
    names = convert_string(value or b"", True) if isinstance(value, bytes) else value
    return convert_encodings(names)


def _elements(buf: bytes, pos: int, end: int | None, encoding: Encoding, *,
              meta: bool = False, top: bool = False, complete: bool = False,
              ) -> tuple[dict[BaseTag, RawDataElement | DataElement], int]:
    """Elements from ``pos`` to ``end`` (None: to an Item Delimitation Item, or for ``top``
    to Pixel Data or the end of the buffer). Returns them and the position after them."""
    elements: dict[BaseTag, RawDataElement | DataElement] = {}
    unpack_element, unpack_ul = _ELEMENT.unpack_from, _UL.unpack_from
    limit = len(buf)
    while True:
        if end is not None and pos >= end:
            if pos > end:
                raise Unsupported("element runs past its item")
            return elements, pos
        if pos + 8 > limit:
            if top and complete and pos == limit:
                return elements, pos
            raise _NeedMore
        group, element, raw_vr, length = unpack_element(buf, pos)
        tag = group << 16 | element
        if meta and group != 2:
            return elements, pos
        if tag == _ITEM_END and end is None and not top:
            return elements, pos + 8
        if top and tag in _PIXEL_TAGS:
            return elements, pos
        if group < 8 and not meta:
            raise Unsupported("command or file meta group inside the dataset")
        vr = _VRS.get(raw_vr)
        if vr is None:
            raise Unsupported("unknown VR")
        if raw_vr in _LONG:
            if pos + 12 > limit:
                raise _NeedMore
            length = unpack_ul(buf, pos + 8)[0]
            value_tell = pos + 12
        else:
            value_tell = pos + 8
        if length == _UNDEFINED:
            if vr != "SQ":
                raise Unsupported("undefined length outside a sequence")
            seq, pos = _sequence(buf, value_tell, encoding)
            elements[BaseTag(tag)] = DataElement(BaseTag(tag), vr, seq, value_tell,
                                                 is_undefined_length=True)
            continue
        pos = value_tell + length
        if pos > limit:
            raise _NeedMore
        value: bytes | None = buf[value_tell:pos] if length else _EMPTY[vr]
        if tag == _SPECIFIC_CHARACTER_SET:
            encoding = convert_encodings(convert_string(value or b"", True))
        elements[BaseTag(tag)] = RawDataElement(BaseTag(tag), vr, length, value, value_tell,
                                                False, True)


def _sequence(buf: bytes, pos: int, encoding: Encoding) -> tuple[Sequence, int]:
    """An undefined-length sequence's items, parsed as pydicom's ``read_sequence`` does."""
    items: list[Dataset] = []
    unpack = _TAG_LENGTH.unpack_from
    while True:
        if pos + 8 > len(buf):
            raise _NeedMore
        group, element, length = unpack(buf, pos)
        tag = group << 16 | element
        if tag == _SEQUENCE_END:
            pos += 8
            break
        if tag != _ITEM:
            raise Unsupported("sequence item expected")
        item_tell = pos
        if length == _UNDEFINED:
            elements, pos = _elements(buf, pos + 8, None, encoding)
        else:
            elements, pos = _elements(buf, pos + 8, pos + 8 + length, encoding)
        item = Dataset(elements, parent_encoding=encoding)
        item.set_original_encoding(False, True, _encoding_of(elements, encoding))
        item.is_undefined_length_sequence_item = length == _UNDEFINED
        item.seq_item_tell = item_tell
        item.file_tell = item_tell
        items.append(item)
    sequence = Sequence(items)
    sequence.is_undefined_length = True
    return sequence, pos
