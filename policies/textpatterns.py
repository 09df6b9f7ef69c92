"""The regexes that recognise identifiers in folded text, and the generic identifier patterns.

Why this is its own module: it is the recognition half of :mod:`policies.textclean` (whose
docstring documents what each kind matches); the cleaner only merges hits and replaces them.
Per-patient regexes are built from :class:`~policies.identifiers.Identifiers` and cached;
generic patterns (e-mail, telephone, ID-like tokens, any date) need no identifier. Underscore
names are shared with policies.textclean only.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from policies.identifiers import Identifiers
from policies.textfold import fold

# Kinds in priority order: where two hits cover the same text, find() reports the earlier kind.
KINDS: tuple[str, ...] = ("name", "id", "date", "other", "email", "phone", "id-pattern")
_PRIORITY = {kind: i for i, kind in enumerate(KINDS)}


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
