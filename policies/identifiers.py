"""The patient's own identifying values, collected from a dataset before it is changed.

Why this is its own module: the text cleaner (:mod:`policies.textclean`) and the raw byte sweep
(:mod:`policies.sweep`) must look for the same identifiers, so the attributes that hold them
(the tag tables below, underscore names shared with the sweep) and the way their values are read
(any VR, any character set, never raising) are defined once, here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pydicom
from pydicom.charset import convert_encodings, decode_bytes
from pydicom.valuerep import PersonName


@dataclass(frozen=True)
class Identifiers:
    """The patient's own identifying values, as found in the header before de-identification."""

    names: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()
    dates: tuple[str, ...] = ()
    other: tuple[str, ...] = ()


_NAME_TAGS = (0x00100010, 0x00101001, 0x00101005, 0x00101060, 0x00102297)
_ID_TAGS = (0x00100020, 0x00101000, 0x00080050, 0x00101090, 0x00380010, 0x00380060, 0x00200010,
            0x00401001)
_DATE_TAGS = (0x00100030,)
_OTHER_TAGS = (0x00101040, 0x00102154, 0x00102155, 0x00100033)
# (sequence, attributes inside each item, kind)
_NESTED = (
    (0x00101002, (0x00100020,), "ids"),                   # Other Patient IDs Sequence
    (0x00400275, (0x00080050, 0x00401001), "ids"),        # Request Attributes Sequence
    (0x00100011, (0x00100012,), "names"),                 # Person Names to Use Sequence
)


def _as_strings(value: Any, encodings: list[str]) -> list[str]:
    """Every non-empty string in a value of any VR; never raises."""
    if value is None or isinstance(value, pydicom.Sequence):
        return []
    if isinstance(value, bytes | bytearray):
        try:
            value = decode_bytes(bytes(value), encodings, {0x5C, 0x3D, 0x5E})
        except Exception:
            value = bytes(value).decode("latin-1")
    if isinstance(value, str | PersonName):
        parts = (part.strip(" \x00") for part in str(value).split("\\"))
        return [part for part in parts if part]
    if hasattr(value, "__iter__"):
        try:
            return [s for item in value for s in _as_strings(item, encodings)]
        except Exception:
            return []
    return [str(value)]


def _values(ds: pydicom.Dataset, tag: int, encodings: list[str]) -> list[str]:
    try:
        if tag not in ds:
            return []
        return _as_strings(ds[tag].value, encodings)
    except Exception:
        return []


def _items(ds: pydicom.Dataset, tag: int) -> list[pydicom.Dataset]:
    try:
        value = ds[tag].value if tag in ds else None
    except Exception:
        return []
    if isinstance(value, pydicom.Sequence):
        return [item for item in value if isinstance(item, pydicom.Dataset)]
    return []


def identifiers_from(ds: pydicom.Dataset) -> Identifiers:
    """Collect the patient's (and family's) identifying values from ds before it is changed.

    Only the patient and family count: staff names (Referring Physician, Operators) and issuers
    are not the patient's identity and are handled by their own attribute actions.
    """
    try:
        charset = ds.get("SpecificCharacterSet")
        encodings = convert_encodings(charset if isinstance(charset, str) else list(charset or []))
    except Exception:
        encodings = ["iso8859"]
    found: dict[str, list[str]] = {"names": [], "ids": [], "dates": [], "other": []}
    flat: tuple[tuple[str, tuple[int, ...]], ...] = (
        ("names", _NAME_TAGS), ("ids", _ID_TAGS), ("dates", _DATE_TAGS), ("other", _OTHER_TAGS))
    for kind, tags in flat:
        for tag in tags:
            found[kind] += _values(ds, tag, encodings)
    for sequence, tags, kind in _NESTED:
        for item in _items(ds, sequence):
            for tag in tags:
                found[kind] += _values(item, tag, encodings)
    unique = {kind: tuple(dict.fromkeys(values)) for kind, values in found.items()}
    return Identifiers(names=unique["names"], ids=unique["ids"], dates=unique["dates"],
                       other=unique["other"])
