"""Read a still-encoded sequence just far enough to know whether the engine must enter it.

pydicom parses a sequence into item datasets the first time it is touched, and writes a parsed
sequence element by element; both cost more than everything else the engine does to an image.
Most sequences a policy keeps hold nothing it changes (a code sequence, an issuer), so for a
sequence that pydicom still holds as bytes, the engine first lists the tags inside (with their
VRs and raw values, at every depth) and asks its plan about each. Only if something needs doing
is the sequence parsed and walked; otherwise its bytes are written back as they came.

Anything this scanner does not fully understand (big endian, an undefined-length UN, lengths
that overrun) answers "enter it": the answer may cost time, never a missed identifier.
"""

from __future__ import annotations

from collections.abc import Callable
from struct import unpack_from

# Explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN",
                       b"UR", b"UT", b"UV"})
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF

# Asked for each element found: (tag, VR or None when implicit, raw value or None for a
# sequence). Answers NEEDED, NOTHING, or ENTER (a kept sequence: look inside). A sequence of
# undefined length is always entered unless the answer is NEEDED.
NEEDED, NOTHING, ENTER = 0, 1, 2
Question = Callable[[int, str | None, bytes | None], int]


class _Unreadable(Exception):
    """The bytes are not what the scanner expects: the caller parses the sequence instead."""


def sequence_needs_walk(value: bytes | None, implicit: bool, little_endian: bool,
                        ask: Question) -> bool:
    """Whether any element inside the encoded sequence ``value`` needs the engine."""
    if value is None or not little_endian:
        return True
    try:
        return _items(value, 0, len(value), implicit, ask, until_delimiter=False)[0]
    except Exception:  # _Unreadable, struct.error, a bad VR: let pydicom parse it
        return True


def _items(buf: bytes, pos: int, end: int, implicit: bool, ask: Question,
           until_delimiter: bool) -> tuple[bool, int]:
    """Scan items from ``pos``; return (needed, position after the sequence)."""
    while pos < end:
        group, element, length = unpack_from("<HHL", buf, pos)
        tag = group << 16 | element
        pos += 8
        if tag == _SEQUENCE_END:
            return False, pos
        if tag != _ITEM:
            raise _Unreadable
        if length == _UNDEFINED:
            needed, pos = _elements(buf, pos, end, implicit, ask, until_delimiter=True)
        else:
            if pos + length > end:
                raise _Unreadable
            needed, _ = _elements(buf, pos, pos + length, implicit, ask, until_delimiter=False)
            pos += length
        if needed:
            return True, pos
    if until_delimiter:
        raise _Unreadable  # ran out of bytes before the sequence delimiter
    return False, pos


def _elements(buf: bytes, pos: int, end: int, implicit: bool, ask: Question,
              until_delimiter: bool) -> tuple[bool, int]:
    """Scan one item's elements; return (needed, position after the item)."""
    while pos < end:
        group, element = unpack_from("<HH", buf, pos)
        tag = group << 16 | element
        if tag == _ITEM_END:
            return False, pos + 8
        vr: str | None
        if implicit:
            vr = None
            (length,) = unpack_from("<L", buf, pos + 4)
            pos += 8
        else:
            raw_vr = buf[pos + 4:pos + 6]
            vr = raw_vr.decode("ascii")
            if raw_vr in _LONG_VRS:
                (length,) = unpack_from("<L", buf, pos + 8)
                pos += 12
            else:
                (length,) = unpack_from("<H", buf, pos + 6)
                pos += 8
        if length == _UNDEFINED:
            if vr not in (None, "SQ") or ask(tag, "SQ", None) == NEEDED:
                return True, pos  # UN or encapsulated data of undefined length: parse it
            needed, pos = _items(buf, pos, end, implicit, ask, until_delimiter=True)
            if needed:
                return True, pos
            continue
        if pos + length > end:
            raise _Unreadable
        value = buf[pos:pos + length]
        answer = ask(tag, vr, None if vr == "SQ" else value)
        if answer == NEEDED:
            return True, pos + length
        if answer == ENTER and _items(value, 0, length, implicit, ask, until_delimiter=False)[0]:
            return True, pos + length
        pos += length
    if until_delimiter:
        raise _Unreadable
    return False, pos
