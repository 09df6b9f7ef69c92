"""The engine against Table E.1-1: every action code, option, override and sequence depth.

Each test builds a small policy through the real loader, runs the engine on a CT-like dataset
and asserts on what a user of the output sees, usually after writing and reading it back.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ImplicitVRLittleEndian

from policies.engine import Deidentifier
from policies.keying import EngineKeys
from policies.model import Policy
from policies.outcome import Outcome, PolicyRefusal
from policies.private import SafePrivateTable

MakePolicy = Callable[..., Policy]
Deid = Callable[..., Outcome]
RoundTrip = Callable[[Dataset], Dataset]


def _date(value: str) -> dt.date:
    return dt.date(int(value[:4]), int(value[4:6]), int(value[6:8]))


def _code_item(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
    return item


# -- action codes ---------------------------------------------------------------------------------

def test_basic_profile_action_codes(make_policy: MakePolicy, deid: Deid, roundtrip: RoundTrip,
                                    ct: Dataset) -> None:
    ds = ct
    ds.InstitutionAddress = "5 Westphall Avenue"  # X
    ds.AcquisitionDate = "20240115"  # X/Z -> Z
    ds.ContentCreatorName = "Zhivago^Yuri"  # Z/D -> Z (Type 2 where it is used)
    operator = Dataset()
    operator.InstitutionName = "Saint Elsewhere"
    operator.PersonIdentificationCodeSequence = [_code_item("EMP-88123", "Ratched, Mildred")]
    ds.OperatorIdentificationSequence = [operator]  # X/D on a sequence: items kept, dummies
    outcome = deid(make_policy(), ds)
    out = roundtrip(ds)
    # D: a non-empty stand-in
    assert out.PatientID and out.PatientID != "MRN4417702"
    assert out.InstitutionName == "ANONYMIZED"  # X/Z/D -> D
    assert out.StudyDate == "19000101" and out.SeriesDate == "19000101"  # Z -> D, X/D -> D
    # Z: present and empty
    assert "PatientName" in out and out.PatientName == ""
    assert "AcquisitionDate" in out and out.AcquisitionDate == ""
    assert "ContentCreatorName" in out and out.ContentCreatorName == ""
    operator = out.OperatorIdentificationSequence[0]
    assert operator.InstitutionName == "ANONYMIZED"
    assert operator.PersonIdentificationCodeSequence[0].CodeValue != "EMP-88123"
    # X: gone
    for keyword in ("InstitutionAddress", "PatientAge", "SeriesDescription"):
        assert keyword not in out
    # U: a 2.25 UID; K: kept
    assert out.SOPInstanceUID.startswith("2.25.")
    assert out.Manufacturer == "GE MEDICAL SYSTEMS" and out.Modality == "CT"
    codes = {record.path: record.code for record in outcome.actions}
    assert codes["PatientID"] == "D" and codes["PatientName"] == "Z"
    assert codes["InstitutionAddress"] == "X" and codes["SOPInstanceUID"] == "U"


def test_dummies_of_identifiers_are_consistent_across_instances(
        make_policy: MakePolicy, keys: EngineKeys, make_ct: Callable[..., Dataset]) -> None:
    engine = Deidentifier(make_policy(), keys)
    a, b, c = make_ct(instance=1), make_ct(instance=2), make_ct({"PatientID": "OTHER1"})
    for ds in (a, b, c):
        engine.deidentify(ds)
    assert a.PatientID == b.PatientID != c.PatientID
    assert a.StudyID == b.StudyID


def test_x_z_u_star_keeps_the_sequence_and_remaps_its_references(
        make_policy: MakePolicy, deid: Deid, ct: Dataset) -> None:
    for keyword in ("ReferencedImageSequence", "SourceImageSequence"):
        ref = Dataset()
        ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ref.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.10.999.77.1.1.9"
        setattr(ct, keyword, [ref])
    outcome = deid(make_policy(), ct)
    for keyword in ("ReferencedImageSequence", "SourceImageSequence"):
        item = ct[keyword].value[0]
        assert item.ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"  # structural: kept
        assert item.ReferencedSOPInstanceUID == outcome.uid_map[
            "1.2.826.0.1.3680043.10.999.77.1.1.9"]


def test_dicomdir_type1_keys_are_never_empty(make_policy: MakePolicy, deid: Deid,
                                            roundtrip: RoundTrip,
                                            make_ct: Callable[..., Dataset]) -> None:
    missing, empty = make_ct(), make_ct({"PatientID": ""})
    for keyword in ("StudyID", "StudyDate", "StudyTime"):
        delattr(missing, keyword)
        setattr(empty, keyword, "")
    del missing.PatientID
    for ds in (missing, empty):
        deid(make_policy(), ds)
        out = roundtrip(ds)
        for keyword in ("PatientID", "StudyID", "StudyDate", "StudyTime"):
            assert str(out[keyword].value).strip(), keyword
    assert missing.StudyID == empty.StudyID  # keyed on the study, not one shared constant


def test_well_known_uids_are_never_remapped(make_policy: MakePolicy, deid: Deid,
                                           ct: Dataset) -> None:
    scheme = Dataset()
    scheme.CodingSchemeDesignator, scheme.CodingSchemeUID = "SCT", "2.16.840.1.113883.6.96"
    ct.CodingSchemeIdentificationSequence = [scheme]
    ct.ConcatenationUID = "1.2.840.10008.1.2.1"  # a UID from pydicom's dictionary
    ct.SOPClassesInStudy = ["1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4"]
    deid(make_policy(), ct)
    assert ct.CodingSchemeIdentificationSequence[0].CodingSchemeUID == "2.16.840.1.113883.6.96"
    assert ct.ConcatenationUID == "1.2.840.10008.1.2.1"
    assert ct.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert list(ct.SOPClassesInStudy) == ["1.2.840.10008.5.1.4.1.1.2",
                                          "1.2.840.10008.5.1.4.1.1.4"]
    assert ct.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"


def test_an_item_shared_by_two_sequences_is_remapped_once(make_policy: MakePolicy,
                                                          deid: Deid, ct: Dataset) -> None:
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ref.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.10.999.77.1.1.1"
    ct.ReferencedImageSequence = [ref]
    ct.SourceImageSequence = [ref]  # the same object, as code building datasets may do
    deid(make_policy(), ct)
    assert ref.ReferencedSOPInstanceUID == ct.SOPInstanceUID


def test_kept_free_text_is_swept_for_the_patients_identifiers(
        make_policy: MakePolicy, deid: Deid, roundtrip: RoundTrip, ct: Dataset) -> None:
    ct.ContentDescription = "Nodule markup for John Doe"  # not in Table E.1-1: kept
    ct.ImageSetLabel = "DOE, JOHN MRN4417702"
    ct.ConvolutionKernel = "STANDARD"
    deid(make_policy(), ct)
    out = roundtrip(ct)
    assert out.ContentDescription == "Nodule markup for ***"
    assert "DOE" not in out.ImageSetLabel and "4417702" not in out.ImageSetLabel
    assert out.ConvolutionKernel == "STANDARD"  # nothing to find: untouched
    assert out.Manufacturer == "GE MEDICAL SYSTEMS"


def test_overrides_reach_every_depth_without_a_base_profile(
        make_policy: MakePolicy, deid: Deid, ct: Dataset) -> None:
    other = Dataset()
    other.PatientID, other.IssuerOfPatientID = "MRN4417702", "ELSW"
    ct.OtherPatientIDsSequence = [other]
    _private(ct, 0x0009, "ACME 1.0", {0x10: ("LO", "kept as is")})
    deid(make_policy(base="none", overrides=[{"tag": "PatientID", "action": "pseudonym"}]), ct)
    assert ct.PatientID != "MRN4417702"
    assert ct.OtherPatientIDsSequence[0].PatientID == ct.PatientID
    assert ct.PatientName == "Doe^John" and ct.StudyInstanceUID.startswith("1.2.826")
    assert ct.private_block(0x0009, "ACME 1.0")[0x10].value == "kept as is"


def test_content_sequence_d_turns_free_text_into_dummies_but_keeps_codes(
        make_policy: MakePolicy, deid: Deid, ct: Dataset) -> None:
    text = Dataset()
    text.RelationshipType, text.ValueType = "CONTAINS", "TEXT"
    text.ConceptNameCodeSequence = [_code_item("121071", "Finding")]
    text.TextValue = "John Doe has a 6 mm nodule"
    pname = Dataset()
    pname.RelationshipType, pname.ValueType, pname.PersonName = "HAS OBS CONTEXT", "PNAME", "Doe^J"
    ct.ContentSequence = [text, pname]
    deid(make_policy(), ct)
    text, pname = ct.ContentSequence
    assert text.TextValue == "ANONYMIZED"
    assert text.ConceptNameCodeSequence[0].CodeMeaning == "Finding"
    assert text.ValueType == "TEXT"
    assert str(pname.PersonName) == "ANONYMIZED"


def test_person_identification_codes_are_dummies_too(make_policy: MakePolicy, deid: Deid,
                                                     ct: Dataset) -> None:
    ct.PersonIdentificationCodeSequence = [_code_item("EMP-88123", "Ratched, Mildred")]
    deid(make_policy(), ct)
    code = ct.PersonIdentificationCodeSequence[0]
    assert "EMP-88123" not in str(code.CodeValue) and "Ratched" not in str(code.CodeMeaning)
    assert code.CodeValue and code.CodingSchemeDesignator  # dummies, still a valid code item


# -- options --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("option", "keyword", "kept"), [
    ("retain_uids", "StudyInstanceUID", "1.2.826.0.1.3680043.10.999.77.1"),
    ("retain_uids", "FrameOfReferenceUID", "1.2.826.0.1.3680043.10.999.77.1.1.0"),
    ("retain_device_identity", "DeviceSerialNumber", "CT7741093"),
    ("retain_device_identity", "StationName", "ELSWCT01"),
    ("retain_institution_identity", "InstitutionName", "Saint Elsewhere General Hospital"),
    ("retain_patient_characteristics", "PatientSex", "M"),
    ("retain_patient_characteristics", "PatientAge", "062Y"),
    ("retain_long_full_dates", "StudyDate", "20240115"),
    ("retain_long_full_dates", "AcquisitionDateTime", "20240115101812.123456+0100"),
])
def test_retain_options_keep_their_attributes(make_policy: MakePolicy, deid: Deid,
                                              roundtrip: RoundTrip, ct: Dataset, option: str,
                                              keyword: str, kept: str) -> None:
    deid(make_policy([option]), ct)
    assert str(roundtrip(ct)[keyword].value) == kept


def test_without_retain_options_those_attributes_change(make_policy: MakePolicy, deid: Deid,
                                                        ct: Dataset) -> None:
    deid(make_policy(), ct)
    assert ct.StudyInstanceUID != "1.2.826.0.1.3680043.10.999.77.1"
    assert ct.DeviceSerialNumber != "CT7741093" and ct.StationName != "ELSWCT01"
    assert ct.PatientSex == "" and "PatientAge" not in ct


def test_retain_device_identity_cleans_ae_titles(make_policy: MakePolicy, deid: Deid,
                                                 ct: Dataset) -> None:
    ct.PerformedStationAETitle = "CT_ROOM_7"
    deid(make_policy(["retain_device_identity"]), ct)
    assert ct.PerformedStationAETitle != "CT_ROOM_7"
    assert len(ct.PerformedStationAETitle) <= 16


@pytest.mark.parametrize(("mode", "study", "dt_value"), [
    ("year", "20240101", "2024"),
    ("year-month", "20240101", "202401"),
])
def test_retain_modified_dates_coarsen(make_policy: MakePolicy, deid: Deid, ct: Dataset,
                                       mode: str, study: str, dt_value: str) -> None:
    ct.StudyDate = "20240115"
    deid(make_policy(["retain_long_modified_dates"], parameters={"date_mode": mode}), ct)
    assert ct.StudyDate == study
    assert ct.AcquisitionDateTime == dt_value
    assert ct.StudyTime == "101530"  # times of day carry no date
    assert ct.LongitudinalTemporalInformationModified == "MODIFIED"


def test_retain_modified_dates_shift_per_patient(make_policy: MakePolicy, keys: EngineKeys,
                                                 make_ct: Callable[..., Dataset]) -> None:
    engine = Deidentifier(make_policy(["retain_long_modified_dates"]), keys)
    first, second = make_ct(instance=1), make_ct(instance=2, series="2")
    second.StudyDate, second.SeriesDate = "20240301", "20240301"
    other = make_ct({"PatientID": "SOMEONE-ELSE"})
    shifts = [engine.deidentify(ds).date_shift_days for ds in (first, second, other)]
    assert shifts[0] == shifts[1] and shifts[0] not in (0, None)
    assert (_date(second.StudyDate) - _date(first.StudyDate)).days == 46  # interval kept
    assert first.StudyDate != "20240115"
    assert first.AcquisitionDateTime.endswith("101812.123456+0100")  # DT keeps time, offset
    assert first.AcquisitionDateTime[:8] == first.StudyDate
    assert first.StudyTime == "101530" and first.SeriesTime == "101800.250"  # TM unchanged
    assert other.StudyDate != first.StudyDate or shifts[2] == shifts[0]


@pytest.mark.parametrize("value", ["00010102", "99991230", "20200229", "20240101-20240131"])
def test_shifting_never_destroys_a_date(make_policy: MakePolicy, deid: Deid,
                                        roundtrip: RoundTrip, ct: Dataset, value: str) -> None:
    ct.StudyDate = value
    deid(make_policy(["retain_long_modified_dates"]), ct)
    out = roundtrip(ct).StudyDate
    assert out and out != value and out != "00010101"
    for part in out.split("-"):
        _date(part)  # a real calendar date


def test_clean_descriptors_removes_identifiers_and_keeps_the_rest(
        make_policy: MakePolicy, deid: Deid, ct: Dataset) -> None:
    ct.StudyDescription = "CT chest for DOE, JOHN (MRN4417702) born 05/17/1961"
    ct.SeriesDescription = "john doe call +1 617 555 0134 or jd@example.org"
    ct.ImageComments = "Doe John 1961-05-17 follow-up"
    deid(make_policy(["clean_descriptors"]), ct)
    for keyword in ("StudyDescription", "SeriesDescription", "ImageComments"):
        text = str(ct[keyword].value).lower()
        for leak in ("doe", "john", "4417702", "1961", "555", "example.org"):
            assert leak not in text, (keyword, text)
    assert ct.StudyDescription.startswith("CT chest for")


def test_clean_structured_content_cleans_text_and_dummies_person_names(
        make_policy: MakePolicy, deid: Deid, ct: Dataset) -> None:
    text = Dataset()
    text.ValueType, text.TextValue = "TEXT", "Nodule in john DOE (MRN4417702), see jd@x.org"
    text.ConceptNameCodeSequence = [_code_item("121071", "Finding")]
    pname = Dataset()
    pname.ValueType, pname.PersonName = "PNAME", "Zhivago^Yuri"
    container = Dataset()
    container.ValueType, container.ContentSequence = "CONTAINER", [text, pname]
    ct.ContentSequence = [container]
    deid(make_policy(["clean_structured_content"]), ct)
    text, pname = ct.ContentSequence[0].ContentSequence
    assert text.TextValue.startswith("Nodule in ")
    for leak in ("john", "doe", "4417702", "x.org"):
        assert leak not in text.TextValue.lower()
    assert str(pname.PersonName) == "ANONYMIZED"  # PNAME items: D
    assert text.ConceptNameCodeSequence[0].CodeMeaning == "Finding"


@pytest.mark.parametrize(("options", "expected"), [
    ([], "ANONYMIZED"),  # Graphic Annotation Sequence D: its text becomes a dummy
    (["clean_graphics"], "ANONYMIZED"),  # kept and entered, but Unformatted Text Value is D...
    (["clean_graphics", "clean_descriptors"], ": RUL nodule"),  # ...unless cleaned (C)
])
def test_graphic_annotation_text(make_policy: MakePolicy, deid: Deid, ct: Dataset,
                                 options: list[str], expected: str) -> None:
    text = Dataset()
    text.UnformattedTextValue = "John Doe MRN4417702: RUL nodule"
    text.AnchorPointAnnotationUnits = "PIXEL"
    text.AnchorPoint = [10.0, 12.0]
    annotation = Dataset()
    annotation.GraphicLayer, annotation.TextObjectSequence = "FINDINGS", [text]
    ct.GraphicAnnotationSequence = [annotation]
    deid(make_policy(options), ct)
    kept = ct.GraphicAnnotationSequence[0].TextObjectSequence[0]
    assert kept.UnformattedTextValue.endswith(expected)
    for leak in ("John", "Doe", "4417702"):
        assert leak not in kept.UnformattedTextValue
    assert kept.AnchorPoint == [10.0, 12.0] and kept.AnchorPointAnnotationUnits == "PIXEL"


def _overlay(ds: Dataset, group: int = 0x6000) -> None:
    ds.add_new((group, 0x0010), "US", 4)
    ds.add_new((group, 0x0011), "US", 4)
    ds.add_new((group, 0x0022), "LO", "Doe John")
    ds.add_new((group, 0x0040), "CS", "G")
    ds.add_new((group, 0x0050), "SS", [1, 1])
    ds.add_new((group, 0x0100), "US", 1)
    ds.add_new((group, 0x3000), "OW", b"\xff\x00")
    ds.add_new((group, 0x4000), "LT", "burned name")


def test_overlays_and_curves_are_removed_whole(make_policy: MakePolicy, deid: Deid,
                                               roundtrip: RoundTrip, ct: Dataset) -> None:
    _overlay(ct)
    _overlay(ct, 0x6002)
    ct.add_new((0x5000, 0x0010), "US", 2)
    ct.add_new((0x5000, 0x3000), "OW", b"\x00\x01")
    deid(make_policy(), ct)
    out = roundtrip(ct)
    assert not [t for t in out.keys() if 0x5000 <= t.group <= 0x60FF]  # noqa: SIM118


def test_clean_graphics_keeps_an_overlay_the_detector_clears(
        make_policy: MakePolicy, keys: EngineKeys, make_ct: Callable[..., Dataset]) -> None:
    policy = make_policy(["clean_graphics"])
    clear, suspicious, unchecked = make_ct(), make_ct(), make_ct()
    for ds in (clear, suspicious, unchecked):
        _overlay(ds)
    Deidentifier(policy, keys, overlay_text_detector=lambda ds, group: False).deidentify(clear)
    Deidentifier(policy, keys, overlay_text_detector=lambda ds, group: True).deidentify(
        suspicious)
    Deidentifier(policy, keys).deidentify(unchecked)
    assert clear[0x60003000].value == b"\xff\x00" and "Doe" not in clear[0x60000022].value
    assert 0x60003000 not in suspicious and 0x60000010 not in suspicious
    assert 0x60003000 not in unchecked


# -- overrides ------------------------------------------------------------------------------------

def test_value_overrides(make_policy: MakePolicy, deid: Deid, roundtrip: RoundTrip,
                         ct: Dataset) -> None:
    policy = make_policy(overrides=[
        {"tag": "PatientSex", "action": "keep"},
        {"tag": "Manufacturer", "action": "remove"},
        {"tag": "ManufacturerModelName", "action": "empty"},
        {"tag": "InstitutionName", "action": "replace", "value": "Research Site 4"},
        {"tag": "AccessionNumber", "action": "hash", "length": 8},
        {"tag": "PatientID", "action": "pseudonym", "prefix": "SUBJ"},
        {"tag": "PatientName", "action": "pseudonym", "source": "PatientID", "prefix": "S^"},
        {"tag": "StudyDate", "action": "date_shift"},
        {"tag": "SeriesDate", "action": "date_coarsen", "granularity": "year"},
        {"tag": "ContentDate", "action": "date_coarsen", "granularity": "year-month"},
        {"tag": "PatientAge", "action": "age_band", "width": 10},
        {"tag": "(0018,1000)", "action": "K"},
    ])
    outcome = deid(policy, ct)
    out = roundtrip(ct)
    assert out.PatientSex == "M" and "Manufacturer" not in out
    assert out.ManufacturerModelName == "" and out.InstitutionName == "Research Site 4"
    assert len(out.AccessionNumber) == 8 and out.AccessionNumber != "ACC20240115"
    assert out.PatientID.startswith("SUBJ") and "4417702" not in out.PatientID
    assert str(out.PatientName) == "S^" + out.PatientID.removeprefix("SUBJ")
    assert out.StudyDate not in ("20240115", "19000101") and len(out.StudyDate) == 8
    assert out.SeriesDate == "20240101" and out.ContentDate == "20240101"
    assert out.PatientAge == "060Y" and out.DeviceSerialNumber == "CT7741093"
    issued = {(p.keyword, p.pseudonym, p.original) for p in outcome.pseudonyms}
    assert ("PatientID", out.PatientID, "MRN4417702") in issued
    # The name pseudonym derives from the ID, but the original sealed for it is the name itself.
    assert ("PatientName", str(out.PatientName), "Doe^John") in issued


def test_hash_and_pseudonym_stay_valid_for_non_text_vrs(make_policy: MakePolicy, deid: Deid,
                                                        roundtrip: RoundTrip,
                                                        ct: Dataset) -> None:
    policy = make_policy(overrides=[
        {"tag": "FrameOfReferenceUID", "action": "hash"},
        {"tag": "SeriesDate", "action": "pseudonym"},
    ])
    deid(policy, ct)
    out = roundtrip(ct)
    assert out.FrameOfReferenceUID.startswith("2.25.")  # a keyed UID, not a code
    assert out.SeriesDate == "19000101"  # a dummy date, not letters in a DA


def test_pseudonyms_are_stable_and_keyed(make_policy: MakePolicy, keys: EngineKeys,
                                         other_keys: EngineKeys,
                                         make_ct: Callable[..., Dataset]) -> None:
    policy = make_policy(overrides=[{"tag": "PatientID", "action": "pseudonym"}])
    a, b, c = make_ct(), make_ct(instance=2), make_ct()
    Deidentifier(policy, keys).deidentify(a)
    Deidentifier(policy, keys).deidentify(b)
    Deidentifier(policy, other_keys).deidentify(c)
    assert a.PatientID == b.PatientID != c.PatientID


def _private(ds: Dataset, group: int, creator: str,
             elements: dict[int, tuple[str, object]]) -> None:
    block = ds.private_block(group, creator, create=True)
    for offset, (vr, value) in elements.items():
        block.add_new(offset, vr, value)


def test_private_block_overrides_whole_and_single_element(make_policy: MakePolicy, deid: Deid,
                                                          roundtrip: RoundTrip,
                                                          ct: Dataset) -> None:
    _private(ct, 0x0009, "ACME 1.0", {0x10: ("LO", "keep me"), 0x11: ("LO", "me too")})
    _private(ct, 0x0011, "ACME 1.0", {0x10: ("LO", "Doe John"), 0x12: ("DS", "1.5")})
    _private(ct, 0x0013, "OTHER", {0x10: ("LO", "Doe John")})
    policy = make_policy(overrides=[
        {"private_creator": "acme 1.0", "group": "0009", "action": "keep"},
        {"private_creator": "ACME 1.0", "group": "0011", "element": "12", "action": "keep"},
    ])
    deid(policy, ct)
    out = roundtrip(ct)
    assert out.private_block(0x0009, "ACME 1.0")[0x10].value == "keep me"
    assert out.private_block(0x0009, "ACME 1.0")[0x11].value == "me too"
    block = out.private_block(0x0011, "ACME 1.0")
    assert block[0x12].value == "1.5" and 0x10 not in block
    assert not [t for t in out.keys() if t.group == 0x0013]  # noqa: SIM118  creator gone too


# -- sequences at every depth ---------------------------------------------------------------------

def test_identifiers_three_sequences_deep_are_handled(make_policy: MakePolicy, deid: Deid,
                                                      roundtrip: RoundTrip,
                                                      ct: Dataset) -> None:
    inner = Dataset()
    inner.PatientName, inner.PatientID = "Doe^John", "MRN4417702"
    inner.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.10.999.77.1.1.1"
    inner.StudyDate = "20240115"
    middle, outer = Dataset(), Dataset()
    middle.SourceImageSequence = [inner]
    outer.ReferencedInstanceSequence = [middle]
    ct.ReferencedSeriesSequence = [outer]
    outcome = deid(make_policy(), ct)
    item = roundtrip(ct).ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    deep = item.SourceImageSequence[0]
    assert deep.PatientName == "" and deep.PatientID != "MRN4417702"
    assert deep.ReferencedSOPInstanceUID == ct.SOPInstanceUID
    assert deep.StudyDate == "19000101"
    paths = {record.path for record in outcome.actions}
    assert ("ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]."
            "SourceImageSequence[0].PatientName") in paths


def test_public_identifiers_inside_a_kept_private_sequence_are_cleaned(
        make_policy: MakePolicy, deid: Deid, roundtrip: RoundTrip, ct: Dataset) -> None:
    item = Dataset()
    item.PatientName, item.PatientID = "Doe^John", "MRN4417702"
    item.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.10.999.77.1.1.1"
    _private(item, 0x0009, "ACME 1.0", {0x10: ("LO", "MRN4417702")})
    _private(ct, 0x0009, "ACME 1.0", {0x20: ("SQ", Sequence([item]))})
    policy = make_policy(overrides=[
        {"private_creator": "ACME 1.0", "group": "0009", "element": "20", "action": "keep"}])
    deid(policy, ct)
    out = roundtrip(ct)
    kept = out.private_block(0x0009, "ACME 1.0")[0x20].value[0]
    assert kept.PatientName == "" and kept.PatientID != "MRN4417702"
    assert kept.ReferencedSOPInstanceUID == ct.SOPInstanceUID
    assert not [t for t in kept.keys() if t.group == 0x0009]  # noqa: SIM118


# -- private attributes under Retain Safe Private -------------------------------------------------

def test_retain_safe_private_keeps_only_known_safe_elements(make_policy: MakePolicy, deid: Deid,
                                                            roundtrip: RoundTrip,
                                                            ct: Dataset) -> None:
    _private(ct, 0x00E1, "ELSCINT1", {0x21: ("DS", "412.5"), 0x60: ("LO", "Doe John")})
    _private(ct, 0x0009, "ACME_PHI 1.0", {0x01: ("PN", "Doe^John"), 0x02: ("LO", "MRN4417702")})
    _private(ct, 0x00E3, "ELSCINT1", {0x21: ("LO", "same offset, other group")})
    _private(ct, 0x00E1, "OTHER VENDOR", {0x21: ("LO", "same offset, other creator")})
    deid(make_policy(["retain_safe_private"]), ct)
    out = roundtrip(ct)
    elscint = out.private_block(0x00E1, "ELSCINT1")
    assert elscint[0x21].value == "412.5"
    assert 0x60 not in elscint
    for group in (0x0009, 0x00E3):
        assert not [t for t in out.keys() if t.group == group], hex(group)  # noqa: SIM118
    creators = [e.value for e in out if e.tag.is_private_creator]
    assert creators == ["ELSCINT1"]


def test_a_safe_private_value_that_names_the_patient_is_cleaned(
        make_policy: MakePolicy, keys: EngineKeys, roundtrip: RoundTrip,
        make_ct: Callable[..., Dataset]) -> None:
    table = SafePrivateTable({(0x0019, "ACME 1.0", 0x10): "site conformance statement",
                              (0x0019, "ACME 1.0", 0x11): "site conformance statement"})
    engine = Deidentifier(make_policy(["retain_safe_private"]), keys, safe_private=table)
    ds = make_ct()
    _private(ds, 0x0019, "ACME 1.0", {0x10: ("LO", "Protocol for John Doe"),
                                      0x11: ("LO", "Chest routine")})
    implicit = make_ct()
    implicit.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    _private(implicit, 0x0019, "ACME 1.0", {0x10: ("LO", "Protocol for John Doe"),
                                            0x11: ("LO", "Chest routine")})
    implicit = roundtrip(implicit)  # now the private values have no VR: opaque bytes
    for each in (ds, implicit):
        engine.deidentify(each)
    block = roundtrip(ds).private_block(0x0019, "ACME 1.0")
    assert block[0x10].value == "Protocol for ***" and block[0x11].value == "Chest routine"
    opaque = roundtrip(implicit).private_block(0x0019, "ACME 1.0")
    assert 0x10 not in opaque and opaque[0x11].value in (b"Chest routine ", "Chest routine")


def test_without_retain_safe_private_every_private_attribute_goes(
        make_policy: MakePolicy, deid: Deid, ct: Dataset) -> None:
    _private(ct, 0x00E1, "ELSCINT1", {0x21: ("DS", "412.5")})
    ct.add_new(0x00190010, "LO", "")  # creator without a block
    ct.add_new(0x00211020, "LO", "element without a creator")
    deid(make_policy(), ct)
    assert not [t for t in ct.keys() if t.group & 1]  # noqa: SIM118


# -- ages and dates -------------------------------------------------------------------------------

@pytest.mark.parametrize(("age", "expected"), [
    ("047Y", "045Y"), ("089Y", "085Y"), ("090Y", "090Y"), ("104Y", "090Y"), ("018M", "000Y"),
    ("010W", "000Y"), ("200D", "000Y"),
])
def test_age_band_override(make_policy: MakePolicy, deid: Deid, roundtrip: RoundTrip,
                           ct: Dataset, age: str, expected: str) -> None:
    ct.PatientAge = age
    deid(make_policy(overrides=[{"tag": "PatientAge", "action": "age_band"}]), ct)
    assert roundtrip(ct).PatientAge == expected


def test_age_is_computed_when_missing(make_policy: MakePolicy, deid: Deid, ct: Dataset) -> None:
    del ct.PatientAge
    policy = make_policy(parameters={"compute_age": True, "age_band_years": 5},
                         overrides=[{"tag": "PatientAge", "action": "age_band"}])
    outcome = deid(policy, ct)
    assert ct.PatientAge == "060Y"  # 62 on 2024-01-15, banded
    assert any(r.code == "added" and r.path == "PatientAge" for r in outcome.actions)


def test_unparseable_dates_are_emptied_not_kept(make_policy: MakePolicy, deid: Deid,
                                                ct: Dataset) -> None:
    ct.SeriesDate = "15/01/2024"
    outcome = deid(make_policy(["retain_long_modified_dates"]), ct)
    assert ct.SeriesDate == ""
    assert any(r.path == "SeriesDate" and r.code == "Z" for r in outcome.actions)


# -- refusals and outcome -------------------------------------------------------------------------

def test_burned_in_annotation_is_refused_under_clean_pixel_data(
        make_policy: MakePolicy, deid: Deid, ct: Dataset) -> None:
    ct.BurnedInAnnotation = "YES"
    with pytest.raises(PolicyRefusal, match="BurnedInAnnotation"):
        deid(make_policy(["clean_pixel_data"]), ct)
    assert ct.PatientName == "Doe^John"  # refused before anything changed
    deid(make_policy(), ct)  # without the option the header is still de-identified


def test_outcome_names_attributes_never_values(make_policy: MakePolicy, deid: Deid,
                                               ct: Dataset) -> None:
    originals = [str(ct[k].value) for k in ("PatientName", "PatientID", "StudyInstanceUID",
                                            "StudyDate", "InstitutionName")]
    outcome = deid(make_policy(["clean_descriptors"]), ct)
    report = repr(outcome.actions) + repr(outcome.by_attribute()) + repr(outcome.warnings)
    for original in originals:
        assert original not in report
    assert outcome.sop_instance_uid == ct.SOPInstanceUID
    assert outcome.counts()["U"] >= 4
