"""``--originals``: the exact leak scan, on media written by real stage-1 nodes.

Two nodes run as ``tce stage1 serve`` subprocesses and receive the synthetic sample from dcmtk's
``storescu``; each writes PDI media (DICOMDIR). The first runs the built-in stage-1 policy,
whose PatientName pseudonym is derived from Patient ID, so the sealed "PatientName original" is
the ID itself. The second runs a variant that seals the name, so person-name component orders
can be tested. Leaks are then seeded where no tag check can see them (a kept private OB value,
Pixel Data, UTF-16, another name order) and into the DICOMDIR.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
import yaml
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from appliance.cli import main
from appliance.synthetic import make_sample_study_set, sample_patients, write_datasets
from tests.appliance.verify.conftest import Result, find, rel
from tests.stage1_modality.harness import NodeDir, NodeFactory, storescu

DOE = sample_patients(0)[0]
DOE_ACCESSION = f"ACC{DOE.patient_id[2:]}1"  # appliance.synthetic: the first study's number


@pytest.fixture(autouse=True)
def _sqlite_from_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TCE_DATABASE_URL", raising=False)


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeFactory]:
    factory = NodeFactory(lambda name: tmp_path_factory.mktemp(name))
    try:
        yield factory
    finally:
        problems = factory.close()
        assert not problems, "\n".join(problems)


def _media(nodes: NodeFactory, node: NodeDir, sample: Path) -> Path:
    """Send the sample to the node, wait for it, write media, stop the node (SIGTERM)."""
    running = nodes.start(node)
    sent = storescu(running.port, [sample], "+sd", "+r")
    assert sent.returncode == 0, sent.stderr
    node.wait_processed(22)
    media = node.root / "media-out"
    written = node.tce("stage1", "media", "write", str(media), "--all")
    assert written.returncode == 0, written.stderr
    assert running.stop() == 0
    return media


@pytest.fixture(scope="module")
def flat_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("flat")
    write_datasets(make_sample_study_set(0), folder, layout="flat")
    return folder


@pytest.fixture(scope="module")
def stage1(nodes: NodeFactory, flat_sample: Path) -> tuple[NodeDir, Path]:
    node = nodes.folder("builtin", quiet_period_seconds=3600)
    return node, _media(nodes, node, flat_sample)


@pytest.fixture(scope="module")
def names_sealed(nodes: NodeFactory, flat_sample: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> tuple[NodeDir, Path, Path]:
    """A stage-1 policy whose PatientName pseudonym is keyed on the name, so the name is
    what gets sealed."""
    text = Path("policies/builtin/stage1-pseudonymize.yaml").read_text(encoding="utf-8")
    document = yaml.safe_load(text)
    document["id"] = "stage1-names-sealed"
    for override in document["overrides"]:
        override.pop("source", None)
    policy = tmp_path_factory.mktemp("policy") / "stage1-names-sealed.yaml"
    policy.write_text(yaml.safe_dump(document), encoding="utf-8")
    node = nodes.folder("names", quiet_period_seconds=3600, policy=str(policy))
    return node, _media(nodes, node, flat_sample), policy


@pytest.fixture
def media_copy(tmp_path: Path) -> Callable[[Path], Path]:
    def copy(media: Path) -> Path:
        target = tmp_path / "media"
        shutil.copytree(media, target)
        return target

    return copy


def _private_element(ds: Dataset) -> int | None:
    """A private data element (not a creator) the stage-1 policy kept as known safe."""
    return next((int(e.tag) for e in ds if e.tag.is_private and int(e.tag) & 0xFF00), None)


def _leaks(result: Result) -> list[dict[str, str]]:
    return result.errors("leak")


def _no_value_shown(result: Result, *values: str) -> None:
    text = result.summary + str(result.report)
    for value in values:
        assert value not in text


def test_clean_stage1_media_passes_the_exact_scan(stage1: tuple[NodeDir, Path],
                                                  verify: Callable[..., Result]) -> None:
    node, media = stage1
    result = verify(media, "--originals", config=node.config)
    assert result.code == 0, result.summary
    scan = result.report["originals"]
    # 4 Patient IDs, the 4 names their pseudonyms replaced, 5 accession numbers, 5 study IDs;
    # every byte of 22 instances, the DICOMDIR, README.TXT and INDEX.HTM
    assert (scan["originals"], scan["files"], scan["leaks"]) == (18, 25, 0)
    assert result.report["files"] == {"dicom": 22, "dicomdir": 1, "other": 2}
    assert "18 sealed originals" in result.summary and ": 0 found" in result.summary


def test_operator_runs_it_as_a_command(stage1: tuple[NodeDir, Path]) -> None:
    node, media = stage1
    done = node.tce("verify", str(media), "--originals")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "result: PASSED" in done.stdout


def test_original_in_a_kept_private_ob_value(stage1: tuple[NodeDir, Path],
                                             media_copy: Callable[[Path], Path],
                                             verify: Callable[..., Result]) -> None:
    node, media = stage1
    out = media_copy(media)
    path = find(out, lambda ds: "PSN" in str(ds.get("PatientID", ""))
                and _private_element(ds) is not None)
    ds = pydicom.dcmread(path)
    tag = _private_element(ds)
    assert tag is not None
    ds[tag] = DataElement(tag, "OB", b"\x01\x02" + DOE.patient_id.encode() + b"\x00")
    ds.save_as(path, enforce_file_format=True)
    assert verify(out).code == 0  # the tag checks cannot read an opaque kept private value
    result = verify(out, "--originals", config=node.config)
    assert result.code == 1
    (leak,) = _leaks(result)
    assert (leak["file"], leak["path"]) == (rel(out, path),
                                            f"({tag >> 16:04X},{tag & 0xFFFF:04X})")
    assert "PatientID" in leak["message"] and "as written, ASCII" in leak["message"]
    assert "pseudonym PS" in leak["message"] and "ref " in leak["message"]
    _no_value_shown(result, DOE.patient_id)


def test_original_in_utf16_inside_pixel_data(stage1: tuple[NodeDir, Path],
                                             media_copy: Callable[[Path], Path],
                                             verify: Callable[..., Result]) -> None:
    node, media = stage1
    out = media_copy(media)
    path = find(out, lambda ds: ds.Modality == "CT" and "PSN" in str(ds.PatientID))
    ds = pydicom.dcmread(path)
    planted = DOE_ACCESSION.encode("utf-16-le")
    pixels = bytearray(ds.PixelData)
    pixels[100:100 + len(planted)] = planted
    ds.PixelData = bytes(pixels)
    ds.save_as(path, enforce_file_format=True)
    result = verify(out, "--originals", config=node.config)
    assert result.code == 1
    (leak,) = _leaks(result)
    assert (leak["file"], leak["path"]) == (rel(out, path), "PixelData")
    assert "AccessionNumber original found (as written, UTF-16)" in leak["message"]
    _no_value_shown(result, DOE_ACCESSION)


def test_original_in_the_dicomdir(stage1: tuple[NodeDir, Path],
                                  media_copy: Callable[[Path], Path],
                                  verify: Callable[..., Result]) -> None:
    node, media = stage1
    out = media_copy(media)
    dicomdir = pydicom.dcmread(out / "DICOMDIR")
    index, record = next((i, r) for i, r in enumerate(dicomdir.DirectoryRecordSequence)
                         if r.DirectoryRecordType == "PATIENT" and r.PatientID.startswith("PSN"))
    pseudonym = str(record.PatientID)
    data = (out / "DICOMDIR").read_bytes()
    assert data.count(pseudonym.encode()) == 1
    # the same length, so that no record offset moves: a leak, not a broken DICOMDIR
    (out / "DICOMDIR").write_bytes(data.replace(pseudonym.encode(),
                                                DOE.patient_id.ljust(len(pseudonym)).encode()))
    without = verify(out)
    assert without.code == 1
    (entry,) = without.errors()
    assert (entry["check"], entry["file"], entry["path"]) == (
        "dicomdir", "DICOMDIR", f"DirectoryRecordSequence[{index}].PatientID")
    result = verify(out, "--originals", config=node.config)
    (leak,) = _leaks(result)
    assert (leak["file"], leak["path"]) == ("DICOMDIR",
                                            f"DirectoryRecordSequence[{index}].PatientID")
    _no_value_shown(result, DOE.patient_id)


def _plant_name_in_another_order(out: Path) -> tuple[Path, str]:
    """Write Doe's name as "John Doe" into a CT's Series Description (no text pattern sees it);
    the file changed and the form planted."""
    family, given = DOE.name.split("^")
    path = find(out, lambda ds: ds.Modality == "CT" and "PSN" in str(ds.PatientID))
    ds = pydicom.dcmread(path)
    ds.SeriesDescription = f"Chest for {given} {family}"
    ds.save_as(path, enforce_file_format=True)
    return path, f"{given} {family}"


def test_name_sealed_by_another_policy_found_in_another_order(
        names_sealed: tuple[NodeDir, Path, Path], media_copy: Callable[[Path], Path],
        verify: Callable[..., Result]) -> None:
    node, media, policy = names_sealed
    clean = verify(media, "--originals", "--policy", policy, config=node.config)
    assert clean.code == 0, clean.summary
    assert clean.report["originals"]["originals"] == 18  # + the 4 names themselves
    out = media_copy(media)
    path, other_order = _plant_name_in_another_order(out)
    assert verify(out, "--policy", policy).code == 0
    result = verify(out, "--originals", "--policy", policy, config=node.config)
    assert result.code == 1
    (leak,) = _leaks(result)
    assert (leak["file"], leak["path"]) == (rel(out, path), "SeriesDescription")
    assert leak["message"].startswith(
        "PatientName original found (another component order as plain text, ASCII)")
    _no_value_shown(result, DOE.name, other_order)


def test_the_builtin_stage1_policy_seals_names_so_a_leaked_name_is_found(
        stage1: tuple[NodeDir, Path], media_copy: Callable[[Path], Path],
        verify: Callable[..., Result]) -> None:
    """stage1-pseudonymize derives the name pseudonym from the Patient ID, yet seals the name it
    replaced: the exact scan looks for the name itself, in every component order."""
    node, media = stage1
    out = media_copy(media)
    path, other_order = _plant_name_in_another_order(out)
    assert verify(out).code == 0
    result = verify(out, "--originals", config=node.config)
    assert result.code == 1
    (leak,) = _leaks(result)
    assert (leak["file"], leak["path"]) == (rel(out, path), "SeriesDescription")
    assert leak["message"].startswith("PatientName original found")
    _no_value_shown(result, DOE.name, other_order)


def test_originals_need_stage1_configuration(tmp_path: Path, stage1: tuple[NodeDir, Path],
                                             verify: Callable[..., Result]) -> None:
    _, media = stage1
    assert main(["init", str(tmp_path / "s2"), "--role", "stage2"]) == 0
    result = verify(media, "--originals", config=tmp_path / "s2" / "tce.yaml")
    assert result.code == 2 and "stage 1" in result.stderr
    assert main(["init", str(tmp_path / "s1"), "--role", "stage1"]) == 0
    result = verify(media, "--originals", config=tmp_path / "s1" / "tce.yaml")
    assert result.code == 2 and "no sealed originals" in result.stderr


def test_dicomdir_record_without_its_file_and_a_file_without_a_record(
        stage1: tuple[NodeDir, Path], media_copy: Callable[[Path], Path],
        verify: Callable[..., Result]) -> None:
    _, media = stage1
    out = media_copy(media)
    moved = find(out, lambda ds: ds.Modality == "MR")  # referenced by no other instance
    target = out / "EXTRA" / "IM000001"
    target.parent.mkdir()
    moved.rename(target)
    result = verify(out)
    assert result.code == 1
    assert {f["check"] for f in result.errors()} == {"dicomdir"}
    messages = [f["message"] for f in result.errors()]
    assert "names no DICOM file of this set" in messages
    assert "EXTRA/IM000001 is not referenced by this DICOMDIR" in messages


def test_stage2_output_of_stage1_media_verifies_with_both_passes(
        stage1: tuple[NodeDir, Path], tmp_path: Path, verify: Callable[..., Result]) -> None:
    node, media = stage1
    out = tmp_path / "stage2"
    code = main(["--config", str(node.config), "deidentify", str(media / "DICOMDIR"), str(out),
                 "--policy", "research-age-band-5y", "--no-progress"])
    assert code == 1  # the burned-in capture is held back
    result = verify(out)
    assert result.code == 0, result.summary
    assert [p["id"] for p in result.report["policies"]] == ["research-age-band-5y"]
