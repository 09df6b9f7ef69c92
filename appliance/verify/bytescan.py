"""The exact leak scan: every byte of every output file against the originals' patterns.

Each file is read once, in blocks, and searched with the :class:`PatternSet`'s compiled
expression, so pixel data, private OB values, file meta, preamble, DICOMDIR and the media text
files are all covered. A hit is then placed: the byte offset is mapped to the tag path of the
element that holds it (nested sequences included), or to "preamble", "(file meta)" or a byte
offset for a file that is not DICOM. The report names the original by kind, pseudonym and keyed
hash prefix only (:class:`appliance.verify.originals.Original`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from appliance.verify.findings import Check, Findings
from appliance.verify.originals import Pattern, PatternSet
from pdi.part10 import MAGIC, PREAMBLE_LENGTH, is_part10
from policies.annex_e import keyword_or_tag

_UNDEFINED_LENGTH = 0xFFFFFFFF
BLOCK = 32 << 20
_ITEM_TAG_BYTES = b"\xfe\xff\x00\xe0"


@dataclass
class ScanTotals:
    files: int = 0
    bytes: int = 0
    leaks: int = 0


def scan_file(path: Path, patterns: PatternSet) -> list[tuple[int, Pattern]]:
    """(offset, pattern) of every hit in the file, in file order.

    The file is read in blocks of :data:`BLOCK` bytes (each block lowered, see
    :mod:`appliance.verify.originals`); consecutive blocks overlap by the longest pattern less
    one byte, so a hit across a block boundary is found once.
    """
    regex = patterns.regex
    if regex is None:
        return []
    overlap = max(patterns.longest - 1, 0)
    hits: list[tuple[int, Pattern]] = []
    with open(path, "rb") as handle:
        carry, base = b"", 0
        while True:
            block = handle.read(BLOCK)
            data = carry + block.lower()
            last = not block or len(block) < BLOCK
            limit = len(data) if last else len(data) - overlap
            for match in regex.finditer(data):
                if match.start() >= limit:
                    break  # found again, whole, at the start of the next round
                hits.append((base + match.start(), patterns.match(match.group())))
            if last:
                return hits
            carry, base = data[limit:], base + limit


def scan_all(findings: Findings, paths: list[Path], rel_of: dict[Path, str],
             patterns: PatternSet) -> ScanTotals:
    totals = ScanTotals()
    for path in paths:
        totals.files += 1
        totals.bytes += path.stat().st_size
        hits = scan_file(path, patterns)
        if not hits:
            continue
        where = locate(path, [offset for offset, _ in hits])
        for offset, pattern in hits:
            original = pattern.original
            totals.leaks += 1
            findings.error(Check.LEAK, rel_of[path], where[offset],
                           f"{original.kind} found ({pattern.form}, {pattern.encoding});"
                           f" pseudonym {original.pseudonym}, ref {original.ref}")
    return totals


def locate(path: Path, offsets: list[int]) -> dict[int, str]:
    """The tag path holding each byte offset (best effort; never raises)."""
    if not is_part10(path):
        return {offset: f"byte {offset} (not a DICOM file)" for offset in offsets}
    try:
        elements = _elements(dcmread(path, defer_size=1024), 0, "")
    except Exception:  # a damaged file still had the bytes: say where, as an offset
        return {offset: f"byte {offset}" for offset in offsets}
    start = min((e.start for e in elements), default=PREAMBLE_LENGTH + len(MAGIC))
    found: dict[int, str] = {}
    for offset in offsets:
        if offset < PREAMBLE_LENGTH:
            found[offset] = "preamble"
        elif offset < start:
            found[offset] = "(file meta)"
        else:
            found[offset] = _find(elements, offset)
    return found


@dataclass(frozen=True)
class _Element:
    start: int  # absolute offset of the value
    length: int  # -1 for undefined length
    path: str
    tag: int
    owner: Dataset


def _elements(ds: Dataset, base: int, prefix: str) -> list[_Element]:
    """Each raw element of ``ds``; nested values are relative to their sequence's value."""
    out: list[_Element] = []
    for tag in ds.keys():  # noqa: SIM118
        elem = ds.get_item(tag, keep_deferred=True)
        if not isinstance(elem, RawDataElement):
            continue
        tag_int = int(tag)
        name = keyword_or_tag(tag_int) if not tag_int & 0x10000 else (
            f"({tag_int >> 16:04X},{tag_int & 0xFFFF:04X})")
        length = -1 if elem.length == _UNDEFINED_LENGTH else int(elem.length)
        out.append(_Element(base + int(elem.value_tell), length, prefix + name, tag_int, ds))
    return sorted(out, key=lambda e: e.start)


def _find(elements: list[_Element], offset: int) -> str:
    """The path of the deepest element whose value holds ``offset``."""
    best = None
    for element in elements:
        if element.start > offset:
            break
        best = element
    if best is None:
        return "(before the first element)"
    if best.length >= 0 and offset >= best.start + best.length:
        return f"(after {best.path})"
    value = _sequence(best.owner, best.tag)
    if not value:
        return best.path
    items: list[_Element] = []
    for index, item in enumerate(value):
        items += _elements(item, best.start, f"{best.path}[{index}].")
    inner = _find(sorted(items, key=lambda e: e.start), offset) if items else "("
    return best.path if inner.startswith("(") else inner


def _sequence(ds: Dataset, tag: int) -> Sequence | None:
    try:
        raw = ds.get_item(tag, keep_deferred=True)
        looks = raw.VR == "SQ" or (isinstance(raw.value, bytes)
                                   and raw.value[:4] == _ITEM_TAG_BYTES)
        if not looks:
            return None
        value = ds[tag].value
        return value if isinstance(value, Sequence) else None
    except Exception:  # a value pydicom cannot parse as a sequence: the element itself
        return None
