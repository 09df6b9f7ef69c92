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
family, given and middle components are used; prefixes and suffixes (Dr, Mr, Jr, MD) are not.
Each word of a component with at least 2 letters is matched as a whole word: a letter must not
touch it on either side, so "DOE^JOHN", "DOE_JOHN", "DOE, JOHN" and "John Doe" all match, in any
order. Particles (van, de, al, ...) only count inside their whole component ("van der Berg"), and
titles never count. The full forms "family given middle", "given middle family", "given family"
and "J. Doe" / "Doe, J" are matched too, with any separators. Groups written in scripts without
spaces (CJK, kana, Hangul, Thai) are matched as plain substrings: components of 2 or more
characters, and the full name with or without separators. A patient called "Head" therefore also
removes "HEAD" from "CT HEAD": over-removal is the safe side.

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
as their runs of letters and digits in order, with any separators between the runs.

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
the same object. A redaction can make a value longer than the hit (a 2-letter name becomes 3
characters), so callers that write into short VRs check the VR length.
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

_LETTER_EDGE_L = r"(?<![^\W\d_])"
_LETTER_EDGE_R = r"(?![^\W\d_])"
_ALNUM_EDGE_L = r"(?<![^\W_])"
_ALNUM_EDGE_R = r"(?![^\W_])"
_SEPS = r"[\W_]*"
_NO_SPACE_SCRIPT = re.compile(
    "[\u0e00-\u0e7f\u1100-\u11ff\u2e80-\u2fdf\u3040-\u30ff\u3100-\u31ff\u3400-\u4dbf"
    "\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff65-\uff9f\U00020000-\U0003ffff]"
)
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


def _word_edges(body: str) -> str:
    return f"{_LETTER_EDGE_L}(?:{body}){_LETTER_EDGE_R}"


def _name_patterns(names: Iterable[str]) -> set[str]:
    patterns: set[str] = set()
    for name in names:
        for group in name.split("="):
            comps = [_WORD.findall(fold(c)) for c in group.split("^")[:3]]
            comps = [[w for w in words if w not in _TITLES] for words in comps]
            if not any(comps):
                continue
            no_space = any(_NO_SPACE_SCRIPT.search("".join(words)) for words in comps)
            for words in comps:
                for word in words:
                    if no_space:
                        if len(word) >= 2:
                            patterns.add(re.escape(word))
                    elif len(word) >= 2 and (len(words) == 1 or word not in _PARTICLES):
                        patterns.add(_word_edges(re.escape(word)))
                if len(words) > 1:
                    joined = _SEPS.join(map(re.escape, words))
                    patterns.add(joined if no_space else _word_edges(joined))
            family, given, middle = [*comps, [], [], []][:3]
            for order in ((family, given, middle), (given, middle, family),
                          (given, family), (family, given)):
                words = [w for part in order for w in part]
                if sum(1 for part in order if part) >= 2 and len("".join(words)) >= 2:
                    joined = _SEPS.join(map(re.escape, words))
                    patterns.add(joined if no_space else _word_edges(joined))
            if family and given and not no_space:
                fam = _SEPS.join(map(re.escape, family))
                initial = re.escape(given[0][0])
                patterns.add(_word_edges(rf"{initial}\.?{_SEPS}{fam}"))
                patterns.add(_word_edges(rf"{fam}[\W_]+{initial}\.?"))
    return patterns


def _id_pattern(value: str) -> str | None:
    runs = _RUN.findall(fold(value))
    alnum = "".join(runs)
    if len(alnum) < 3:
        return None
    body = r"[\W_]{0,3}".join(map(re.escape, runs))
    return _edges(body, alnum[0], alnum[-1], relaxed=len(alnum) >= 6)


def _other_patterns(value: str) -> list[str]:
    """The whole value, and each of its ^ , ; or line separated parts of 4+ letters and digits."""
    patterns: list[str] = []
    for index, part in enumerate([value, *_ADDRESS_PARTS.split(value)]):
        runs = _RUN.findall(fold(part))
        alnum = "".join(runs)
        if len(alnum) >= (3 if index == 0 else 4):
            patterns.append(_edges(_SEPS.join(map(re.escape, runs)), alnum[0], alnum[-1]))
    return patterns


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


def _birth_date_patterns(value: str) -> list[str]:
    digits = re.sub(r"\D", "", value)
    try:
        date = datetime.date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        return [rf"(?<!\d){digits}(?!\d)"] if len(digits) >= 4 else []
    if len(digits) != 8:
        return [rf"(?<!\d){digits}(?!\d)"]
    y, mm, dd = f"{date.year:04d}", f"{date.month:02d}", f"{date.day:02d}"
    m = f"0?{date.month}" if date.month < 10 else mm
    d = f"0?{date.day}" if date.day < 10 else dd
    return _date_forms(y, mm, dd, m, d, _month(date.month), yy=y[2:])


_ANY_DATE = re.compile("|".join(_date_forms(
    y=r"(?:1[89]|20)\d\d", mm=r"(?:0[1-9]|1[0-2])", dd=r"(?:0[1-9]|[12]\d|3[01])",
    m=r"(?:1[0-2]|0?[1-9])", d=r"(?:[12]\d|3[01]|0?[1-9])", mon=_month(None),
    compact_tail=r"(?:(?:[01]\d|2[0-3])[0-5]\d(?:[0-5]\d(?:\.\d{1,6})?)?)?",
)))

# --- generic patterns ---------------------------------------------------------------------------

_DIGIT = re.compile(r"\d")
_EMAIL = re.compile(r"(?<![\w.+'-])[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")
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
    r"(?<![^\W_])(?<!\d[.,])(?=(?:[^\W\d_]*\d){5})[^\W_]{6,}+(?![.,]\d)"
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
    if not _DIGIT.search(folded):
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


def _alternation(patterns: Iterable[str]) -> re.Pattern[str] | None:
    unique = sorted(set(patterns), key=lambda p: (-len(p), p))
    return re.compile("|".join(unique)) if unique else None


@lru_cache(maxsize=16)
def _compile(identifiers: Identifiers) -> tuple[tuple[int, re.Pattern[str]], ...]:
    """One regex per kind for a patient; cached so that a cleaner per instance costs nothing."""
    built = (
        ("name", _alternation(_name_patterns(identifiers.names))),
        ("id", _alternation(p for v in identifiers.ids if (p := _id_pattern(v)))),
        ("date", _alternation(p for v in identifiers.dates for p in _birth_date_patterns(v))),
        ("other", _alternation(p for v in identifiers.other for p in _other_patterns(v))),
    )
    return tuple((_PRIORITY[kind], rx) for kind, rx in built if rx is not None)


class TextCleaner:
    """Finds and removes one patient's identifiers, and generic identifiers, in free text."""

    def __init__(self, identifiers: Identifiers, remove_all_dates: bool = False) -> None:
        self._patterns = _compile(identifiers)
        self._remove_all_dates = remove_all_dates

    def find(self, text: str) -> list[tuple[int, int, str]]:
        """Hits as (start, end, kind), sorted; a hit inside another hit is not reported."""
        folded, starts, ends = _fold_with_map(text)
        hits = [(m.start(), m.end(), priority)
                for priority, rx in self._patterns for m in rx.finditer(folded)]
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
        """Text with every hit replaced by REDACTION; the same object if there was no hit."""
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
    """Every string in a value of any VR; never raises."""
    if value is None or isinstance(value, pydicom.Sequence):
        return []
    if isinstance(value, bytes | bytearray):
        raw = bytes(value)
        try:
            text = decode_bytes(raw, encodings, {0x5C, 0x3D, 0x5E})
        except Exception:
            text = raw.decode("latin-1")
        return [s.strip() for s in text.split("\\") if s.strip(" \x00")]
    if isinstance(value, str | PersonName):
        return [s.strip(" \x00") for s in str(value).split("\\") if s.strip(" \x00")]
    if isinstance(value, list | tuple) or hasattr(value, "__iter__"):
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
