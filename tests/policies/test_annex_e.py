"""Table E.1-1 compiled into a plan: compound codes, option columns, patterns and overrides."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
from pydicom.datadict import tag_for_keyword

from policies.annex_e import (
    CleanKind,
    compile_plan,
    keyword_or_tag,
    load_table,
    resolve_code,
)
from policies.model import Op, Policy


def tag(keyword: str) -> int:
    value = tag_for_keyword(keyword)
    assert value is not None
    return value


def test_table_is_the_2026c_table() -> None:
    rows = load_table()
    assert len(rows) == 656
    counts = Counter(row.basic for row in rows)
    assert counts["X/Z/U*"] == 2 and counts["Z/D"] == 6 and counts["X/Z/D"] == 8


@pytest.mark.parametrize(("code", "keyword", "vr", "expected"), [
    ("X/Z", "AcquisitionDate", "DA", "Z"),
    ("X/D", "SeriesDate", "DA", "D"),
    ("X/D", "OperatorIdentificationSequence", "SQ", "D"),  # items kept, contents dummies
    ("X/Z/D", "InstitutionName", "LO", "D"),
    ("X/Z/D", "InstitutionCodeSequence", "SQ", "D"),
    ("Z/D", "PatientID", "LO", "D"),
    ("Z/D", "ContentDate", "DA", "D"),
    ("Z/D", "ContentCreatorName", "PN", "Z"),
    ("X/Z/U*", "ReferencedImageSequence", "SQ", "U"),
    ("Z", "StudyID", "SH", "D"),  # DICOMDIR Type 1 keys are never empty
    ("Z", "StudyDate", "DA", "D"),
    ("Z", "StudyTime", "TM", "D"),
    ("Z", "PatientName", "PN", "Z"),
    ("K", "PatientSex", "CS", "K"),
])
def test_compound_codes_resolve_to_one_code(code: str, keyword: str, vr: str,
                                            expected: str) -> None:
    assert resolve_code(code, keyword, vr) == expected


def test_basic_profile_cells(builtin: dict[str, Policy]) -> None:
    plan = compile_plan(builtin["ps315-basic"])
    expected = {
        "PatientName": Op.EMPTY, "PatientID": Op.DUMMY, "PatientBirthDate": Op.EMPTY,
        "PatientAge": Op.REMOVE, "PatientSex": Op.EMPTY, "StudyInstanceUID": Op.UID,
        "StudyDate": Op.DUMMY, "InstitutionName": Op.DUMMY, "SeriesDescription": Op.REMOVE,
        "ContentSequence": Op.DUMMY, "ReferencedImageSequence": Op.UID,
        "FrameOfReferenceUID": Op.UID, "ReferencedSOPInstanceUID": Op.UID,
        "DigitalSignaturesSequence": Op.REMOVE, "OriginalAttributesSequence": Op.REMOVE,
        "IconImageSequence": Op.REMOVE, "EncryptedAttributesSequence": Op.REMOVE,
    }
    for keyword, op in expected.items():
        assert plan.public[tag(keyword)].op is op, keyword


def test_structural_uids_are_never_planned_for_remapping(builtin: dict[str, Policy]) -> None:
    plan = compile_plan(builtin["ps315-basic"])
    for keyword in ("SOPClassUID", "ReferencedSOPClassUID", "TransferSyntaxUID",
                    "CodingSchemeUID", "ImplementationClassUID"):
        assert plan.for_public(tag(keyword), "UI") is None, keyword


def test_unlisted_attributes_are_handled_by_vr(builtin: dict[str, Policy]) -> None:
    plan = compile_plan(builtin["ps315-basic"])
    # VR UI not in the table: remapped; PN: emptied; DA/DT/TM: dummy; SQ: kept and entered.
    assert plan.public[tag("ReferencedFrameOfReferenceUID")].op is Op.UID
    assert plan.public[tag("ReferencedSOPInstanceUIDInFile")].op is Op.UID
    assert plan.for_public(tag("CodeValue"), "SH") is None
    unknown_public = 0x00F10010  # even group, not in the dictionary
    assert plan.for_public(unknown_public, "LO").op is Op.REMOVE  # type: ignore[union-attr]
    assert plan.for_public(unknown_public, "US") is None
    assert plan.for_public(unknown_public, "UI").op is Op.UID  # type: ignore[union-attr]
    assert plan.for_public(unknown_public, "DA").op is Op.DUMMY  # type: ignore[union-attr]
    assert plan.for_public(0x00041220, "SQ").op is Op.REMOVE  # type: ignore[union-attr]
    assert plan.for_public(0x00090000, "UL") is not None  # group length


@pytest.mark.parametrize(("option", "keyword", "op", "clean"), [
    ("retain_uids", "StudyInstanceUID", Op.KEEP, None),
    ("retain_uids", "ReferencedImageSequence", Op.KEEP, None),
    ("retain_device_identity", "DeviceSerialNumber", Op.KEEP, None),
    ("retain_device_identity", "StationName", Op.KEEP, None),
    ("retain_device_identity", "PerformedStationAETitle", Op.CLEAN, CleanKind.DEVICE),
    ("retain_institution_identity", "InstitutionName", Op.KEEP, None),
    ("retain_patient_characteristics", "PatientSex", Op.KEEP, None),
    ("retain_patient_characteristics", "PatientAge", Op.KEEP, None),
    ("retain_patient_characteristics", "Allergies", Op.CLEAN, CleanKind.TEXT),
    ("retain_long_full_dates", "StudyDate", Op.KEEP, None),
    ("retain_long_full_dates", "AcquisitionDateTime", Op.KEEP, None),
    ("retain_long_modified_dates", "StudyDate", Op.CLEAN, CleanKind.DATE),
    ("retain_long_modified_dates", "SeriesTime", Op.CLEAN, CleanKind.DATE),
    ("clean_descriptors", "SeriesDescription", Op.CLEAN, CleanKind.TEXT),
    ("clean_descriptors", "StudyDescription", Op.CLEAN, CleanKind.TEXT),
    ("clean_structured_content", "ContentSequence", Op.CLEAN, CleanKind.STRUCTURED),
    ("clean_graphics", "GraphicAnnotationSequence", Op.CLEAN, CleanKind.GRAPHICS),
])
def test_option_columns_override_the_basic_cell(make_policy: Callable[..., Policy], option: str,
                                                keyword: str, op: Op,
                                                clean: CleanKind | None) -> None:
    planned = compile_plan(make_policy([option])).public[tag(keyword)]
    assert planned.op is op
    assert planned.clean is clean


def test_unlisted_dates_follow_the_date_option(make_policy: Callable[..., Policy]) -> None:
    date = tag("ProcedureStepCancellationDateTime")
    assert compile_plan(make_policy()).public.get(date, None) is not None
    assert compile_plan(make_policy(["retain_long_full_dates"])).public[date].op is Op.KEEP
    modified = compile_plan(make_policy(["retain_long_modified_dates"])).public[date]
    assert (modified.op, modified.clean) == (Op.CLEAN, CleanKind.DATE)


def test_pattern_rows(make_policy: Callable[..., Policy]) -> None:
    plan = compile_plan(make_policy())
    assert plan.for_public(0x50000010, "US").op is Op.REMOVE  # type: ignore[union-attr]
    assert plan.for_public(0x501E3000, "OW").op is Op.REMOVE  # type: ignore[union-attr]
    assert plan.for_public(0x60023000, "OW").op is Op.REMOVE  # type: ignore[union-attr]
    assert plan.for_public(0x60004000, "LT").op is Op.REMOVE  # type: ignore[union-attr]
    assert plan.for_public(0x60000010, "US") is None  # Overlay Rows: goes with its overlay
    assert plan.private_default.op is Op.REMOVE
    graphics = compile_plan(make_policy(["clean_graphics"]))
    assert graphics.for_public(0x60003000, "OW").clean is CleanKind.GRAPHICS  # type: ignore
    assert graphics.for_public(0x50000010, "US").op is Op.CLEAN  # type: ignore[union-attr]
    safe = compile_plan(make_policy(["retain_safe_private"]))
    assert safe.private_default.clean is CleanKind.PRIVATE


def test_overrides_win_and_private_creators_match_without_case(
        make_policy: Callable[..., Policy]) -> None:
    plan = compile_plan(make_policy(overrides=[
        {"tag": "PatientName", "action": "keep"},
        {"tag": "SOPClassUID", "action": "remove"},
        {"private_creator": "ELSCINT1", "group": "00E1", "action": "keep"},
        {"private_creator": "ACME 1.0", "group": "0009", "element": "10", "action": "empty"},
    ]))
    assert plan.public[tag("PatientName")].op is Op.KEEP
    assert plan.public[tag("SOPClassUID")].op is Op.REMOVE
    assert plan.for_private(0x00E1, "elscint1", 0x21).op is Op.KEEP  # type: ignore[union-attr]
    assert plan.for_private(0x0009, "acme 1.0", 0x10).op is Op.EMPTY  # type: ignore[union-attr]
    assert plan.for_private(0x0009, "acme 1.0", 0x11) is None
    assert plan.for_private(0x00E3, "elscint1", 0x21) is None


def test_base_profile_none_keeps_everything_but_still_enters_sequences(
        make_policy: Callable[..., Policy]) -> None:
    plan = compile_plan(make_policy(base="none", overrides=[
        {"tag": "PatientID", "action": "pseudonym"}]))
    assert plan.for_public(tag("PatientName"), "PN") is None
    assert plan.for_public(tag("StudyInstanceUID"), "UI") is None
    assert plan.for_public(0x00F10010, "LO") is None  # unknown: kept too
    assert plan.public[tag("ReferencedImageSequence")].op is Op.KEEP  # entered for overrides
    assert plan.public[tag("PatientID")].op is Op.PSEUDONYM
    assert plan.private_default.op is Op.KEEP
    assert not plan.kept_text


def test_kept_free_text_is_listed_for_the_sweep(builtin: dict[str, Policy]) -> None:
    plan = compile_plan(builtin["ps315-basic"])
    assert tag("ContentDescription") in plan.kept_text
    assert tag("Manufacturer") in plan.kept_text
    assert tag("PatientName") not in plan.kept_text
    assert tag("Rows") not in plan.kept_text


def test_keyword_or_tag() -> None:
    assert keyword_or_tag(0x00100010) == "PatientName"
    assert keyword_or_tag(0x00091001) == "(0009,1001)"
