"""End to end: a modality (dcmtk storescu) and a second sender (pynetdicom) → node → PDI media.

The synthetic sample plants identifiers everywhere scanners and RIS put them (names in three
character sets, IDs, accession numbers, addresses, phone numbers, the institution, device
serials, private tags, nested sequences). After the node has pseudonymized it and written PDI
media, no planted value and no original UID may be found on the media (file contents and file
names), in the node's log or in any column of its database; what the node keeps of the
originals is sealed, and only the key ring opens it.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.fileset import FileSet
from sqlalchemy import LargeBinary, select

from appliance.keys import KeyRing
from appliance.models import Base, Pseudonym, Study, StudyState
from appliance.synthetic import (
    make_sample_study_set,
    original_uids,
    planted_phi,
    sample_patients,
    write_datasets,
)
from tests.stage1_modality.harness import (
    SUCCESS,
    NodeDir,
    NodeFactory,
    RunningNode,
    echoscu,
    send,
    storescu,
)
from tests.stage1_modality.phi import needles, scan, scan_text, scan_tree

SEEDS = (0, 1)  # seed 0 goes through storescu, seed 1 through pynetdicom


@dataclass
class Received:
    node: NodeDir
    running: RunningNode
    storescu: subprocess.CompletedProcess[str]
    pynetdicom: list[tuple[str, int | None]]
    sample_dir: Path
    datasets: list[Dataset]


@pytest.fixture(scope="module")
def received(module_nodes: NodeFactory, tmp_path_factory: pytest.TempPathFactory) -> Received:
    node = module_nodes.folder("integration", quiet_period_seconds=3600)
    running = module_nodes.start(node)
    sample_dir = tmp_path_factory.mktemp("sample")
    first = make_sample_study_set(SEEDS[0])
    write_datasets(first, sample_dir, layout="flat")
    by_storescu = storescu(running.port, [sample_dir], "+sd", "+r")
    second = make_sample_study_set(SEEDS[1])
    by_pynetdicom = send(running.port, second)
    return Received(node, running, by_storescu, by_pynetdicom, sample_dir,
                    make_sample_study_set(SEEDS[0]) + make_sample_study_set(SEEDS[1]))


@pytest.fixture(scope="module")
def media(received: Received, tmp_path_factory: pytest.TempPathFactory
          ) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("usb") / "MEDIA"
    done = received.node.tce("stage1", "media", "write", str(out), "--all")
    assert done.returncode == 0, done.stderr
    return out, done


@pytest.fixture(scope="module")
def phi_values() -> list[str]:
    values: list[str] = []
    for seed in SEEDS:
        values += planted_phi(sample_patients(seed))
        values += sorted(original_uids(make_sample_study_set(seed)))
    return list(dict.fromkeys(values))


def test_storescu_stores_the_sample_and_every_response_is_success(received: Received) -> None:
    assert received.storescu.returncode == 0, received.storescu.stderr
    output = received.storescu.stdout + received.storescu.stderr
    assert output.count("Received Store Response (Success)") == 22
    assert "Status" not in output.replace("Received Store Response (Success)", "")


def test_pynetdicom_stores_the_second_sample(received: Received) -> None:
    assert len(received.pynetdicom) == 22
    assert all(status == SUCCESS for _uid, status in received.pynetdicom)


def test_echoscu_gets_success(received: Received) -> None:
    done = echoscu(received.running.port)
    assert done.returncode == 0, done.stderr
    assert "Received Echo Response (Success)" in done.stdout + done.stderr


def test_media_holds_every_instance_and_dcmdump_reads_the_dicomdir(
        received: Received, media: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, done = media
    assert "10 studies, 44 instances" in done.stdout
    for name in ("DICOMDIR", "README.TXT", "INDEX.HTM"):
        assert (out / name).is_file(), f"{name} missing on the media"
    dump = subprocess.run(["dcmdump", str(out / "DICOMDIR")], capture_output=True, text=True,
                          check=False)
    assert dump.returncode == 0, dump.stderr
    assert "E:" not in dump.stderr
    assert "MediaStorageDirectoryStorage" in dump.stdout
    assert dump.stdout.count("(0004,1430) CS [PATIENT]") == 8
    assert dump.stdout.count("(0004,1430) CS [STUDY]") == 10


def test_pydicom_fileset_loads_every_instance_under_its_new_uids(
        received: Received, media: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, _ = media
    fs = FileSet(pydicom.dcmread(out / "DICOMDIR"))
    assert len(fs) == 44
    new_uids = {row.new_sop_instance_uid for row in received.node.instance_rows()}
    originals = {str(ds.SOPInstanceUID) for ds in received.datasets}
    loaded = {str(instance.load().SOPInstanceUID) for instance in fs}
    assert loaded == new_uids
    assert not loaded & originals


def test_studies_are_marked_media_written(
        received: Received, media: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    with received.node.engine.connect() as conn:
        states = list(conn.execute(select(Study.state, Study.media_written_at)))
    assert len(states) == 10
    assert all(state == StudyState.MEDIA_WRITTEN and at is not None for state, at in states)


def test_scanner_finds_planted_identifiers_in_the_input(
        received: Received, phi_values: list[str]) -> None:
    """The scan below must be able to fail: on the original files it finds everything."""
    hits = scan_tree(received.sample_dir, needles(phi_values), phi_values)
    found = {label.split(" as ")[0] for labels in hits.values() for label in labels}
    patient = sample_patients(SEEDS[0])[3]  # ISO 2022 IR 87: kanji must be found too
    for value in (patient.name.split("=")[1], patient.patient_id, patient.phone,
                  "Saint Elsewhere General Hospital"):
        assert repr(value) in found


def test_no_identifier_on_the_media(media: tuple[Path, subprocess.CompletedProcess[str]],
                                    phi_values: list[str]) -> None:
    out, _ = media
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) >= 44 + 3
    hits = scan_tree(out, needles(phi_values), phi_values)
    assert not hits, f"identifiers survived on the media: {hits}"


def test_no_identifier_in_the_node_log(received: Received,
                                       media: tuple[Path, subprocess.CompletedProcess[str]],
                                       phi_values: list[str]) -> None:
    log = received.running.log()
    assert '"event": "stage1.instance"' in log  # the log is there, one event per instance
    _out, done = media
    for text in (log, done.stdout, done.stderr):
        assert not scan_text(text, phi_values)


def test_no_identifier_in_any_database_column(
        received: Received, media: tuple[Path, subprocess.CompletedProcess[str]],
        phi_values: list[str]) -> None:
    wanted = needles(phi_values)
    hits: list[str] = []
    rows = 0
    with received.node.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for row in conn.execute(select(table)):
                rows += 1
                for column, value in zip(table.columns, row, strict=True):
                    hits += [f"{table.name}.{column.name}: {h}"
                             for h in _scan_value(value, column, wanted, phi_values)]
    assert rows > 44
    assert not hits, hits


def _scan_value(value: Any, column: Any, wanted: list[Any], values: list[str]) -> list[str]:
    if isinstance(value, bytes):
        assert isinstance(column.type, LargeBinary)
        return scan(value, wanted)
    if isinstance(value, str):
        return scan_text(value, values)
    return []


def test_sealed_originals_unseal_with_the_key_ring(received: Received,
                                                   phi_values: list[str]) -> None:
    ring = KeyRing.load(received.node.settings.key_ring)
    with received.node.engine.connect() as conn:
        pseudonyms = list(conn.execute(select(Pseudonym.keyword, Pseudonym.pseudonym,
                                              Pseudonym.sealed)))
        patients_on_studies = set(conn.scalars(select(Study.patient_pseudonym)))
    originals: dict[str, dict[str, str]] = {}
    names: dict[str, set[str]] = {}
    for keyword, pseudonym, sealed in pseudonyms:
        original = ring.unseal(sealed, keyword.encode()).decode("utf-8")
        assert original != pseudonym
        originals.setdefault(keyword, {})[pseudonym] = original
        if keyword == "PatientName":
            names.setdefault(pseudonym, set()).add(original)
    patients = [p for seed in SEEDS for p in sample_patients(seed)]
    assert set(originals["PatientID"].values()) == {p.patient_id for p in patients}
    # stage1-pseudonymize derives the name pseudonym from PatientID (``source: PatientID``), so
    # one patient keeps one name pseudonym whatever the spelling; what is sealed under it is
    # the name it replaced (each spelling once), so a leak scan can look for the name itself.
    by_id = {pseudonym.removeprefix("PSN"): original
             for pseudonym, original in originals["PatientID"].items()}
    patient_of = {p.patient_id: p for p in patients}
    assert len(names) == len(patients)
    for pseudonym, spellings in names.items():
        patient = patient_of[by_id[pseudonym.removeprefix("PSEUDO^")]]
        assert patient.name in spellings
    assert set(originals["PatientID"]) == patients_on_studies
    assert len(originals["AccessionNumber"]) == 10
    for keyword in ("AccessionNumber", "StudyID"):
        assert set(originals[keyword].values()) <= set(phi_values)
    with pytest.raises(ValueError, match="altered or belongs to another context"):
        ring.unseal(pseudonyms[0][2], b"SomeOtherKeyword")
