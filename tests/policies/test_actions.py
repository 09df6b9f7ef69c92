"""Value-level actions: dummies valid for their VR, date shifts and coarsening, age bands."""

from __future__ import annotations

import datetime as dt

import pytest
from pydicom import config
from pydicom.valuerep import validate_value

from policies import actions
from policies.actions import (
    UnparseableValue,
    age_between,
    band_age,
    coarsen_da,
    coarsen_dt,
    dummy_value,
    fit,
    modify_date,
    shift_da,
    shift_dt,
)
from policies.model import DateMode

KEY = b"k" * 32


@pytest.mark.parametrize("vr", ["AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH",
                                "ST", "TM", "UC", "UR", "UT", "US", "SS", "UL", "SL", "FL", "FD",
                                "OB", "OW", "UN", "US or SS", "OB or OW"])
@pytest.mark.parametrize("keyword", ["PatientID", "InstitutionName", "StudyID"])
def test_dummy_is_non_empty_and_valid_for_its_vr(vr: str, keyword: str) -> None:
    value = dummy_value(vr, keyword, "ORIGINAL-VALUE 123", KEY)
    assert value not in (None, "", b"")
    if " or " not in vr:
        validate_value(vr, value, config.RAISE)  # raises ValueError on an invalid value


def test_identifier_dummies_are_keyed_and_consistent() -> None:
    a = dummy_value("LO", "PatientID", "MRN1", KEY)
    assert a == dummy_value("LO", "PatientID", "MRN1", KEY)
    assert a != dummy_value("LO", "PatientID", "MRN2", KEY)
    assert a != dummy_value("LO", "PatientID", "MRN1", b"x" * 32)
    assert "MRN1" not in str(a)
    assert dummy_value("LO", "InstitutionName", "St Elsewhere", KEY) == actions.DUMMY_TEXT


@pytest.mark.parametrize(("value", "days", "expected"), [
    ("20240115", 10, "20240125"),
    ("20240115", -20, "20231226"),
    ("20200229", 365, "20210228"),  # leap day to a year without one
    ("20190301", -365, "20180301"),
    ("20200301", -1, "20200229"),
    ("2024.01.15", 1, "20240116"),  # ACR-NEMA form is read, written as DICOM DA
    ("20240101-20240131", 2, "20240103-20240202"),  # range
    ("-20240131", 2, "-20240202"),
    ("20240101-", 2, "20240103-"),
])
def test_shift_da(value: str, days: int, expected: str) -> None:
    assert shift_da(value, days) == expected


@pytest.mark.parametrize(("value", "days"), [
    ("00010101", -5), ("00010103", -30), ("99991231", 5), ("99991215", 365),
])
def test_shift_at_the_ends_of_the_calendar_moves_to_a_valid_real_date(value: str,
                                                                      days: int) -> None:
    shifted = shift_da(value, days)
    assert len(shifted) == 8
    day = dt.date(int(shifted[:4]), int(shifted[4:6]), int(shifted[6:]))
    assert shifted != value
    assert shifted not in ("00010101", "99991231")  # never piled up on a sentinel
    assert day.toordinal() - dt.date(int(value[:4]), int(value[4:6]),
                                     int(value[6:])).toordinal() == -days  # went the other way


def test_shift_preserves_intervals() -> None:
    a, b = "20240115", "20240301"
    for days in (-365, -1, 1, 17, 365):
        sa, sb = shift_da(a, days), shift_da(b, days)
        gap = dt.date(int(sb[:4]), int(sb[4:6]), int(sb[6:])) - dt.date(
            int(sa[:4]), int(sa[4:6]), int(sa[6:]))
        assert gap.days == 46


@pytest.mark.parametrize(("value", "expected"), [
    ("20240115101812", "20240105101812"),
    ("20240115101812.123456+0100", "20240105101812.123456+0100"),
    ("20240115-0500", "20240105-0500"),
    ("202401", "202312"),  # year-month precision stays year-month
    ("2024", "2023"),
    ("20240110", "20231231"),
])
def test_shift_dt_keeps_precision_and_offset(value: str, expected: str) -> None:
    assert shift_dt(value, -10) == expected


def test_tm_is_unchanged_by_shift_and_coarsen() -> None:
    assert modify_date("TM", "101812.123", DateMode.SHIFT, 100) == "101812.123"
    assert modify_date("TM", "101812", DateMode.YEAR, 100) == "101812"


def test_empty_values_stay_empty() -> None:
    assert modify_date("DA", "", DateMode.SHIFT, 10) == ""


@pytest.mark.parametrize(("vr", "value", "mode", "expected"), [
    ("DA", "20240315", DateMode.YEAR, "20240101"),
    ("DA", "20240315", DateMode.YEAR_MONTH, "20240301"),
    ("DA", "20240315-20240420", DateMode.YEAR_MONTH, "20240301-20240401"),
    ("DT", "20240315101812.5+0100", DateMode.YEAR, "2024"),
    ("DT", "20240315101812", DateMode.YEAR_MONTH, "202403"),
    ("DT", "2024", DateMode.YEAR_MONTH, "2024"),
])
def test_coarsen(vr: str, value: str, mode: DateMode, expected: str) -> None:
    assert modify_date(vr, value, mode, 0) == expected
    validate_value(vr, expected, config.RAISE)


@pytest.mark.parametrize("bad", ["2024-13-01", "20240230", "yesterday", "2024011", "20241301"])
def test_unparseable_dates_raise_instead_of_guessing(bad: str) -> None:
    with pytest.raises(UnparseableValue):
        shift_da(bad, 3)
    with pytest.raises(UnparseableValue):
        coarsen_da(bad, DateMode.YEAR)


def test_unparseable_dt_raises() -> None:
    with pytest.raises(UnparseableValue):
        shift_dt("2024-01-15T10:00", 1)
    with pytest.raises(UnparseableValue):
        coarsen_dt("soon", DateMode.YEAR)


@pytest.mark.parametrize(("age", "width", "expected"), [
    ("047Y", 5, "045Y"), ("045Y", 5, "045Y"), ("049Y", 5, "045Y"), ("047Y", 10, "040Y"),
    ("089Y", 5, "085Y"), ("090Y", 5, "090Y"), ("102Y", 5, "090Y"), ("089Y", 1, "089Y"),
    ("006M", 5, "000Y"), ("030M", 5, "000Y"), ("070M", 5, "005Y"), ("003W", 5, "000Y"),
    ("010D", 5, "000Y"), ("999D", 1, "002Y"),
])
def test_age_bands_are_valid_as(age: str, width: int, expected: str) -> None:
    banded = band_age(age, width, 90)
    assert banded == expected
    validate_value("AS", banded, config.RAISE)


def test_age_cap_can_be_turned_off() -> None:
    assert band_age("102Y", 5, None) == "100Y"


@pytest.mark.parametrize("bad", ["47", "047", "47Y", "abcY", ""])
def test_unparseable_age(bad: str) -> None:
    with pytest.raises(UnparseableValue):
        band_age(bad, 5, 90)


@pytest.mark.parametrize(("birth", "seen", "expected"), [
    ("19610517", "20240115", "062Y"), ("19610115", "20240115", "063Y"),
    ("20000229", "20210228", "020Y"), ("20240101", "20240115", "000Y"),
])
def test_age_between(birth: str, seen: str, expected: str) -> None:
    assert age_between(birth, seen) == expected


def test_age_between_refuses_birth_after_study() -> None:
    with pytest.raises(UnparseableValue):
        age_between("20250101", "20240101")


def test_fit_truncates_to_the_vr_maximum() -> None:
    assert fit("X" * 40, "SH") == "X" * 16
    assert fit("short", "SH") == "short"
    assert fit("X" * 40, "XX") == "X" * 40  # unknown VR: untouched
