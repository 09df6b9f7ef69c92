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
"""

from __future__ import annotations

import datetime
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import pydicom
from pydicom.charset import convert_encodings, decode_bytes
from pydicom.valuerep import PersonName

REDACTION = "***"

# Kinds in priority order: where two hits cover the same text, find() reports the earlier kind.
KINDS: tuple[str, ...] = ("name", "id", "date", "other", "email", "phone", "id-pattern")
_PRIORITY = {kind: i for i, kind in enumerate(KINDS)}


@dataclass(frozen=True)
class Identifiers:
    """The patient's own identifying values, as found in the header before de-identification."""

    names: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()
    dates: tuple[str, ...] = ()
    other: tuple[str, ...] = ()


# --- folding ------------------------------------------------------------------------------------

# Marks that combine with the character before them; a cluster is folded as one unit so that a
# decomposed "e\u0301" folds like "é", and half-width "ｶﾞ" like "ガ".
_COMBINING = (
    "\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f\u3099\u309a\uff9e\uff9f"
)
_SEGMENT = re.compile(rf"[\x00-\x7f]+(?![{_COMBINING}])|.[{_COMBINING}]*", re.S)


@lru_cache(maxsize=8192)
def _fold_cluster(cluster: str) -> str:
    composed = unicodedata.normalize("NFKC", cluster)
    decomposed = unicodedata.normalize("NFKD", composed)
    if decomposed:
        code = ord(decomposed[0])
        # Latin, IPA, Greek, Cyrillic, Armenian and their extended blocks: accents are noise.
        if code < 0x0530 or 0x1E00 <= code < 0x2000:
            return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return composed.casefold()


def _fold_with_map(text: str) -> tuple[str, list[int] | None, list[int] | None]:
    """Fold text; for non-ASCII text also give, per folded character, its original span."""
    if text.isascii():
        return text.lower(), None, None
    parts: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    for match in _SEGMENT.finditer(text):
        segment = match.group()
        start, end = match.span()
        if segment.isascii():
            parts.append(segment.lower())
            starts.extend(range(start, end))
            ends.extend(range(start + 1, end + 1))
        else:
            folded = _fold_cluster(segment)
            parts.append(folded)
            starts.extend([start] * len(folded))
            ends.extend([end] * len(folded))
    return "".join(parts), starts, ends


def fold(text: str) -> str:
    """The folded form in which text and identifiers are compared."""
    return _fold_with_map(text)[0]


# --- building blocks ----------------------------------------------------------------------------

# Scripts written without spaces between words: names in them match as substrings, and their
# characters do not count as letters next to a Latin name or an ID ("Doe様" holds "Doe").
_NO_SPACE = (
    "\u0e00-\u0e7f\u1100-\u11ff\u2e80-\u2fdf\u3040-\u30ff\u3100-\u31ff\u3400-\u4dbf"
    "\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff65-\uff9f\U00020000-\U0003ffff"
)
_NO_SPACE_SCRIPT = re.compile(f"[{_NO_SPACE}]")
_LETTER_EDGE_L = rf"(?<![^\W\d_{_NO_SPACE}])"
_LETTER_EDGE_R = rf"(?![^\W\d_{_NO_SPACE}])"
_ALNUM_EDGE_L = rf"(?<![^\W_{_NO_SPACE}])"
_ALNUM_EDGE_R = rf"(?![^\W_{_NO_SPACE}])"
_SEPS = r"[\W_]*"
_WORD = re.compile(r"[^\W\d_]+")
_RUN = re.compile(r"[^\W_]+")
_PARTICLES = frozenset((
    "van", "von", "der", "den", "de", "del", "della", "di", "da", "du", "dos", "das", "do", "la",
    "le", "el", "al", "bin", "ibn", "ter", "ten", "zu", "af",
))
_TITLES = frozenset((
    "dr", "mr", "mrs", "ms", "miss", "mx", "prof", "sir", "jr", "sr", "md", "phd", "ii", "iii",
    "iv",
))
_ADDRESS_PARTS = re.compile(r"[\^,;\r\n]+")
_MONTHS = (
    "january", "february", "march", "april", "may", "june",
    "july", "august", "september", "october", "november", "december",
)


def _edges(body: str, first: str, last: str, relaxed: bool = False) -> str:
    """Wrap body in token boundaries suited to its first and last character."""
    def side(ch: str, left: bool) -> str:
        if _NO_SPACE_SCRIPT.match(ch):
            return ""
        if relaxed and ch.isdecimal():
            return r"(?<!\d)" if left else r"(?!\d)"
        return _ALNUM_EDGE_L if left else _ALNUM_EDGE_R
    return f"{side(first, True)}(?:{body}){side(last, False)}"


def _longest(words: Iterable[str]) -> str:
    return max(words, key=len)


def _name_alternatives(names: Iterable[str]) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(regex, required literal) pairs: whole-word ones for spaced scripts, substring ones else."""
    words_alts: set[tuple[str, str]] = set()
    substring_alts: set[tuple[str, str]] = set()
    for name in names:
        for group in name.split("="):
            comps = [_WORD.findall(fold(c)) for c in group.split("^")[:3]]
            comps = [[w for w in words if w not in _TITLES] for words in comps]
            if not any(comps):
                continue
            no_space = any(_NO_SPACE_SCRIPT.search("".join(words)) for words in comps)
            alts = substring_alts if no_space else words_alts
            for words in comps:
                for word in words:
                    if len(word) >= 2 and (no_space or len(words) == 1 or word not in _PARTICLES):
                        alts.add((re.escape(word), word))
                if len(words) > 1:
                    alts.add((_SEPS.join(map(re.escape, words)), _longest(words)))
            family, given, middle = [*comps, [], [], []][:3]
            for order in ((family, given, middle), (given, middle, family),
                          (given, family), (family, given)):
                words = [w for part in order for w in part]
                if sum(1 for part in order if part) >= 2 and len("".join(words)) >= 2:
                    alts.add((_SEPS.join(map(re.escape, words)), _longest(words)))
            if family and given and not no_space:
                fam = _SEPS.join(map(re.escape, family))
                initial = re.escape(given[0][0])
                alts.add((rf"{initial}\.?{_SEPS}{fam}", _longest(family)))
                alts.add((rf"{fam}[\W_]+{initial}\.?", _longest(family)))
    return words_alts, substring_alts


def _id_alternative(value: str) -> tuple[str, str] | None:
    runs = _RUN.findall(fold(value))
    alnum = "".join(runs)
    if len(alnum) < 3:
        return None
    body = r"[\W_]{0,3}".join(map(re.escape, runs))
    return _edges(body, alnum[0], alnum[-1], relaxed=len(alnum) >= 6), _longest(runs)


def _other_alternatives(value: str) -> list[tuple[str, str]]:
    """The whole value, and each of its ^ , ; or line separated parts of 4+ letters and digits."""
    alts: list[tuple[str, str]] = []
    for index, part in enumerate([value, *_ADDRESS_PARTS.split(value)]):
        runs = _RUN.findall(fold(part))
        alnum = "".join(runs)
        if len(alnum) >= (3 if index == 0 else 4):
            body = _SEPS.join(map(re.escape, runs))
            alts.append((_edges(body, alnum[0], alnum[-1]), _longest(runs)))
    return alts


def _month(number: int | None) -> str:
    alts: set[str] = set()
    for i, full in enumerate(_MONTHS, 1):
        if number is None or i == number:
            alts |= {full, full[:3]} | ({"sept"} if i == 9 else set())
    return "(?:" + "|".join(sorted(alts, key=len, reverse=True)) + r")\.?"


def _date_forms(y: str, mm: str, dd: str, m: str, d: str, mon: str,
                yy: str | None = None, compact_tail: str = "") -> list[str]:
    """Regexes for one date in the supported formats; each argument is itself a regex."""
    sep, tsep, nth = r"[-/.]", r"[\s\-/.,]*", r"(?:st|nd|rd|th)?"
    years = [y] if yy is None else [y, yy]
    forms = [rf"(?<!\d){y}{mm}{dd}{compact_tail}(?!\d)", rf"(?<!\d){y}{sep}{m}{sep}{d}(?!\d)"]
    for year in years:
        forms += [
            rf"(?<!\d){d}{sep}{m}{sep}{year}(?!\d)",
            rf"(?<!\d){m}{sep}{d}{sep}{year}(?!\d)",
            rf"(?<!\d){d}{nth}{tsep}{mon}{tsep}{year}(?!\d)",
            rf"{_LETTER_EDGE_L}{mon}{tsep}{d}{nth}{tsep}{year}(?!\d)",
        ]
    if yy is not None:
        forms += [rf"(?<!\d){dd}{mm}{y}(?!\d)", rf"(?<!\d){mm}{dd}{y}(?!\d)"]
    return forms


def _birth_date_alternatives(value: str) -> list[tuple[str, str]]:
    digits = re.sub(r"\D", "", value)
    try:
        date = datetime.date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        date = None
    if date is None or len(digits) != 8:
        return [(rf"(?<!\d){digits}(?!\d)", digits)] if len(digits) >= 4 else []
    y, mm, dd = f"{date.year:04d}", f"{date.month:02d}", f"{date.day:02d}"
    m = f"0?{date.month}" if date.month < 10 else mm
    d = f"0?{date.day}" if date.day < 10 else dd
    # Every form holds the two-digit year, so a text without it needs no regex run.
    return [(form, y[2:]) for form in _date_forms(y, mm, dd, m, d, _month(date.month), yy=y[2:])]


_ANY_DATE = re.compile("|".join(_date_forms(
    y=r"(?:1[89]|20)\d\d", mm=r"(?:0[1-9]|1[0-2])", dd=r"(?:0[1-9]|[12]\d|3[01])",
    m=r"(?:1[0-2]|0?[1-9])", d=r"(?:[12]\d|3[01]|0?[1-9])", mon=_month(None),
    compact_tail=r"(?:(?:[01]\d|2[0-3])[0-5]\d(?:[0-5]\d(?:\.\d{1,6})?)?)?",
)))

# --- generic patterns ---------------------------------------------------------------------------

_DIGIT = re.compile(r"\d")
_EMAIL = re.compile(r"(?<![\w.+'-])\w[\w.+'-]*@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(
    r"(?<![\w+])(?:"
    r"\+\d{1,3}(?:[ .\-]?\(\d{1,4}\))?(?:[ .\-/]?\d{1,5}){1,6}"
    r"|\(\d{3}\)[ .\-]?\d{3}[ .\-]\d{4}"
    r"|\d{3}[.\-]\d{3}[.\-]\d{4}"
    r"|0\d{1,4}[ /\-]\d{4,8}"
    r")(?!\w)"
)
_DIGIT_GROUPS = re.compile(r"(?<![\w.,])(?=\d(?:[ \-]?\d){9})(?>\d+(?:[ \-]\d+)+)(?!\w)(?![.,]\d)")
_SSN = re.compile(r"(?<!\d)(?<!\d-)\d{3}-\d{2}-\d{4}(?!\d)(?!-\d)")
_ID_TOKEN = re.compile(
    rf"(?<![^\W_{_NO_SPACE}])(?<!\d[.,])(?=(?:[^\W\d_{_NO_SPACE}]*\d){{5}})"
    rf"[^\W_{_NO_SPACE}]{{6,}}+(?![.,]\d)"
)
_IMAGING_TOKEN = re.compile(
    r"\d+(?:x\d+)+|\d+(?:mm|cm|um|ms|us|s|sec|min|kvp|kv|mas|ma|hz|khz|mhz|mt|t|ml|mg|kg|g|mgy"
    r"|gy|mbq|kbq|bq|mci|uci|kev|mev|px|dpi|fps|ppm|x)"
)


def _is_date_or_time(token: str) -> bool:
    """True for digit strings that read as a DICOM DA, TM (HHMMSS) or DT up to seconds."""
    if not token.isdecimal():
        return False
    try:
        if len(token) == 6:
            datetime.time(int(token[:2]), int(token[2:4]), int(token[4:6]))
            return True
        if len(token) in (8, 12, 14):
            datetime.datetime(int(token[:4]), int(token[4:6]), int(token[6:8]),
                              int(token[8:10] or 0), int(token[10:12] or 0),
                              int(token[12:14] or 0))
            return True
    except ValueError:
        return False
    return False


def _digit_count(text: str) -> int:
    return sum(c.isdecimal() for c in text)


def _generic_hits(folded: str, remove_all_dates: bool) -> list[tuple[int, int, int]]:
    hits: list[tuple[int, int, int]] = []
    if "@" in folded:
        hits += [(m.start(), m.end(), _PRIORITY["email"]) for m in _EMAIL.finditer(folded)]
    if len(_DIGIT.findall(folded)) < 5:  # every pattern below needs 5 digits or more
        return hits
    for m in _PHONE.finditer(folded):
        if _digit_count(m.group()) >= 8 or not m.group().startswith(("+", "0")):
            hits.append((m.start(), m.end(), _PRIORITY["phone"]))
    for m in _DIGIT_GROUPS.finditer(folded):
        groups = re.split(r"[ \-]", m.group())
        if (10 <= _digit_count(m.group()) <= 15
                and (groups[0].startswith("0") or all(len(g) >= 3 for g in groups))
                and not any(_is_date_or_time(g) for g in groups)):
            hits.append((m.start(), m.end(), _PRIORITY["phone"]))
    hits += [(m.start(), m.end(), _PRIORITY["id-pattern"]) for m in _SSN.finditer(folded)]
    for m in _ID_TOKEN.finditer(folded):
        token = m.group()
        if not _IMAGING_TOKEN.fullmatch(token) and not _is_date_or_time(token):
            hits.append((m.start(), m.end(), _PRIORITY["id-pattern"]))
    if remove_all_dates:
        hits += [(m.start(), m.end(), _PRIORITY["date"]) for m in _ANY_DATE.finditer(folded)]
    return hits


@dataclass(frozen=True)
class _Kind:
    """One kind's regex, run only if the folded text holds one of its required literals."""

    priority: int
    regex: re.Pattern[str]
    literals: tuple[str, ...]


def _kind(kind: str, alts: Iterable[tuple[str, str]], wrap: str = "{}") -> _Kind | None:
    unique = sorted(set(alts), key=lambda alt: (-len(alt[0]), alt[0]))
    if not unique:
        return None
    regex = re.compile(wrap.format("|".join(pattern for pattern, _ in unique)))
    return _Kind(_PRIORITY[kind], regex, tuple(sorted({literal for _, literal in unique})))


@lru_cache(maxsize=16)
def _compile(identifiers: Identifiers) -> tuple[_Kind, ...]:
    """The regexes of one patient; cached so that a cleaner per instance costs nothing."""
    words, substrings = _name_alternatives(identifiers.names)
    built = (
        # One shared word boundary around all spaced-script names: checked once per position.
        _kind("name", words, _LETTER_EDGE_L + "(?:{})" + _LETTER_EDGE_R),
        _kind("name", substrings),
        _kind("id", (alt for v in identifiers.ids if (alt := _id_alternative(v)))),
        _kind("date", (alt for v in identifiers.dates for alt in _birth_date_alternatives(v))),
        _kind("other", (alt for v in identifiers.other for alt in _other_alternatives(v))),
    )
    return tuple(kind for kind in built if kind is not None)


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


# --- collecting identifiers from a dataset ------------------------------------------------------

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
