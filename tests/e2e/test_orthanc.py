"""The same chain with a real Orthanc server as the final receiver.

Stage 2 exports with ``--to ORTHANC@127.0.0.1:PORT`` to an Orthanc started from a throwaway
configuration (see :mod:`tests.e2e.orthanc`); Orthanc's REST API then says what arrived. A
third-party PACS accepting every instance is the interoperability proof the own Receiver cannot
give: the presentation contexts, the C-STORE encoding and the datasets suit a real peer.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e import (
    POLICY,
    Stage1Media,
    Stage2Factory,
    age_band,
    age_years,
    delivered,
    expected_at_receiver,
    forbidden_values,
    key,
    ok,
    peer,
)
from tests.e2e.orthanc import AE_TITLE, Orthanc, orthanc_binary
from tests.stage1_modality.phi import needles, scan, scan_text, scan_tree


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    binary = orthanc_binary()
    server = Orthanc(tmp_path_factory.mktemp("orthanc"), binary)
    try:
        yield server
    finally:
        code = server.stop()
        assert code == 0, f"Orthanc exited {code}:\n{server.log()[-3000:]}"


@dataclass
class Sent:
    exported: subprocess.CompletedProcess[str]
    instances: dict[str, dict[str, Any]]  # Orthanc id → simplified tags


@pytest.fixture(scope="module")
def sent(stage1_media: Stage1Media, module_stage2: Stage2Factory, orthanc: Orthanc) -> Sent:
    research = module_stage2.folder("research")
    ok(research.import_media(stage1_media.media))
    ok(research.approve_all(POLICY))
    exported = research.export(peer(AE_TITLE, orthanc.dicom_port))
    ids = orthanc.get("/instances")
    tags = {i: orthanc.get(f"/instances/{i}/simplified-tags") for i in ids}
    return Sent(exported, tags)


def test_export_to_orthanc_sends_all_but_the_burned_in_instance(sent: Sent) -> None:
    output = delivered(sent.exported)
    assert "4 job(s) exported, 1 failed, 0 waiting; 21 instance(s) sent, 1 failed" in output


def test_orthanc_holds_every_instance_study_and_patient(
        sent: Sent, stage1_media: Stage1Media, orthanc: Orthanc) -> None:
    expected = expected_at_receiver(stage1_media.originals())
    assert len(sent.instances) == len(expected) == 21
    assert len(orthanc.get("/studies")) == 5
    assert len(orthanc.get("/series")) == len({ds.SeriesInstanceUID for ds in expected})
    assert len(orthanc.get("/patients")) == 4
    received = sorted((t["StudyTime"], int(t["SeriesNumber"]), int(t["InstanceNumber"]))
                      for t in sent.instances.values())
    assert received == sorted(key(ds) for ds in expected)


def test_orthanc_sees_age_bands(sent: Sent, stage1_media: Stage1Media) -> None:
    by_key = {key(ds): ds for ds in stage1_media.originals()}
    for tags in sent.instances.values():
        original = by_key[(tags["StudyTime"], int(tags["SeriesNumber"]),
                           int(tags["InstanceNumber"]))]
        assert tags.get("PatientAge") == age_band(age_years(original))
        assert tags.get("PatientIdentityRemoved") == "YES"
        assert tags.get("StudyDate") != original.StudyDate


def test_no_identifier_in_what_orthanc_shows_or_stores(
        sent: Sent, stage1_media: Stage1Media, orthanc: Orthanc) -> None:
    values = forbidden_values(stage1_media)
    wanted = needles(values)
    for orthanc_id, tags in sent.instances.items():
        text = json.dumps(tags, ensure_ascii=False)
        assert not scan_text(text, values), orthanc_id
        assert not scan(orthanc.get_bytes(f"/instances/{orthanc_id}/file"), wanted), orthanc_id
    hits = scan_tree(orthanc.root / "storage", wanted, values)
    assert not hits, hits
