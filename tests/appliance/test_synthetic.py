"""The synthetic sample is what every other test, the demo and the benchmarks feed on.

These tests read the written files back the way a user's tools would (pydicom, dciodvfy) and
check that the planted identifiers really sit where anonymizers miss them, so that leak scanners
elsewhere can fail for the right reason.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from appliance.synthetic import (
    NOTES_FILE,
    TRUNCATED_FILE,
    UID_ROOT,
    main_sample,
    make_ct_instance,
    make_sample_study_set,
    original_uids,
    planted_phi,
    sample_patients,
    write_datasets,
    write_sample,
)

SAFE_PRIVATE = Path(__file__).parents[2] / "policies" / "data" / "ps315_safe_private.json"


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    out = tmp_path_factory.mktemp("sample")
    return out, write_sample(out, seed=0)


@pytest.fixture(scope="module")
def written(sample: tuple[Path, list[Path]]) -> list[Dataset]:
    return [dcmread(p) for p in sample[1]]


def elements(ds: Dataset) -> Iterator[DataElement]:
    yield from ds.iterall()
    if hasattr(ds, "file_meta"):
        yield from ds.file_meta.iterall()


def texts(ds: Dataset) -> Iterator[str]:
    """Every decoded text value, nested and private ones included."""
    for elem in elements(ds):
        if elem.VR in ("SQ", "OB", "OW", "UN") or elem.value is None:
            continue
        values = elem.value if elem.VM > 1 else [elem.value]
        yield from (str(v) for v in values)


def by_class(datasets: list[Dataset], sop_class: str) -> list[Dataset]:
    return [ds for ds in datasets if ds.SOPClassUID == sop_class]


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    write_sample(first, seed=3)
    write_sample(second, seed=3)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert len(files) == 24  # 22 instances + notes + truncated
    for rel in files:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel


def test_other_seed_gives_other_uids_and_names() -> None:
    assert not original_uids(make_sample_study_set(0)) & original_uids(make_sample_study_set(1))
    names0 = [p.name for p in sample_patients(0)]
    names1 = [p.name for p in sample_patients(1)]
    assert all(a != b for a, b in zip(names0, names1, strict=True))
    assert {p.patient_id for p in sample_patients(0)}.isdisjoint(
        p.patient_id for p in sample_patients(1))


def test_every_instance_is_a_readable_part10_file(written: list[Dataset]) -> None:
    assert len(written) == 22
    assert {ds.SOPClassUID.name for ds in written} == {
        "CT Image Storage", "MR Image Storage", "Secondary Capture Image Storage",
        "Enhanced CT Image Storage", "Basic Text SR Storage",
        "Key Object Selection Document Storage",
        "Grayscale Softcopy Presentation State Storage"}
    assert len({ds.StudyInstanceUID for ds in written}) == 5
    for ds in written:
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.file_meta.SourceApplicationEntityTitle
        if "PixelData" in ds:
            frames = int(ds.get("NumberOfFrames", 1))
            assert ds.pixel_array.size == frames * ds.Rows * ds.Columns


def test_charsets_round_trip(sample: tuple[Path, list[Path]]) -> None:
    paths = sample[1]
    patients = sample_patients(0)
    assert [p.charset for p in patients] == [
        "", "ISO_IR 100", "ISO_IR 192", "ISO 2022 IR 6\\ISO 2022 IR 87"]
    assert patients[1].name == "Müller^Jürgen"
    assert patients[3].name == "Yamada^Tarou=山田^太郎=やまだ^たろう"
    for patient in patients:
        mine = [p for p in paths if dcmread(p, stop_before_pixels=True).PatientID
                == patient.patient_id]
        assert mine
        for path in mine:
            ds = dcmread(path)
            assert str(ds.PatientName) == patient.name
            assert ds.PatientAddress == patient.address
            assert ds["PatientName"].value.components[0] == patient.name.split("=")[0]
    german = next(p for p in paths if dcmread(p).PatientID == patients[1].patient_id)
    assert "Müller".encode("latin-1") in german.read_bytes()
    japanese = next(p for p in paths if dcmread(p).PatientID == patients[3].patient_id)
    assert b"\x1b$B" in japanese.read_bytes()  # ISO 2022 escape to JIS X 0208, not UTF-8


def test_one_patient_is_ninety_or_older_and_one_series_lacks_age(
        written: list[Dataset]) -> None:
    old = sample_patients(0)[0]
    studies = {ds.StudyDate for ds in written if ds.PatientID == old.patient_id}
    assert len(studies) == 2
    birth = datetime.strptime(old.birth_date, "%Y%m%d")
    for study_date in studies:
        when = datetime.strptime(study_date, "%Y%m%d")
        age = when.year - birth.year - ((when.month, when.day) < (birth.month, birth.day))
        assert age >= 90
    without_age = {ds.SeriesInstanceUID for ds in written if "PatientAge" not in ds}
    assert len(without_age) == 1
    assert sum("PatientAge" in ds for ds in written) == 20
    assert all(ds.PatientAge == "092Y" for ds in written
               if ds.PatientID == old.patient_id and "PatientAge" in ds)


def test_references_point_at_instances_in_the_set(written: list[Dataset]) -> None:
    instances = {ds.SOPInstanceUID: ds for ds in written}

    def check(item: Dataset) -> None:
        target = instances[item.ReferencedSOPInstanceUID]
        assert target.SOPClassUID == item.ReferencedSOPClassUID

    for doc in (*by_class(written, "1.2.840.10008.5.1.4.1.1.88.11"),
                *by_class(written, "1.2.840.10008.5.1.4.1.1.88.59")):
        [study] = doc.CurrentRequestedProcedureEvidenceSequence
        evidence = set()
        for series in study.ReferencedSeriesSequence:
            for item in series.ReferencedSOPSequence:
                check(item)
                assert instances[item.ReferencedSOPInstanceUID].SeriesInstanceUID == \
                    series.SeriesInstanceUID
                evidence.add(item.ReferencedSOPInstanceUID)
        images = [c for c in doc.ContentSequence if c.ValueType == "IMAGE"]
        assert images
        for content in images:
            check(content.ReferencedSOPSequence[0])
            assert content.ReferencedSOPSequence[0].ReferencedSOPInstanceUID in evidence
    [gsps] = by_class(written, "1.2.840.10008.5.1.4.1.1.11.1")
    for series in gsps.ReferencedSeriesSequence:
        for item in series.ReferencedImageSequence:
            check(item)
    check(gsps.GraphicAnnotationSequence[0].ReferencedImageSequence[0])
    [enhanced] = by_class(written, "1.2.840.10008.5.1.4.1.1.2.1")
    assert enhanced.NumberOfFrames == 3
    for frame in enhanced.PerFrameFunctionalGroupsSequence:  # three sequences deep
        check(frame.DerivationImageSequence[0].SourceImageSequence[0])
    for ds in written:
        for keyword in ("SourceImageSequence", "ReferencedImageSequence"):
            for item in ds.get(keyword, []):
                check(item)
    ct_series = {ds.SeriesInstanceUID: ds.FrameOfReferenceUID for ds in written
                 if ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
                 and ds.PatientID == sample_patients(0)[0].patient_id}
    assert len(ct_series) == 2 and len(set(ct_series.values())) == 1


def test_every_planted_string_occurs_in_the_originals(written: list[Dataset]) -> None:
    found = "\n".join(t for ds in written for t in texts(ds))
    phi = planted_phi(sample_patients(0))
    assert "Doe^John" in phi and "山田" in phi and "ELSW_CT01" in phi
    assert not any(u in phi for u in original_uids(written))
    missing = [s for s in phi if s not in found]
    assert missing == []


def test_phi_hides_in_nested_private_and_free_text(written: list[Dataset]) -> None:
    patient = sample_patients(0)[0]
    ct = written[0]
    deep = ct.RequestAttributesSequence[0].ScheduledProtocolCodeSequence[0]
    context = {item.ValueType: item for item in deep.ProtocolContextSequence}
    assert context["PNAME"].PersonName == patient.name
    assert context["TEXT"].TextValue == patient.patient_id
    acme = ct.private_block(0x0009, "ACME_PHI 1.0")
    assert acme[0x01].value == patient.name and acme[0x02].value == patient.patient_id
    nested = acme[0x03].value[0].private_block(0x0009, "ACME_PHI 1.0")
    assert nested[0x02].value == patient.patient_id
    birth = datetime.strptime(patient.birth_date, "%Y%m%d").strftime("%m/%d/%Y")
    assert ct.ImageComments == f"pt {patient.patient_id} dob {birth}"
    assert patient.phone in ct.PatientComments
    assert ct.StudyDescription == "CT chest for John Doe"
    assert ct.OtherPatientIDsSequence[0].PatientID == patient.other_ids[0]
    assert ct.RequestAttributesSequence[0].RequestedProcedureID.startswith("RP")
    assert ct.RequestAttributesSequence[0].ScheduledProcedureStepID.startswith("SPS")
    assert "John Doe" in ct[0x60000022].value
    [sr] = by_class(written, "1.2.840.10008.5.1.4.1.1.88.11")
    values = {(c.ValueType, c.ConceptNameCodeSequence[0].CodeValue): c
              for c in sr.ContentSequence}
    assert values[("PNAME", "121029")].PersonName == patient.name
    assert values[("TEXT", "121030")].TextValue == patient.patient_id
    assert values[("DATE", "121031")].Date == patient.birth_date
    [gsps] = by_class(written, "1.2.840.10008.5.1.4.1.1.11.1")
    text = gsps.GraphicAnnotationSequence[0].TextObjectSequence[0].UnformattedTextValue
    assert "John Doe" in text


def test_known_safe_private_blocks_match_table_e3_10(written: list[Dataset]) -> None:
    safe = {(e["private_creator"], int(e["group"], 16), int(e["element_offset"], 16))
            for e in json.loads(SAFE_PRIVATE.read_text())}
    seen = set()
    for ds in written:
        for creator, group in (("GEMS_ACQU_01", 0x0019), ("ELSCINT1", 0x00E1)):
            try:
                block = ds.private_block(group, creator)
            except KeyError:
                continue
            for elem in ds.group_dataset(group):
                if elem.tag.element >> 8 == block.block_start >> 8:
                    offset = elem.tag.element & 0xFF
                    assert (creator, group, offset) in safe
                    seen.add(creator)
    assert seen == {"GEMS_ACQU_01", "ELSCINT1"}


def test_burned_in_text_and_overlay_are_really_in_the_pixels(written: list[Dataset]) -> None:
    captures = by_class(written, "1.2.840.10008.5.1.4.1.1.7")
    burned = [ds for ds in captures if ds.BurnedInAnnotation == "YES"]
    assert len(burned) == 1 and len(captures) == 3
    corner = burned[0].pixel_array[:40, :160]
    clean = next(ds for ds in captures if ds.BurnedInAnnotation == "NO").pixel_array[:40, :160]
    assert (corner == 255).sum() > 500 and (clean == 255).sum() == 0
    overlays = [ds for ds in written if 0x60003000 in ds]
    assert len(overlays) == 1
    assert overlays[0].overlay_array(0x6000).sum() > 50


def test_uids_live_under_the_fake_root(written: list[Dataset]) -> None:
    uids = original_uids(written)
    assert len(uids) > 40
    for uid in uids:
        assert uid.startswith(UID_ROOT) and UID(uid).is_valid, uid
    assert "1.2.840.10008.5.1.4.1.1.2" not in uids  # well-known SOP classes are left out


def test_nested_layout_has_the_awkward_files(sample: tuple[Path, list[Path]]) -> None:
    out, paths = sample
    assert (out / NOTES_FILE).exists()
    assert any(p.suffix == "" for p in paths) and any(p.suffix == ".dcm" for p in paths)
    names = [p.name for p in paths]
    assert len(set(names)) < len(names)
    assert len({p.parent for p in paths if p.name == "IMG00001.dcm"}) > 1
    truncated = dcmread(out / TRUNCATED_FILE)  # pydicom does not raise on it
    assert len(truncated.PixelData) < truncated.Rows * truncated.Columns * 2
    assert out / TRUNCATED_FILE not in paths and out / NOTES_FILE not in paths


def test_flat_layout(tmp_path: Path) -> None:
    paths = write_datasets(make_sample_study_set(0)[:3], tmp_path, layout="flat")
    assert [p.name for p in paths] == ["IMG00001.dcm", "IMG00002.dcm", "IMG00003.dcm"]
    assert sorted(tmp_path.iterdir()) == paths
    with pytest.raises(ValueError, match="layout"):
        write_datasets([], tmp_path, layout="tree")


def test_make_ct_instance_is_benchmark_sized() -> None:
    patient = sample_patients(0)[1]
    ds = make_ct_instance(4, UID_ROOT + "1", UID_ROOT + "1.2", patient)
    assert (ds.Rows, ds.Columns, ds.BitsAllocated, len(ds.PixelData)) == (512, 512, 16, 524288)
    assert ds.StudyInstanceUID == UID_ROOT + "1" and ds.SeriesInstanceUID == UID_ROOT + "1.2"
    assert ds.InstanceNumber == 5 and "RequestAttributesSequence" in ds
    pixels = np.frombuffer(ds.PixelData, "<u2")
    assert pixels.max() < 4096 and len(np.unique(pixels)) > 100  # 12-bit, not a flat image
    assert make_ct_instance(4, UID_ROOT + "1", UID_ROOT + "1.2", patient).SOPInstanceUID == \
        ds.SOPInstanceUID


def test_small_set_is_fast() -> None:
    start = time.perf_counter()
    make_sample_study_set(7)
    assert time.perf_counter() - start < 1.0


def test_main_sample(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main_sample(str(tmp_path / "s"), seed=0) == 0
    out = capsys.readouterr().out
    assert "22 DICOM files" in out
    assert not any(s in out for s in planted_phi(sample_patients(0)))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main_sample(str(blocker / "s")) == 1
    assert "cannot write" in capsys.readouterr().err


DCIODVFY = shutil.which("dciodvfy")


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (dicom3tools) is not installed")
@pytest.mark.parametrize("sop_class", [
    "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.88.11", "1.2.840.10008.5.1.4.1.1.7",
    "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.88.59",
    "1.2.840.10008.5.1.4.1.1.11.1", "1.2.840.10008.5.1.4.1.1.2.1"])
def test_dciodvfy_finds_no_errors(sample: tuple[Path, list[Path]], sop_class: str) -> None:
    path = next(p for p in sample[1] if dcmread(p, stop_before_pixels=True).SOPClassUID
                == sop_class)
    result = subprocess.run([str(DCIODVFY), str(path)], capture_output=True, text=True,
                            check=False, timeout=60)
    errors = [line for line in (result.stdout + result.stderr).splitlines() if "Error" in line]
    assert errors == []
