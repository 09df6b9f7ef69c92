"""Byte-level search for planted identifiers, in every encoding they could have been written in.

A value that survives de-identification may sit in a DICOM element (in the Specific Character
Set of the dataset: ASCII, Latin-1, UTF-8 or ISO 2022 with JIS X 0208), in a UTF-16 text, in a
file name, a log line or a database column. So every needle is searched for as UTF-8, Latin-1,
UTF-16 (both byte orders), ISO 2022-JP (with and without its escape sequences) and, for file
names and text, also upper-cased, since directory records and media labels are often upper case.
The byte forms are the demo's own (:func:`appliance.demo.scan.byte_forms`): one definition of
what "written in some encoding" means, for the product's scan and the tests'.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from appliance.demo.scan import MIN_LENGTH, byte_forms


@dataclass(frozen=True)
class Needle:
    label: str  # the value and the encoding, for the failure message
    data: bytes


def needles(values: Iterable[str]) -> list[Needle]:
    """The demo's byte forms of each value (:func:`appliance.demo.scan.byte_forms`), labelled."""
    return [Needle(f"{value!r} as {encoding}", data)
            for data, (value, encoding) in byte_forms(values).items()]


def scan(data: bytes, wanted: Iterable[Needle]) -> list[str]:
    return [n.label for n in wanted if n.data in data]


def scan_text(text: str, values: Iterable[str]) -> list[str]:
    """For logs and database strings: the values found, case-insensitively."""
    lowered = text.lower()
    return [v for v in values if (len(v) >= MIN_LENGTH or not v.isascii())
            and v.lower() in lowered]


def scan_tree(root: Path, wanted: list[Needle], values: list[str]) -> dict[str, list[str]]:
    """Every file's bytes and every relative path under ``root``; {what: needles found}."""
    hits: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        in_name = scan_text(relative, values)
        if in_name:
            hits[f"name {relative}"] = in_name
        if path.is_file():
            in_file = scan(path.read_bytes(), wanted)
            if in_file:
                hits[f"file {relative}"] = in_file
    return hits

