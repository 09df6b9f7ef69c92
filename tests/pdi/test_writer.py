"""pdi.writer: conformant, complete, PHI-free, all-or-nothing media (checked with dcmtk too)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.fileset import FileSet
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    MediaStorageDirectoryStorage,
)

import pdi.writer
from pdi import MediaError, MediaOptions, VolumeResult, write_media
from pdi.fileids import is_conformant_file_id, numbered_name, sequential_names
from pdi.plan import VOLUME_OVERHEAD
from pdi.profiles import STD_GEN_CD, STD_GEN_USB_JPEG, media_profile
from pdi.records import FALLBACK_DATE, FALLBACK_TIME, digest8
from tests.pdi import PLANTED, ct, make_study_set, save, study_datasets

DCMDUMP = shutil.which("dcmdump")
DCIODVFY = shutil.which("dciodvfy")
DCMMKDIR = shutil.which("dcmmkdir")
needs = pytest.mark.skipif

Written = tuple[list[Path], Path, list[VolumeResult]]
"""The input files, the medium and the per-volume results (the ``written`` fixture)."""


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fileset(root: Path) -> FileSet:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing referenced file is a warning in pydicom
        return FileSet(root / "DICOMDIR")


def _media_files(root: Path) -> set[Path]:
    return {p for p in (root / "DICOM").rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Written]:
    base = tmp_path_factory.mktemp("pdi_writer")
    files = make_study_set(base / "in")
    results = write_media(files, base / "media", MediaOptions(institution="Research Unit"))
    yield files, base / "media", results


# --- layout and completeness -------------------------------------------------------------------

def test_one_volume_goes_into_out_itself(written: Written) -> None:
    files, media, results = written
    assert [r.path for r in results] == [media]
    assert sorted(os.listdir(media)) == ["DICOM", "DICOMDIR", "INDEX.HTM", "README.TXT"]
    assert results[0].instances == len(files) == 36
    assert results[0].profile == STD_GEN_CD
    assert results[0].bytes == sum(p.stat().st_size for p in media.rglob("*") if p.is_file())
    assert len(results[0].studies) == 4


def test_every_instance_is_referenced_and_copied_unchanged(written: Written) -> None:
    files, media, _ = written
    fs = _fileset(media)
    by_uid = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in files}
    assert {i.SOPInstanceUID for i in fs} == set(by_uid)
    referenced = {Path(i.path) for i in fs}
    assert referenced == _media_files(media)  # nothing on the medium that is not referenced
    for instance in fs:
        assert _sha(Path(instance.path)) == _sha(by_uid[instance.SOPInstanceUID])


def test_file_ids_conform_to_ps310(written: Written) -> None:
    _, media, _ = written
    for path in _media_files(media):
        components = path.relative_to(media).parts
        assert components[0] == "DICOM"
        assert is_conformant_file_id(list(components)), components
        assert "." not in path.name
    for record in dcmread(media / "DICOMDIR").DirectoryRecordSequence:
        if "ReferencedFileID" in record:
            assert is_conformant_file_id(list(record.ReferencedFileID))
            assert (media.joinpath(*record.ReferencedFileID)).is_file()


def test_dicomdir_header_and_record_types(written: Written) -> None:
    _, media, results = written
    ds = dcmread(media / "DICOMDIR")
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.file_meta.MediaStorageSOPClassUID == MediaStorageDirectoryStorage
    assert ds.file_meta.MediaStorageSOPInstanceUID == results[0].file_set_uid
    assert ds.FileSetID == "DE_IDENTIFIED"
    assert "FileSetDescriptorFileID" not in ds
    assert ds.FileSetConsistencyFlag == 0
    types = [r.DirectoryRecordType for r in ds.DirectoryRecordSequence]
    assert types.count("PATIENT") == 2 and types.count("STUDY") == 4
    assert types.count("IMAGE") == 24
    for kind in ("SR DOCUMENT", "KEY OBJECT DOC", "PRESENTATION"):
        assert types.count(kind) == 4
    ids = [r.PatientID for r in ds.DirectoryRecordSequence if r.DirectoryRecordType == "PATIENT"]
    assert len(set(ids)) == len(ids)


def test_document_records_carry_only_title_modifiers(written: Written) -> None:
    _, media, _ = written
    records = dcmread(media / "DICOMDIR").DirectoryRecordSequence
    kos = next(r for r in records if r.DirectoryRecordType == "KEY OBJECT DOC")
    assert [i.RelationshipType for i in kos.ContentSequence] == ["HAS CONCEPT MOD"]
    assert kos.ContentSequence[0].ConceptCodeSequence[0].CodeValue == "TCE011"
    sr = next(r for r in records if r.DirectoryRecordType == "SR DOCUMENT")
    assert [i.RelationshipType for i in sr.ContentSequence] == ["HAS CONCEPT MOD"]


def test_no_planted_phi_in_dicomdir_readme_or_index(written: Written) -> None:
    _, media, _ = written
    for name in ("DICOMDIR", "README.TXT", "INDEX.HTM"):
        data = (media / name).read_bytes()
        for value in PLANTED:
            assert value.encode() not in data, (name, value)
            assert value.split("^")[0].encode() not in data, (name, value)
    for name in ("README.TXT", "INDEX.HTM"):
        text = (media / name).read_text("ascii")
        assert "PSEUDO^PATIENT" not in text  # names stay out of the human-readable files
    assert "2.25." not in (media / "README.TXT").read_text("ascii")


def test_readme_describes_the_medium(written: Written) -> None:
    _, media, _ = written
    raw = (media / "README.TXT").read_bytes()
    raw.decode("ascii")
    assert b"\r\n" in raw and raw.count(b"\n") == raw.count(b"\r\n")
    text = raw.decode("ascii")
    for expected in ("DE-IDENTIFIED", "Patients      2", "Studies       4", "Series        20",
                     "Instances     36", "CT, KO, PR, SR", "STD-GEN-CD", "tce-appliance 0.1.0",
                     "Research Unit", "DICOM/PTnnnnnn/STnnnnnn/SEnnnnnn", "INDEX.HTM"):
        assert expected in text, expected
    assert max(len(line) for line in text.splitlines()) <= 80


def test_index_is_wellformed_and_links_every_file(written: Written) -> None:
    _, media, _ = written
    tree = ET.parse(media / "INDEX.HTM")
    ns = {"h": "http://www.w3.org/1999/xhtml"}
    links = [a.get("href") for a in tree.getroot().iterfind(".//h:a", ns)]
    files = [link for link in links if link and link.startswith("DICOM/")]
    assert {media / f for f in files} == _media_files(media)
    assert "README.TXT" in links
    text = (media / "INDEX.HTM").read_text("ascii")
    assert "PSN0001" in text and "CT CHEST" in text  # DICOMDIR record values only


@needs(DCMDUMP is None, reason="dcmdump (dcmtk) not installed")
def test_dcmdump_reads_the_dicomdir(written: Written) -> None:
    assert DCMDUMP is not None  # the skipif above ran the test only if it is
    _, media, _ = written
    run = subprocess.run([DCMDUMP, str(media / "DICOMDIR")], capture_output=True, text=True,
                         check=False)
    assert run.returncode == 0, run.stderr
    assert not [line for line in run.stderr.splitlines() if line[:2] in ("E:", "W:", "F:")]
    assert run.stdout.count('"Directory Record"') == 2 + 4 + 20 + 36


@needs(DCIODVFY is None, reason="dciodvfy (dicom3tools) not installed")
def test_dciodvfy_reports_no_errors(written: Written) -> None:
    assert DCIODVFY is not None  # the skipif above ran the test only if it is
    _, media, _ = written
    run = subprocess.run([DCIODVFY, str(media / "DICOMDIR")], capture_output=True, text=True,
                         check=False)
    output = (run.stdout + run.stderr).splitlines()
    assert "BasicDirectory" in output
    assert not [line for line in output if line.startswith("Error")], output


@needs(DCMMKDIR is None, reason="dcmmkdir (dcmtk) not installed")
def test_dcmtk_accepts_the_dicomdir_as_its_own(written: Written, tmp_path: Path) -> None:
    """dcmmkdir +U loads our DICOMDIR, checks every file against the STD-GEN-CD profile and
    looks each one up among the existing records; a bad offset prints W: lines, and a record
    that does not match its file makes dcmtk add new records. (Do not add -w: in dcmtk 3.6.7
    "+U -w" deletes the DICOMDIR instead of checking it.)"""
    assert DCMMKDIR is not None  # the skipif above ran the test only if it is
    _, media, _ = written
    copy = tmp_path / "copy"
    shutil.copytree(media, copy)
    before = len(dcmread(copy / "DICOMDIR").DirectoryRecordSequence)
    run = subprocess.run([DCMMKDIR, "+U", "-nb", "-Pgp", "+r", "DICOM"], cwd=copy,
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert not [line for line in run.stderr.splitlines() if line[:2] in ("E:", "W:", "F:")]
    assert len(dcmread(copy / "DICOMDIR").DirectoryRecordSequence) == before


# --- fallbacks for Type 1 keys emptied by de-identification ----------------------------------

def test_empty_type1_keys_get_fallbacks_in_records_only(tmp_path: Path) -> None:
    paths = []
    for n, ds in enumerate(study_datasets(1, 1, series=1, instances=2)):
        ds.PatientID = ""
        ds.StudyDate = ""
        del ds.StudyTime
        ds.StudyID = ""
        ds.SeriesNumber = None
        ds.InstanceNumber = ""
        if "ContentDate" in ds:
            ds.ContentDate = ""
        paths.append(save(ds, tmp_path / "in" / f"f{n}.dcm"))
    results = write_media(paths, tmp_path / "out")
    media = tmp_path / "out"
    ds = dcmread(media / "DICOMDIR")
    by_type: dict[str, list[Dataset]] = {}
    for record in ds.DirectoryRecordSequence:
        by_type.setdefault(record.DirectoryRecordType, []).append(record)
    study = by_type["STUDY"][0]
    assert (study.StudyDate, study.StudyTime) == (FALLBACK_DATE, FALLBACK_TIME)
    assert study.StudyID == digest8(str(study.StudyInstanceUID))
    assert by_type["PATIENT"][0].PatientID == "NOID" + digest8(str(study.StudyInstanceUID))
    assert sorted(int(r.SeriesNumber) for r in by_type["SERIES"]) == [1, 2, 3, 4]
    assert sorted(int(r.InstanceNumber) for r in by_type["IMAGE"]) == [1, 2]
    assert by_type["SR DOCUMENT"][0].ContentDate == FALLBACK_DATE
    assert any("placeholder" in note and "StudyDate" in note for note in results[0].notes)
    assert "placeholder" in (media / "README.TXT").read_text("ascii")
    for instance in _fileset(media):  # the files themselves keep their empty values
        on_media = dcmread(instance.path, stop_before_pixels=True)
        assert on_media.StudyID == "" and on_media.PatientID == ""
    if DCIODVFY:
        run = subprocess.run([DCIODVFY, str(media / "DICOMDIR")], capture_output=True,
                             text=True, check=False)
        assert not [ln for ln in (run.stdout + run.stderr).splitlines() if ln.startswith("Error")]


# --- volumes ---------------------------------------------------------------------------------

def _volume_uids(volume: Path) -> dict[str, set[str]]:
    """Study UID -> SOP Instance UIDs on one volume, read back through pydicom's FileSet."""
    out: dict[str, set[str]] = {}
    for instance in _fileset(volume):
        ds = dcmread(instance.path, stop_before_pixels=True)
        out.setdefault(str(ds.StudyInstanceUID), set()).add(str(ds.SOPInstanceUID))
    return out


def test_small_volumes_split_between_studies(tmp_path: Path) -> None:
    files = make_study_set(tmp_path / "in")
    size = 64 * 1024  # room for one study (9 small instances) per volume
    results = write_media(files, tmp_path / "out", MediaOptions(volume_bytes=size))
    assert len(results) == 4
    assert sorted(os.listdir(tmp_path / "out")) == ["VOL001", "VOL002", "VOL003", "VOL004"]
    seen: dict[str, int] = {}
    for number, result in enumerate(results, 1):
        assert result.path == tmp_path / "out" / f"VOL{number:03d}"
        assert (result.path / "README.TXT").read_text("ascii").count(f"{number} of 4") == 1
        studies = _volume_uids(result.path)
        for study in studies:
            assert study not in seen, "a study that fits on one volume was split"
            seen[study] = number
        assert result.bytes <= size
        assert result.instances == sum(len(v) for v in studies.values())
    assert len(seen) == 4 and sum(r.instances for r in results) == len(files)
    uids = {r.file_set_uid for r in results}
    assert len(uids) == 4  # independent File-sets


def test_study_larger_than_a_volume_is_split_by_series(tmp_path: Path) -> None:
    big = study_datasets(1, 1, series=2, instances=3, size=64)  # 6 × ~10 KB images
    small = study_datasets(2, 1, series=1, instances=1)
    files = [save(ds, tmp_path / "in" / f"f{n:02d}.dcm") for n, ds in enumerate(big + small)]
    volume = VOLUME_OVERHEAD + 40 * 1024
    results = write_media(files, tmp_path / "out", MediaOptions(volume_bytes=volume))
    assert len(results) >= 2
    big_study = str(big[0].StudyInstanceUID)
    holding = [r for r in results if big_study in r.studies]
    assert len(holding) >= 2
    for result in holding:
        assert any("split by series" in note for note in result.notes), result.notes
        assert "split by series" in (result.path / "README.TXT").read_text("ascii")
    series_home: dict[str, Path] = {}
    for result in results:
        for instance in _fileset(result.path):
            series = str(dcmread(instance.path, stop_before_pixels=True).SeriesInstanceUID)
            assert series_home.setdefault(series, result.path) == result.path


def test_series_larger_than_a_volume_is_split_by_instances(tmp_path: Path) -> None:
    images = [ct(1, 1, 1, n, size=64) for n in range(1, 7)]  # one series, 6 × ~10 KB
    files = [save(ds, tmp_path / "in" / f"f{n}.dcm") for n, ds in enumerate(images)]
    results = write_media(files, tmp_path / "out",
                          MediaOptions(volume_bytes=VOLUME_OVERHEAD + 40 * 1024))
    assert len(results) >= 2
    numbers = []
    for result in results:
        assert any("series and instances" in note for note in result.notes), result.notes
        records = dcmread(result.path / "DICOMDIR").DirectoryRecordSequence
        numbers += [int(r.InstanceNumber) for r in records if r.DirectoryRecordType == "IMAGE"]
    assert sorted(numbers) == [1, 2, 3, 4, 5, 6]  # the files' own numbers, not per volume


def test_a_file_larger_than_a_volume_gets_a_volume_of_its_own(tmp_path: Path) -> None:
    files = [save(ct(1, 1, 1, 1, size=200), tmp_path / "in" / "big.dcm"),
             save(ct(1, 1, 1, 2), tmp_path / "in" / "small.dcm")]
    results = write_media(files, tmp_path / "out", MediaOptions(volume_bytes=64 * 1024))
    assert [r.instances for r in results] == [1, 1]
    assert any("larger than the requested" in note for note in results[0].notes)
    assert "larger than the requested" in (results[0].path / "README.TXT").read_text("ascii")
    assert not any("larger than the requested" in note for note in results[1].notes)
    assert results[0].bytes > 64 * 1024 >= results[1].bytes


# --- atomicity ---------------------------------------------------------------------------------

def _no_staging_left(parent: Path) -> bool:
    return not [n for n in os.listdir(parent) if n.startswith(".tce-pdi-")]


def test_truncated_input_fails_before_anything_is_written(tmp_path: Path) -> None:
    files = make_study_set(tmp_path / "in", patients=1, studies=1)
    data = files[0].read_bytes()
    files[0].write_bytes(data[: len(data) - 100])  # cut inside Pixel Data
    with pytest.raises(MediaError, match=r"truncated.*Nothing was written"):
        write_media(files, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert _no_staging_left(tmp_path)


def test_non_dicom_input_is_refused(tmp_path: Path) -> None:
    files = make_study_set(tmp_path / "in", patients=1, studies=1)
    notes = tmp_path / "in" / "notes.txt"
    notes.write_text("not DICOM")
    with pytest.raises(MediaError, match="not a DICOM Part 10 file"):
        write_media([*files, notes], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_failure_midway_leaves_no_partial_output(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    files = make_study_set(tmp_path / "in", patients=1, studies=1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "OLD.TXT").write_text("previous medium")
    real = pdi.writer._copy_fsync
    calls = []

    def failing_copy(src: Path, dst: Path) -> None:
        calls.append(src)
        if len(calls) == 5:
            raise OSError("disk full")
        real(src, dst)

    monkeypatch.setattr(pdi.writer, "_copy_fsync", failing_copy)
    with pytest.raises(OSError, match="disk full"):
        write_media(files, out, overwrite=True)
    assert os.listdir(out) == ["OLD.TXT"]  # the previous content is untouched
    assert _no_staging_left(tmp_path)


def test_refuses_a_non_empty_folder_unless_told_to_overwrite(tmp_path: Path) -> None:
    files = make_study_set(tmp_path / "in", patients=1, studies=1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "KEEP.TXT").write_text("someone's files")
    with pytest.raises(MediaError, match="not empty"):
        write_media(files, out)
    assert os.listdir(out) == ["KEEP.TXT"]
    write_media(files, out, overwrite=True)
    assert sorted(os.listdir(out)) == ["DICOM", "DICOMDIR", "INDEX.HTM", "README.TXT"]
    assert _no_staging_left(tmp_path)


def test_an_existing_empty_folder_is_used(tmp_path: Path) -> None:
    files = make_study_set(tmp_path / "in", patients=1, studies=1)
    (tmp_path / "out").mkdir()
    results = write_media(files, tmp_path / "out", MediaOptions(web=False))
    assert results[0].path == tmp_path / "out"
    assert sorted(os.listdir(tmp_path / "out")) == ["DICOM", "DICOMDIR", "README.TXT"]


def test_no_files_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="empty"):
        write_media([], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_duplicate_instances_are_written_once(tmp_path: Path) -> None:
    files = make_study_set(tmp_path / "in", patients=1, studies=1)
    twin = tmp_path / "twin.dcm"
    shutil.copy(files[0], twin)
    results = write_media([*files, twin], tmp_path / "out")
    assert results[0].instances == len(files)
    assert any("skipped" in note for note in results[0].notes)


# --- profiles and options ----------------------------------------------------------------------

def test_jpeg_files_make_a_usb_jpeg_volume(tmp_path: Path) -> None:
    ds = ct(1, 1, 1, 1)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = encapsulate([b"\xff\xd8" + b"\x00" * 30 + b"\xff\xd9"])
    jpeg = save(ds, tmp_path / "in" / "jpeg.dcm", JPEGBaseline8Bit)
    plain = save(ct(1, 1, 1, 2), tmp_path / "in" / "plain.dcm")
    results = write_media([jpeg, plain], tmp_path / "out")
    assert results[0].profile == STD_GEN_USB_JPEG
    assert "STD-GEN-USB-JPEG" in (tmp_path / "out" / "README.TXT").read_text("ascii")


def test_profile_choice() -> None:
    assert media_profile([ExplicitVRLittleEndian]) == STD_GEN_CD
    assert media_profile([ExplicitVRLittleEndian, JPEGBaseline8Bit]) == STD_GEN_USB_JPEG
    assert media_profile(["1.2.840.10008.1.2.4.90"]) == "STD-GEN-USB-J2K"
    assert media_profile([JPEGBaseline8Bit, "1.2.840.10008.1.2.4.90"]).startswith("none")
    assert media_profile([ImplicitVRLittleEndian]).startswith("none")


def test_label_must_be_a_valid_file_set_id() -> None:
    with pytest.raises(ValueError, match="File-set ID"):
        MediaOptions(label="DE-IDENTIFIED")
    with pytest.raises(ValueError, match="File-set ID"):
        MediaOptions(label="A" * 17)
    assert MediaOptions(label="TEACHING FILE 01").label == "TEACHING FILE 01"


def test_file_id_rules() -> None:
    assert is_conformant_file_id(["DICOM", "PT000001", "ST000001", "SE000001", "IM000001"])
    assert is_conformant_file_id("DICOM/A_1")
    assert not is_conformant_file_id(["DICOM", "IM1.DCM"])
    assert not is_conformant_file_id(["dicom"])
    assert not is_conformant_file_id(["TOOLONGXX"])
    assert not is_conformant_file_id(["A"] * 9)
    assert not is_conformant_file_id([])
    names = sequential_names("SE")
    assert [next(names) for _ in range(2)] == ["SE000001", "SE000002"]
    assert numbered_name("IM", 999999) == "IM999999"
    with pytest.raises(ValueError):
        numbered_name("IM", 1_000_000)
    with pytest.raises(ValueError):
        numbered_name("im", 1)


# --- the synthetic hospital sample (several character sets, enhanced CT, SC) -------------------

def test_synthetic_sample_writes_and_its_truncated_file_is_caught(tmp_path: Path) -> None:
    synthetic = pytest.importorskip("appliance.synthetic")
    paths = synthetic.write_sample(tmp_path / "in")
    with pytest.raises(MediaError, match="truncated"):
        write_media([*paths, tmp_path / "in" / synthetic.TRUNCATED_FILE], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    results = write_media(paths, tmp_path / "out")
    assert len(_fileset(tmp_path / "out")) == len(paths) == results[0].instances
    if DCIODVFY:
        run = subprocess.run([DCIODVFY, str(tmp_path / "out" / "DICOMDIR")],
                             capture_output=True, text=True, check=False)
        assert not [ln for ln in (run.stdout + run.stderr).splitlines() if ln.startswith("Error")]


def test_mount_point_is_filled_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A USB stick's mount point cannot be renamed: staging goes inside it, and file-system
    housekeeping folders such as lost+found neither count as content nor get deleted."""
    files = make_study_set(tmp_path / "in", patients=1, studies=1)
    stick = tmp_path / "stick"
    (stick / "lost+found").mkdir(parents=True)
    real_ismount = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: Path(p) == stick or real_ismount(p))
    write_media(files, stick)
    assert sorted(os.listdir(stick)) == ["DICOM", "DICOMDIR", "INDEX.HTM", "README.TXT",
                                         "lost+found"]
    with pytest.raises(MediaError, match="not empty"):
        write_media(files, stick)
    results = write_media(files[:3], stick, overwrite=True)
    assert results[0].instances == 3 and len(_fileset(stick)) == 3
    assert len(_media_files(stick)) == 3
    assert (stick / "lost+found").is_dir()
    assert not [n for n in os.listdir(stick) if n.startswith(".tce-pdi-")]


def test_out_must_be_a_folder(tmp_path: Path) -> None:
    files = make_study_set(tmp_path / "in", patients=1, studies=1)
    (tmp_path / "out").write_text("a file")
    with pytest.raises(MediaError, match="not a folder"):
        write_media(files, tmp_path / "out")
