"""Byte scan of output folders for the identifiers planted in the sample.

Why a scan of bytes and not of parsed attributes: a leak can sit anywhere, in an attribute the
engine never looked at, a private block, a DICOMDIR record, a database column, a log line or a
file name. So every file is searched as bytes, every value in each encoding it could have been
written in (UTF-8, Latin-1, UTF-16 in both byte orders, ISO 2022-JP with and without its escape
sequences, as DICOM writes JIS per component), as typed and upper-cased (directory records and
media labels are often upper case).

One exception: the value of a top-level Pixel Data element is left out. The sample's pixels are
noise, and three random bytes spell a three-letter name ("Doe") often enough to cry wolf; text
burned into pixels is not stored as characters anyway, and instances flagged with it are held
back by the policies that request pixel cleaning.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

MIN_LENGTH = 3  # shorter ASCII strings ("MA") match by chance
ENCODINGS = ("utf-8", "latin-1", "utf-16-le", "utf-16-be", "iso2022_jp")
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


@dataclass(frozen=True)
class Needle:
    value: str
    data: bytes


@dataclass
class ScanResult:
    files: int = 0
    values: int = 0
    hits: dict[str, list[str]] = field(default_factory=dict)  # {file or name: values found}

    @property
    def found(self) -> int:
        """How many distinct planted values were found anywhere."""
        return len({v for values in self.hits.values() for v in values})


def byte_forms(values: Iterable[str]) -> dict[bytes, tuple[str, str]]:
    """Every byte string a value could have been written as: {bytes: (value, encoding)}.

    Each value as typed and upper-cased, in each of :data:`ENCODINGS` that can hold it; for
    ISO 2022-JP also the JIS bytes between the escape sequences, as DICOM writes them per
    component. ASCII values shorter than :data:`MIN_LENGTH` are left out. Where two values or
    encodings give the same bytes, the first keeps them. The tests' PHI scan searches the same
    forms, so what they find is what the demo would.
    """
    found: dict[bytes, tuple[str, str]] = {}
    for value in dict.fromkeys(values):
        if len(value) < MIN_LENGTH and value.isascii():
            continue
        for variant in dict.fromkeys((value, value.upper())):
            for encoding in ENCODINGS:
                try:
                    data = variant.encode(encoding)
                except UnicodeEncodeError:
                    continue
                forms = [data]
                if encoding == "iso2022_jp" and b"\x1b" in data:
                    forms += [part[2:] for part in data.split(b"\x1b") if len(part) > 4]
                for form in forms:
                    found.setdefault(form, (value, encoding))
    return found


def needles(values: Iterable[str]) -> list[Needle]:
    return [Needle(value, data) for data, (value, _encoding) in byte_forms(values).items()]


def _pixel_ranges(path: Path, data: bytes) -> list[tuple[int, int]]:
    """Byte ranges of top-level pixel data values; empty for anything that cannot be parsed.

    Read with a small ``defer_size``, a long element keeps only the file offset of its value;
    the 32-bit length just before it (little endian, defined length) gives the end.
    """
    try:
        ds = pydicom.dcmread(path, defer_size=256)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError):
        return []
    if not ds.original_encoding[1]:  # big endian: rare enough to scan whole
        return []
    ranges = []
    for keyword in PIXEL_KEYWORDS:
        if keyword not in ds:
            continue
        tell = getattr(ds.get_item(keyword), "file_tell", None)
        if not isinstance(tell, int) or tell < 4:
            continue
        length = int.from_bytes(data[tell - 4:tell], "little")
        if length != 0xFFFFFFFF and tell + length <= len(data):
            ranges.append((tell, tell + length))
    return ranges


def _without(data: bytes, ranges: list[tuple[int, int]]) -> bytes:
    if not ranges:
        return data
    kept, start = [], 0
    for begin, end in sorted(ranges):
        kept.append(data[start:begin])
        start = end
    kept.append(data[start:])
    return b"\x00".join(kept)  # a separator, so no needle spans a removed range


def scan_folders(roots: Iterable[Path], values: Iterable[str]) -> ScanResult:
    """Search every file (and every path name) under ``roots`` for ``values``."""
    wanted = needles(values)
    values_list = sorted({n.value for n in wanted})
    result = ScanResult(values=len(values_list))
    for root in roots:
        if not root.exists():
            continue
        for path in sorted(root.rglob("*")):
            inside = str(path.relative_to(root))  # the folder's own name is the demo's choice
            name = f"{root.name}/{inside}"
            in_name = [v for v in values_list if v.lower() in inside.lower()]
            if in_name:
                result.hits[f"path {name}"] = in_name
            if not path.is_file():
                continue
            result.files += 1
            data = path.read_bytes()
            if data[128:132] == b"DICM":
                data = _without(data, _pixel_ranges(path, data))
            found = sorted({n.value for n in wanted if n.data in data})
            if found:
                result.hits[f"file {name}"] = found
    return result
