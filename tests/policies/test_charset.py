"""Character sets: kept text survives de-identification, writing and reading without mojibake."""

from __future__ import annotations

import io
from collections.abc import Callable

import pydicom
import pytest
from pydicom.dataset import Dataset

from policies.charset import encodable, encodings_of, raw_strings, raw_text
from policies.model import Policy
from policies.outcome import Outcome

MakePolicy = Callable[..., Policy]
Deid = Callable[..., Outcome]
RoundTrip = Callable[[Dataset], Dataset]

JAPANESE = "Yamada^Tarou=山田^太郎=やまだ^たろう"


def _from_file(ds: Dataset) -> Dataset:
    """As read from disk: every element still raw, as the engine usually meets it."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


def _keep(*keywords: str) -> list[dict[str, str]]:
    return [{"tag": keyword, "action": "keep"} for keyword in keywords]


@pytest.mark.parametrize(("charset", "name", "texts"), [
    ("ISO_IR 100", "Müller^Jürgen", {"SeriesDescription": "Thorax nativ, Übersicht",
                                     "InstitutionName": "Klinikum Großhadern Süd",
                                     "ContentDescription": "Lungenrundherd, größenprogredient"}),
    ("ISO_IR 192", "Παπαδοπούλου^Ελένη", {"SeriesDescription": "Θώρακας χωρίς σκιαγραφικό",
                                          "InstitutionName": "Szpital Łódź Żeromskiego",
                                          "ContentDescription": "Ζωή και υγεία ✓"}),
    ("\\ISO 2022 IR 87", JAPANESE, {"SeriesDescription": "胸部単純ＣＴ",
                                    "InstitutionName": "東京総合病院",
                                    "ContentDescription": "経過観察"}),
])
def test_kept_text_reads_back_unchanged(make_policy: MakePolicy, deid: Deid,
                                        roundtrip: RoundTrip, make_ct: Callable[..., Dataset],
                                        charset: str, name: str,
                                        texts: dict[str, str]) -> None:
    ds = make_ct({"PatientName": name}, charset=charset.split("\\") if "\\" in charset
                 else charset)
    for keyword, text in texts.items():
        setattr(ds, keyword, text)
    ds = _from_file(ds)
    policy = make_policy(["clean_descriptors"],
                         overrides=_keep("PatientName", "InstitutionName"))
    outcome = deid(policy, ds)
    out = roundtrip(ds)
    assert not outcome.charset_switched
    assert str(out.PatientName) == name
    if "=" in name:
        assert out.PatientName.ideographic == "山田^太郎"
        assert out.PatientName.phonetic == "やまだ^たろう"
    for keyword, text in texts.items():
        assert out[keyword].value == text, keyword


def test_cleaned_text_keeps_its_other_characters(make_policy: MakePolicy, deid: Deid,
                                                 roundtrip: RoundTrip,
                                                 make_ct: Callable[..., Dataset]) -> None:
    ds = make_ct({"PatientName": "Müller^Jürgen"}, charset="ISO_IR 100")
    ds.StudyDescription = "Übersicht für Jürgen Müller, Größe"
    ds = _from_file(ds)
    deid(make_policy(["clean_descriptors"]), ds)
    assert roundtrip(ds).StudyDescription == "Übersicht für ***, Größe"


def test_a_replacement_the_charset_cannot_hold_switches_to_utf8(
        make_policy: MakePolicy, deid: Deid, written: Callable[[Dataset], bytes],
        make_ct: Callable[..., Dataset]) -> None:
    ds = make_ct({"PatientName": "Müller^Jürgen"}, charset="ISO_IR 100")
    ds.SeriesDescription = "Thorax nativ, Übersicht"
    ds.InstitutionName = "Klinikum Süd"
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator = "T-D3000", "SRT"
    item.CodeMeaning = "Brustkorb (Thorax), Größe"
    ds.AnatomicRegionSequence = [item]
    ds = _from_file(ds)
    policy = make_policy(["clean_descriptors"], overrides=[
        *_keep("PatientName", "InstitutionName"),
        {"tag": "StudyDescription", "action": "replace", "value": "Μελέτη θώρακα"},
    ])
    outcome = deid(policy, ds)
    assert outcome.charset_switched
    data = written(ds)
    out = pydicom.dcmread(io.BytesIO(data))
    assert out.SpecificCharacterSet == "ISO_IR 192"
    assert out.StudyDescription == "Μελέτη θώρακα"
    assert str(out.PatientName) == "Müller^Jürgen"
    assert out.SeriesDescription == "Thorax nativ, Übersicht"
    assert out.InstitutionName == "Klinikum Süd"
    assert out.AnatomicRegionSequence[0].CodeMeaning == "Brustkorb (Thorax), Größe"
    assert "Müller".encode() in data and "Müller".encode("latin-1") not in data


def test_encodable_follows_the_declared_set() -> None:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    assert encodable(ds, "Größe") and not encodable(ds, "Μελέτη")
    ds.SpecificCharacterSet = "ISO_IR 192"
    assert encodable(ds, "Μελέτη")


def test_raw_values_decode_with_the_dataset_encodings(make_ct: Callable[..., Dataset]) -> None:
    ds = _from_file(make_ct({"PatientName": JAPANESE, "PatientID": "ID\\OTHER"},
                            charset=["", "ISO 2022 IR 87"]))
    encodings = encodings_of(ds)
    assert raw_strings(ds.get_item("PatientName"), encodings) == [JAPANESE]
    assert raw_strings(ds.get_item("PatientID"), encodings) == ["ID", "OTHER"]
    assert raw_text(ds.get_item("PatientID"), encodings) == "ID\\OTHER"
    assert raw_text(None, encodings) == ""


def test_no_declared_set_means_ascii(make_policy: MakePolicy, deid: Deid,
                                     roundtrip: RoundTrip, make_ct: Callable[..., Dataset]) -> None:
    ds = _from_file(make_ct())
    assert "SpecificCharacterSet" not in ds
    policy = make_policy(overrides=[
        {"tag": "InstitutionName", "action": "replace", "value": "Hôpital Saint-Éloi"}])
    assert deid(policy, ds).charset_switched
    out = roundtrip(ds)
    assert out.SpecificCharacterSet == "ISO_IR 192"
    assert out.InstitutionName == "Hôpital Saint-Éloi"
