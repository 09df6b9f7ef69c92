"""Clean Descriptors (113105) and Clean Structured Content (113104): identifiers out of free text.

PS3.15 lets a profile keep descriptors (Study Description, Image Comments, ...) and SR TEXT items
if they are *cleaned*, and asks the implementation to document how. This module is that method.
It is best effort: it removes what it can recognise and never invents text, so a reviewer still
looks at the preview before approving an export.

How text is compared. Text and identifiers go through the same folding: NFKC (full-width letters
and digits become ASCII, half-width kana become full-width), then for Latin, Greek and Cyrillic
letters the accents are dropped (NFKD without combining marks), then case folding. "Müller" thus
matches "MULLER" and "muller", but not "Mueller". Kana voicing marks are kept (が is not か).

Names (kind "name"). From every PN group (alphabetic, ideographic, phonetic) of every name, the
family, given and middle components are used; prefixes and suffixes (Dr, Mr, Jr, MD) are not. Each
word of a component with at least 2 letters is matched as a whole word: no letter may touch it on
either side (digits, "_" and characters of scripts without spaces may), so "DOE^JOHN", "DOE_JOHN",
"DOE, JOHN", "John Doe" and "Doe様" all match, in any order. Particles (van, de, al, ...) only count
inside their whole component ("van der Berg"), and titles never count. The full forms "family given
middle", "given middle family", "given family" and "J. Doe" / "Doe, J" are matched too, with any
separators. Groups written in scripts without spaces (CJK, kana, Hangul, Thai) are matched as plain
substrings: components of 2 or more characters, and the full name with or without separators. A
patient called "Head" therefore also removes "HEAD" from "CT HEAD": over-removal is the safe side.

IDs (kind "id"). Each ID of 3 or more letters and digits is matched as a whole token, case
insensitive; separators inside the ID may be present or absent ("123-45-678" also matches
"12345678" and "123 45 678"). IDs of 6 or more characters that start or end with a digit only need
a non-digit on that side, so "MRN12345678" gives up the ID 12345678.

Dates (kind "date"). Each birth date matches as YYYYMMDD, YYYY-MM-DD, YYYY/MM/DD, YYYY.MM.DD,
DD/MM/YYYY, MM/DD/YYYY, DD.MM.YYYY, DD-MM-YYYY, DDMMYYYY, with or without leading zeros, with a
two-digit year in the day-month forms, and with English month names or abbreviations: "5 March
1960", "March 5, 1960", "Mar 5 1960", "05-MAR-1960", "5th Mar 60". Other dates stay: dates belong
to the date options. With ``remove_all_dates=True`` any date in those formats (4-digit years
1800-2099) goes, with a DICOM time appended to a compact date.

Other strings (kind "other"), such as addresses and telephone numbers taken from the header, match
as their runs of letters and digits in order, with any separators between the runs; so does each
part of 4 or more letters and digits between "^", ",", ";" or line breaks ("Springfield").

Patterns that need no identifier:
- e-mail addresses ("email");
- telephone numbers ("phone"): +CC forms such as "+49 30 1234567" and "+1 (555) 123-4567",
  "(555) 123-4567", "555-123-4567", "555.123.4567", trunk-prefixed forms "030 1234567" and
  "089/123456" (8 or more digits), and runs of 10 to 15 digits in space or dash separated groups
  when the first group starts with 0 or every group has 3 or more digits ("555 123 4567", but not
  "1024 1024 16");
- "id-pattern": US SSNs (NNN-NN-NNNN) and tokens of 6 or more letters and digits holding at least
  5 digits ("MRN12345678", "1234567"). Not flagged: decimal numbers ("0.625000"), dimensions
  ("512x512"), numbers with a unit ("10000ms"), and tokens that read as a DICOM date, time or date
  time ("20240115", "143015"), since those belong to the date options.

Each hit becomes REDACTION; overlapping or touching hits become one REDACTION. Everything else,
whitespace, case and non-ASCII included, is kept exactly. A text without any hit is returned as
the same object. Cleaning repeats until nothing more is found, so a cleaned text stays as it is
when cleaned again. A redaction can make a value longer than the hit (a 2-letter name becomes 3
characters), so callers that write into short VRs check the VR length. find() reports each hit
once: a hit inside another one is left out, and of equal hits the first kind in KINDS is named.

Speed. The regexes of one Identifiers are compiled once (and cached); a patient regex only runs
when the folded text holds one of the literal words it needs, and the number patterns only when
the text holds 5 or more digits, so a typical descriptor costs a few microseconds.

Where the parts live: :mod:`policies.identifiers` collects the identifiers from a dataset,
:mod:`policies.textfold` folds text, :mod:`policies.textpatterns` builds and runs the regexes,
and this module merges the hits and replaces them. The public names are all importable from here.
"""

from __future__ import annotations

from policies.identifiers import Identifiers, identifiers_from
from policies.textfold import _fold_with_map, fold
from policies.textpatterns import KINDS, _compile, _generic_hits

__all__ = ["KINDS", "REDACTION", "Identifiers", "TextCleaner", "fold", "identifiers_from"]

REDACTION = "***"


class TextCleaner:
    """Finds and removes one patient's identifiers, and generic identifiers, in free text."""

    def __init__(self, identifiers: Identifiers, remove_all_dates: bool = False) -> None:
        self._kinds = _compile(identifiers)
        self._remove_all_dates = remove_all_dates

    def find(self, text: str) -> list[tuple[int, int, str]]:
        """Hits as (start, end, kind), sorted; a hit inside another hit is not reported."""
        folded, starts, ends = _fold_with_map(text)
        hits = [(m.start(), m.end(), kind.priority)
                for kind in self._kinds if any(lit in folded for lit in kind.literals)
                for m in kind.regex.finditer(folded)]
        hits += _generic_hits(folded, self._remove_all_dates)
        hits = [h for h in hits if h[1] > h[0]]
        if not hits:
            return []
        if starts is not None and ends is not None:
            hits = [(starts[s], ends[e - 1], p) for s, e, p in hits]
        hits.sort(key=lambda h: (h[0], -h[1], h[2]))
        found: list[tuple[int, int, str]] = []
        reach = -1
        for start, end, priority in hits:
            if end > reach:
                found.append((start, end, KINDS[priority]))
                reach = end
        return found

    def clean(self, text: str) -> str:
        """Text with every hit replaced by REDACTION; the same object if there was no hit.

        Cleaning repeats until nothing more is found, because a redaction can change what is
        around a token (".196000" after an ID was removed is no longer a decimal fraction), so
        that cleaning a cleaned text changes nothing. Every hit holds a letter or digit and
        REDACTION holds none, so this ends.
        """
        cleaned = self._clean_once(text)
        while cleaned is not text:
            text, cleaned = cleaned, self._clean_once(cleaned)
        return cleaned

    def _clean_once(self, text: str) -> str:
        spans = self.find(text)
        if not spans:
            return text
        merged: list[list[int]] = []
        for start, end, _kind in spans:
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        pieces: list[str] = []
        position = 0
        for start, end in merged:
            pieces += [text[position:start], REDACTION]
            position = end
        pieces.append(text[position:])
        return "".join(pieces)
