"""The DICOM modules every synthetic IOD shares, and the PHI that rides on them.

Why this is its own module: CT, MR, SC, Enhanced CT, SR, KOS and GSPS differ only in their
IOD-specific modules. Patient, General Study, General Series, General Equipment, SOP Common, the
General Image and Acquisition attributes, Request Attributes (PHI three sequences deep), the vendor
private blocks and the Hierarchical SOP Instance Reference are written once, here, so every SOP
class plants the same identifiers in the same places.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
from pydicom import uid as sop
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

from appliance.synthetic.fixtures import (
    CT_GE,
    CT_PHILIPS,
    INSTITUTION,
    INSTITUTION_ADDRESS,
    OPERATOR,
    PERFORMER,
    READER,
    _da,
    _Equipment,
    _referrer,
    _Series,
    _Study,
    _tm_plus,
    _uid,
)


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _ref(sop_class: str, sop_uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, sop_uid
    return item


def _issuer() -> Dataset:
    item = Dataset()
    item.LocalNamespaceEntityID = "ELSW_RIS"
    return item


def _base(st: _Study, se: _Series, sop_class: str, sop_uid: str, number: int) -> Dataset:
    """Patient, General Study, Patient Study, General Series, General Equipment and SOP Common."""
    p, eq, tok = st.patient, se.equipment, st.tokens
    ds = Dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop.UID(sop_class)
    meta.MediaStorageSOPInstanceUID = sop.UID(sop_uid)
    meta.TransferSyntaxUID = sop.ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.SourceApplicationEntityTitle = eq.ae_title
    ds.file_meta = meta
    if p.charset:
        ds.SpecificCharacterSet = p.charset.split("\\") if "\\" in p.charset else p.charset
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.InstanceCreationDate, ds.InstanceCreationTime = _da(st.when), _tm_plus(st.time, 30)
    ds.InstanceCreatorUID = _uid(st.seed, "creator", eq.serial)
    ds.PatientName, ds.PatientID, ds.IssuerOfPatientID = p.name, p.patient_id, "ELSW_MRN"
    ds.PatientBirthDate, ds.PatientSex = p.birth_date, p.sex
    others = []
    for other in p.other_ids:
        item = Dataset()
        item.PatientID, item.IssuerOfPatientID, item.TypeOfPatientID = other, "ELSW_INS", "TEXT"
        others.append(item)
    ds.OtherPatientIDsSequence = others
    ds.PatientAddress, ds.PatientTelephoneNumbers = p.address, p.phone
    ds.PatientComments = f"Call patient at {p.phone} before the scan; claustrophobic."
    if se.age:
        ds.PatientAge = st.age
    ds.PatientSize, ds.PatientWeight = "1.72", "68"
    ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime = st.uid, _da(st.when), st.time
    ds.ReferringPhysicianName, ds.PhysiciansOfRecord = _referrer(p), _referrer(p)
    ds.NameOfPhysiciansReadingStudy = READER
    ds.StudyID, ds.AccessionNumber = tok["StudyID"], tok["AccessionNumber"]
    ds.IssuerOfAccessionNumberSequence = [_issuer()]
    ds.StudyDescription = st.description
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = se.modality, se.uid, se.number
    ds.SeriesDate, ds.SeriesTime = _da(st.when), _tm_plus(st.time, se.number)
    ds.SeriesDescription = se.description
    ds.Manufacturer, ds.ManufacturerModelName = eq.manufacturer, eq.model
    ds.InstitutionName, ds.InstitutionAddress = INSTITUTION, INSTITUTION_ADDRESS
    ds.InstitutionalDepartmentName = "Radiology"
    ds.StationName, ds.DeviceSerialNumber, ds.SoftwareVersions = eq.station, eq.serial, eq.software
    ds.InstanceNumber = number
    return ds


def _request_attributes(st: _Study) -> list[Dataset]:
    """RequestAttributesSequence, with a PNAME and an ID three sequences deep (a classic miss)."""
    tok, p = st.tokens, st.patient
    pname, pid = Dataset(), Dataset()
    pname.ValueType, pname.PersonName = "PNAME", p.name
    pname.ConceptNameCodeSequence = [_code("121029", "DCM", "Subject Name")]
    pid.ValueType, pid.TextValue = "TEXT", p.patient_id
    pid.ConceptNameCodeSequence = [_code("121030", "DCM", "Subject ID")]
    protocol = _code("CTCHEST01", "99ELSW", "Chest routine")
    protocol.ProtocolContextSequence = [pname, pid]
    item = Dataset()
    item.AccessionNumber = tok["AccessionNumber"]
    item.RequestedProcedureID = tok["RequestedProcedureID"]
    item.ScheduledProcedureStepID = tok["ScheduledProcedureStepID"]
    item.PlacerOrderNumberImagingServiceRequest = tok["PlacerOrderNumberImagingServiceRequest"]
    item.FillerOrderNumberImagingServiceRequest = tok["FillerOrderNumberImagingServiceRequest"]
    item.RequestedProcedureDescription = st.description
    item.ScheduledProcedureStepDescription = "Routine protocol"
    item.ScheduledProtocolCodeSequence = [protocol]
    return [item]


def _private_blocks(ds: Dataset, st: _Study, vendor: _Equipment | None) -> None:
    """An unknown vendor block full of PHI, plus the scanner's known-safe block (Table E.3.10-1)."""
    acme = ds.private_block(0x0009, "ACME_PHI 1.0", create=True)
    acme.add_new(0x01, "PN", st.patient.name)
    acme.add_new(0x02, "LO", st.patient.patient_id)
    acme.add_new(0x04, "UI", st.uid)
    item = Dataset()
    nested = item.private_block(0x0009, "ACME_PHI 1.0", create=True)
    nested.add_new(0x02, "LO", st.patient.patient_id)
    acme.add_new(0x03, "SQ", [item])
    if vendor is CT_GE:
        gems = ds.private_block(0x0019, "GEMS_ACQU_01", create=True)
        gems.add_new(0x23, "DS", "39.375")
        gems.add_new(0x24, "DS", "3.1")
        gems.add_new(0x27, "DS", "0.5")
    elif vendor is CT_PHILIPS:
        elscint = ds.private_block(0x00E1, "ELSCINT1", create=True)
        elscint.add_new(0x21, "DS", "412.5")
        elscint.add_new(0x50, "DS", "6.2")


def _image(ds: Dataset, st: _Study, se: _Series, pixels: np.ndarray, bits_stored: int,
           minutes: float) -> None:
    """General Image, General Acquisition and Image Pixel, plus the PHI that rides on images."""
    p = st.patient
    ds.ContentDate, ds.ContentTime = _da(st.when), _tm_plus(st.time, minutes)
    ds.AcquisitionDate, ds.AcquisitionTime = _da(st.when), _tm_plus(st.time, minutes)
    ds.AcquisitionDateTime = f"{_da(st.when)}{ds.AcquisitionTime}.250000"
    ds.AcquisitionNumber = 1
    birth = datetime.strptime(p.birth_date, "%Y%m%d").strftime("%m/%d/%Y")
    ds.ImageComments = f"pt {p.patient_id} dob {birth}"
    ds.BurnedInAnnotation = "NO"
    ds.OperatorsName, ds.PerformingPhysicianName = OPERATOR, PERFORMER
    ds.RequestAttributesSequence = _request_attributes(st)
    ds.PerformedProcedureStepID = st.tokens["ScheduledProcedureStepID"]
    ds.PerformedProcedureStepStartDate = _da(st.when)
    ds.PerformedProcedureStepStartTime = st.time
    ds.PerformedProcedureStepDescription = st.description
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = int(pixels.shape[-2]), int(pixels.shape[-1])
    ds.BitsAllocated = 8 * pixels.dtype.itemsize
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits_stored, bits_stored - 1, 0
    ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<"), copy=False).tobytes()
    ds["PixelData"].VR = "OW" if ds.BitsAllocated > 8 else "OB"
    _private_blocks(ds, st, se.equipment)


def _evidence(st: _Study, images: Sequence[Dataset]) -> list[Dataset]:
    """Hierarchical SOP Instance Reference: study > series > instance."""
    series: dict[str, list[Dataset]] = {}
    for image in images:
        series.setdefault(image.SeriesInstanceUID, []).append(
            _ref(image.SOPClassUID, image.SOPInstanceUID))
    study = Dataset()
    study.StudyInstanceUID = st.uid
    study.ReferencedSeriesSequence = []
    for series_uid, refs in series.items():
        item = Dataset()
        item.SeriesInstanceUID, item.ReferencedSOPSequence = series_uid, refs
        study.ReferencedSeriesSequence.append(item)
    return [study]
