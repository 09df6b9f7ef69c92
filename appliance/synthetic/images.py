"""Image IODs: CT, MR, Secondary Capture and multi-frame Enhanced CT slices and volumes.

Why this is its own module: each builder adds its IOD-specific modules (CT Image, MR Image, SC
Equipment, the Enhanced CT functional groups) on top of :mod:`appliance.synthetic.common`.
make_ct_instance is the public entry for benchmarks and DIMSE tests that need one realistic
CT slice of a chosen size in a chosen study and series, outside the sample study set.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
from pydicom import uid as sop
from pydicom.dataset import Dataset
from pydicom.pixels.utils import pack_bits

from appliance.synthetic.common import _base, _code, _evidence, _image, _ref
from appliance.synthetic.fixtures import (
    CT_GE,
    SamplePatient,
    _da,
    _display_name,
    _h,
    _make_study,
    _Series,
    _Study,
    _tm_plus,
    _uid,
)
from appliance.synthetic.pixels import _phantom, _text_mask


def _plane(ds: Dataset, st: _Study, index: int, rows: int, cols: int, for_uid: str) -> None:
    """Frame of Reference and Image Plane for an axial head-first-supine slice."""
    spacing = 350.0 / cols
    z = -40.0 - 5.0 * index
    ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = for_uid, "SN"
    ds.PixelSpacing = [f"{350.0 / rows:.6g}", f"{spacing:.6g}"]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [f"{-175 + spacing / 2:.4f}", f"{-175 + spacing / 2:.4f}", f"{z:.1f}"]
    ds.SliceThickness, ds.SliceLocation = "5", f"{z:.1f}"
    ds.PatientPosition, ds.BodyPartExamined = "HFS", "CHEST"


def _ct(st: _Study, se: _Series, index: int, rows: int, cols: int, *, overlay: bool = False,
        derived_from: Sequence[Dataset] = ()) -> Dataset:
    """One CT Image Storage slice with the full CT Image module and private blocks."""
    sop_uid = _uid(st.seed, "sop", se.uid, index)
    ds = _base(st, se, sop.CTImageStorage, sop_uid, index + 1)
    _image(ds, st, se, _phantom(rows, cols, index, _h(st.seed, "px", sop_uid)), 12,
           se.number + index / 10)
    _plane(ds, st, index, rows, cols, _uid(st.seed, "for", st.uid))
    ds.ImageType = ["DERIVED" if derived_from else "ORIGINAL", "PRIMARY", "AXIAL"]
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
    ds.WindowCenter, ds.WindowWidth = "40", "400"
    ds.KVP, ds.ScanOptions, ds.DataCollectionDiameter = "120", "HELICAL MODE", "500"
    ds.ReconstructionDiameter, ds.DistanceSourceToDetector = "350", "949.075"
    ds.DistanceSourceToPatient, ds.GantryDetectorTilt, ds.TableHeight = "541", "0", "160"
    ds.RotationDirection, ds.ExposureTime, ds.XRayTubeCurrent = "CW", 500, 300
    ds.Exposure, ds.FilterType, ds.GeneratorPower, ds.FocalSpots = 150, "BODY FILTER", 36000, "0.7"
    ds.ConvolutionKernel, ds.CTDIvol, ds.LossyImageCompression = "STANDARD", 12.3, "00"
    ds.CTDIPhantomTypeCodeSequence = [_code("113691", "DCM", "IEC Body Dosimetry Phantom")]
    if derived_from:
        ds.DerivationDescription = "Thin-slice reconstruction of the primary series"
        ds.SourceImageSequence = [_ref(s.SOPClassUID, s.SOPInstanceUID) for s in derived_from]
        ds.ReferencedImageSequence = [_ref(s.SOPClassUID, s.SOPInstanceUID) for s in derived_from]
    if overlay:
        mask = _text_mask([_display_name(st.patient), st.patient.patient_id], rows, cols,
                          scale=max(1, cols // 128))
        for element, vr, value in ((0x0010, "US", rows), (0x0011, "US", cols),
                                   (0x0022, "LO", f"Annotated for {_display_name(st.patient)}"),
                                   (0x0040, "CS", "G"), (0x0050, "SS", [1, 1]),
                                   (0x0100, "US", 1), (0x0102, "US", 0),
                                   (0x3000, "OW", pack_bits(mask.astype(np.uint8)))):
            ds.add_new(0x60000000 | element, vr, value)
    return ds


def make_ct_instance(index: int, study_uid: str, series_uid: str, patient: SamplePatient,
                     rows: int = 512, cols: int = 512, seed: int = 0) -> Dataset:
    """One realistic CT image with sequences and private tags (512x512 16-bit is about 0.5 MB)."""
    st = _make_study(patient, seed, 1, "CT chest", study_uid)
    se = _Series(series_uid, 1, "CT", "Chest 5mm", CT_GE)
    return _ct(st, se, index, rows, cols)


def _mr(st: _Study, se: _Series, index: int, rows: int, cols: int) -> Dataset:
    sop_uid = _uid(st.seed, "sop", se.uid, index)
    ds = _base(st, se, sop.MRImageStorage, sop_uid, index + 1)
    _image(ds, st, se, _phantom(rows, cols, index, _h(st.seed, "px", sop_uid), mr=True), 12,
           se.number + index / 10)
    _plane(ds, st, index, rows, cols, _uid(st.seed, "for", st.uid, se.uid))
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "SE", ["SK", "SP"], ""
    ds.MRAcquisitionType, ds.SequenceName, ds.AngioFlag = "2D", "se2d1", "N"
    ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength = "500", "15", "1"
    ds.NumberOfAverages, ds.ImagingFrequency, ds.ImagedNucleus = "1", "123.2", "1H"
    ds.EchoNumbers, ds.MagneticFieldStrength, ds.SpacingBetweenSlices = "1", "3", "5"
    ds.PixelBandwidth, ds.FlipAngle, ds.LossyImageCompression = "130", "90", "00"
    ds.WindowCenter, ds.WindowWidth = "600", "1200"
    return ds


def _sc(st: _Study, se: _Series, index: int, size: int, source: Dataset, *,
        burned: bool = False) -> Dataset:
    """Secondary Capture of a CT slice; with `burned`, name, ID and birth date are in the pixels."""
    sop_uid = _uid(st.seed, "sop", se.uid, index)
    ds = _base(st, se, sop.SecondaryCaptureImageStorage, sop_uid, index + 1)
    hu = _phantom(size, size, index, _h(st.seed, "px", sop_uid)).astype(np.int32) - 1024
    pixels = np.clip((hu + 160) * 255 // 400, 0, 255).astype(np.uint8)
    if burned:
        p = st.patient
        birth = datetime.strptime(p.birth_date, "%Y%m%d").strftime("%m/%d/%Y")
        lines = [_display_name(p), f"ID {p.patient_id}", f"DOB {birth}"]
        pixels[_text_mask(lines, size, size, scale=max(2, size // 128))] = 255
    _image(ds, st, se, pixels, 8, 60 + index)
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.BurnedInAnnotation = "YES" if burned else "NO"
    ds.ConversionType, ds.PatientOrientation, ds.BodyPartExamined = "WSD", ["L", "P"], "CHEST"
    ds.DateOfSecondaryCapture, ds.TimeOfSecondaryCapture = _da(st.when), _tm_plus(st.time, 60)
    ds.SecondaryCaptureDeviceManufacturer = se.equipment.manufacturer
    ds.DerivationDescription = "Screen capture of the annotated CT"
    ds.SourceImageSequence = [_ref(source.SOPClassUID, source.SOPInstanceUID)]
    return ds


def _frame_groups(st: _Study, sources: Sequence[Dataset]) -> tuple[Dataset, list[Dataset]]:
    """Shared and per-frame functional groups; Derivation > Source Image nests three deep."""
    first = sources[0]
    shared = Dataset()
    measures, orientation, transform, voi, anatomy = (Dataset() for _ in range(5))
    measures.PixelSpacing, measures.SliceThickness = first.PixelSpacing, first.SliceThickness
    orientation.ImageOrientationPatient = first.ImageOrientationPatient
    transform.RescaleIntercept, transform.RescaleSlope, transform.RescaleType = "-1024", "1", "HU"
    voi.WindowCenter, voi.WindowWidth = "40", "400"
    anatomy.AnatomicRegionSequence = [_code("51185008", "SCT", "Thorax")]
    anatomy.FrameLaterality = "U"
    frame_type, irradiation, xray, acq_type = (Dataset() for _ in range(4))
    frame_type.FrameType = ["DERIVED", "PRIMARY", "VOLUME", "NONE"]
    frame_type.PixelPresentation, frame_type.VolumetricProperties = "MONOCHROME", "VOLUME"
    frame_type.VolumeBasedCalculationTechnique = "NONE"
    irradiation.IrradiationEventUID = _uid(st.seed, "irradiation", st.uid)
    xray.KVP, xray.FocalSpots, xray.FilterType = "120", "0.7", "BODY FILTER"
    xray.FilterMaterial = "ALUMINUM"
    acq_type.AcquisitionType, acq_type.ConstantVolumeFlag, acq_type.FluoroscopyFlag = (
        "SPIRAL", "NO", "NO")
    for keyword, item in (("PixelMeasuresSequence", measures),
                          ("PlaneOrientationSequence", orientation),
                          ("PixelValueTransformationSequence", transform),
                          ("FrameVOILUTSequence", voi), ("FrameAnatomySequence", anatomy),
                          ("CTImageFrameTypeSequence", frame_type),
                          ("IrradiationEventIdentificationSequence", irradiation),
                          ("CTXRayDetailsSequence", xray), ("CTAcquisitionTypeSequence", acq_type)):
        setattr(shared, keyword, [item])
    per_frame = []
    for i, src in enumerate(sources):
        frame, content, position, derivation = Dataset(), Dataset(), Dataset(), Dataset()
        content.FrameAcquisitionNumber = 1
        content.FrameAcquisitionDateTime = content.FrameReferenceDateTime = src.AcquisitionDateTime
        content.FrameAcquisitionDuration = 500.0
        content.StackID, content.InStackPositionNumber = "1", i + 1
        content.DimensionIndexValues = [1, i + 1]
        position.ImagePositionPatient = src.ImagePositionPatient
        source_item = _ref(src.SOPClassUID, src.SOPInstanceUID)
        source_item.PurposeOfReferenceCodeSequence = [
            _code("121322", "DCM", "Source image for image processing operation")]
        derivation.DerivationCodeSequence = [_code("113091", "DCM", "Spatially-related frames "
                                                   "extracted from the volume")]
        derivation.DerivationDescription = f"Converted from classic CT of {st.patient.patient_id}"
        derivation.SourceImageSequence = [source_item]
        frame.FrameContentSequence, frame.PlanePositionSequence = [content], [position]
        frame.DerivationImageSequence = [derivation]
        per_frame.append(frame)
    return shared, per_frame


def _enhanced_ct(st: _Study, se: _Series, sources: Sequence[Dataset]) -> Dataset:
    """Enhanced CT (3+ frames) whose frames are derived from a classic CT series."""
    sop_uid = _uid(st.seed, "sop", se.uid, 0)
    ds = _base(st, se, sop.EnhancedCTImageStorage, sop_uid, 1)
    rows, cols = sources[0].Rows, sources[0].Columns
    frames = np.stack([np.frombuffer(s.PixelData, "<u2").reshape(rows, cols) for s in sources])
    _image(ds, st, se, frames, 12, se.number)
    for keyword in ("AcquisitionDate", "AcquisitionTime"):  # not in the Enhanced CT IOD
        delattr(ds, keyword)
    ds.NumberOfFrames, ds.ImageType = len(sources), ["DERIVED", "PRIMARY", "VOLUME", "NONE"]
    ds.PatientPosition, ds.BodyPartExamined = "HFS", "CHEST"
    ds.SourceImageEvidenceSequence = _evidence(st, sources)
    ds.FrameOfReferenceUID = sources[0].FrameOfReferenceUID
    ds.PositionReferenceIndicator = "SN"
    ds.AcquisitionDuration, ds.ContentQualification = 6.2, "PRODUCT"
    ds.PixelPresentation, ds.VolumetricProperties = "MONOCHROME", "VOLUME"
    ds.VolumeBasedCalculationTechnique, ds.PresentationLUTShape = "NONE", "IDENTITY"
    ds.LossyImageCompression, ds.RecognizableVisualFeatures = "00", "NO"
    ds.AcquisitionContextSequence = []
    ds.SharedFunctionalGroupsSequence, ds.PerFrameFunctionalGroupsSequence = (
        [x] if isinstance(x, Dataset) else x for x in _frame_groups(st, sources))
    organization, stack, position = Dataset(), Dataset(), Dataset()
    organization.DimensionOrganizationUID = _uid(st.seed, "dimension", sop_uid)
    ds.DimensionOrganizationSequence = [organization]
    for item, pointer in ((stack, 0x00209056), (position, 0x00209057)):
        item.DimensionOrganizationUID = organization.DimensionOrganizationUID
        item.DimensionIndexPointer, item.FunctionalGroupPointer = pointer, 0x00209111
    ds.DimensionIndexSequence = [stack, position]
    return ds
