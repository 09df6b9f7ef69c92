"""Policy and Rule: the data a de-identification policy is made of.

A policy names a base profile (PS3.15 Table E.1-1, or nothing), switches PS3.15 options on, sets a
few parameters (age band width, date mode) and adds overrides per attribute, keyword or private
creator block. Everything here is frozen so that a policy, once loaded and digested, cannot drift
from the digest that an approval recorded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Option(StrEnum):
    """PS3.15 Annex E options, named as the JSON columns of Table E.1-1 name them."""

    RETAIN_SAFE_PRIVATE = "retain_safe_private"
    RETAIN_UIDS = "retain_uids"
    RETAIN_DEVICE_IDENTITY = "retain_device_identity"
    RETAIN_INSTITUTION_IDENTITY = "retain_institution_identity"
    RETAIN_PATIENT_CHARACTERISTICS = "retain_patient_characteristics"
    RETAIN_LONG_FULL_DATES = "retain_long_full_dates"
    RETAIN_LONG_MODIFIED_DATES = "retain_long_modified_dates"
    CLEAN_DESCRIPTORS = "clean_descriptors"
    CLEAN_STRUCTURED_CONTENT = "clean_structured_content"
    CLEAN_GRAPHICS = "clean_graphics"
    CLEAN_PIXEL_DATA = "clean_pixel_data"
    CLEAN_RECOGNIZABLE_VISUAL_FEATURES = "clean_recognizable_visual_features"


# Table E.1-1 columns are applied in this order; a later option's cell wins over an earlier one.
# Retention options come before cleaning options so that, where a row has both (Allergies:
# Retain Patient Characteristics C and Clean Descriptors C), the cleaning semantics apply last.
OPTION_COLUMN_ORDER: tuple[Option, ...] = (
    Option.RETAIN_SAFE_PRIVATE,
    Option.RETAIN_UIDS,
    Option.RETAIN_DEVICE_IDENTITY,
    Option.RETAIN_INSTITUTION_IDENTITY,
    Option.RETAIN_PATIENT_CHARACTERISTICS,
    Option.RETAIN_LONG_FULL_DATES,
    Option.RETAIN_LONG_MODIFIED_DATES,
    Option.CLEAN_DESCRIPTORS,
    Option.CLEAN_STRUCTURED_CONTENT,
    Option.CLEAN_GRAPHICS,
)

# CID 7050 codes (scheme DCM) for each option; 113100 is the Basic Profile itself.
BASIC_PROFILE_CODE = ("113100", "Basic Application Confidentiality Profile")
OPTION_CODES: dict[Option, tuple[str, str]] = {
    Option.CLEAN_PIXEL_DATA: ("113101", "Clean Pixel Data Option"),
    Option.CLEAN_RECOGNIZABLE_VISUAL_FEATURES: (
        "113102", "Clean Recognizable Visual Features Option"),
    Option.CLEAN_GRAPHICS: ("113103", "Clean Graphics Option"),
    Option.CLEAN_STRUCTURED_CONTENT: ("113104", "Clean Structured Content Option"),
    Option.CLEAN_DESCRIPTORS: ("113105", "Clean Descriptors Option"),
    Option.RETAIN_LONG_FULL_DATES: (
        "113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    Option.RETAIN_LONG_MODIFIED_DATES: (
        "113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    Option.RETAIN_PATIENT_CHARACTERISTICS: ("113108", "Retain Patient Characteristics Option"),
    Option.RETAIN_DEVICE_IDENTITY: ("113109", "Retain Device Identity Option"),
    Option.RETAIN_UIDS: ("113110", "Retain UIDs Option"),
    Option.RETAIN_SAFE_PRIVATE: ("113111", "Retain Safe Private Option"),
    Option.RETAIN_INSTITUTION_IDENTITY: ("113112", "Retain Institution Identity Option"),
}


class Op(StrEnum):
    """What a rule does to one attribute.

    The single letters are PS3.15 action codes (Table E.1-1a); the compound codes are resolved to
    one of them by :mod:`policies.annex_e` before the engine sees them. The named operations are
    this product's overrides, each of which is one precise kind of D or C.
    """

    KEEP = "K"
    REMOVE = "X"
    EMPTY = "Z"
    DUMMY = "D"
    CLEAN = "C"
    UID = "U"
    REPLACE = "replace"
    HASH = "hash"
    PSEUDONYM = "pseudonym"
    DATE_SHIFT = "date_shift"
    DATE_COARSEN = "date_coarsen"
    AGE_BAND = "age_band"


# Names an override may use, mapped to the operation. Action codes are accepted as written.
OP_ALIASES: dict[str, Op] = {
    "keep": Op.KEEP,
    "remove": Op.REMOVE,
    "empty": Op.EMPTY,
    "dummy": Op.DUMMY,
    "clean": Op.CLEAN,
    "uid": Op.UID,
    "replace": Op.REPLACE,
    "hash": Op.HASH,
    "pseudonym": Op.PSEUDONYM,
    "date_shift": Op.DATE_SHIFT,
    "date_coarsen": Op.DATE_COARSEN,
    "age_band": Op.AGE_BAND,
    **{op.value: op for op in (Op.KEEP, Op.REMOVE, Op.EMPTY, Op.DUMMY, Op.CLEAN, Op.UID)},
}


class DateMode(StrEnum):
    """How Retain Longitudinal Temporal Information with Modified Dates modifies a date."""

    SHIFT = "shift"
    YEAR = "year"
    YEAR_MONTH = "year-month"


@dataclass(frozen=True)
class Rule:
    """One action with its parameters. Unused parameters stay None."""

    op: Op
    value: str | None = None  # REPLACE: the new value
    prefix: str | None = None  # PSEUDONYM: text before the keyed code
    length: int | None = None  # HASH / PSEUDONYM: characters of keyed code
    source: str | None = None  # PSEUDONYM: derive from this keyword's value (e.g. PatientID)
    granularity: DateMode | None = None  # DATE_COARSEN: year or year-month
    width: int | None = None  # AGE_BAND: band width in years


@dataclass(frozen=True)
class Target:
    """What an override applies to.

    Either a public tag (``tag``), or a private creator block (``private_creator`` and ``group``),
    optionally narrowed to one element offset within the block (``element``, 0x00-0xFF).
    """

    tag: int | None = None
    private_creator: str | None = None
    group: int | None = None
    element: int | None = None

    def describe(self) -> str:
        if self.tag is not None:
            return f"({self.tag >> 16:04X},{self.tag & 0xFFFF:04X})"
        offset = "xx" if self.element is None else f"xx{self.element:02X}"
        return f'({self.group or 0:04X},{offset}) "{self.private_creator}"'


@dataclass(frozen=True)
class Override:
    target: Target
    rule: Rule


@dataclass(frozen=True)
class Parameters:
    """Settings that vary case by case and so live in the (approved, digested) policy."""

    age_band_years: int = 5
    # Ages at or above this are aggregated into one band written as this value (HIPAA: 90).
    age_cap_years: int | None = 90
    date_mode: DateMode = DateMode.SHIFT
    # Per-patient shifts are drawn from [-max, -1] U [1, max] whole days.
    date_shift_max_days: int = 365
    # Add PatientAge from PatientBirthDate and StudyDate when it is missing.
    compute_age: bool = False
    pseudonym_length: int = 10
    uid_root: str = "2.25"


@dataclass(frozen=True)
class Policy:
    """A loaded, validated policy. ``digest`` is the sha256 of its canonical form."""

    id: str
    version: str
    description: str
    base_profile: str  # "ps315-basic" or "none"
    options: frozenset[Option] = frozenset()
    parameters: Parameters = field(default_factory=Parameters)
    overrides: tuple[Override, ...] = ()
    digest: str = ""
    source: str = "<memory>"

    def has(self, option: Option) -> bool:
        return option in self.options


def canonical_digest(document: Any) -> str:
    """sha256 of a policy document's canonical JSON form (sorted keys, no whitespace).

    Comments, key order and YAML style do not change the digest; any change of meaning does.
    """
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
