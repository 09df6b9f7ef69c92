"""``tce stage2 preview``: per-series changes, age band, date shift and warnings, file untouched."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from appliance.models import Job
from appliance.settings import Settings
from policies.keying import EngineKeys
from policies.loader import load_builtin, load_policy
from stage2_export_manager.importer import import_media
from stage2_export_manager.preview import format_preview, preview_job
from tests.stage2_export_manager import stage1_datasets, stage2_node, tree_state, write_pdi

Node = tuple[Settings, sessionmaker[Session]]
KEYS = EngineKeys.for_testing(b"stage2")
FIVE = load_builtin("research-age-band-5y")
PLANTED = "Seen 12/03/2021 by Dr. Welby"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Node:
    base = tmp_path_factory.mktemp("preview")
    datasets = stage1_datasets()
    # Free text that stage 1 let through (e.g. a site policy keeping Image Comments).
    datasets[0].ImageComments = PLANTED
    settings, sessions = stage2_node(base / "node")
    import_media(settings, sessions, write_pdi(datasets, base / "media"))
    return settings, sessions


def first_study(sessions: sessionmaker[Session]) -> Job:
    """The first patient's CT study: six series, a burned-in capture, GE private blocks."""
    with sessions() as session:
        jobs = list(session.scalars(select(Job)))
        job = max(jobs, key=lambda j: j.instance_count)
        job.instances  # noqa: B018 - load them while the session is open
        return job


def test_preview_shows_changes_age_band_and_date_shift_per_series(node: Node) -> None:
    _, sessions = node
    job = first_study(sessions)
    text = format_preview(preview_job(job, FIVE, KEYS))
    assert text.startswith(f"job {job.id}  study {job.study_instance_uid}  patient"
                           f" {job.patient_pseudonym}")
    assert f"policy research-age-band-5y v1 (sha256 {FIVE.digest[:12]}" in text
    assert text.count("\nseries ") == 6
    for modality in ("CT", "OT", "SR", "KO", "PR"):
        assert re.search(rf"\nseries 2\.25\.\d+  {modality}  \d+ instance", text), modality
    # the first patient was born in 1932: 92 years, aggregated into the 90+ band
    assert "age          092Y -> 090Y (90 years or older)" in text
    shifts = set(re.findall(r"date shift   ([+-]\d+) days", text))
    assert len(shifts) == 1 and shifts != {"+0"}  # one shift per patient, in every series
    assert re.search(r"Z         PatientBirthDate\n\s+\d{8}  ->  \(empty\)", text)
    assert re.search(r"U         StudyInstanceUID\n\s+" + re.escape(job.study_instance_uid)
                     + r"  ->  2\.25\.\d+", text)
    assert text.rstrip().endswith("(values are shown on this terminal only; they are not logged"
                                  " or recorded)")


def test_preview_warns_about_burned_in_text_kept_private_tags_and_kept_free_text(
        node: Node, tmp_path: Path) -> None:
    _, sessions = node
    job = first_study(sessions)
    text = format_preview(preview_job(job, FIVE, KEYS))
    assert re.search(r"BurnedInAnnotation YES in 1 instance\(s\) of series 2\.25\.\d+; the policy"
                     r" requests Clean Pixel Data, which this release cannot perform: they would"
                     r" be held in quarantine", text)
    assert 'private attributes kept: 3 in block "GEMS_ACQU_01" (0019)' in text
    assert "kept free text" not in text  # research-age-band-5y cleans Image Comments
    keeping = tmp_path / "keep-comments.yaml"
    keeping.write_text(
        "id: keep-comments\nversion: '1'\ndescription: keeps image comments\n"
        "base_profile: ps315-basic\noptions: [retain_safe_private]\n"
        "overrides:\n  - {tag: ImageComments, action: keep}\n")
    text = format_preview(preview_job(job, load_policy(keeping), KEYS))
    assert f"kept free text looks like a date: ImageComments = {PLANTED}" in text
    assert re.search(r"kept free text looks like a name: ImageComments = ….*by Dr\. Welby\n", text)
    assert "the policy does not request Clean Pixel Data: they would be sent as they are" in text


def test_preview_reads_the_store_only_and_logs_nothing(node: Node,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    settings, sessions = node
    before = tree_state(settings.stage2.store_dir)
    caplog.set_level(logging.DEBUG)
    with sessions() as session:
        for job in session.scalars(select(Job)):
            format_preview(preview_job(job, FIVE, KEYS))
    assert tree_state(settings.stage2.store_dir) == before
    assert [r for r in caplog.records if r.name.split(".")[0] in ("appliance", "stage2_export_"
                                                                  "manager", "policies")] == []


def test_a_series_whose_sample_is_refused_is_previewed_from_the_next_instance(
        node: Node) -> None:
    _, sessions = node
    text = format_preview(preview_job(first_study(sessions), FIVE, KEYS))
    captures = text.split("  OT  ")[1].split("\nseries ")[0]
    assert captures.startswith("2 instance(s)")
    assert "refused by the policy" not in captures and "date shift" in captures
