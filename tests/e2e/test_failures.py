"""What goes wrong between the sites, end to end: each failure is reported, loses nothing and
sends nothing twice.

- The Receiver is down during export and started later: the export says so, no job counts as
  exported, and the next export delivers every instance exactly once.
- The Receiver does not accept one SOP class: everything else arrives, the job names the
  rejected instance, and once the Receiver accepts the class a retry sends only that one.
- The approved policy file is edited after approval: export refuses and sends nothing until
  someone approves the new version.
- A medium is imported twice: the second import creates nothing.
- A medium whose DICOMDIR is damaged: the import falls back to a folder scan, says so, and
  still imports every instance.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pydicom.uid import (
    BasicTextSRStorage,
    CTImageStorage,
    EnhancedCTImageStorage,
    GrayscaleSoftcopyPresentationStateStorage,
    KeyObjectSelectionDocumentStorage,
    MRImageStorage,
    SecondaryCaptureImageStorage,
)

from appliance.demo.nodes import free_port
from appliance.models import JobState, SendStatus
from tests.e2e import (
    POLICY,
    Stage1Media,
    Stage2Dir,
    Stage2Factory,
    age_band,
    age_years,
    delivered,
    expected_at_receiver,
    key,
    match,
    ok,
    peer,
    read_files,
)
from tests.receiver.harness import CALLED, ReceiverDir, ReceiverFactory
from tests.stage2_export_manager import tree_state

BUILTIN_POLICY = Path(__file__).resolve().parents[2] / "policies" / "builtin" / f"{POLICY}.yaml"
EXPECTED = 21  # the 22 sample instances minus the one with burned-in annotation
STORED = '"event": "receiver.stored"'


def _imported(stage2: Stage2Factory, media: Path, policy: str = POLICY, **settings: object
              ) -> Stage2Dir:
    research = stage2.folder("research", **settings)
    ok(research.import_media(media))
    ok(research.approve_all(policy))
    return research


def _received(receiver: ReceiverDir) -> list[str]:
    return sorted(receiver.instances())


def _states(research: Stage2Dir) -> dict[int, JobState]:
    return {job.id: JobState(job.state) for job in research.jobs()}


# --- the Receiver is down, then comes up -------------------------------------------------------


def test_receiver_down_then_started_gets_everything_once(
        stage1_media: Stage1Media, stage2: Stage2Factory, receivers: ReceiverFactory) -> None:
    research = _imported(stage2, stage1_media.media, backoff_seconds=0)
    port = free_port()  # nothing listens here yet
    to = peer(CALLED, port)
    first = research.export(to)
    output = first.stdout + first.stderr
    assert first.returncode == 1, output
    assert output.count("attempt 1 of 5 failed") == 5 and to in output, output
    assert "0 job(s) exported" in output and "0 instance(s) sent" in output, output
    assert set(_states(research).values()) == {JobState.APPROVED}  # waiting for the retry
    assert not [i for i in research.job_instances() if i.send_status == SendStatus.SENT]

    receiver = receivers.folder("receiver")
    running = receivers.start(receiver, port)
    second = delivered(research.export(to))
    assert "4 job(s) exported, 1 failed, 0 waiting; 21 instance(s) sent" in second, second
    states = sorted(state.value for state in _states(research).values())
    assert states == ["EXPORTED"] * 4 + ["FAILED"]
    assert len(_received(receiver)) == EXPECTED
    assert len(receiver.store_files()) == EXPECTED
    assert running.stop() == 0
    log = running.log()
    assert log.count(STORED) == EXPECTED
    assert '"event": "receiver.duplicate"' not in log
    assert '"event": "receiver.replaced"' not in log


# --- the Receiver refuses one SOP class --------------------------------------------------------


ALL_BUT_SR = [CTImageStorage, EnhancedCTImageStorage, MRImageStorage,
              SecondaryCaptureImageStorage, KeyObjectSelectionDocumentStorage,
              GrayscaleSoftcopyPresentationStateStorage]


def test_a_refused_sop_class_is_reported_and_retried_alone(
        stage1_media: Stage1Media, stage2: Stage2Factory, receivers: ReceiverFactory) -> None:
    research = _imported(stage2, stage1_media.media, backoff_seconds=0)
    receiver = receivers.folder("receiver", sop_classes=[str(uid) for uid in ALL_BUT_SR])
    picky = receivers.start(receiver)
    done = research.export(peer(CALLED, picky.port))
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "20 instance(s) sent" in output, output

    received = read_files(receiver.store_files())
    assert len(received) == EXPECTED - 1
    assert BasicTextSRStorage not in {ds.SOPClassUID for ds in received}
    failed = [i for i in research.job_instances() if i.send_status != SendStatus.SENT]
    assert sorted(i.sop_class_uid for i in failed) == sorted(
        [BasicTextSRStorage, SecondaryCaptureImageStorage])  # the SR, and the burned-in one
    (job,) = [j for j in research.jobs() if j.id == failed[0].job_id]
    assert {i.job_id for i in failed} == {job.id}
    assert JobState(job.state) is JobState.FAILED
    assert "SOP class not accepted" in job.last_error, job.last_error
    assert f"job {job.id}: FAILED: 2 of 10 instance(s) failed permanently" in output, output
    shown = ok(research.tce("stage2", "job", str(job.id)))
    assert "10 (8 sent, 0 pending, 2 failed)" in shown, shown
    assert "SOP class not accepted" in shown, shown
    assert {s for i, s in _states(research).items() if i != job.id} == {JobState.EXPORTED}
    assert picky.stop() == 0

    receiver.configure(sop_classes=[])  # the Receiver now accepts every storage class
    relaxed = receivers.start(receiver)
    ok(research.tce("stage2", "retry", str(job.id), "--by", "test"))
    again = delivered(research.export(peer(CALLED, relaxed.port)))
    assert f"job {job.id}: FAILED: 1 of 10 instance(s) failed permanently" in again, again
    assert relaxed.stop() == 0
    assert relaxed.log().count(STORED) == 1  # only the SR: nothing accepted before is resent
    assert '"event": "receiver.duplicate"' not in relaxed.log()
    assert len(_received(receiver)) == EXPECTED


# --- the approved policy file changes ------------------------------------------------------------


def test_an_edited_policy_file_blocks_export_until_approved_again(
        stage1_media: Stage1Media, stage2: Stage2Factory, receivers: ReceiverFactory,
        tmp_path: Path) -> None:
    policy = tmp_path / "trial.yaml"
    text = BUILTIN_POLICY.read_text(encoding="utf-8").replace(
        f"id: {POLICY}", "id: e2e-trial")
    assert "age_band_years: 5" in text
    policy.write_text(text, encoding="utf-8")
    research = _imported(stage2, stage1_media.media, str(policy))
    receiver = receivers.folder("receiver")
    running = receivers.start(receiver)

    policy.write_text(text.replace("age_band_years: 5", "age_band_years: 3"), encoding="utf-8")
    refused = research.export(peer(CALLED, running.port))
    output = refused.stdout + refused.stderr
    assert output.count("nothing was sent") == 5, output
    assert str(policy) in output and "approve" in output.lower(), output
    assert _received(receiver) == [] and receiver.store_files() == []
    assert '"calling_ae": "TCE_STAGE2"' not in running.log()  # stage 2 never connected
    assert set(_states(research).values()) == {JobState.PENDING_APPROVAL}
    assert not [i for i in research.job_instances() if i.send_status == SendStatus.SENT]

    ok(research.approve_all(str(policy)))  # the privacy officer approves the new version
    delivered(research.export(peer(CALLED, running.port)))
    pairs = match(stage1_media.originals(), read_files(receiver.store_files()))
    assert len(pairs) == EXPECTED
    for original, received in pairs:  # what was sent follows the version approved last
        assert received.PatientAge == age_band(age_years(original), width=3), key(original)
    assert refused.returncode != 0, f"an export that refused every job exited 0:\n{output}"


# --- media problems ------------------------------------------------------------------------


def test_importing_a_medium_again_creates_nothing(stage1_media: Stage1Media,
                                                  stage2: Stage2Factory) -> None:
    media_before = tree_state(stage1_media.media)
    research = stage2.folder("research")
    ok(research.import_media(stage1_media.media))
    jobs = [(j.id, j.study_instance_uid, j.state, j.instance_count) for j in research.jobs()]
    assert len(jobs) == 5
    store = tree_state(research.settings.stage2.store_dir)
    assert len(store) == 22

    again = research.import_media(stage1_media.media)
    assert again.returncode == 0, again.stderr
    assert "already imported" in again.stdout, again.stdout
    assert [(j.id, j.study_instance_uid, j.state, j.instance_count)
            for j in research.jobs()] == jobs
    assert len(research.job_instances()) == 22
    assert tree_state(research.settings.stage2.store_dir) == store
    assert tree_state(stage1_media.media) == media_before  # the medium is only ever read


def test_a_damaged_dicomdir_falls_back_to_a_folder_scan(
        stage1_media: Stage1Media, stage2: Stage2Factory, tmp_path: Path) -> None:
    media = tmp_path / "MEDIA"
    shutil.copytree(stage1_media.media, media)
    dicomdir = media / "DICOMDIR"
    data = dicomdir.read_bytes()
    dicomdir.write_bytes(data[:len(data) // 2])
    research = stage2.folder("research")
    done = research.import_media(media)
    out = ok(done)
    assert "no usable DICOMDIR" in done.stderr and "scanned the folder" in done.stderr, \
        done.stderr
    assert "imported 22 instances of 5 studies (4 patients)" in out, out
    assert "via a folder scan" in out, out
    assert len(research.jobs()) == 5
    assert {JobState(j.state) for j in research.jobs()} == {JobState.PENDING_APPROVAL}
    assert len(research.job_instances()) == 22
    assert len(expected_at_receiver(stage1_media.originals())) == EXPECTED
