"""Which private attributes are "known safe" under the PS3.15 Retain Safe Private Option.

PS3.15 E.3.10 lets a de-identifier keep a private attribute only when it is known not to carry
identifying information. This module answers that question from three sources:

* PS3.15 Table E.3.10-1 (``data/ps315_safe_private.json``): the standard's own list;
* the TCIA private tag knowledge base (``data/tcia_private_tag_kb_2024-02-01.csv``): a private
  attribute counts as safe only when *every* row for it says ``k`` (keep);
* the dataset's own declarations in Private Data Element Characteristics Sequence (0008,0300),
  read by :func:`declared_safe`.

A private attribute is identified by (group, Private Creator, element offset), never by its raw
tag: the block a creator reserves (gggg,xx00-xxFF) moves from file to file, and the same raw tag
means different things under different creators.

Creator matching strips leading and trailing spaces (DICOM pads LO values with a space) and then
ignores case (``str.casefold``), because the TCIA KB records the same creator in several cases
(``Philips Imaging DD 001`` and ``PHILIPS IMAGING DD 001``) and devices differ the same way. Since
lookups ignore case, the KB "all rows must say k" rule also runs across case variants: one ``d``
under any spelling makes the attribute unsafe.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import re
from collections.abc import Iterator, Mapping
from importlib import resources
from typing import Any

from pydicom import Dataset
from pydicom.multival import MultiValue

__all__ = [
    "SOURCE_PS315",
    "SOURCE_TCIA",
    "PrivateKey",
    "SafePrivateTable",
    "block_tag_range",
    "declared_safe",
    "is_declared_safe",
    "normalise_creator",
    "parse_kb_signature",
    "private_creator_of",
]

PrivateKey = tuple[int, str, int]
"""(odd group, creator as normalised by :func:`normalise_creator`, element offset 0..255)."""

SOURCE_PS315 = "PS3.15 E.3.10-1"
SOURCE_TCIA = "TCIA KB"

PS315_SAFE_PRIVATE_FILE = "ps315_safe_private.json"
TCIA_KB_FILE = "tcia_private_tag_kb_2024-02-01.csv"

# Private Data Element Characteristics Sequence (0008,0300) and its items' attributes.
_PRIVATE_DATA_ELEMENT_CHARACTERISTICS_SEQUENCE = 0x00080300
_PRIVATE_GROUP_REFERENCE = 0x00080301
_PRIVATE_CREATOR_REFERENCE = 0x00080302
_BLOCK_IDENTIFYING_INFORMATION_STATUS = 0x00080303
_NONIDENTIFYING_PRIVATE_ELEMENTS = 0x00080304

# One component of a KB signature: a public tag "(0028,0002)" or a private attribute
# "(0019,HOLOGIC, Inc.",8a)". The creator is greedy so that commas inside it survive; the
# offset is the two hex digits before the closing parenthesis.
_KB_COMPONENT = re.compile(
    r"\((?P<group>[0-9A-Fa-f]{4}),"
    r"(?:(?P<element>[0-9A-Fa-f]{4})|(?P<creator>.*),(?P<offset>[0-9A-Fa-f]{2}))\)"
)
# Components of a nested signature are joined by an item marker such as "[<0>]".
_KB_ITEM_MARKER = re.compile(r"\[<\d+>\]")
# Posda names blocks that had no Private Creator "Unnamed Private Block - xx". Such an element
# cannot be attributed to anybody, so no placeholder is ever treated as a real creator.
_KB_PLACEHOLDER_CREATOR = re.compile(r"unnamed private block - [0-9a-f]{2}")


def normalise_creator(creator: str) -> str:
    """The form in which creators are compared: padding stripped, case folded.

    DICOM pads LO values to an even length with a space (and some writers use NUL), so padding is
    never significant; case is ignored because the same creator is seen in several cases.
    """
    return creator.strip(" \x00").casefold()


def _check_key(key: PrivateKey) -> PrivateKey:
    group, creator, offset = key
    if not (0 <= group <= 0xFFFF and group % 2 == 1):
        raise ValueError(f"private group must be an odd 16-bit number, got {group:#06x}")
    if not 0 <= offset <= 0xFF:
        raise ValueError(f"element offset must be 0..255, got {offset}")
    normalised = normalise_creator(creator)
    if not normalised:
        raise ValueError(f"private creator is empty for group {group:04X}, offset {offset:02X}")
    return (group, normalised, offset)


class SafePrivateTable:
    """A read-only set of known-safe private attributes, each with the source that vouches for it.

    Build one from explicit entries (tests, site conformance statements), or use
    :meth:`bundled` for the union of PS3.15 Table E.3.10-1 and the TCIA knowledge base.
    """

    __slots__ = ("_entries",)

    def __init__(self, entries: Mapping[PrivateKey, str]) -> None:
        table: dict[PrivateKey, str] = {}
        for key, source in entries.items():
            checked = _check_key(key)
            # Two spellings of one creator collapse into one key; keep the first source given.
            table.setdefault(checked, source)
        self._entries = table

    @classmethod
    def bundled(cls) -> SafePrivateTable:
        """Table E.3.10-1 plus the TCIA KB, read from the package's data files once per process."""
        return _bundled_table()

    def is_safe(self, group: int, creator: str, offset: int) -> bool:
        """True when (group, creator, offset) is a known-safe private attribute."""
        return self.source(group, creator, offset) is not None

    def source(self, group: int, creator: str, offset: int) -> str | None:
        """Which source vouches for the attribute (``SOURCE_PS315`` wins over ``SOURCE_TCIA``)."""
        return self._entries.get((group, normalise_creator(creator), offset))

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> Iterator[tuple[PrivateKey, str]]:
        """Every safe attribute and its source, sorted by group, creator and offset."""
        yield from sorted(self._entries.items())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} entries)"


def parse_kb_signature(pattern: str) -> tuple[int, str, int] | None:
    """The private attribute that a TCIA KB ``element_sig_pattern`` describes.

    The KB writes an attribute as ``(0009,FDMS 1.0",08)`` (a closing quote, often no opening
    one) and an attribute inside sequences as a path, ``(0008,1115)[<0>](0008,1140)[<1>](0009,
    GEIIS_RA1000",01)``, whose last component is the attribute itself. Returns (group, creator
    with quotes and padding removed but case kept, offset), or None when the last component is a
    public tag (a public attribute inside a private sequence, which the public rules govern).
    Raises ValueError for a pattern in neither form, so a damaged data file cannot pass silently.
    """
    last = _KB_ITEM_MARKER.split(pattern.strip())[-1]
    match = _KB_COMPONENT.fullmatch(last)
    if match is None:
        raise ValueError(f"unrecognised TCIA KB element signature {pattern!r}")
    if match["creator"] is None:
        return None
    creator = match["creator"].strip(' "')
    return (int(match["group"], 16), creator, int(match["offset"], 16))


def _read_data_text(name: str, encoding: str) -> str:
    return resources.files("policies.data").joinpath(name).read_text(encoding=encoding)


def load_ps315_entries() -> dict[PrivateKey, str]:
    """Table E.3.10-1 rows as keys, each with ``SOURCE_PS315``."""
    rows: list[dict[str, Any]] = json.loads(_read_data_text(PS315_SAFE_PRIVATE_FILE, "utf-8"))
    entries: dict[PrivateKey, str] = {}
    for row in rows:
        key = _check_key(
            (int(row["group"], 16), str(row["private_creator"]), int(row["element_offset"], 16))
        )
        entries[key] = SOURCE_PS315
    return entries


def load_tcia_kb_entries() -> dict[PrivateKey, str]:
    """TCIA KB attributes whose every row (any VR, any parent path, any case) says ``k``.

    Dispositions are compared after ``strip().lower()`` because the file has ``' k'`` and ``'K'``.
    Anything else (``d``, ``h``, ``o``, ``oi``, ``na`` or empty) on any row vetoes the attribute:
    the KB saw it carry something that must not be kept in at least one context.
    """
    text = _read_data_text(TCIA_KB_FILE, "utf-8-sig")
    verdicts: dict[PrivateKey, bool] = {}
    for line_no, row in enumerate(csv.DictReader(io.StringIO(text, newline="")), start=2):
        try:
            parsed = parse_kb_signature(row["element_sig_pattern"])
        except ValueError as exc:
            raise ValueError(f"{TCIA_KB_FILE} line {line_no}: {exc}") from exc
        if parsed is None:
            continue
        group, creator, offset = parsed
        normalised = normalise_creator(creator)
        if not normalised or _KB_PLACEHOLDER_CREATOR.fullmatch(normalised):
            continue
        key = (group, normalised, offset)
        keep = (row["private_disposition"] or "").strip().lower() == "k"
        verdicts[key] = verdicts.get(key, True) and keep
    return {key: SOURCE_TCIA for key, keep in verdicts.items() if keep}


@functools.cache
def _bundled_table() -> SafePrivateTable:
    # Table E.3.10-1 goes first so that it is the source named where both sources agree.
    merged = load_ps315_entries()
    for key, source in load_tcia_kb_entries().items():
        merged.setdefault(key, source)
    return SafePrivateTable(merged)


def block_tag_range(creator_element: int) -> range:
    """Element numbers of the block that creator element (gggg,00xx) reserves: xx00..xxFF."""
    if not 0x10 <= creator_element <= 0xFF:
        raise ValueError(f"a Private Creator element is 0x0010..0x00FF, got {creator_element:#06x}")
    return range(creator_element << 8, (creator_element << 8) + 0x100)


def _text(value: object) -> str | None:
    """A string value from an element that may hold str, bytes (UN) or several values."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if isinstance(value, MultiValue | list | tuple):
        value = "\\".join(str(v) for v in value)
    text = str(value).strip(" \x00")
    return text or None


def _ints(value: object) -> list[int]:
    if value is None or value == "":
        return []
    if isinstance(value, MultiValue | list | tuple):
        return [int(v) for v in value if v is not None and v != ""]
    if isinstance(value, int):
        return [value]
    return []


def private_creator_of(ds: Dataset, tag: int) -> str | None:
    """Creator string for a private data element tag (gggg,xxee) with xx>=0x10.

    The creator is read from (gggg,00xx) in the same dataset (or sequence item), with padding
    stripped but case kept. None when the tag is not a private data element (even group, or an
    element below 0x1000) or when its creator element is absent or empty: such an element cannot
    be attributed, so it is never known-safe.
    """
    group, element = tag >> 16, tag & 0xFFFF
    block = element >> 8
    if group % 2 == 0 or group <= 0x0007 or block < 0x10:
        return None
    creator_element = ds.get((group << 16) | block)
    if creator_element is None:
        return None
    return _text(creator_element.value)


def declared_safe(ds: Dataset) -> tuple[frozenset[tuple[int, str]], frozenset[PrivateKey]]:
    """(blocks declared SAFE, individual elements declared non-identifying) from (0008,0300).

    Each item of Private Data Element Characteristics Sequence names a block by Private Group
    Reference (0008,0301) and Private Creator Reference (0008,0302). Block Identifying Information
    Status (0008,0303) SAFE covers the whole block; MIXED covers only the elements listed in
    Nonidentifying Private Elements (0008,0304), taken by their low byte. Any other status, or an
    item that does not name an odd group and a creator, declares nothing. Creators are returned
    normalised (:func:`normalise_creator`); only the top level of ``ds`` is read.
    """
    sequence = ds.get(_PRIVATE_DATA_ELEMENT_CHARACTERISTICS_SEQUENCE)
    if sequence is None or sequence.VR != "SQ" or not sequence.value:
        return frozenset(), frozenset()
    blocks: set[tuple[int, str]] = set()
    elements: set[PrivateKey] = set()
    for item in sequence.value:
        group_elem = item.get(_PRIVATE_GROUP_REFERENCE)
        groups = _ints(group_elem.value) if group_elem is not None else []
        creator_elem = item.get(_PRIVATE_CREATOR_REFERENCE)
        creator = _text(creator_elem.value) if creator_elem is not None else None
        if len(groups) != 1 or groups[0] % 2 == 0 or creator is None:
            continue
        group, normalised = groups[0], normalise_creator(creator)
        status_elem = item.get(_BLOCK_IDENTIFYING_INFORMATION_STATUS)
        status = (_text(status_elem.value) or "") if status_elem is not None else ""
        if status.upper() == "SAFE":
            blocks.add((group, normalised))
        elif status.upper() == "MIXED":
            listed = item.get(_NONIDENTIFYING_PRIVATE_ELEMENTS)
            for number in _ints(listed.value) if listed is not None else []:
                elements.add((group, normalised, number & 0xFF))
    return frozenset(blocks), frozenset(elements)


def is_declared_safe(
    declared: tuple[frozenset[tuple[int, str]], frozenset[PrivateKey]],
    group: int,
    creator: str,
    offset: int,
) -> bool:
    """Whether :func:`declared_safe`'s result covers (group, creator, offset)."""
    blocks, elements = declared
    normalised = normalise_creator(creator)
    return (group, normalised) in blocks or (group, normalised, offset) in elements
