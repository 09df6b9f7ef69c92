"""Markers (Patient Identity Removed, method codes, temporal flag) and the new File Meta."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian

from policies.markers import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from policies.model import Policy
from policies.outcome import Outcome, PolicyRefusal

MakePolicy = Callable[..., Policy]
Deid = Callable[..., Outcome]
RoundTrip = Callable[[Dataset], Dataset]


def _codes(ds: Dataset) -> list[str]:
    return [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]


@pytest.mark.parametrize(("options", "codes"), [
    ([], ["113100"]),
    (["retain_safe_private", "clean_descriptors"], ["113100", "113105", "113111"]),
    (["retain_long_modified_dates", "retain_patient_characteristics", "clean_pixel_data",
      "clean_recognizable_visual_features"], ["113100", "113107", "113108"]),
    (["retain_uids", "retain_device_identity", "retain_institution_identity",
      "retain_long_full_dates", "clean_structured_content", "clean_graphics"],
     ["113100", "113103", "113104", "113106", "113109", "113110", "113112"]),
])
def test_method_codes_claim_exactly_what_was_applied(make_policy: MakePolicy, deid: Deid,
                                                     roundtrip: RoundTrip, ct: Dataset,
                                                     options: list[str],
                                                     codes: list[str]) -> None:
    deid(make_policy(options), ct)
    out = roundtrip(ct)
    assert out.PatientIdentityRemoved == "YES"
    assert sorted(_codes(out)) == codes  # never 113101/113102: pixels are not cleaned
    assert all(item.CodingSchemeDesignator == "DCM" and item.CodeMeaning
               for item in out.DeidentificationMethodCodeSequence)
    assert "tce test-policy v1" in out.DeidentificationMethod


@pytest.mark.parametrize(("options", "flag"), [
    ([], "REMOVED"), (["retain_long_full_dates"], "UNMODIFIED"),
    (["retain_long_modified_dates"], "MODIFIED"),
])
def test_longitudinal_temporal_flag(make_policy: MakePolicy, deid: Deid, ct: Dataset,
                                    options: list[str], flag: str) -> None:
    deid(make_policy(options), ct)
    assert ct.LongitudinalTemporalInformationModified == flag


def test_second_stage_appends_to_the_first(builtin: dict[str, Policy], deid: Deid,
                                           roundtrip: RoundTrip, ct: Dataset) -> None:
    deid(builtin["stage1-pseudonymize"], ct)
    stage1 = roundtrip(ct)
    first = _codes(stage1)
    assert stage1.LongitudinalTemporalInformationModified == "UNMODIFIED"
    deid(builtin["research-age-band-5y"], stage1)
    out = roundtrip(stage1)
    codes = _codes(out)
    assert codes[:len(first)] == first  # earlier items kept, in order
    assert len(codes) == len(set(codes))  # nothing claimed twice
    assert {"113106", "113107", "113108", "113111", "113105", "113104"} <= set(codes)
    assert "113101" not in codes
    methods = list(out.DeidentificationMethod)
    stage1_policy = builtin["stage1-pseudonymize"]
    # provenance is never "cleaned": the digest looks like an ID token to the text cleaner
    assert methods[0] == f"tce stage1-pseudonymize v1 {stage1_policy.digest[:12]}"
    assert methods[1].startswith("tce research-age-band-5y")
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"


def test_keeping_dates_later_cannot_undo_an_earlier_modification(
        make_policy: MakePolicy, deid: Deid, ct: Dataset) -> None:
    deid(make_policy(["retain_long_modified_dates"]), ct)
    deid(make_policy(["retain_long_full_dates"], policy_id="second"), ct)
    assert ct.LongitudinalTemporalInformationModified == "MODIFIED"


def test_no_markers_without_the_basic_profile(make_policy: MakePolicy, deid: Deid,
                                              ct: Dataset) -> None:
    deid(make_policy(base="none", overrides=[{"tag": "PatientID", "action": "pseudonym"}]), ct)
    assert "PatientIdentityRemoved" not in ct
    assert ct.PatientName == "Doe^John"


def test_file_meta_and_preamble_are_the_products_own(make_policy: MakePolicy, deid: Deid,
                                                     written: Callable[[Dataset], bytes],
                                                     ct: Dataset) -> None:
    ct.add_new(0x00041130, "CS", "FILESET")  # group 0004 in an ordinary file
    deid(make_policy(), ct)
    data = written(ct)
    assert data[:128] == b"\x00" * 128 and data[128:132] == b"DICM"
    out = pydicom.dcmread(io.BytesIO(data))
    meta = out.file_meta
    assert meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.SOPInstanceUID != "1.2.826.0.1.3680043.10.999.77.1.1.1"
    assert meta.MediaStorageSOPClassUID == out.SOPClassUID
    assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert meta.ImplementationVersionName == IMPLEMENTATION_VERSION_NAME
    assert "SourceApplicationEntityTitle" not in meta
    assert not [t for t in out.keys() if t.group == 0x0004]  # noqa: SIM118
    assert b"SCANNER PREAMBLE" not in data and b"CT_ROOM_7" not in data


def test_markers_in_an_implicit_vr_file(make_policy: MakePolicy, deid: Deid, ct: Dataset,
                                        written: Callable[[Dataset], bytes]) -> None:
    ct.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    buffer = io.BytesIO()
    ct.save_as(buffer, enforce_file_format=True)
    implicit = pydicom.dcmread(io.BytesIO(buffer.getvalue()))
    deid(make_policy(["clean_descriptors"]), implicit)
    out = pydicom.dcmread(io.BytesIO(written(implicit)))
    assert out.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert sorted(_codes(out)) == ["113100", "113105"]
    assert out.DeidentificationMethodCodeSequence[0].CodeMeaning.startswith("Basic")


def test_a_dicomdir_is_refused(make_policy: MakePolicy, deid: Deid,
                               pydicom_test_files: Path) -> None:
    dicomdir = pydicom.dcmread(pydicom_test_files / "dicomdirtests" / "DICOMDIR")
    with pytest.raises(PolicyRefusal, match="DICOMDIR"):
        deid(make_policy(), dicomdir)
