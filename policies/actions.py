"""Value-level actions: dummies (D), date shifting and coarsening, age bands.

Each function takes a decoded value and returns the new one, always valid for the VR: a shift
never produces an impossible date, an age band is a valid AS string, and a dummy has the length
and character repertoire its VR allows. Values that cannot be parsed are not guessed at: the
caller empties them and records why.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable

from policies.keying import code
from policies.model import DateMode

__all__ = [
    "DUMMY_DATE", "DUMMY_DATETIME", "DUMMY_TEXT", "DUMMY_TIME", "MAX_LENGTH", "DateMode",
    "UnparseableValue", "age_between", "age_years", "band_age", "coarsen_da", "coarsen_dt",
    "dummy_value", "fit", "modify_date", "shift_da", "shift_dt",
]

# Maximum value lengths (PS3.5 Table 6.2-1) for the string VRs a dummy or pseudonym may land in.
MAX_LENGTH: dict[str, int] = {
    "AE": 16, "AS": 4, "CS": 16, "DA": 8, "DS": 16, "DT": 26, "IS": 12, "LO": 64, "LT": 10240,
    "PN": 64, "SH": 16, "ST": 1024, "TM": 14, "UC": 1024, "UI": 64, "UR": 1024, "UT": 10240,
}

DUMMY_DATE = "19000101"
DUMMY_TIME = "000000"
DUMMY_DATETIME = "19000101000000"
DUMMY_TEXT = "ANONYMIZED"
DUMMY_URI = "urn:tce:anonymized"

# Keywords whose dummies must stay consistent between instances (same input -> same dummy), so
# that a PACS keeps one patient, study or request together instead of merging or splitting them.
_IDENTIFIER_SUFFIXES = ("ID", "Number", "Identifier", "IDs", "Numbers")


class UnparseableValue(ValueError):
    """A date, time or age that cannot be parsed, so it cannot be shifted or banded safely."""


def dummy_value(vr: str, keyword: str, original: str, key: bytes) -> object:
    """A non-zero-length stand-in consistent with the VR (PS3.15 action D).

    Identifier-like attributes (keywords ending in ID, Number, Identifier) get a keyed code of
    the original, so equal inputs map to equal dummies; others get a constant.
    """
    if vr in ("LO", "SH", "LT", "ST", "UT", "UC", "PN", "CS", "AE"):
        if keyword.endswith(_IDENTIFIER_SUFFIXES) and original:
            length = min(12, MAX_LENGTH[vr])
            return code(key, f"D|{keyword}", original, length)
        return "ANONYMOUS" if vr == "AE" else DUMMY_TEXT
    if vr == "DA":
        return DUMMY_DATE
    if vr == "TM":
        return DUMMY_TIME
    if vr == "DT":
        return DUMMY_DATETIME
    if vr in ("IS", "DS"):
        return "0"
    if vr == "AS":
        return "000Y"
    if vr == "UR":
        return DUMMY_URI
    if vr in ("US", "SS", "UL", "SL", "UV", "SV"):
        return 0
    if vr in ("FL", "FD"):
        return 0.0
    if vr in ("OB", "OW", "OD", "OF", "OL", "OV", "UN") or vr.startswith("OB or"):
        return b"\x00\x00"
    if " or " in vr:  # ambiguous: "US or SS", "US or SS or OW", "US or OW"
        return 0
    return DUMMY_TEXT


_DATE_RE = re.compile(r"^(\d{4})([./-]?)(\d{2})\2(\d{2})$")
_DT_RE = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,6})?([+-]\d{4})?$")
_MIN_ORDINAL = dt.date(1, 1, 1).toordinal()
_MAX_ORDINAL = dt.date(9999, 12, 31).toordinal()


def _parse_da(text: str) -> dt.date:
    """A DA value; the ACR-NEMA form ``YYYY.MM.DD`` and the common ``YYYY-MM-DD`` slip are read."""
    match = _DATE_RE.match(text.strip())
    if not match:
        raise UnparseableValue("not a DA value")
    try:
        return dt.date(int(match[1]), int(match[3]), int(match[4]))
    except ValueError as exc:
        raise UnparseableValue("impossible date") from exc


def _add_days(day: dt.date, days: int) -> dt.date:
    """Shift by whole days; a shift that would leave the calendar goes the other way instead.

    Clamping would pile dates up on 00010101 or 99991231 (sentinels other tools write for
    "destroyed"); reversing keeps every shifted date a real, moved date.
    """
    ordinal = day.toordinal() + days
    if not _MIN_ORDINAL <= ordinal <= _MAX_ORDINAL:
        ordinal = day.toordinal() - days
    ordinal = min(max(ordinal, _MIN_ORDINAL), _MAX_ORDINAL)
    return dt.date.fromordinal(ordinal)


def _da(day: dt.date) -> str:
    return f"{day.year:04d}{day.month:02d}{day.day:02d}"  # strftime drops zeros before 1000


def _each_in_range(value: str, change: Callable[[str], str]) -> str:
    """Apply ``change`` to a DA value or to both ends of a DA range (``A-B``, ``-B``, ``A-``)."""
    text = value.strip()
    if _DATE_RE.match(text):
        return change(text)
    if text.count("-") == 1:
        start, end = text.split("-")
        if start or end:
            return "-".join(change(part) if part else "" for part in (start, end))
    raise UnparseableValue("not a DA value")


def shift_da(value: str, days: int) -> str:
    """Shift one DA value, or a DA range ``A-B``, ``-B`` or ``A-``, by whole days."""
    return _each_in_range(value, lambda text: _da(_add_days(_parse_da(text), days)))


def shift_dt(value: str, days: int) -> str:
    """Shift the date part of a DT value, keeping its precision, time and offset."""
    text = value.strip()
    match = _DT_RE.match(text)
    if not match:
        raise UnparseableValue("not a DT value")
    year, month, day = int(match[1]), int(match[2] or 1), int(match[3] or 1)
    try:
        shifted = _add_days(dt.date(year, month, day), days)
    except ValueError as exc:
        raise UnparseableValue("impossible date") from exc
    stamp = _da(shifted)
    precision = 4 + (2 if match[2] else 0) + (2 if match[3] else 0)
    return stamp[:precision] + text[precision:]


def coarsen_da(value: str, mode: DateMode) -> str:
    """Reduce a DA value (or range) to its year (YYYY0101) or year and month (YYYYMM01)."""
    def one(text: str) -> str:
        day = _parse_da(text)
        if mode is DateMode.YEAR:
            return f"{day.year:04d}0101"
        return f"{day.year:04d}{day.month:02d}01"
    return _each_in_range(value, one)


def coarsen_dt(value: str, mode: DateMode) -> str:
    """Reduce a DT value to YYYY or YYYYMM (DT allows partial precision)."""
    match = _DT_RE.match(value.strip())
    if not match:
        raise UnparseableValue("not a DT value")
    if mode is DateMode.YEAR or not match[2]:
        return match[1]
    return match[1] + match[2]


def modify_date(vr: str, value: str, mode: DateMode, days: int) -> str:
    """Apply the Modified Dates rule to one DA, DT or TM value.

    Whole-day shifts keep times of day, so TM values are unchanged; so does coarsening, since a
    time without its date identifies no one.
    """
    if not value.strip():
        return value
    if vr == "TM":
        return value
    if mode is DateMode.SHIFT:
        return shift_da(value, days) if vr == "DA" else shift_dt(value, days)
    return coarsen_da(value, mode) if vr == "DA" else coarsen_dt(value, mode)


_AS_RE = re.compile(r"^(\d{3})([DWMY])$")
_DAYS_PER_UNIT = {"D": 1.0, "W": 7.0, "M": 365.25 / 12, "Y": 365.25}


def age_years(value: str) -> float:
    match = _AS_RE.match(value.strip())
    if not match:
        raise UnparseableValue("not an AS value")
    return int(match[1]) * _DAYS_PER_UNIT[match[2]] / 365.25


def band_age(value: str, width: int, cap: int | None) -> str:
    """Band an AS value to the lower bound of its ``width``-year band, as a valid AS (``045Y``).

    Ages at or above ``cap`` are aggregated into one band written as the cap (``090Y``: HIPAA's
    "90 or older"). Ages under a year fall in the first band.
    """
    years = int(age_years(value))
    if cap is not None and years >= cap:
        return f"{cap:03d}Y"
    banded = years // width * width
    if cap is not None:
        banded = min(banded, cap)
    return f"{banded:03d}Y"


def age_between(birth: str, on: str) -> str:
    """PatientAge (AS) from a birth date and a study date, in whole years."""
    born, seen = _parse_da(birth), _parse_da(on)
    years = seen.year - born.year - ((seen.month, seen.day) < (born.month, born.day))
    if years < 0:
        raise UnparseableValue("birth date after study date")
    return f"{min(years, 999):03d}Y"


def fit(value: str, vr: str) -> str:
    """Truncate a string to its VR's maximum length (after cleaning or prefixing)."""
    limit = MAX_LENGTH.get(vr)
    return value if limit is None or len(value) <= limit else value[:limit]
