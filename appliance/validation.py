"""What an SCP checks before it acknowledges a C-STORE: shared by stage 1 and the Receiver.

Both nodes promise the same thing to a sender: success (0x0000) means the instance is whole and
kept. A dataset that cannot keep that promise (truncated, structurally broken, no SOP Instance
UID, a UID that differs from the one the request announced, native Pixel Data shorter than the
image needs) is refused with 0xC210 and quarantined, so the sender sees the failure instead of
a silent loss. The checks live here, outside any stage package, because nothing may import a
stage.

Why a walk over the encoded elements instead of a pydicom parse: decoding every value of a
received dataset cost more than everything else an SCP does per instance, and pydicom reads a
truncated dataset without complaint anyway, so the old check had to force every value to find
one. Truncation and broken structure are properties of the *lengths*, not of the values: here
each element's declared length is checked against what is there (at every nesting depth; every
undefined-length sequence and item must be closed by its delimiter), and only the handful of
values the checks need are decoded. The walk works on any buffer (bytes, a memoryview, an mmap
of the spool file) without copying it, and raises nothing but :class:`BadInstance`, whatever
the input: a malformed value must get 0xC210, never an exception in the handler.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import mmap
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from pydicom._uid_dict import UID_dictionary
from pydicom.datadict import keyword_for_tag

__all__ = ["BadInstance", "Checked", "check_dataset", "receipt_key"]

Buffer = bytes | bytearray | memoryview | mmap.mmap

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
NATIVE_SYNTAXES = frozenset({IMPLICIT_VR_LITTLE_ENDIAN, "1.2.840.10008.1.2.1",
                             EXPLICIT_VR_BIG_ENDIAN, DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN})

_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_MAX_DEPTH = 32  # nested sequences; deeper is not an instance, it is an attack on the stack
_MAX_INFLATED = 1 << 31
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN",
                       b"UR", b"UT", b"UV"})
_SHORT_VRS = frozenset({b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS",
                        b"LO", b"LT", b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL",
                        b"US"})
_SEQUENCE_VRS = frozenset({b"SQ", b"UN"})  # UN of undefined length holds an implicit sequence

_SOP_CLASS, _SOP_INSTANCE = 0x00080016, 0x00080018
_STUDY, _SERIES = 0x0020000D, 0x0020000E
_SAMPLES, _FRAMES, _ROWS, _COLUMNS, _BITS = 0x00280002, 0x00280008, 0x00280010, 0x00280011, \
    0x00280100
_PIXEL_DATA = 0x7FE00010
_PIXEL_TAGS = (0x7FE00008, 0x7FE00009, _PIXEL_DATA)  # Float, Double Float, Pixel Data
_WANTED = frozenset({_SOP_CLASS, _SOP_INSTANCE, _STUDY, _SERIES, _SAMPLES, _FRAMES, _ROWS,
                     _COLUMNS, _BITS, *_PIXEL_TAGS})
_KEYWORDS = {_ROWS: "Rows", _COLUMNS: "Columns", _BITS: "Bits Allocated",
             _SAMPLES: "Samples per Pixel", _FRAMES: "Number of Frames"}


class BadInstance(Exception):
    """The dataset cannot be accepted; the message (no PHI) becomes the quarantine reason."""


@dataclass(frozen=True)
class Checked:
    """The identifying UIDs of a dataset that passed :func:`check_dataset` (stripped)."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str


def receipt_key(key: bytes, sop_instance_uid: str) -> str:
    """A keyed hash of a received SOP Instance UID: names spool files and rows without the UID."""
    return hmac.new(key, f"receipt\x00{sop_instance_uid}".encode(), hashlib.sha256).hexdigest()


def check_dataset(data: Buffer, transfer_syntax: str, affected_uid: str,
                  start: int = 0) -> Checked:
    """Check the dataset encoded in ``data[start:]`` (no File Meta) in ``transfer_syntax``.

    Raises :class:`BadInstance` (and nothing else) when it cannot be accepted.
    """
    try:
        if transfer_syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
            data, start = _inflate(data, start), 0
        walk = _Walk(data, little=transfer_syntax != EXPLICIT_VR_BIG_ENDIAN,
                     explicit=transfer_syntax != IMPLICIT_VR_LITTLE_ENDIAN)
        walk.elements(start, len(data), 0, delimited=False)
        return walk.checked(affected_uid, transfer_syntax in NATIVE_SYNTAXES)
    except BadInstance:
        raise
    except Exception as exc:  # whatever else a hostile byte stream provokes is bad input too
        raise BadInstance(f"dataset cannot be decoded ({type(exc).__name__})") from None


def _inflate(data: Buffer, start: int) -> bytes:
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        out = inflater.decompress(memoryview(data)[start:], _MAX_INFLATED)
    except zlib.error:
        raise BadInstance("dataset cannot be decoded (deflate stream is corrupt)") from None
    if inflater.unconsumed_tail:
        raise BadInstance("dataset cannot be decoded (deflated dataset is too large)")
    if not inflater.eof:
        raise BadInstance("dataset truncated: deflate stream ends early")
    return out


class _Walk:
    """One walk over an encoded dataset; collects the top-level values the checks need."""

    def __init__(self, data: Buffer, *, little: bool, explicit: bool) -> None:
        self.data = data
        self.explicit = explicit
        order = "<" if little else ">"
        self._tag_vr_short: Callable[[Buffer, int], tuple[int, int, bytes, int]] = \
            struct.Struct(f"{order}HH2sH").unpack_from
        self._tag_length: Callable[[Buffer, int], tuple[int, int, int]] = \
            struct.Struct(f"{order}HHL").unpack_from
        self._ul: Callable[[Buffer, int], tuple[int]] = struct.Struct(f"{order}L").unpack_from
        self._us: Callable[[Buffer, int], tuple[int]] = struct.Struct(f"{order}H").unpack_from
        self.found: dict[int, tuple[int, int]] = {}  # tag -> (value offset, length)

    def elements(self, pos: int, end: int, depth: int, *, delimited: bool) -> int:
        """Walk elements from ``pos`` up to ``end`` (or an Item Delimitation Item when
        ``delimited``); returns the position after them."""
        if depth > _MAX_DEPTH:
            raise BadInstance("dataset cannot be decoded (sequences nested too deeply)")
        data, explicit, found = self.data, self.explicit, self.found
        tag_vr_short, tag_length, ul = self._tag_vr_short, self._tag_length, self._ul
        while pos < end:
            if pos + 8 > end:
                raise BadInstance("dataset truncated: an element header is cut short")
            group, element, length = tag_length(data, pos)
            tag = group << 16 | element
            if tag == _ITEM_END:
                if not delimited:
                    raise BadInstance("dataset cannot be decoded (stray item delimiter)")
                return pos + 8
            vr = b""
            if explicit:
                _, _, vr, length = tag_vr_short(data, pos)
                if vr in _LONG_VRS:
                    if pos + 12 > end:
                        raise BadInstance("dataset truncated: an element header is cut short")
                    length = ul(data, pos + 8)[0]
                    value = pos + 12
                elif vr in _SHORT_VRS:
                    value = pos + 8
                else:
                    raise BadInstance(f"dataset cannot be decoded (unknown VR in {_name(tag)})")
            else:
                value = pos + 8
            if length == _UNDEFINED:
                if explicit and vr not in _SEQUENCE_VRS and tag != _PIXEL_DATA:
                    raise BadInstance(f"dataset cannot be decoded ({_name(tag)} has an"
                                      " undefined length)")
                if depth == 0 and tag == _PIXEL_DATA:
                    found[tag] = (value, _UNDEFINED)
                if tag == _PIXEL_DATA or vr in (b"OB", b"OW"):
                    pos = self._fragments(value, end)
                elif vr == b"UN":  # PS3.5 6.2.2: its items are Implicit VR Little Endian
                    pos = _Walk(data, little=True, explicit=False)._items(
                        value, end, depth, delimited=True)
                else:
                    pos = self._items(value, end, depth, delimited=True)
                continue
            stop = value + length
            if stop > end:
                raise BadInstance(f"dataset truncated: {_name(tag)} is shorter than declared")
            if vr == b"SQ":
                self._items(value, stop, depth, delimited=False)
            if depth == 0 and tag in _WANTED:
                found[tag] = (value, length)
            pos = stop
        if delimited:
            raise BadInstance("dataset truncated: an item is not closed")
        return pos

    def _items(self, pos: int, end: int, depth: int, *, delimited: bool) -> int:
        """Sequence items up to ``end``, or up to the Sequence Delimitation Item."""
        tag_length = self._tag_length
        while True:
            if not delimited and pos == end:
                return pos
            if pos + 8 > end:
                raise BadInstance("dataset truncated: a sequence is not closed")
            group, element, length = tag_length(self.data, pos)
            tag = group << 16 | element
            if tag == _SEQUENCE_END and delimited:
                return pos + 8
            if tag != _ITEM:
                raise BadInstance("dataset cannot be decoded (sequence item expected)")
            if length == _UNDEFINED:
                pos = self.elements(pos + 8, end, depth + 1, delimited=True)
                continue
            stop = pos + 8 + length
            if stop > end:
                raise BadInstance("dataset truncated: a sequence item is shorter than declared")
            self.elements(pos + 8, stop, depth + 1, delimited=False)
            pos = stop

    def _fragments(self, pos: int, end: int) -> int:
        """Encapsulated Pixel Data: items of opaque bytes, then the Sequence Delimitation Item."""
        tag_length = self._tag_length
        while True:
            if pos + 8 > end:
                raise BadInstance("dataset truncated: encapsulated Pixel Data is not closed")
            group, element, length = tag_length(self.data, pos)
            tag = group << 16 | element
            if tag == _SEQUENCE_END:
                return pos + 8
            if tag != _ITEM or length == _UNDEFINED:
                raise BadInstance("dataset cannot be decoded (Pixel Data fragment expected)")
            pos += 8 + length
            if pos > end:
                raise BadInstance("dataset truncated: a Pixel Data fragment is shorter than"
                                  " declared")

    # -- the checks on the values ---------------------------------------------------------------
    def checked(self, affected_uid: str, native: bool) -> Checked:
        sop_instance = self._text(_SOP_INSTANCE)
        if not sop_instance:
            raise BadInstance("dataset has no SOP Instance UID")
        if sop_instance != affected_uid:
            raise BadInstance("SOP Instance UID differs from the C-STORE request")
        sop_class = self._text(_SOP_CLASS)
        if _is_image(sop_class) and not any(tag in self.found for tag in _PIXEL_TAGS):
            raise BadInstance("dataset truncated: an image without Pixel Data")
        pixels = self.found.get(_PIXEL_DATA)
        if native and pixels is not None and pixels[1] != _UNDEFINED:
            expected = self._native_pixel_bytes()
            if expected and pixels[1] < expected:
                raise BadInstance("dataset truncated: PixelData shorter than the image needs")
        return Checked(sop_class, sop_instance, self._text(_STUDY), self._text(_SERIES))

    def _text(self, tag: int) -> str:
        where = self.found.get(tag)
        if where is None:
            return ""
        value, length = where
        return bytes(self.data[value:value + length]).decode("latin-1").strip("\x00 ")

    def _native_pixel_bytes(self) -> int:
        rows, columns, bits = self._us_value(_ROWS), self._us_value(_COLUMNS), \
            self._us_value(_BITS)
        if not (rows and columns and bits):
            return 0
        samples = self._us_value(_SAMPLES) or 1
        frames_text = self._text(_FRAMES)
        try:
            frames = int(frames_text) if frames_text else 1
        except ValueError:
            raise BadInstance("dataset has an invalid Number of Frames") from None
        return (rows * columns * samples * max(frames, 1) * bits + 7) // 8

    def _us_value(self, tag: int) -> int:
        where = self.found.get(tag)
        if where is None or where[1] == 0:
            return 0
        value, length = where
        if length != 2:
            raise BadInstance(f"dataset has an invalid {_KEYWORDS[tag]}")
        return self._us(self.data, value)[0]


@functools.lru_cache(maxsize=256)
def _is_image(sop_class_uid: str) -> bool:
    """An Image Storage SOP Class: its IOD requires pixel data (Type 1)."""
    entry = UID_dictionary.get(sop_class_uid)  # not UID(): it warns about malformed values
    return entry is not None and "Image Storage" in entry[0]


def _name(tag: int) -> str:
    """A keyword (or the tag) for a reason: names the element, never shows its value."""
    return keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
