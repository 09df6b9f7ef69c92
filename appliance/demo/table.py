"""The before/after table: one instance as the modality sent it, after stage 1, after stage 2.

Why match by structure: both stages remap every UID, so the same instance has three SOP
Instance UIDs. Study Time, Series Number and Instance Number survive both policies (times are
kept; only dates move) and identify each instance of the sample uniquely, the same key the
end-to-end tests use. The sample is fictitious, so its values may be printed; this table goes
to the terminal only, never to a log.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

Key = tuple[str, int, int]  # (StudyTime, SeriesNumber, InstanceNumber)

ROWS: tuple[tuple[str, str], ...] = (
    ("PatientName", "name"),
    ("PatientID", "ID"),
    ("PatientAge", "age"),
    ("PatientBirthDate", "birth date"),
    ("StudyDate", "study date"),
    ("StudyInstanceUID", "study UID"),
)
UID_WIDTH = 24  # UIDs are shortened in the middle so three columns fit a terminal
EMPTY = "(empty)"
ABSENT = "(absent)"


def structure_key(ds: Dataset) -> Key | None:
    try:
        return (str(ds.StudyTime), int(ds.SeriesNumber), int(ds.InstanceNumber))
    except (AttributeError, TypeError, ValueError):
        return None


def read_headers(paths: Iterable[Path]) -> Iterable[tuple[Path, Dataset]]:
    """(path, header) for every readable Part 10 instance; other files are passed over."""
    for path in paths:
        if path.name == "DICOMDIR" or not path.is_file():
            continue
        try:
            yield path, pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError):
            continue


def find_instance(folder: Path, key: Key) -> Dataset | None:
    """The instance under ``folder`` with this structure key, or None."""
    for _path, ds in read_headers(sorted(folder.rglob("*"))):
        if structure_key(ds) == key:
            return ds
    return None


def _shorten(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return f"{text[:head]}…{text[len(text) - (width - 1 - head):]}"


def cell(ds: Dataset | None, keyword: str) -> str:
    if ds is None:
        return "(not there)"
    if keyword not in ds:
        return ABSENT
    value = str(ds[keyword].value or "")
    if not value:
        return EMPTY
    return _shorten(value, UID_WIDTH) if keyword.endswith("UID") else value


def format_table(columns: Sequence[tuple[str, Dataset | None]]) -> list[str]:
    """Rows of ``attribute  column1 → column2 → …`` with aligned columns."""
    header = ["attribute", *(title for title, _ in columns)]
    body = [[label, *(cell(ds, keyword) for _, ds in columns)] for keyword, label in ROWS]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(row: list[str], arrow: str) -> str:
        first = row[0].ljust(widths[0])
        rest = f" {arrow} ".join(text.ljust(widths[i + 1]) for i, text in enumerate(row[1:]))
        return f"{first}   {rest}".rstrip()

    return [line(header, " "), *(line(row, "→") for row in body)]
