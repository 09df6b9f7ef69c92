"""The whole chain on loopback: storescu → stage 1 → media → stage 2 → the Receiver.

Stage 1, stage 2 and the Receiver each live in their own ``tce init`` folder with their own key
ring, and run as ``tce`` subprocesses. Stage 2 imports the medium stage 1 wrote, every study is
approved with ``research-age-band-5y`` and exported to a running Receiver. What arrives is
compared with the ORIGINAL sample files the modality sent, matched by structure (Study Time,
Series Number, Instance Number), since both stages remap every UID.
"""

from __future__ import annotations

import subprocess
from collections import Counter, defaultdict
from dataclasses import dataclass

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import SecondaryCaptureImageStorage

from appliance.models import JobState, SendStatus
from tests.e2e import (
    MAX_SHIFT_DAYS,
    POLICY,
    Stage1Media,
    Stage2Dir,
    Stage2Factory,
    age_band,
    age_years,
    burned_in,
    date_shifts,
    expected_at_receiver,
    forbidden_values,
    key,
    match,
    nested,
    ok,
    parse_da,
    peer,
    read_files,
)
from tests.receiver.harness import CALLED, ReceiverDir, ReceiverFactory
from tests.stage1_modality.phi import needles, scan_tree


@dataclass
class Chain:
    stage1: Stage1Media
    research: Stage2Dir
    receiver: ReceiverDir
    imported: subprocess.CompletedProcess[str]
    approved: subprocess.CompletedProcess[str]
    exported: subprocess.CompletedProcess[str]
    receiver_log: str
    originals: list[Dataset]
    received: list[Dataset]

    @property
    def pairs(self) -> list[tuple[Dataset, Dataset]]:
        return match(self.originals, self.received)


@pytest.fixture(scope="module")
def chain(stage1_media: Stage1Media, module_stage2: Stage2Factory,
          module_receivers: ReceiverFactory) -> Chain:
    research = module_stage2.folder("research")
    receiver = module_receivers.folder("receiver")
    running = module_receivers.start(receiver)
    imported = research.import_media(stage1_media.media)
    ok(imported)
    approved = research.approve_all(POLICY)
    ok(approved)
    exported = research.export(peer(CALLED, running.port))
    assert running.stop() == 0, running.log()[-3000:]
    return Chain(stage1_media, research, receiver, imported, approved, exported, running.log(),
                 stage1_media.originals(), read_files(receiver.store_files()))


def test_stage1_accepted_the_whole_sample_and_wrote_it_to_the_medium(
        stage1_media: Stage1Media) -> None:
    assert stage1_media.accepted == 22
    assert len(stage1_media.media_files()) == 22
    assert stage1_media.storescu_output.count("Received Store Response (Success)") == 22


def test_import_makes_one_job_per_study_and_approval_covers_them_all(chain: Chain) -> None:
    assert "imported 22 instances of 5 studies (4 patients)" in chain.imported.stdout
    assert chain.approved.stdout.count(f"APPROVED with {POLICY}") == 5


def _held_back_job(chain: Chain) -> int:
    (job,) = [j for j in chain.research.jobs() if j.instance_count == 10]  # the first study
    return int(job.id)


def test_export_sends_all_but_the_burned_in_instance_and_says_so(chain: Chain) -> None:
    """Clean Pixel Data is requested but not performed, so the instance flagged with burned-in
    annotation is refused; its study's job is not EXPORTED, every other job is."""
    done = chain.exported
    output = done.stdout + done.stderr
    assert done.returncode == 1, output  # one study could not be sent whole
    assert "4 job(s) exported, 1 failed, 0 waiting; 21 instance(s) sent, 1 failed" in output
    held = _held_back_job(chain)
    assert (f"job {held}: FAILED: 1 of 10 instance(s) failed permanently (1 refused by policy:"
            " BurnedInAnnotation is YES" in output), output
    states = {job.id: JobState(job.state) for job in chain.research.jobs()}
    assert states.pop(held) is JobState.FAILED
    assert set(states.values()) == {JobState.EXPORTED}, states
    refused = [i for i in chain.research.job_instances() if i.send_status != SendStatus.SENT]
    assert [(i.job_id, i.sop_class_uid) for i in refused] == [(held, SecondaryCaptureImageStorage)]
    shown = ok(chain.research.tce("stage2", "job", str(held)))
    assert "10 (9 sent, 0 pending, 1 failed)" in shown, shown


def test_the_refusal_of_the_burned_in_instance_gives_its_reason(chain: Chain) -> None:
    """An operator must learn WHY an instance was held back (burned-in annotation, pixel
    cleaning not available), from the export report or from 'tce stage2 job'."""
    shown = ok(chain.research.tce("stage2", "job", str(_held_back_job(chain))))
    told = chain.exported.stdout + chain.exported.stderr + shown
    assert "BurnedInAnnotation" in told or "burned-in" in told.lower(), told


def test_every_accepted_instance_arrives_except_the_burned_in_one(chain: Chain) -> None:
    expected = expected_at_receiver(chain.originals)
    held_back = [ds for ds in chain.originals if burned_in(ds)]
    assert len(held_back) == 1 and len(expected) == chain.stage1.accepted - 1 == 21
    assert sorted(key(ds) for ds in chain.received) == sorted(key(ds) for ds in expected)
    assert len(chain.receiver.instances()) == 21
    assert chain.receiver_log.count('"event": "receiver.stored"') == 21
    assert '"event": "receiver.duplicate"' not in chain.receiver_log


def test_study_and_series_structure_is_unchanged(chain: Chain) -> None:
    def shape(datasets: list[Dataset]) -> list[list[int]]:
        studies: dict[str, Counter[str]] = defaultdict(Counter)
        for ds in datasets:
            studies[str(ds.StudyInstanceUID)][str(ds.SeriesInstanceUID)] += 1
        return sorted(sorted(series.values()) for series in studies.values())

    assert shape(chain.received) == shape(expected_at_receiver(chain.originals))
    assert len({ds.StudyInstanceUID for ds in chain.received}) == 5
    assert len(chain.receiver.studies()) == 5
    for original, received in chain.pairs:
        assert received.SOPClassUID == original.SOPClassUID
        assert received.Modality == original.Modality
        if "PixelData" in original:
            assert received.PixelData == original.PixelData, key(original)


def test_ages_are_five_year_bands_with_over_89_aggregated(chain: Chain) -> None:
    seen = set()
    for original, received in chain.pairs:
        band = age_band(age_years(original))
        assert received.get("PatientAge") == band, (key(original), received.get("PatientAge"))
        seen.add(band)
        assert not received.get("PatientBirthDate")
    assert "090Y" in seen  # the first patient is over 89 at both studies
    assert seen == {"090Y", "075Y", "030Y", "055Y"}


def test_dates_are_shifted_per_patient_with_intervals_kept(chain: Chain) -> None:
    shifts: dict[str, set[int]] = defaultdict(set)
    study_dates: dict[str, dict[str, tuple[str, str]]] = defaultdict(dict)
    for original, received in chain.pairs:
        moved = date_shifts(original, received)
        assert "StudyDate" in moved and "SeriesDate" in moved, key(original)
        shifts[str(original.PatientID)].update(moved.values())
        study_dates[str(original.PatientID)][str(original.StudyInstanceUID)] = (
            str(original.StudyDate), str(received.StudyDate))
        assert received.get("LongitudinalTemporalInformationModified") == "MODIFIED"
    assert len(shifts) == 4
    for days in shifts.values():
        assert len(days) == 1, f"one patient, several shifts: {sorted(days)}"
        (shift,) = days
        assert shift != 0 and abs(shift) <= MAX_SHIFT_DAYS, shift
    two = [studies for studies in study_dates.values() if len(studies) == 2]
    assert len(two) == 1  # the first patient: the interval between the studies is kept
    (before_1, after_1), (before_2, after_2) = two[0].values()
    assert parse_da(after_2) - parse_da(after_1) == parse_da(before_2) - parse_da(before_1)


def test_patients_are_consistent_and_distinct(chain: Chain) -> None:
    ids: dict[str, set[str]] = defaultdict(set)
    for original, received in chain.pairs:
        ids[str(original.PatientID)].add(str(received.PatientID))
        assert not str(received.get("PatientName", "")), key(original)
        assert received.get("PatientIdentityRemoved") == "YES"
        assert POLICY in str(received.get("DeidentificationMethod", ""))
        assert received.PatientSex == original.PatientSex
    assert all(len(new) == 1 for new in ids.values()), ids
    assert len({next(iter(new)) for new in ids.values()}) == 4


def test_uids_are_new_and_consistent(chain: Chain) -> None:
    """Each original UID maps to exactly one new UID and back (study, series, SOP instance,
    frame of reference), so instances that shared a UID still share one."""
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                    "FrameOfReferenceUID"):
        forward: dict[str, set[str]] = defaultdict(set)
        backward: dict[str, set[str]] = defaultdict(set)
        for original, received in chain.pairs:
            if keyword not in original:
                continue
            assert keyword in received, (keyword, key(original))
            old, new = str(original[keyword].value), str(received[keyword].value)
            assert new != old and new.startswith("2.25."), keyword
            forward[old].add(new)
            backward[new].add(old)
        assert forward, keyword
        assert all(len(v) == 1 for v in forward.values()), f"{keyword} split"
        assert all(len(v) == 1 for v in backward.values()), f"{keyword} merged"
    for _original, received in chain.pairs:
        assert received.file_meta.MediaStorageSOPInstanceUID == received.SOPInstanceUID


def test_every_reference_resolves_at_the_receiver(chain: Chain) -> None:
    """SR, KOS and GSPS (and derived images) reference the same instances as before, under
    their new UIDs, and every reference resolves to an instance the Receiver holds."""
    sop = {str(o.SOPInstanceUID): str(r.SOPInstanceUID) for o, r in chain.pairs}
    series = {str(r.SeriesInstanceUID) for r in chain.received}
    studies = {str(r.StudyInstanceUID) for r in chain.received}
    checked = Counter[str]()
    for original, received in chain.pairs:
        refs = list(nested(received, "ReferencedSOPInstanceUID"))
        unresolved = [uid for uid in refs if uid not in set(sop.values())]
        assert not unresolved, f"{key(original)}: dangling references {unresolved}"
        before = Counter(sop.get(uid, f"unknown:{uid}")
                         for uid in nested(original, "ReferencedSOPInstanceUID"))
        assert Counter(refs) == before, key(original)
        assert set(nested(received, "SeriesInstanceUID")) <= series, key(original)
        assert set(nested(received, "StudyInstanceUID")) <= studies, key(original)
        if refs:
            checked[str(received.Modality)] += len(refs)
    assert {"SR", "KO", "PR", "CT"} <= set(checked), checked


def test_no_identifier_or_stage1_pseudonym_anywhere_at_the_receiver(chain: Chain) -> None:
    values = forbidden_values(chain.stage1)
    wanted = needles(values)
    root = chain.receiver.root
    files = [p for p in root.rglob("*") if p.is_file()]
    assert len(files) >= 21 + 2  # the store, the database and the log are all scanned
    hits = scan_tree(root, wanted, values)
    assert not hits, f"identifiers or stage-1 pseudonyms at the Receiver: {hits}"


def test_the_scan_finds_what_it_looks_for(chain: Chain) -> None:
    """The scan above must be able to fail: it finds the planted values in the original files
    and the stage-1 pseudonyms and UIDs on the hospital's medium."""
    values = forbidden_values(chain.stage1)
    wanted = needles(values)
    found_in_sample = scan_tree(chain.stage1.sample, wanted, values)
    assert any("Saint Elsewhere" in label for labels in found_in_sample.values()
               for label in labels)
    pseudonym = str(chain.stage1.stage1_datasets()[0].PatientID)
    assert pseudonym.startswith("PSN")
    found_on_media = scan_tree(chain.stage1.media, wanted, values)
    labels = {label for hits in found_on_media.values() for label in hits}
    assert any(repr(pseudonym) in label for label in labels)
