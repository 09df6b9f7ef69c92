"""Seed one leak of each kind into otherwise clean output and check it is caught.

Each test damages a fresh copy of real engine output the way a faulty tool or a careless hand
would, then asserts the exit status and the report entry (check, file, tag path). None of the
entries may quote the value that was seeded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import UID, generate_uid

from appliance.synthetic import sample_patients
from policies.keying import keyed_uid
from tests.appliance.verify.conftest import Result, edit, find, instances, rel

DOE = sample_patients(0)[0]


def _ct(ds: Dataset) -> bool:
    return str(ds.get("Modality", "")) == "CT" and "ImageType" in ds


def _only(result: Result, check: str) -> dict[str, str]:
    """The one error of ``check``, after asserting it is the only error at all."""
    assert result.code == 1, result.summary
    assert [f["check"] for f in result.errors()] == [check], result.errors()
    return result.errors(check)[0]


def _aged(ds: Dataset) -> bool:
    return "PatientAge" in ds


# One attribute of one file set to what the policy would not have written: (policy, which file,
# keyword, value seeded, the check that must report it, part of its message or None).
ONE_ATTRIBUTE = [
    pytest.param("ps315-basic", _ct, "PatientAddress", DOE.address, "removed",
                 "removes it (X, basic X)", id="removed-attribute-put-back"),
    pytest.param("ps315-basic", _ct, "PatientName", DOE.name, "emptied", None,
                 id="emptied-attribute-with-a-value"),
    pytest.param("ps315-basic", _ct, "DeviceSerialNumber", "CT7741093", "dummy", None,
                 id="dummy-replaced-by-an-original"),
    pytest.param("ps315-basic", _ct, "FrameOfReferenceUID", "1.2.826.0.1.3680043.10.999.4711",
                 "uid", "not remapped", id="uid-not-remapped"),
    # A modality's own 2.25 UUID (version 4) has the root but not the keyed UUIDv8 structure
    pytest.param("ps315-basic", _ct, "FrameOfReferenceUID", generate_uid(None), "uid", None,
                 id="random-uuid-uid-is-not-a-remapped-one"),
    pytest.param("research-age-band-5y", _aged, "PatientAge", "047Y", "age-band",
                 "5-year bands", id="age-outside-the-band"),
    pytest.param("research-age-band-5y", _aged, "PatientAge", "095Y", "age-band", None,
                 id="age-over-the-cap"),
    pytest.param("safe-harbor", _ct, "AcquisitionDate", "20230517", "date", "year",
                 id="date-not-coarsened-to-the-year"),
    pytest.param("stage1-pseudonymize", _ct, "AccessionNumber", "ACC12345671", "form",
                 "'ACC' + 10 code characters", id="pseudonym-replaced-by-the-original"),
    pytest.param("research-age-band-5y", _ct, "BurnedInAnnotation", "YES", "pixels",
                 "clean_pixel_data", id="burned-in-annotation-under-a-clean-pixel-data-policy"),
]


@pytest.mark.parametrize(("policy", "which", "keyword", "value", "check", "message"),
                         ONE_ATTRIBUTE)
def test_one_seeded_attribute(clean: Callable[[str], Path], verify: Callable[..., Result],
                              policy: str, which: Callable[[Dataset], bool], keyword: str,
                              value: str, check: str, message: str | None) -> None:
    out = clean(policy)
    path = edit(find(out, which), lambda ds: setattr(ds, keyword, value))
    entry = _only(verify(out), check)
    assert (entry["file"], entry["path"]) == (rel(out, path), keyword)
    if message is not None:
        assert message in entry["message"]


def test_removed_attribute_deep_in_a_kept_sequence(clean: Callable[[str], Path],
                                                   verify: Callable[..., Result]) -> None:
    out = clean("research-age-band-5y")

    def plant(ds: Dataset) -> None:
        ds.RequestAttributesSequence[0].ScheduledProtocolCodeSequence[0] \
            .ProtocolContextSequence[0].PatientID = DOE.patient_id

    path = edit(find(out, lambda ds: "RequestAttributesSequence" in ds), plant)
    entry = _only(verify(out), "dummy")  # PatientID is D wherever it occurs
    assert entry["file"] == rel(out, path)
    assert entry["path"] == ("RequestAttributesSequence[0].ScheduledProtocolCodeSequence[0]."
                             "ProtocolContextSequence[0].PatientID")


def test_private_attribute(clean: Callable[[str], Path], verify: Callable[..., Result]) -> None:
    out = clean("ps315-basic")

    def plant(ds: Dataset) -> None:
        block = ds.private_block(0x0029, "ACME_PHI 1.0", create=True)
        block.add_new(0x10, "LO", DOE.patient_id)

    path = edit(find(out, _ct), plant)
    entry = _only(verify(out), "private")
    assert (entry["file"], entry["path"]) == (rel(out, path), "(0029,1010)")


def test_unknown_private_block_under_retain_safe_private(clean: Callable[[str], Path],
                                                         verify: Callable[..., Result]) -> None:
    out = clean("research-age-band-5y")

    def plant(ds: Dataset) -> None:
        ds.private_block(0x0009, "ACME_PHI 1.0", create=True).add_new(0x02, "LO", "x")

    edit(find(out, _ct), plant)
    assert _only(verify(out), "private")["path"] == "(0009,1002)"


def test_broken_reference_inside_a_series_of_the_set(clean: Callable[[str], Path],
                                                     verify: Callable[..., Result]) -> None:
    out = clean("ps315-basic")
    absent = keyed_uid(b"k" * 32, "an instance that was never here")  # in the scheme

    def plant(ds: Dataset) -> None:
        ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0] \
            .ReferencedSOPSequence[0].ReferencedSOPInstanceUID = absent

    path = edit(find(out, lambda ds: ds.Modality == "KO"), plant)
    entry = _only(verify(out), "reference")
    assert entry["file"] == rel(out, path)
    assert entry["path"] == ("CurrentRequestedProcedureEvidenceSequence[0]."
                             "ReferencedSeriesSequence[0].ReferencedSOPSequence[0]."
                             "ReferencedSOPInstanceUID")
    assert "series in this set" in entry["message"]


def test_reference_to_a_series_outside_the_set_is_a_warning(
        clean: Callable[[str], Path], verify: Callable[..., Result]) -> None:
    out = clean("ps315-basic")
    key = b"k" * 32

    def plant(ds: Dataset) -> None:
        series = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
        series.SeriesInstanceUID = keyed_uid(key, "a prior series")
        series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID = keyed_uid(key, "prior")

    edit(find(out, lambda ds: ds.Modality == "KO"), plant)
    result = verify(out)
    assert result.code == 0 and result.errors() == []
    paths = {w["path"].rsplit(".", 1)[-1] for w in result.warnings("reference")}
    assert paths == {"SeriesInstanceUID", "ReferencedSOPInstanceUID"}


def test_wrong_and_missing_markers(clean: Callable[[str], Path],
                                   verify: Callable[..., Result]) -> None:
    out = clean("research-age-band-5y")
    files = instances(out)

    def drop_basic_code(ds: Dataset) -> None:
        ds.DeidentificationMethodCodeSequence = [
            item for item in ds.DeidentificationMethodCodeSequence if item.CodeValue != "113100"]

    def claim_pixel_cleaning(ds: Dataset) -> None:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator = "113101", "DCM"
        item.CodeMeaning = "Clean Pixel Data Option"
        ds.DeidentificationMethodCodeSequence.append(item)

    edit(files[0], lambda ds: setattr(ds, "PatientIdentityRemoved", "NO"))
    edit(files[1], drop_basic_code)
    edit(files[2], claim_pixel_cleaning)
    edit(files[3], lambda ds: setattr(ds, "LongitudinalTemporalInformationModified",
                                      "UNMODIFIED"))
    result = verify(out)
    assert result.code == 1
    found = {(f["file"], f["path"], f["message"].split(" (")[0].split(",")[0])
             for f in result.errors()}
    assert found == {
        (rel(out, files[0]), "PatientIdentityRemoved", "Patient Identity Removed is not YES"),
        (rel(out, files[1]), "DeidentificationMethodCodeSequence", "does not claim 113100"),
        (rel(out, files[2]), "DeidentificationMethodCodeSequence", "claims 113101"),
        (rel(out, files[3]), "LongitudinalTemporalInformationModified", "says UNMODIFIED"),
    }


def test_name_phone_and_email_in_free_text_are_flagged(clean: Callable[[str], Path],
                                                       verify: Callable[..., Result]) -> None:
    out = clean("research-age-band-5y")

    def plant(ds: Dataset) -> None:
        ds.StudyDescription = "CT chest for DOE^JOHN"
        ds.SeriesDescription = "Seen by Dr. Kildare"
        ds.ImageComments = "call +1-617-555-0134 or doe@example.org"

    path = edit(find(out, _ct), plant)
    result = verify(out)
    assert result.code == 0  # flagged for review, not failed
    flagged = {(w["file"], w["path"]): w["message"] for w in result.warnings("free-text")}
    assert "a name" in flagged[(rel(out, path), "StudyDescription")]
    assert "a name" in flagged[(rel(out, path), "SeriesDescription")]
    comments = flagged[(rel(out, path), "ImageComments")]
    assert "a telephone number" in comments and "an e-mail address" in comments
    assert "DOE^JOHN" not in result.summary and "555-0134" not in result.summary


def test_burned_in_annotation_otherwise_is_flagged_for_review(
        clean: Callable[[str], Path], verify: Callable[..., Result]) -> None:
    out = clean("stage1-pseudonymize")
    path = edit(find(out, _ct), lambda ds: setattr(ds, "BurnedInAnnotation", "YES"))
    result = verify(out)
    assert result.code == 0
    assert rel(out, path) in {w["file"] for w in result.warnings("burned-in")}


def test_file_meta_that_disagrees_with_the_dataset(clean: Callable[[str], Path],
                                                   verify: Callable[..., Result]) -> None:
    out = clean("ps315-basic")
    path = find(out, _ct)

    ds = pydicom.dcmread(path)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(keyed_uid(b"k" * 32, "another"))
    ds.file_meta.SourceApplicationEntityTitle = "ELSW_CT01"
    ds.save_as(path, enforce_file_format=False)  # keep the meta as set, mismatch included
    result = verify(out)
    entry = _only(result, "file-meta")
    assert entry["path"] == "(file meta) MediaStorageSOPInstanceUID"
    assert [w["path"] for w in result.warnings("file-meta")] == [
        "(file meta) SourceApplicationEntityTitle"]


def test_incomplete_truncated_and_foreign_files(clean: Callable[[str], Path],
                                                verify: Callable[..., Result]) -> None:
    out = clean("ps315-basic")
    (out / ".tce-incomplete").write_text("")
    (out / "notes.txt").write_text("transfer notes")
    victim = find(out, _ct)
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 1000])
    result = verify(out)
    assert result.code == 1
    messages = {(f["file"], f["message"].split(":")[0]) for f in result.errors("file")}
    assert ("", "the folder still carries .tce-incomplete") in messages
    assert (rel(out, victim), "truncated") in messages
    assert [w["file"] for w in result.warnings("file")] == ["notes.txt"]
