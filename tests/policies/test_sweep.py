"""The patient's identifiers, read raw before the walk, and the byte search for them."""

from __future__ import annotations

import io
from collections.abc import Callable

import pydicom
import pytest
from pydicom.dataset import Dataset

from policies.charset import encodings_of
from policies.sweep import OriginalIdentifiers, sweep_tokens
from policies.textclean import Identifiers, identifiers_from


def _from_file(ds: Dataset) -> Dataset:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


def _everything(make_ct: Callable[..., Dataset], charset: str | None = None) -> Dataset:
    ds = make_ct({"PatientName": "Müller^Jürgen" if charset else "Doe^John"}, charset=charset)
    ds.OtherPatientNames = ["Doe^Johnny", "Smith^J"]
    ds.PatientBirthName = "Roe^John"
    ds.PatientMotherBirthName = "Roe^Mary"
    ds.OtherPatientIDs = "OLD-778"
    ds.MedicalRecordLocator = "LOC-1"
    ds.AdmissionID = "ADM-42"
    ds.PatientAddress = "12 Elm Street, Springfield"
    ds.PatientTelephoneNumbers = "+1 617 555 0134"
    other = Dataset()
    other.PatientID = "INS-99812"
    ds.OtherPatientIDsSequence = [other]
    request = Dataset()
    request.AccessionNumber, request.RequestedProcedureID = "ACC-2", "RP-77"
    ds.RequestAttributesSequence = [request]
    return ds


@pytest.mark.parametrize("charset", [None, "ISO_IR 100"])
def test_raw_identifiers_equal_the_cleaners_own(make_ct: Callable[..., Dataset],
                                                charset: str | None) -> None:
    ds = _from_file(_everything(make_ct, charset))
    originals = OriginalIdentifiers(ds, encodings_of(ds))
    expected = identifiers_from(_from_file(_everything(make_ct, charset)))
    assert originals.all() == expected
    assert "INS-99812" in expected.ids and "RP-77" in expected.ids
    assert "INS-99812" not in originals.top.ids  # nested ones are read only when needed


def test_nested_identifiers_survive_the_walk_removing_their_sequence(
        make_ct: Callable[..., Dataset]) -> None:
    ds = _from_file(_everything(make_ct))
    originals = OriginalIdentifiers(ds, encodings_of(ds))
    del ds.OtherPatientIDsSequence
    ds.RequestAttributesSequence = []
    assert {"INS-99812", "ACC-2", "RP-77"} <= set(originals.all().ids)


def test_sample_set_identifiers_match(sample_set: Callable[[], list[Dataset]]) -> None:
    for ds in sample_set():
        ds = _from_file(ds)
        expected = identifiers_from(_from_file(ds))
        assert OriginalIdentifiers(ds, encodings_of(ds)).all() == expected


def test_tokens_find_identifiers_in_raw_bytes_in_any_case() -> None:
    tokens = sweep_tokens(Identifiers(names=("Müller^Jürgen",), ids=("MRN4417702",),
                                      dates=("19610517",)), ["iso8859"])
    assert tokens is not None
    assert tokens.hit(b"Befund M\xfcller")  # Latin-1 bytes
    assert tokens.hit("Befund Müller".encode())  # UTF-8 bytes
    assert tokens.hit(b"for MULLER")  # unaccented
    assert tokens.hit(b"mrn4417702 ") and tokens.hit(b"born 19610517")
    assert tokens.hit("JÜRGEN") and tokens.hit(["x", "jürgen"])
    assert not tokens.hit(b"CT chest 5mm") and not tokens.hit(None)


def test_no_tokens_without_identifiers() -> None:
    assert sweep_tokens(Identifiers(), ["iso8859"]) is None
    assert sweep_tokens(Identifiers(ids=("12",)), ["iso8859"]) is None  # too short to search
