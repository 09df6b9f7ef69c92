"""Shared fixtures: engine keys, the built-in policies, small policies and datasets, round trips.

The dataset factories build what a scanner writes (file meta, patient, study, series, equipment,
image module) with planted identifiers, so each engine test can add just the attributes it is
about. Helpers are exposed as fixtures returning callables, so tests never import conftest.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom import config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from policies.engine import Deidentifier
from policies.keying import EngineKeys
from policies.loader import builtin_policy_names, load_builtin, parse_policy
from policies.model import Policy
from policies.outcome import Outcome

# Real-database fixtures: db_url runs a test on SQLite and on a throwaway PostgreSQL server.
from tests.pg import db_engine, db_url, postgres_url  # noqa: F401

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
ROOT = "1.2.826.0.1.3680043.10.999.77."

Patient = dict[str, str]

DOE: Patient = {
    "PatientName": "Doe^John", "PatientID": "MRN4417702", "PatientBirthDate": "19610517",
    "PatientSex": "M", "PatientAge": "062Y",
}


@pytest.fixture(scope="session")
def keys() -> EngineKeys:
    return EngineKeys.for_testing()


@pytest.fixture(scope="session")
def other_keys() -> EngineKeys:
    return EngineKeys.for_testing(b"another-site")


@pytest.fixture(scope="session")
def builtin() -> dict[str, Policy]:
    return {name: load_builtin(name) for name in builtin_policy_names()}


@pytest.fixture(scope="session")
def make_policy() -> Callable[..., Policy]:
    """A small policy document → Policy, through the real loader."""

    def make(options: list[str] | None = None, overrides: list[dict[str, Any]] | None = None,
             parameters: dict[str, Any] | None = None, base: str = "ps315-basic",
             policy_id: str = "test-policy") -> Policy:
        document: dict[str, Any] = {
            "id": policy_id, "version": "1", "description": "test policy",
            "base_profile": base, "options": options or [],
        }
        if overrides:
            document["overrides"] = overrides
        if parameters:
            document["parameters"] = parameters
        return parse_policy(document)

    return make


@pytest.fixture(scope="session")
def deid(keys: EngineKeys) -> Callable[..., Outcome]:
    """De-identify ``ds`` in place with ``policy`` (a fresh engine unless one is given)."""

    def run(policy: Policy, ds: Dataset, engine: Deidentifier | None = None) -> Outcome:
        return (engine or Deidentifier(policy, keys)).deidentify(ds)

    return run


def _roundtrip(ds: Dataset) -> Dataset:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


@pytest.fixture(scope="session")
def roundtrip() -> Callable[[Dataset], Dataset]:
    """Write ``ds`` as a Part 10 file in memory and read it back."""
    return _roundtrip


@pytest.fixture(scope="session")
def written() -> Callable[[Dataset], bytes]:
    """The Part 10 bytes of ``ds``."""

    def write(ds: Dataset) -> bytes:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        return buffer.getvalue()

    return write


def _ct(patient: Patient | None = None, *, study: str = "1", series: str = "1",
        instance: int = 1, charset: str | None = None) -> Dataset:
    """A CT image as a scanner sends it: identifiers everywhere the header has them."""
    person = dict(DOE, **(patient or {}))
    ds = Dataset()
    sop_uid = f"{ROOT}{study}.{series}.{instance}"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(CT_IMAGE)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID("1.2.826.0.1.3680043.10.999.1")
    meta.ImplementationVersionName = "SCANNER_1"
    meta.SourceApplicationEntityTitle = "CT_ROOM_7"
    ds.file_meta = meta
    ds.preamble = b"SCANNER PREAMBLE".ljust(128, b"\x01")
    if charset:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE, sop_uid
    ds.StudyInstanceUID = f"{ROOT}{study}"
    ds.SeriesInstanceUID = f"{ROOT}{study}.{series}"
    ds.FrameOfReferenceUID = f"{ROOT}{study}.{series}.0"
    for keyword, value in person.items():
        setattr(ds, keyword, value)
    ds.StudyDate, ds.StudyTime = "20240115", "101530"
    ds.SeriesDate, ds.SeriesTime = "20240115", "101800.250"
    ds.AcquisitionDateTime = "20240115101812.123456+0100"
    ds.ContentDate, ds.ContentTime = "20240115", "101812"
    ds.StudyID, ds.AccessionNumber = "ST55120", "ACC20240115"
    ds.StudyDescription = f"CT chest for {person['PatientName'].replace('^', ' ')}"
    ds.SeriesDescription = "Chest 5mm"
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", series, instance
    ds.ReferringPhysicianName = "Welby^Marcus"
    ds.InstitutionName = "Saint Elsewhere General Hospital"
    ds.StationName, ds.DeviceSerialNumber = "ELSWCT01", "CT7741093"
    ds.Manufacturer, ds.ManufacturerModelName = "GE MEDICAL SYSTEMS", "LightSpeed VCT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = bytes(32)
    return ds


@pytest.fixture(scope="session")
def make_ct() -> Callable[..., Dataset]:
    return _ct


@pytest.fixture
def ct() -> Dataset:
    return _ct()


@pytest.fixture
def strict_validation() -> Iterator[None]:
    """Make pydicom raise on any value invalid for its VR, when set and when read back."""
    saved = (config.settings.writing_validation_mode, config.settings.reading_validation_mode)
    config.settings.writing_validation_mode = config.RAISE
    config.settings.reading_validation_mode = config.RAISE
    try:
        yield
    finally:
        (config.settings.writing_validation_mode,
         config.settings.reading_validation_mode) = saved


@pytest.fixture(scope="session")
def sample_set() -> Callable[[], list[Dataset]]:
    """The synthetic sample study set (fresh datasets on every call)."""
    synthetic = pytest.importorskip("appliance.synthetic")

    def make() -> list[Dataset]:
        return list(synthetic.make_sample_study_set(0))

    return make


@pytest.fixture(scope="session")
def pydicom_test_files() -> Path:
    return Path(os.path.dirname(pydicom.data.__file__)) / "test_files"
