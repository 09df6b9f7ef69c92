"""DICOMDIR directory records (PS3.3 Annex F) built from de-identified files, with fallbacks.

Why not pydicom's default recorders: PS3.15 Annex E empties Study Date, Study Time, Study ID and
often Patient ID (action Z), yet all four are Type 1 keys of the PATIENT and STUDY records, so
the defaults raise on exactly the files this appliance produces. The fallbacks below go into
the directory records ONLY; the DICOM files are copied to the medium byte for byte. Records
are built from a fixed list of keys read from the de-identified file, never from anything else,
so a record cannot carry a value the file does not hold (the derived fallbacks are constants,
ordinals, or a digest of a UID that is itself in the file).

Keys copied (and nothing else): PATIENT Patient's Name, Patient ID; STUDY Study Date and Time,
Description, Instance UID, ID, Accession Number; SERIES Modality, Instance UID, Number; IMAGE
Instance Number plus the STD-GEN keys Image Type and Referenced Image Sequence (PS3.11, as dcmtk's
dcmgpdir writes them); SR DOCUMENT / KEY OBJECT DOC the F.5 keys, with only the root's HAS
CONCEPT MOD items as Content Sequence (never the report text); PRESENTATION the F.5 keys. Other
leaf types use pydicom's recorder. Specific Character Set goes on records that can hold text.

Fallbacks (documented in README.TXT when used):
  PATIENT  Patient ID            "NOID" + 8 hex digits of SHA-256(Study Instance UID), so each
                                 study without an ID gets its own PATIENT record (two unknown
                                 patients are never merged)
  STUDY    Study Date / Time     19000101 / 000000
           Study ID              8 hex digits of SHA-256(Study Instance UID)
  SERIES   Modality              OT
           Series Number         the series' position in its study (1, 2, ...)
  leaves   Instance Number       the instance's position in its series (1, 2, ...)
           Content Date / Time   19000101 / 000000 (SR, KOS); Presentation Creation Date/Time too
           Completion Flag       PARTIAL (SR);  Verification Flag  UNVERIFIED (SR)
           Content Label         UNNAMED (PRESENTATION)
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

# pydicom's own SOP Class → record type tables (private in pydicom 3.0; pinned <3.1).
from pydicom.fileset import (
    DIRECTORY_RECORDERS,
    _four_level_record_type,
    _single_level_record_type,
)

FALLBACK_DATE = "19000101"
FALLBACK_TIME = "000000"
FALLBACK_MODALITY = "OT"
NO_ID_PREFIX = "NOID"

LEAF_PREFIXES = {
    "IMAGE": "IM",
    "SR DOCUMENT": "SR",
    "KEY OBJECT DOC": "KO",
    "PRESENTATION": "PR",
    "ENCAP DOC": "ED",
    "WAVEFORM": "WV",
    "RT DOSE": "RT",
    "RT STRUCTURE SET": "RT",
    "RT PLAN": "RT",
    "RT TREAT RECORD": "RT",
    "SPECTROSCOPY": "SP",
    "REGISTRATION": "RG",
    "FIDUCIAL": "FI",
}
DEFAULT_LEAF_PREFIX = "OB"


class RecordError(ValueError):
    """A file from which no conformant directory record can be built (message says why)."""


@dataclass
class Records:
    """The four directory records of one instance, top to bottom, and what was invented."""

    leaf_type: str
    patient: Dataset
    study: Dataset
    series: Dataset
    leaf: Dataset
    filled: list[str] = field(default_factory=list)  # keywords given a placeholder value
    needs_series_number: bool = False
    needs_instance_number: bool = False


def digest8(value: str) -> str:
    """Eight upper-case hex digits of SHA-256(value): a stable, non-reversible short ID."""
    return hashlib.sha256(value.encode("ascii", "replace")).hexdigest()[:8].upper()


def is_empty(ds: Dataset, keyword: str) -> bool:
    """True if the element is absent or has no value (what a Type 1 key may not be)."""
    if keyword not in ds:
        return True
    elem = ds[keyword]
    if elem.VM == 0:
        return True
    return elem.VR != "SQ" and str(elem.value).strip() == ""


def _take(ds: Dataset, keyword: str, fallback: str, filled: list[str]) -> Any:
    if is_empty(ds, keyword):
        filled.append(keyword)
        return fallback
    return ds[keyword].value


def leaf_record_type(ds: Dataset) -> str:
    """The PS3.3 F.4 record type below SERIES for this SOP Class (IMAGE when nothing specific)."""
    if _single_level_record_type(ds) != "PATIENT":
        raise RecordError(
            f"SOP Class {ds.SOPClassUID} is not patient data (single-level record type "
            f"{_single_level_record_type(ds)}); it does not belong on de-identified media"
        )
    return _four_level_record_type(ds)


def build_records(ds: Dataset) -> Records:
    """Build PATIENT, STUDY, SERIES and leaf records for `ds` (read-only use of `ds`)."""
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
        if is_empty(ds, keyword):
            raise RecordError(f"the file has no {keyword}, so it cannot be placed in a study")
    filled: list[str] = []
    study_uid = str(ds.StudyInstanceUID)

    patient = Dataset()
    patient.PatientName = ds.get("PatientName", "")
    patient.PatientID = _take(ds, "PatientID", NO_ID_PREFIX + digest8(study_uid), filled)

    study = Dataset()
    study.StudyDate = _take(ds, "StudyDate", FALLBACK_DATE, filled)
    study.StudyTime = _take(ds, "StudyTime", FALLBACK_TIME, filled)
    study.StudyDescription = ds.get("StudyDescription", "")
    study.StudyInstanceUID = study_uid
    study.StudyID = _take(ds, "StudyID", digest8(study_uid), filled)
    study.AccessionNumber = ds.get("AccessionNumber", "")

    series = Dataset()
    series.Modality = _take(ds, "Modality", FALLBACK_MODALITY, filled)
    series.SeriesInstanceUID = str(ds.SeriesInstanceUID)
    needs_series_number = is_empty(ds, "SeriesNumber")
    series.SeriesNumber = None if needs_series_number else ds.SeriesNumber

    leaf_type = leaf_record_type(ds)
    leaf = _leaf(ds, leaf_type, filled)
    needs_instance_number = is_empty(ds, "InstanceNumber")
    leaf.InstanceNumber = None if needs_instance_number else ds.InstanceNumber

    filled += [kw for kw, needed in (("SeriesNumber", needs_series_number),
                                     ("InstanceNumber", needs_instance_number)) if needed]
    records = Records(leaf_type, patient, study, series, leaf, filled,
                      needs_series_number, needs_instance_number)
    charset = ds.get("SpecificCharacterSet")
    if charset:  # 1C: only on records that can hold text (as dcmtk does)
        for record in (patient, study, leaf):
            if leaf_type != "IMAGE" or record is not leaf:
                record.SpecificCharacterSet = charset
    return records


def _concept_modifiers(ds: Dataset) -> list[Dataset]:
    """The root content items that modify the document title (F.5: Content Sequence 1C).

    Only these belong in an SR DOCUMENT or KEY OBJECT DOC record, not the whole report; for
    TCE key object notes they carry the delay reason, which an importer needs.
    """
    items = ds.get("ContentSequence") or []
    return [copy.deepcopy(item) for item in items
            if str(item.get("RelationshipType", "")) == "HAS CONCEPT MOD"]


def _document(ds: Dataset, record: Dataset, filled: list[str], kind: str) -> None:
    record.ContentDate = _take(ds, "ContentDate", FALLBACK_DATE, filled)
    record.ContentTime = _take(ds, "ContentTime", FALLBACK_TIME, filled)
    if is_empty(ds, "ConceptNameCodeSequence"):
        raise RecordError(f"the {kind} has no Concept Name Code Sequence (document title)")
    record.ConceptNameCodeSequence = copy.deepcopy(ds.ConceptNameCodeSequence)
    modifiers = _concept_modifiers(ds)
    if modifiers:
        record.ContentSequence = modifiers


def _leaf(ds: Dataset, leaf_type: str, filled: list[str]) -> Dataset:
    record = Dataset()
    if leaf_type == "IMAGE":
        # STD-GEN additional keys (PS3.11), both 1C: required if present in the image.
        if not is_empty(ds, "ImageType"):
            record.ImageType = ds.ImageType
        if not is_empty(ds, "ReferencedImageSequence"):
            record.ReferencedImageSequence = copy.deepcopy(ds.ReferencedImageSequence)
    elif leaf_type == "SR DOCUMENT":
        record.CompletionFlag = _take(ds, "CompletionFlag", "PARTIAL", filled)
        record.VerificationFlag = _take(ds, "VerificationFlag", "UNVERIFIED", filled)
        _document(ds, record, filled, "SR document")
        if record.VerificationFlag == "VERIFIED":
            times = [str(item.get("VerificationDateTime", ""))
                     for item in ds.get("VerifyingObserverSequence") or []]
            if any(times):
                record.VerificationDateTime = max(times)
    elif leaf_type == "KEY OBJECT DOC":
        _document(ds, record, filled, "key object selection document")
    elif leaf_type == "PRESENTATION":
        record.PresentationCreationDate = _take(ds, "PresentationCreationDate", FALLBACK_DATE,
                                                filled)
        record.PresentationCreationTime = _take(ds, "PresentationCreationTime", FALLBACK_TIME,
                                                filled)
        record.ContentLabel = _take(ds, "ContentLabel", "UNNAMED", filled)
        record.ContentDescription = ds.get("ContentDescription", "")
        record.ContentCreatorName = ds.get("ContentCreatorName", "")
        for keyword in ("ReferencedSeriesSequence", "BlendingSequence"):
            if not is_empty(ds, keyword):
                record[keyword] = copy.deepcopy(ds[keyword])
    else:
        record = _pydicom_leaf(ds, leaf_type)
    return record


def _pydicom_leaf(ds: Dataset, leaf_type: str) -> Dataset:
    """Less common leaf types: pydicom's recorder, on a view whose only change is the number."""
    view = Dataset()
    for tag in ds.keys():  # noqa: SIM118 - iterating a Dataset would read deferred values
        if tag == 0x00200013:  # InstanceNumber: set below, without touching `ds`
            continue
        raw = ds.get_item(tag, keep_deferred=True)
        if isinstance(raw, RawDataElement) and raw.value is None and raw.length:
            continue  # a deferred bulk value: no recorder needs it, and reading it costs I/O
        view[tag] = ds[tag]
    view.InstanceNumber = "1" if is_empty(ds, "InstanceNumber") else ds.InstanceNumber
    try:
        record: Dataset = DIRECTORY_RECORDERS[leaf_type](view)
    except (ValueError, KeyError) as exc:
        raise RecordError(f"cannot build its {leaf_type} record: {exc}") from exc
    return record
