"""Find the patient's own identifiers in kept free text, cheaply enough to run on every value.

PS3.15 keeps every attribute Table E.1-1 does not list, and hundreds of those are free text
(Content Description, Frame Comments, Image Set Label, ...). Identifiers leak into them: a
presentation state described as "Nodule markup for John Doe". Cleaning each of them with the full
text cleaner would cost more than reading the file, so the engine first asks :class:`SweepTokens`
whether the value (raw bytes, as read) contains any word of the patient's name, an ID or the
birth date, ignoring ASCII case. Only a hit is decoded and cleaned (:mod:`policies.textclean`),
which then decides with its own, stricter rules what to remove.

:class:`OriginalIdentifiers` reads the identifiers before the walk changes anything.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from policies.charset import raw_strings
from policies.identifiers import (  # one list of identifying attributes, shared with the cleaner
    _DATE_TAGS,
    _ID_TAGS,
    _NAME_TAGS,
    _NESTED,
    _OTHER_TAGS,
    Identifiers,
)

_NAME_SPLIT = re.compile(r"[\^=\s,.]+")
_ESCAPE = re.compile(rb"\x1b[\x20-\x2f]*[\x30-\x7e]")  # ISO 2022 escape sequences


def _unaccented(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text)
                   if not unicodedata.combining(c))


class SweepTokens:
    """Byte and text forms of the patient's identifiers, upper-cased (ASCII) for the search."""

    __slots__ = ("_bytes", "_text", "byte_tokens", "text_tokens")

    def __init__(self, words: Iterable[str], encodings: list[str]) -> None:
        texts: set[str] = set()
        raws: set[bytes] = set()
        for word in words:
            for form in {word, word.upper(), word.lower(), word.title(), _unaccented(word)}:
                texts.add(form.upper())
                for codec in ("utf-8", "latin-1", *encodings):
                    try:
                        data = _ESCAPE.sub(b"", form.encode(codec))
                    except (UnicodeError, LookupError):
                        continue
                    if len(data) >= 2:
                        raws.add(data.upper())
        self.byte_tokens = tuple(sorted(raws, key=len))
        self.text_tokens = tuple(sorted(texts, key=len))
        # One alternation is faster than a loop of ``in`` tests on every kept value.
        self._bytes = re.compile(b"|".join(re.escape(t) for t in self.byte_tokens) or b"(?!)")
        self._text = re.compile("|".join(re.escape(t) for t in self.text_tokens) or "(?!)")

    def hit(self, value: object) -> bool:
        """Whether a value (raw bytes, a string or several strings) contains an identifier."""
        if value is None:
            return False
        if isinstance(value, bytes):
            return self._bytes.search(value.upper()) is not None
        if isinstance(value, list | tuple):
            upper = "\\".join(str(v) for v in value).upper()
        else:
            upper = str(value).upper()
        return self._text.search(upper) is not None


def _strings(ds: Dataset, tag: int, encodings: list[str], vr: str) -> list[str]:
    return [v for v in (s.strip(" \x00") for s in raw_strings(ds.get_item(tag), encodings, vr))
            if v]


class OriginalIdentifiers:
    """The patient's identifiers as they were before the walk changed anything.

    :attr:`top` reads the top-level attributes at once, from the raw values (cheap). The nested
    ones (Other Patient IDs Sequence, ...) are read only when the text cleaner is needed, from
    the original sequence elements held aside here, so that a sequence the walk removes or
    rewrites still gives up its identifiers, and a dataset that needs no cleaning never has
    these sequences parsed. Same attributes, same order, same result as
    :func:`policies.textclean.identifiers_from` (a test holds the two together).
    """

    def __init__(self, ds: Dataset, encodings: list[str]) -> None:
        self.encodings = encodings
        self._root = ds
        found: dict[str, list[str]] = {"names": [], "ids": [], "dates": [], "other": []}
        flat: tuple[tuple[str, tuple[int, ...], str], ...] = (
            ("names", _NAME_TAGS, "PN"), ("ids", _ID_TAGS, "LO"), ("dates", _DATE_TAGS, "DA"),
            ("other", _OTHER_TAGS, "LO"))
        for kind, tags, vr in flat:
            for tag in tags:
                found[kind] += _strings(ds, tag, encodings, vr)
        self._found = found
        self.top = _identifiers(found)
        held: dict[BaseTag, DataElement | RawDataElement] = {
            BaseTag(tag): ds.get_item(tag) for tag, _, _ in _NESTED if tag in ds}
        self._held = dict(held)
        self._nested = None
        if held:
            charset = ds.get_item(0x00080005)
            if charset is not None:
                held[BaseTag(0x00080005)] = charset
            self._nested = Dataset(held)
        self._all: Identifiers | None = None

    def all(self) -> Identifiers:
        """Top-level and nested identifiers (parses the held sequences on first use)."""
        if self._all is None:
            found = {kind: list(values) for kind, values in self._found.items()}
            nested = self._nested
            for sequence, tags, kind in _NESTED if nested is not None else ():
                assert nested is not None
                if sequence not in nested:
                    continue
                # Parse in the dataset itself while the walk has not reached the sequence (the
                # walk then reuses the parse); from the held original once it has.
                untouched = self._root.get_item(sequence) is self._held[BaseTag(sequence)]
                items = (self._root if untouched else nested)[sequence].value
                for item in items if isinstance(items, Sequence) else ():
                    for tag in tags:
                        vr = "PN" if kind == "names" else "LO"
                        found[kind] += _strings(item, tag, self.encodings, vr)
            self._all = _identifiers(found)
        return self._all


def _identifiers(found: dict[str, list[str]]) -> Identifiers:
    unique = {kind: tuple(dict.fromkeys(values)) for kind, values in found.items()}
    return Identifiers(names=unique["names"], ids=unique["ids"], dates=unique["dates"],
                       other=unique["other"])


def sweep_tokens(identifiers: Identifiers, encodings: list[str]) -> SweepTokens | None:
    """Tokens for the patient's identifiers, or None when there are none to look for."""
    words: list[str] = []
    for name in identifiers.names:
        words += [w for w in _NAME_SPLIT.split(name) if len(w) >= 2]
    words += [v for v in identifiers.ids if len(v) >= 3]
    words += [v for v in identifiers.dates if len(v) >= 8]
    words += [v for v in identifiers.other if len(v) >= 4]
    if not words:
        return None
    return SweepTokens(dict.fromkeys(words), encodings)
