"""pdi.reader: every instance on the medium is found, and every defect is reported, not fatal."""

from __future__ import annotations

import itertools
import os
import shutil
import warnings
from pathlib import Path

import pytest
from pydicom import dcmread

from pdi import MediaOptions, read_media, write_media
from pdi.dicomdir import DirNode, build_dicomdir, write_dicomdir
from tests.pdi import make_study_set

Source = tuple[list[Path], Path]
"""The written input files and the medium written from them (the ``source`` fixture)."""


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    base = tmp_path_factory.mktemp("pdi_reader")
    files = make_study_set(base / "in")
    write_media(files, base / "media")
    return files, base / "media"


@pytest.fixture
def media(source: Source, tmp_path: Path) -> Path:
    """A private copy of the written medium, free to damage."""
    copy = tmp_path / "media"
    shutil.copytree(source[1], copy)
    return copy


def _expected(files: list[Path]) -> dict[str, tuple[str, str, str, str]]:
    out = {}
    for path in files:
        ds = dcmread(path, stop_before_pixels=True)
        out[str(ds.SOPInstanceUID)] = (str(ds.SOPClassUID), str(ds.StudyInstanceUID),
                                       str(ds.SeriesInstanceUID), str(ds.PatientID))
    return out


def test_round_trip_finds_every_instance(source: Source) -> None:
    files, media = source
    contents = read_media(media)
    assert contents.via == "DICOMDIR"
    assert contents.problems == []
    assert contents.root == media
    got = {i.sop_instance_uid: (i.sop_class_uid, i.study_instance_uid, i.series_instance_uid,
                                i.patient_id) for i in contents.instances}
    assert got == _expected(files)
    for instance in contents.instances:
        assert instance.path.is_file()
        assert instance.path.relative_to(media).parts[0] == "DICOM"
        assert instance.transfer_syntax == "1.2.840.10008.1.2.1"


def test_missing_dicomdir_falls_back_to_a_folder_scan(source: Source, media: Path) -> None:
    (media / "DICOMDIR").unlink()
    contents = read_media(media)
    assert contents.via == "folder scan"
    assert any("DICOMDIR missing" in p for p in contents.problems)
    assert {i.sop_instance_uid for i in contents.instances} == set(_expected(source[0]))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "not a DICOMDIR"])
def test_damaged_dicomdir_falls_back_to_a_folder_scan(source: Source, media: Path,
                                                       damage: str) -> None:
    dicomdir = media / "DICOMDIR"
    if damage == "truncated":
        dicomdir.write_bytes(dicomdir.read_bytes()[:700])
    elif damage == "garbage":
        dicomdir.write_bytes(bytes(range(256)) * 20)
    else:
        shutil.copy(next((media / "DICOM").rglob("IM000001")), dicomdir)
    contents = read_media(media)
    assert contents.via == "folder scan"
    assert any("DICOMDIR" in p and "scanned the folder" in p for p in contents.problems)
    assert {i.sop_instance_uid for i in contents.instances} == set(_expected(source[0]))


def test_offset_pointing_nowhere_is_damage(source: Source, media: Path) -> None:
    ds = dcmread(media / "DICOMDIR")
    ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity += 2  # same length, wrong place
    ds.save_as(media / "DICOMDIR", enforce_file_format=True)
    contents = read_media(media)
    assert contents.via == "folder scan"
    assert any("offsets point at no record" in p for p in contents.problems)
    assert len(contents.instances) == len(source[0])


def test_missing_referenced_file_is_reported_and_the_rest_returned(source: Source,
                                                                   media: Path) -> None:
    victim = media / "DICOM" / "PT000001" / "ST000001" / "SE000001" / "IM000002"
    victim.unlink()
    contents = read_media(media)
    assert contents.via == "DICOMDIR"
    assert contents.problems == [
        "referenced file DICOM/PT000001/ST000001/SE000001/IM000002 missing"]
    assert len(contents.instances) == len(source[0]) - 1


def test_unreadable_referenced_file_is_reported(source: Source, media: Path) -> None:
    victim = media / "DICOM" / "PT000002" / "ST000001" / "SE000001" / "IM000001"
    victim.write_bytes(victim.read_bytes()[:-64])
    contents = read_media(media)
    assert len(contents.problems) == 1
    assert "DICOM/PT000002/ST000001/SE000001/IM000001 unreadable" in contents.problems[0]
    assert "truncated" in contents.problems[0]
    assert len(contents.instances) == len(source[0]) - 1


def test_unreferenced_dicom_file_is_reported_and_imported(source: Source, media: Path) -> None:
    extra = make_study_set(media.parent / "extra", patients=1, studies=1, series=1,
                           instances=1)[0]
    ds = dcmread(extra)
    ds.SOPInstanceUID = "2.25.1234567"
    ds.save_as(media / "DICOM" / "EXTRA001", enforce_file_format=True)
    (media / "DICOM" / "NOTES").write_text("not DICOM")
    contents = read_media(media)
    assert contents.via == "DICOMDIR"
    assert contents.problems == [
        "file DICOM/EXTRA001 is not referenced by the DICOMDIR; imported anyway"]
    assert len(contents.instances) == len(source[0]) + 1


def test_iso9660_names_without_rock_ridge_are_resolved(source: Source, media: Path) -> None:
    """Discs mounted without Rock Ridge may show lower-case names and ";1" version suffixes."""
    for folder, dirs, files in os.walk(media, topdown=False):
        for name in files:
            suffix = ";1" if name != "DICOMDIR" else ""
            os.rename(Path(folder) / name, Path(folder) / (name.lower() + suffix))
        for name in dirs:
            os.rename(Path(folder) / name, Path(folder) / name.lower())
    contents = read_media(media)
    assert contents.via == "DICOMDIR", contents.problems
    assert contents.problems == []
    assert len(contents.instances) == len(source[0])


def test_file_id_escaping_the_medium_is_refused(tmp_path: Path, source: Source) -> None:
    media = tmp_path / "evil"
    write_media(source[0][:1], media)
    records = list(dcmread(media / "DICOMDIR").DirectoryRecordSequence)
    (tmp_path / "SECRET").write_bytes((media / "DICOM").joinpath(
        *records[-1].ReferencedFileID[1:]).read_bytes())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom rightly warns that ".." is not a CS value
        records[-1].ReferencedFileID = ["..", "SECRET"]
    chain = [DirNode(r) for r in records]
    for parent, child in itertools.pairwise(chain):
        parent.children.append(child)
    ds = build_dicomdir(chain[:1], file_set_uid="2.25.99", file_set_id="X",
                        implementation="TEST")
    write_dicomdir(media / "DICOMDIR", ds)
    contents = read_media(media)
    assert any("unsafe File ID '../SECRET'" in p for p in contents.problems)
    assert all(tmp_path / "SECRET" != i.path for i in contents.instances)


def test_multi_volume_media_are_read_volume_by_volume(source: Source, tmp_path: Path) -> None:
    files = source[0]
    results = write_media(files, tmp_path / "out", MediaOptions(volume_bytes=64 * 1024))
    assert len(results) > 1
    contents = read_media(tmp_path / "out")
    assert contents.via == "DICOMDIR"
    assert contents.problems == []
    assert {i.sop_instance_uid for i in contents.instances} == set(_expected(files))
    volumes = {i.path.relative_to(tmp_path / "out").parts[0] for i in contents.instances}
    assert volumes == {r.path.name for r in results}


def test_one_damaged_volume_is_scanned_the_others_read(source: Source, tmp_path: Path) -> None:
    results = write_media(source[0], tmp_path / "out", MediaOptions(volume_bytes=64 * 1024))
    (results[1].path / "DICOMDIR").unlink()
    contents = read_media(tmp_path / "out")
    assert contents.via == "folder scan"
    assert contents.problems == ["DICOMDIR missing in VOL002; scanned the folder instead"]
    assert len(contents.instances) == len(source[0])


def test_not_a_folder(tmp_path: Path) -> None:
    contents = read_media(tmp_path / "nowhere")
    assert contents.instances == [] and contents.problems
    empty = tmp_path / "empty"
    empty.mkdir()
    contents = read_media(empty)
    assert contents.via == "folder scan"
    assert any("no DICOM files" in p for p in contents.problems)
