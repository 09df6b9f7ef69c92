"""Test data for pdi/: de-identified-looking Part 10 files, with PHI planted off the records.

Every study has CT images (two series), a Basic Text SR, a GSPS and a KOS whose title is
modified by a TCE delay reason. Values that a stage-1 pseudonymizer would leave behind are
pseudonyms; PLANTED values sit in attributes no DICOMDIR record uses, so they must never show up
in DICOMDIR, README.TXT or INDEX.HTM.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    BasicTextSRStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    GrayscaleSoftcopyPresentationStateStorage,
    KeyObjectSelectionDocumentStorage,
)

PLANTED = (
    "PLANTED_INSTITUTION Saint Nowhere",
    "Planted^Referrer",
    "PLANTED_STATION",
    "PLANTEDSERIAL77",
    "PLANTED REPORT FINDING",
    "Planted^Operator",
)


def uid(*labels: object) -> str:
    digest = hashlib.sha256("/".join(map(str, labels)).encode()).hexdigest()
    return f"2.25.{int(digest[:30], 16)}"


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _base(sop_class: str, patient: int, study: int, series: int, number: int,
          modality: str) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = uid("inst", patient, study, series, number)
    ds.PatientName = f"PSEUDO^PATIENT{patient}"
    ds.PatientID = f"PSN{patient:04d}"
    ds.StudyInstanceUID = uid("study", patient, study)
    ds.SeriesInstanceUID = uid("series", patient, study, series)
    ds.StudyDate, ds.StudyTime = f"2024010{study}", "101500"
    ds.StudyID = f"{study}"
    ds.AccessionNumber = ""
    ds.StudyDescription = "CT CHEST"
    ds.ReferringPhysicianName = PLANTED[1]
    ds.Modality = modality
    ds.SeriesNumber = series
    ds.InstanceNumber = number
    ds.InstitutionName = PLANTED[0]
    ds.StationName = PLANTED[2]
    ds.DeviceSerialNumber = PLANTED[3]
    ds.OperatorsName = PLANTED[5]
    ds.Manufacturer = "ACME"
    return ds


def ct(patient: int, study: int, series: int, number: int, size: int = 16) -> Dataset:
    ds = _base(CTImageStorage, patient, study, series, number, "CT")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.FrameOfReferenceUID = uid("for", patient, study)
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope = "-1024", "1"
    pixels = (np.arange(size * size, dtype=np.uint16) * (number + 1)) % 4096
    ds.PixelData = pixels.tobytes()
    return ds


def _image_ref(image: Dataset) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = image.SOPClassUID
    ref.ReferencedSOPInstanceUID = image.SOPInstanceUID
    return ref


def sr(patient: int, study: int, images: list[Dataset]) -> Dataset:
    ds = _base(BasicTextSRStorage, patient, study, 90, 1, "SR")
    ds.ContentDate, ds.ContentTime = f"2024010{study}", "120000"
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    ds.ConceptNameCodeSequence = [_code("18748-4", "LN", "Diagnostic Imaging Report")]
    modifier = Dataset()
    modifier.RelationshipType, modifier.ValueType = "HAS CONCEPT MOD", "CODE"
    modifier.ConceptNameCodeSequence = [_code("121049", "DCM", "Language of Content Item")]
    modifier.ConceptCodeSequence = [_code("en", "RFC5646", "English")]
    finding = Dataset()
    finding.RelationshipType, finding.ValueType = "CONTAINS", "TEXT"
    finding.ConceptNameCodeSequence = [_code("121071", "DCM", "Finding")]
    finding.TextValue = PLANTED[4]
    ds.ContentSequence = [modifier, finding]
    evidence = Dataset()
    evidence.StudyInstanceUID = images[0].StudyInstanceUID
    series = Dataset()
    series.SeriesInstanceUID = images[0].SeriesInstanceUID
    series.ReferencedSOPSequence = [_image_ref(i) for i in images]
    evidence.ReferencedSeriesSequence = [series]
    ds.CurrentRequestedProcedureEvidenceSequence = [evidence]
    return ds


def kos(patient: int, study: int, images: list[Dataset]) -> Dataset:
    ds = _base(KeyObjectSelectionDocumentStorage, patient, study, 91, 1, "KO")
    ds.ContentDate, ds.ContentTime = f"2024010{study}", "121000"
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    ds.ConceptNameCodeSequence = [_code("TCE001", "IHERADTF", "For Teaching File Export")]
    delay = Dataset()
    delay.RelationshipType, delay.ValueType = "HAS CONCEPT MOD", "CODE"
    delay.ConceptNameCodeSequence = [_code("113011", "DCM", "Document Title Modifier")]
    delay.ConceptCodeSequence = [_code("TCE011", "IHERADTF", "Delay export until final report")]
    item = Dataset()
    item.RelationshipType, item.ValueType = "CONTAINS", "IMAGE"
    item.ReferencedSOPSequence = [_image_ref(images[0])]
    ds.ContentSequence = [delay, item]
    return ds


def gsps(patient: int, study: int, images: list[Dataset]) -> Dataset:
    ds = _base(GrayscaleSoftcopyPresentationStateStorage, patient, study, 92, 1, "PR")
    ds.PresentationCreationDate, ds.PresentationCreationTime = f"2024010{study}", "121500"
    ds.ContentLabel, ds.ContentDescription = "ANNOTATION", "Arrow"
    ds.ContentCreatorName = "PSEUDO^READER"
    series = Dataset()
    series.SeriesInstanceUID = images[0].SeriesInstanceUID
    series.ReferencedImageSequence = [_image_ref(i) for i in images]
    ds.ReferencedSeriesSequence = [series]
    ds.PresentationLUTShape = "IDENTITY"
    return ds


def save(ds: Dataset, path: Path, transfer_syntax: str = ExplicitVRLittleEndian) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(transfer_syntax)
    ds.file_meta = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def study_datasets(patient: int, study: int, *, series: int = 2, instances: int = 3,
                   size: int = 16) -> list[Dataset]:
    images = [ct(patient, study, se, n, size) for se in range(1, series + 1)
              for n in range(1, instances + 1)]
    return [*images, sr(patient, study, images[:2]), kos(patient, study, images[:1]),
            gsps(patient, study, images[:instances])]


def make_study_set(root: Path, *, patients: int = 2, studies: int = 2, series: int = 2,
                   instances: int = 3, size: int = 16) -> list[Path]:
    """patients × studies, each with series × instances CT images plus an SR, a KOS and a GSPS."""
    paths = []
    for p in range(1, patients + 1):
        for s in range(1, studies + 1):
            for n, ds in enumerate(study_datasets(p, s, series=series, instances=instances,
                                                  size=size)):
                paths.append(save(ds, root / f"p{p}" / f"s{s}" / f"file{n:03d}.dcm"))
    return paths
