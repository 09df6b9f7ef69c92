"""Clean Descriptors / Clean Structured Content: identifiers found in free text and removed."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from policies.textclean import (
    KINDS,
    REDACTION,
    Identifiers,
    TextCleaner,
    fold,
    identifiers_from,
)

PATIENT = Identifiers(
    names=("Doe^John^^Dr", "Yamada^Tarou=山田^太郎=やまだ^たろう", "Müller^Jürgen"),
    ids=("12345678", "123-45-678", "ACC0099"),
    dates=("19600315",),
    other=("1 Main Street^Springfield^MA^01234",),
)
CLEANER = TextCleaner(PATIENT)


# --- what must survive ----------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "CT CHEST W/O CONTRAST",
    "T2 FLAIR AX 5mm",
    "Thorax^1_HEAD_CT_ROUTINE (Adult)",
    "CAP 1.25mm 120kVp",
    "Series 3 MPR Cor",
    "Knee R 2 views",
    "MR BRAIN 3.0T DWI b1000",
    "Recon 2: 512x512 0.625000 mm, 10000ms",
    "Acquired 20240115 143015, kernel B30f",      # other dates and times belong to date options
    "Study 05/2024, matrix 1024 1024 16",
    "1.2.840.113619.2.55.3.2831164356",          # decimal fragments are not ID-like tokens
    "Series 12345",                               # under 6 digits
    "Doer Johnson Mullerova Jurgens",             # names only count as whole words
    "",
    "胸部 CT 単純",
])
def test_descriptors_without_identifiers_come_back_unchanged(text: str) -> None:
    assert CLEANER.find(text) == []
    assert CLEANER.clean(text) is text


# --- what must go ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("CT for John Doe MRN 12345678", "CT for *** MRN ***"),
    ("pt DOE, JOHN dob 03/15/1960 call 555-123-4567", "pt *** dob *** call ***"),
    ("Contact: jdoe@example.org", "Contact: ***"),
    ("Jurgen MULLER", "***"),
    ("JÜRGEN müller, follow-up", "***, follow-up"),
    ("seen by J. Doe", "seen by ***"),
    ("DOE^JOHN", "***"),
    ("Thorax_DOE_JOHN_CT", "Thorax_***_CT"),
    ("DOE12345678 scan", "*** scan"),              # adjacent hits merge
    ("ID 123-45-678 / 12345678 / 123 45 678", "ID *** / *** / ***"),
    ("acc acc0099", "acc ***"),
    ("lives at 1 Main Street, Springfield", "lives at ***, ***"),
    ("ＤＯＥ　ＪＯＨＮ (full width)", "*** (full width)"),
    ("Doe様 山田Doe", "***様 ***"),                 # kanji do not count as letters next to Doe
    ("Doe2 (second study)", "***2 (second study)"),
])
def test_identifiers_in_descriptors_are_replaced(text: str, expected: str) -> None:
    assert CLEANER.clean(text) == expected


def test_japanese_name_in_sr_text_is_removed_without_word_boundaries() -> None:
    text = "所見: 山田太郎様（やまだ たろう）の胸部CTで結節を認めます。"
    assert CLEANER.clean(text) == "所見: ***様（***）の胸部CTで結節を認めます。"
    kinds = {kind for _, _, kind in CLEANER.find(text)}
    assert kinds == {"name"}


def test_rest_of_the_text_is_kept_exactly() -> None:
    text = "  Ärztin\tnotes:\r\n  Doe  — ok ✓ "
    assert CLEANER.clean(text) == "  Ärztin\tnotes:\r\n  ***  — ok ✓ "


def test_find_reports_spans_in_the_original_text_with_kinds() -> None:
    text = "Befund Jürgen Müller, Tel +49 30 1234567, jm@example.de, MRN99887766"
    found = CLEANER.find(text)
    assert [(text[s:e], kind) for s, e, kind in found] == [
        ("Jürgen Müller", "name"),
        ("+49 30 1234567", "phone"),
        ("jm@example.de", "email"),
        ("MRN99887766", "id-pattern"),
    ]


def test_decomposed_accents_map_back_to_the_whole_character() -> None:
    text = "Mu\u0308ller, Ju\u0308rgen"
    found = CLEANER.find(text)
    assert found == [(0, len(text), "name")]
    assert CLEANER.clean(text) == REDACTION


# --- names ----------------------------------------------------------------------------------------

def test_titles_and_particles_alone_are_not_names() -> None:
    cleaner = TextCleaner(Identifiers(names=("van der Berg^Anna^^Dr^MD",)))
    assert cleaner.clean("Dr reviewed de novo lesion, der Befund") == (
        "Dr reviewed de novo lesion, der Befund")
    assert cleaner.clean("VAN DER BERG, ANNA") == "***"
    assert cleaner.clean("Berg") == "***"


def test_single_character_components_only_count_in_the_full_name() -> None:
    cleaner = TextCleaner(Identifiers(names=("王^小明",)))
    assert cleaner.clean("王小明 患者") == "*** 患者"
    assert cleaner.clean("王 医生") == "王 医生"


# --- dates ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("written", [
    "19600305", "1960-03-05", "1960/03/05", "1960.03.05", "05/03/1960", "03/05/1960",
    "05.03.1960", "05-03-1960", "5/3/1960", "3/5/1960", "5 March 1960", "March 5, 1960",
    "Mar 5 1960", "05-MAR-1960", "5th mar. 1960", "05.03.60",
])
def test_birth_date_in_common_formats(written: str) -> None:
    cleaner = TextCleaner(Identifiers(dates=("19600305",)))
    assert cleaner.clean(f"DOB {written}.") == "DOB ***."


def test_other_dates_stay_unless_remove_all_dates() -> None:
    text = "scan 2024-01-15, prior 15/01/2023 and Jan 5, 2022; DT 20240115143015"
    assert TextCleaner(PATIENT).clean(text) is text
    assert TextCleaner(PATIENT, remove_all_dates=True).clean(text) == (
        "scan ***, prior *** and ***; DT ***")
    assert TextCleaner(PATIENT, remove_all_dates=True).clean("CAP 1.25mm 120kVp") == (
        "CAP 1.25mm 120kVp")


# --- generic patterns -----------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "kind"), [
    ("call +1 (555) 123-4567", "phone"),
    ("call (555) 123-4567", "phone"),
    ("call 555.123.4567", "phone"),
    ("call 555 123 4567", "phone"),
    ("Tel 030 1234567", "phone"),
    ("Tel +49 30 1234567", "phone"),
    ("Tel 089/123456", "phone"),
    ("Tel 0049 30 1234 5678", "phone"),
    ("mail a.b-c+d@sub.example.co.uk", "email"),
    ("SSN 123-45-6789", "id-pattern"),
    ("ref MRN12345678", "id-pattern"),
    ("ref 1234567", "id-pattern"),
])
def test_generic_identifiers_without_any_patient_data(text: str, kind: str) -> None:
    cleaner = TextCleaner(Identifiers())
    found = cleaner.find(text)
    assert [k for _, _, k in found] == [kind]
    assert cleaner.clean(text) == text.split(" ", 1)[0] + " " + REDACTION


# --- robustness (hypothesis) ----------------------------------------------------------------------

@settings(max_examples=400, deadline=None)
@given(st.text())
def test_any_text_is_handled(text: str) -> None:
    found = CLEANER.find(text)
    assert all(0 <= s < e <= len(text) and kind in KINDS for s, e, kind in found)
    assert found == sorted(found)
    out = CLEANER.clean(text)
    if not found:
        assert out is text
    else:
        assert out.count(REDACTION) >= 1 and out != text
        assert CLEANER.clean(out) == out


@pytest.mark.parametrize("text", ["doe山田", "0@a.b+@a.b", "ab1.196000", "12345678.1234567"])
def test_cleaning_a_cleaned_text_changes_nothing(text: str) -> None:
    cleaner = TextCleaner(Identifiers(names=("Doe^John", "山田^太郎"), ids=("AB1", "12345678")))
    once = cleaner.clean(text)
    assert once != text
    assert cleaner.clean(once) is once


@pytest.mark.parametrize("text", ["\ud800x Doe", "\u0301\u0301", "ﬀ ß ǅ İ", "\x00Doe\x00", "@@@"])
def test_odd_code_points_do_not_raise(text: str) -> None:
    CLEANER.clean(text)


_LATIN = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZàáâäçèéêëíîïñóôöøúüýßÀÉÖÜ"
_name_part = st.text(alphabet=_LATIN, min_size=2, max_size=12).filter(
    lambda s: fold(s) not in {"dr", "mr", "mrs", "ms", "miss", "mx", "prof", "sir", "jr", "sr",
                              "md", "phd", "ii", "iii", "iv"})
_id_value = st.text(alphabet="ABCXYZ0123456789-", min_size=3, max_size=14).filter(
    lambda s: sum(c.isalnum() for c in s) >= 3)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(family=_name_part, given_name=_name_part, id_value=_id_value,
       prefix=st.text(max_size=40), suffix=st.text(max_size=40),
       form=st.sampled_from(["{g} {f}", "{F}, {G}", "{f}^{g}", "{g}_{f}", "{G}\n{F}"]))
def test_planted_identifiers_are_gone(family: str, given_name: str, id_value: str, prefix: str,
                                      suffix: str, form: str) -> None:
    secrets = [fold(family), fold(given_name), fold(id_value)]
    for secret in secrets:
        assume(secret not in fold(prefix) and secret not in fold(suffix))
    planted = form.format(f=family, g=given_name, F=family.upper(), G=given_name.upper())
    text = f"{prefix} {planted} {id_value} {suffix}"
    cleaner = TextCleaner(Identifiers(names=(f"{family}^{given_name}",), ids=(id_value,)))
    out = fold(cleaner.clean(text))
    for secret in secrets:
        assert secret not in out


# --- identifiers_from -----------------------------------------------------------------------------

def _write_and_read(ds: Dataset, path: Path) -> Dataset:
    """Round-trip through a real Part 10 file so values are decoded from their character set."""
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return dcmread(path)


def test_identifiers_from_latin1_dataset(tmp_path: Path) -> None:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Müller^Jürgen"
    ds.PatientBirthName = "Schäfer^Jürgen"
    ds.PatientMotherBirthName = "Weiß^Anna"
    ds.ReferringPhysicianName = "Referrer^Rita"          # staff, not the patient
    ds.PatientID = "PID-0042"
    ds.IssuerOfPatientID = "KLINIKUM"                    # issuer, not an identifier of the patient
    ds.OtherPatientIDs = ["ALT-1", "ALT-2"]
    ds.AccessionNumber = "ACC778899"
    ds.PatientBirthDate = "19600315"
    ds.PatientAddress = "Hauptstraße 1^Köln"
    ds.PatientTelephoneNumbers = "+49 221 1234567"
    ds.StudyDescription = "CT Jürgen Müller"
    path = tmp_path / "latin1.dcm"
    read = _write_and_read(ds, path)
    assert b"M\xfcller^J\xfcrgen" in path.read_bytes()

    ids = identifiers_from(read)
    assert ids == Identifiers(
        names=("Müller^Jürgen", "Schäfer^Jürgen", "Weiß^Anna"),
        ids=("PID-0042", "ALT-1", "ALT-2", "ACC778899"),
        dates=("19600315",),
        other=("Hauptstraße 1^Köln", "+49 221 1234567"),
    )
    cleaner = TextCleaner(ids)
    assert cleaner.clean(read.StudyDescription) == "CT ***"
    assert cleaner.clean("WEISS, Anna; HAUPTSTRASSE 1, KOLN; alt-2") == "***; ***; ***"
    assert cleaner.clean("Anna lives in Koln") == "*** lives in ***"


def test_identifiers_from_utf8_dataset_with_other_ids_sequence(tmp_path: Path) -> None:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    ds.OtherPatientNames = ["Yamada^Taro", "ヤマダ^タロウ"]
    ds.PatientID = "JP-123456"
    items = []
    for value in ("OTHER-001", "OTHER-002"):
        item = Dataset()
        item.PatientID = value
        item.IssuerOfPatientID = "SOMEWHERE"
        items.append(item)
    ds.OtherPatientIDsSequence = Sequence(items)
    ds.add_new(0x00100011, "SQ", Sequence([Dataset()]))  # Person Names to Use Sequence (new tag)
    ds[0x00100011].value[0].add_new(0x00100012, "UT", "Taro-chan")
    path = tmp_path / "utf8.dcm"
    read = _write_and_read(ds, path)
    assert "山田^太郎".encode() in path.read_bytes()

    ids = identifiers_from(read)
    assert ids.names == ("Yamada^Tarou=山田^太郎=やまだ^たろう", "Yamada^Taro", "ヤマダ^タロウ",
                         "Taro-chan")
    assert ids.ids == ("JP-123456", "OTHER-001", "OTHER-002")
    assert ids.dates == () and ids.other == ()
    cleaner = TextCleaner(ids)
    assert cleaner.clean("検査: 山田 太郎, ﾔﾏﾀﾞ ﾀﾛｳ, other-002") == "検査: ***, ***, ***"


def test_identifiers_from_skips_empty_and_odd_values() -> None:
    ds = Dataset()
    ds.PatientName = ""
    ds.PatientID = None
    ds.PatientBirthDate = ""
    ds.add_new(0x00101040, "UN", b"Elm Road 5\x00")       # address that arrived as UN bytes
    ds.add_new(0x00080050, "SH", "A\\B\\LONGER-ACC")      # multi-valued where VM is 1
    ds.add_new(0x00101002, "SQ", Sequence([Dataset()]))    # Other Patient IDs Sequence, empty item
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ids = identifiers_from(ds)
    assert ids.names == () and ids.dates == ()
    assert ids.ids == ("A", "B", "LONGER-ACC")
    assert ids.other == ("Elm Road 5",)


def test_identifiers_from_an_empty_dataset_finds_nothing() -> None:
    assert identifiers_from(Dataset()) == Identifiers()
