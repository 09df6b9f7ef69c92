"""Reading DICOM Part 10 headers defensively, for both the media writer and the media reader.

Why: pydicom happily returns a dataset from a file that was cut off in the middle of its Pixel
Data (the value is just shorter). A medium built from such a file looks fine until a viewer
opens the image, and an importer would store a broken instance. Both directions therefore go
through `read_header()`, which also checks that no element runs past the end of the file.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian

PREAMBLE_LENGTH = 128
MAGIC = b"DICM"
_UNDEFINED_LENGTH = 0xFFFFFFFF
_DEFER = 1024  # values larger than this are not loaded; we only need their position and length


class UnreadableFile(Exception):
    """A file that is not a complete, parseable DICOM Part 10 file (the message says why)."""


def is_part10(path: Path) -> bool:
    """True if the file has the 128-byte preamble followed by "DICM" (PS3.10 §7.1)."""
    try:
        with path.open("rb") as fp:
            head = fp.read(PREAMBLE_LENGTH + len(MAGIC))
    except OSError:
        return False
    return len(head) == PREAMBLE_LENGTH + len(MAGIC) and head[PREAMBLE_LENGTH:] == MAGIC


def read_header(path: Path) -> Dataset:
    """Return the dataset of a Part 10 file with its bulk values left unread.

    Raises UnreadableFile if the file is not Part 10, cannot be parsed, lacks the File Meta
    elements a DICOMDIR record needs, or is truncated. Values of more than 1 KiB are deferred:
    reading them again later goes back to the file, so callers should only touch small elements.
    """
    if not is_part10(path):
        raise UnreadableFile("not a DICOM Part 10 file (no 'DICM' after the 128-byte preamble)")
    try:
        ds = dcmread(path, defer_size=_DEFER)
    except Exception as exc:  # pydicom raises many types for damaged input
        raise UnreadableFile(f"cannot be parsed: {type(exc).__name__}: {exc}") from exc
    meta = ds.file_meta
    for keyword in ("TransferSyntaxUID", "MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID"):
        if not meta.get(keyword):
            raise UnreadableFile(f"File Meta Information lacks {keyword}")
    if meta.TransferSyntaxUID != DeflatedExplicitVRLittleEndian:
        _check_not_truncated(ds, os.path.getsize(path))
    for keyword in ("SOPClassUID", "SOPInstanceUID"):
        if not ds.get(keyword):
            raise UnreadableFile(f"the dataset lacks {keyword}")
    return ds


def _check_not_truncated(ds: Dataset, size: int) -> None:
    """Raise if a top-level element with a defined length ends beyond the end of the file."""
    for tag in ds.keys():  # noqa: SIM118 - iterating a Dataset would read deferred values
        elem = ds.get_item(tag, keep_deferred=True)
        if not isinstance(elem, RawDataElement) or elem.length == _UNDEFINED_LENGTH:
            continue
        end = elem.value_tell + elem.length
        if end > size:
            raise UnreadableFile(
                f"truncated: element {elem.tag} needs {end} bytes but the file has {size}"
            )
