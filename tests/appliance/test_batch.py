"""The batch runner on real files: layout by new UIDs, no PHI in OUT or the report, quarantine,
skipping, duplicates, DICOMDIR input, and byte-identical output whatever the number of jobs."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.fileset import FileSet
from pydicom.uid import DeflatedExplicitVRLittleEndian

from appliance import splice
from appliance.batch import BatchReport, path_ref, run_batch
from appliance.batch_worker import InvalidInstance, NotDicom, read_instance
from appliance.quarantine import list_quarantine
from appliance.synthetic import (
    NOTES_FILE,
    TRUNCATED_FILE,
    make_sample_study_set,
    original_uids,
    planted_phi,
    sample_patients,
    write_datasets,
    write_sample,
)
from appliance.tokenizer import Unsupported
from policies.keying import EngineKeys
from policies.loader import load_policy, resolve_policy

KEYS = EngineKeys.for_testing()
BASIC = resolve_policy("ps315-basic")
SAMPLE_INSTANCES = 22


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sample")
    write_sample(folder, seed=0)
    return folder


def run(in_path: Path, tmp: Path, name: str = "out", **kwargs: object) -> tuple[Path, Path,
                                                                                 BatchReport]:
    out, quarantine = tmp / name, tmp / f"{name}-quarantine"
    policy = kwargs.pop("policy", BASIC)
    report = run_batch(in_path, out, policy, KEYS, quarantine, **kwargs)  # type: ignore[arg-type]
    return out, quarantine, report


def output_files(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file())


def encodings(text: str) -> set[bytes]:
    found = set()
    for codec in ("utf-8", "latin-1", "iso8859_7", "iso2022_jp"):
        try:
            found.add(text.encode(codec))
        except UnicodeEncodeError:
            continue
    return found


def canaries() -> tuple[list[str], set[str]]:
    return planted_phi(sample_patients(0)), original_uids(make_sample_study_set(0))


def test_layout_is_new_uids_and_no_phi_reaches_out(sample: Path, tmp_path: Path) -> None:
    out, _, report = run(sample, tmp_path)
    files = output_files(out)
    assert len(files) == SAMPLE_INSTANCES == report.instances
    assert (report.studies and len(report.studies) == 5) and len(report.series) == 12
    phi, uids = canaries()
    for path in files:
        relative = path.relative_to(out)
        study, series, name = relative.parts
        ds = dcmread(path)
        assert (study, series, name) == (ds.StudyInstanceUID, ds.SeriesInstanceUID,
                                         f"{ds.SOPInstanceUID}.dcm")
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        data = path.read_bytes()
        for uid in uids:
            assert uid not in str(relative), "an original UID in an output path"
            assert uid.encode() not in data, f"original UID left in {relative}"
        for text in phi:
            assert text not in str(relative)
            assert not any(b in data for b in encodings(text)), f"{text!r} left in {relative}"
    assert not list(out.rglob(".tce-*.tmp")), "temporary files left behind"


def test_truncated_goes_to_quarantine_and_notes_are_skipped(sample: Path, tmp_path: Path) -> None:
    out, quarantine, report = run(sample, tmp_path)
    assert not report.ok
    assert (report.quarantined, report.not_dicom, report.failed) == (1, 1, 0)
    assert report.problems == [{"file": path_ref(TRUNCATED_FILE),
                                "reason": "truncated: PixelData is shorter than declared",
                                "outcome": "quarantined"}]
    assert report.skipped == [{"file": path_ref(NOTES_FILE), "reason": "not DICOM"}]
    [record] = list_quarantine(quarantine)
    truncated = (sample / TRUNCATED_FILE).read_bytes()
    assert record.sha256 == hashlib.sha256(truncated).hexdigest()
    assert (quarantine / record.name).read_bytes() == truncated
    assert (sample / TRUNCATED_FILE).exists(), "input must be copied, not moved"
    assert all(p.read_bytes() != truncated for p in output_files(out))


def test_policy_refusal_is_quarantined(sample: Path, tmp_path: Path) -> None:
    out, quarantine, report = run(sample, tmp_path,
                                  policy=resolve_policy("research-age-band-5y"))
    assert report.quarantined == 2 and report.instances == SAMPLE_INSTANCES - 1
    reasons = sorted(r.reason for r in list_quarantine(quarantine))
    assert reasons[0].startswith("refused by policy: BurnedInAnnotation is YES")
    burned = [p for p in output_files(out) if dcmread(p).get("BurnedInAnnotation") == "YES"]
    assert burned == []


def test_report_counts_and_no_phi(sample: Path, tmp_path: Path) -> None:
    _, _, report = run(sample, tmp_path)
    text = json.dumps(report.to_json(), ensure_ascii=False)
    doc = json.loads(text)
    assert doc["counts"] == {"files": 24, "instances": 22, "studies": 5, "series": 12,
                             "quarantined": 1, "skipped": 1, "skipped_not_dicom": 1,
                             "skipped_dicomdir": 0, "duplicates": 0, "failed": 0}
    assert doc["policy"] == {"id": "ps315-basic", "version": BASIC.version,
                             "digest": BASIC.digest}
    assert doc["actions"]["PatientName"] == {"Z": 22}
    assert doc["actions"]["SOPInstanceUID"] == {"U": 22}
    phi, uids = canaries()
    for canary in [*phi, *uids, "PAT0000", "STU0000", "IMG0", NOTES_FILE, str(sample)]:
        assert canary not in text, f"{canary!r} in the report"


def test_same_file_names_do_not_collide_and_duplicates_are_reported(tmp_path: Path) -> None:
    datasets = make_sample_study_set(0)[:3]
    for folder, ds in zip(("a", "b", "c"), datasets, strict=True):
        write_datasets([ds], tmp_path / "in" / folder)  # each is in/<folder>/IMG00001.dcm
    shutil.copy(tmp_path / "in" / "a" / "IMG00001.dcm", tmp_path / "in" / "copy-of-a.dcm")
    out, _, report = run(tmp_path / "in", tmp_path)
    assert len(output_files(out)) == 3 == report.instances
    assert report.duplicates == 1 and report.ok
    assert report.skipped[0]["reason"] == "duplicate of an instance already in OUT"


def test_same_uid_different_content_is_quarantined_not_overwritten(tmp_path: Path) -> None:
    first = make_sample_study_set(0)[0]
    second = make_sample_study_set(0)[0]
    second.PixelData = bytes(len(first.PixelData))  # another image, the same SOP Instance UID
    write_datasets([first], tmp_path / "in" / "1")
    write_datasets([second], tmp_path / "in" / "2")
    out, quarantine, report = run(tmp_path / "in", tmp_path)
    [written] = output_files(out)
    assert dcmread(written).PixelData == first.PixelData, "the first input must win"
    assert report.quarantined == 1 and not report.ok
    assert list_quarantine(quarantine)[0].reason.startswith("duplicate SOP Instance UID")


def test_dicomdir_input_and_dicomdir_inside_a_folder(tmp_path: Path) -> None:
    media = tmp_path / "media"
    file_set = FileSet()
    for ds in make_sample_study_set(0):
        file_set.add(ds)
    file_set.write(media)
    out, _, report = run(media / "DICOMDIR", tmp_path, "from-dicomdir")
    assert report.instances == SAMPLE_INSTANCES and report.ok and report.dicomdirs == 0
    out2, _, report2 = run(media, tmp_path, "from-folder")
    assert report2.instances == SAMPLE_INSTANCES and report2.dicomdirs == 1 and report2.ok
    assert not [p for p in out2.rglob("*") if p.name.upper() == "DICOMDIR"]
    assert ([p.relative_to(out) for p in output_files(out)]
            == [p.relative_to(out2) for p in output_files(out2)])


def test_two_jobs_give_byte_identical_output(sample: Path, tmp_path: Path) -> None:
    def digests(out: Path) -> dict[str, str]:
        return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in output_files(out)}

    out1, _, one = run(sample, tmp_path, "one", jobs=1)
    out2, _, two = run(sample, tmp_path, "two", jobs=2)
    assert len(digests(out1)) == SAMPLE_INSTANCES
    assert digests(out1) == digests(out2)
    a, b = one.to_json(), two.to_json()
    for doc in (a, b):
        for key in ("elapsed_seconds", "throughput", "jobs", "quarantine_dir"):
            doc.pop(key)
    assert a == b


def test_the_fast_header_reader_gives_byte_identical_output(
        sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """appliance.tokenizer stands in for pydicom's reader; the output must not tell them apart."""
    fast, _, _ = run(sample, tmp_path, "fast")

    def unsupported(*_args: object) -> None:
        raise Unsupported("forced: use pydicom's reader")

    monkeypatch.setattr(splice, "read_explicit_le_header", unsupported)
    slow, _, _ = run(sample, tmp_path, "slow")
    files = output_files(fast)
    assert len(files) == SAMPLE_INSTANCES
    assert [p.relative_to(fast) for p in files] == [p.relative_to(slow) for p in output_files(slow)]
    for path in files:
        assert path.read_bytes() == (slow / path.relative_to(fast)).read_bytes(), path


def test_deflated_input_stays_deflated_and_readable(tmp_path: Path) -> None:
    source = Path(get_testdata_file("image_dfl.dcm") or "")
    (tmp_path / "in").mkdir()
    shutil.copy(source, tmp_path / "in" / "image")
    out, _, report = run(tmp_path / "in", tmp_path)
    [written] = output_files(out)
    ds = dcmread(written)
    assert ds.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    assert ds.PatientIdentityRemoved == "YES" and ds.pixel_array.shape == (512, 512)
    assert (report.instances, report.quarantined) == (1, 0)


def test_dry_run_writes_nothing(sample: Path, tmp_path: Path) -> None:
    quarantine = tmp_path / "quarantine"
    report = run_batch(sample, None, BASIC, KEYS, quarantine, jobs=2)
    assert report.dry_run and report.instances == SAMPLE_INSTANCES and report.quarantined == 1
    assert list(tmp_path.iterdir()) == []


def test_out_inside_in_is_not_read_back(sample: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    shutil.copytree(sample, folder)
    first = run_batch(folder, folder / "out", BASIC, KEYS, tmp_path / "q")
    second = run_batch(folder, folder / "out", BASIC, KEYS, tmp_path / "q")
    assert first.instances == SAMPLE_INSTANCES and first.files == 24
    assert second.files == 24 and second.duplicates == SAMPLE_INSTANCES


def test_a_policy_that_keeps_uids_still_gives_no_original_uid_in_paths(
        sample: Path, tmp_path: Path) -> None:
    policy_file = tmp_path / "keep-uids.yaml"
    policy_file.write_text("id: keep-uids\nversion: 1\ndescription: keeps instance UIDs\n"
                           "base_profile: ps315-basic\noverrides:\n"
                           "  - tag: SOPInstanceUID\n    action: keep\n"
                           "  - tag: StudyInstanceUID\n    action: keep\n")
    out, _, report = run(sample, tmp_path, policy=load_policy(policy_file))
    assert report.instances == SAMPLE_INSTANCES
    _, uids = canaries()
    for path in output_files(out):
        assert not any(uid in str(path.relative_to(out)) for uid in uids)


def test_read_instance_recognises_dicom_without_preamble(tmp_path: Path) -> None:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR: no pixels needed
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.1", "1.2.3", "1.2.3.2"
    ds.PatientName = "Doe^John"
    path = tmp_path / "raw"
    ds.save_as(path, implicit_vr=True, little_endian=True)  # no preamble, no meta
    assert path.read_bytes()[128:132] != b"DICM"
    assert read_instance(path.read_bytes()).PatientName == "Doe^John"
    with pytest.raises(NotDicom):
        read_instance(b"%PDF-1.7\n" + bytes(300))
    with pytest.raises(NotDicom):
        read_instance(bytes(4) + b"\x00" * 300)  # starts like group 0000 but is nothing
    with pytest.raises(InvalidInstance, match="StudyInstanceUID"):
        del ds.StudyInstanceUID
        ds.save_as(path, implicit_vr=True, little_endian=True)
        read_instance(path.read_bytes())


def test_action_counts_fold_like_outcome_by_attribute() -> None:
    from appliance.batch_worker import action_counts
    from policies.engine import Deidentifier

    engine = Deidentifier(BASIC, KEYS)
    for ds in make_sample_study_set(0):
        outcome = engine.deidentify(ds)
        expected = {(path, code, n) for path, codes in outcome.by_attribute().items()
                    for code, n in codes.items()}
        assert set(action_counts(outcome)) == expected


def test_preamble_less_file_is_de_identified(tmp_path: Path) -> None:
    ds = make_sample_study_set(0)[0]
    del ds.file_meta
    ds.preamble = None
    (tmp_path / "in").mkdir()
    ds.save_as(tmp_path / "in" / "raw", implicit_vr=True, little_endian=True)
    out, _, report = run(tmp_path / "in", tmp_path)
    [written] = output_files(out)
    assert report.ok and report.instances == 1
    assert dcmread(written).PatientName == ""


def test_a_write_error_on_out_stops_the_run(sample: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from appliance import batch_worker

    def disk_full(final: Path | None, ds: Dataset, *_: object) -> tuple[Path | None, int]:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(batch_worker, "write_temporary", disk_full)
    out, _, report = run(sample, tmp_path)
    assert report.aborted == "cannot write to OUT (No space left on device)"
    assert report.failed >= 1 and not report.ok
    assert report.done < report.files, "the run must stop instead of failing every file"
    assert output_files(out) == [out / ".tce-incomplete"], "an aborted run keeps its marker"


def test_an_interrupted_run_is_rewritten_not_trusted(sample: Path, tmp_path: Path) -> None:
    """A marker left by an interrupted run makes the next run rewrite files, even torn ones."""
    out, _, first = run(sample, tmp_path)
    assert not (out / ".tce-incomplete").exists(), "a finished run removes its marker"
    files = [p for p in output_files(out)]
    digests = {p: p.read_bytes() for p in files}
    files[0].write_bytes(b"torn by a crash")
    (out / ".tce-incomplete").write_text("interrupted")
    _, _, second = run(sample, tmp_path)
    assert second.duplicates == 0 and second.quarantined == first.quarantined
    assert {p: p.read_bytes() for p in files} == digests
    assert not (out / ".tce-incomplete").exists()
