"""Text values under the dataset's Specific Character Set: read them raw, keep them writable.

Reading. The engine reads the few values it needs (Patient ID for keys, a date to shift, an ID to
turn into a dummy) straight from the element's bytes with the dataset's encodings, instead of
asking pydicom to convert the element: conversion costs far more than the decode, and the engine
replaces the element anyway.

Writing. pydicom encodes values with the declared character set when the dataset is written. A
replacement the declared set cannot encode (a non-Latin policy value in a Latin-1 dataset) would
be written as mojibake or fail, so the dataset switches to ISO_IR 192 (UTF-8). Before switching,
every text element still held raw is decoded with the *old* set; otherwise pydicom would write
its original bytes under the new label.
"""

from __future__ import annotations

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.valuerep import PersonName

UTF8 = "ISO_IR 192"
_PN_DELIMITERS = {0x5C, 0x3D, 0x5E}  # \ = ^
_TEXT_DELIMITERS = {0x5C}
_SINGLE_VALUE_VRS = frozenset({"LT", "ST", "UT", "UR"})  # backslash is text, not a separator

AnyElement = DataElement | RawDataElement


def encodings_of(ds: Dataset, inherited: list[str] | None = None) -> list[str]:
    """Python codec names for ``ds``'s Specific Character Set (or the inherited ones)."""
    elem = ds.get_item(0x00080005)
    if elem is None or not elem.value:
        return inherited if inherited is not None else convert_encodings(["ISO_IR 6"])
    value = elem.value
    if isinstance(value, bytes):
        names = [v.strip() for v in value.decode("ascii", "replace").split("\\")]
    elif isinstance(value, str):
        names = [value]
    else:
        names = [str(v) for v in value]
    try:
        return convert_encodings(names or ["ISO_IR 6"])
    except LookupError:
        return convert_encodings(["ISO_IR 6"])


def raw_strings(elem: AnyElement | None, encodings: list[str], vr: str | None = None) -> list[str]:
    """The element's values as strings, decoded from raw bytes when it is still raw.

    Values keep their inner spaces; padding (trailing spaces and NULs) is removed. An absent or
    empty element gives ``[]``.
    """
    if elem is None:
        return []
    value = elem.value
    if value is None or value == "" or value == b"":
        return []
    vr = vr or elem.VR or ""
    if isinstance(value, bytes):
        delimiters = _PN_DELIMITERS if vr == "PN" else _TEXT_DELIMITERS
        try:
            text = decode_bytes(value, encodings, delimiters)
        except (UnicodeError, LookupError, ValueError):
            text = value.decode("latin-1")
        if vr in _SINGLE_VALUE_VRS:
            return [text.rstrip("\x00 ")]
        return [part.rstrip("\x00 ") for part in text.split("\\")]
    if isinstance(value, str | PersonName):
        return [str(value)]
    if isinstance(value, list | tuple) or hasattr(value, "__iter__"):
        return [str(v) for v in value]
    return [str(value)]


def raw_text(elem: AnyElement | None, encodings: list[str]) -> str:
    """All values joined by backslash and stripped: for keys, comparisons and keyed codes."""
    return "\\".join(v.strip() for v in raw_strings(elem, encodings)).strip("\\ ")


def _strictly_encodable(text: str, encodings: list[str]) -> bool:
    """Whether ``text`` can be written under ``encodings`` without replacement characters.

    pydicom's own encoder does not fail: it warns and writes "?" instead. With several
    encodings (ISO 2022 code extensions) each character needs one encoding that holds it.
    """
    def holds(codec: str, chars: str) -> bool:
        try:
            chars.encode(codec)
        except (UnicodeError, LookupError):
            return False
        return True

    if any(holds(codec, text) for codec in encodings):
        return True
    return len(encodings) > 1 and all(
        any(holds(codec, char) for codec in encodings) for char in text)


def _declared_encodings(ds: Dataset) -> list[str]:
    """The encodings a reader may assume: without a declaration that is ASCII (ISO_IR 6), not
    the Latin-1 pydicom tolerates when reading."""
    elem = ds.get_item(0x00080005)
    if elem is None or not raw_text(elem, ["ascii"]).strip("\\ "):
        return ["ascii"]
    return encodings_of(ds)


def encodable(ds: Dataset, text: str) -> bool:
    return _strictly_encodable(text, _declared_encodings(ds))


def ensure_encodable(ds: Dataset, written: list[str]) -> bool:
    """Switch ``ds`` to UTF-8 if any of the ``written`` values cannot be encoded; True if so."""
    if not written:
        return False
    encodings = _declared_encodings(ds)
    if all(_strictly_encodable(text, encodings) for text in written):
        return False
    decode_all(ds)
    ds.SpecificCharacterSet = UTF8
    for item in _items(ds):
        if "SpecificCharacterSet" in item:
            item.SpecificCharacterSet = UTF8
    return True


def decode_all(ds: Dataset) -> None:
    """Convert every raw element (at every depth) to a decoded element under its current set."""
    for elem in ds.iterall():
        _ = elem.value


def _items(ds: Dataset) -> list[Dataset]:
    found: list[Dataset] = []
    for elem in ds.iterall():
        if elem.VR == "SQ":
            found.extend(elem.value)
    return found
