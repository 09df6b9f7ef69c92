"""Keep text valid under the dataset's Specific Character Set.

pydicom decodes values with the declared character set and encodes them back with it when the
dataset is written. A replacement the declared set cannot encode (a non-Latin policy value in a
Latin-1 dataset) would be written as mojibake or fail, so the dataset switches to ISO_IR 192
(UTF-8). Before switching, every text element still held raw is decoded with the *old* set;
otherwise pydicom would write its original bytes under the new label.
"""

from __future__ import annotations

from pydicom.charset import convert_encodings, encode_string
from pydicom.dataset import Dataset

UTF8 = "ISO_IR 192"


def _encodings(ds: Dataset) -> list[str]:
    value = ds.get("SpecificCharacterSet")
    if not value:
        return convert_encodings(["ISO_IR 6"])
    names = list(value) if not isinstance(value, str) else [value]
    return convert_encodings(names)


def encodable(ds: Dataset, text: str) -> bool:
    try:
        encode_string(text, _encodings(ds))
    except (UnicodeError, LookupError, ValueError):
        return False
    return True


def ensure_encodable(ds: Dataset, written: list[str]) -> bool:
    """Switch ``ds`` to UTF-8 if any of the ``written`` values cannot be encoded; True if so."""
    if not written or all(encodable(ds, text) for text in written):
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
