"""Non-image IODs that reference images: Basic Text SR, Key Object Selection and GSPS.

Why this is its own module: these documents are where de-identifiers most often miss PHI
(observation context, free-text content items, text annotations) and where references to other
instances must follow the UID remapping. They share the SR document header and the reference
items, which live here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydicom import uid as sop
from pydicom.dataset import Dataset

from appliance.synthetic.common import _base, _code, _evidence, _issuer, _ref
from appliance.synthetic.fixtures import (
    INSTITUTION,
    READER,
    _da,
    _display_name,
    _Series,
    _Study,
    _tm_plus,
    _uid,
)


def _request(st: _Study) -> list[Dataset]:
    tok = st.tokens
    item = Dataset()
    item.StudyInstanceUID, item.ReferencedStudySequence = st.uid, []
    item.AccessionNumber, item.IssuerOfAccessionNumberSequence = tok["AccessionNumber"], [_issuer()]
    for keyword in ("PlacerOrderNumberImagingServiceRequest",
                    "FillerOrderNumberImagingServiceRequest", "RequestedProcedureID"):
        setattr(item, keyword, tok[keyword])
    item.RequestedProcedureDescription, item.RequestedProcedureCodeSequence = st.description, []
    return [item]


def _item(relationship: str, value_type: str, concept: Dataset | None, **values: object) -> Dataset:
    item = Dataset()
    item.RelationshipType, item.ValueType = relationship, value_type
    if concept is not None:
        item.ConceptNameCodeSequence = [concept]
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def _image_item(image: Dataset, concept: Dataset | None = None) -> Dataset:
    return _item("CONTAINS", "IMAGE", concept,
                 ReferencedSOPSequence=[_ref(image.SOPClassUID, image.SOPInstanceUID)])


def _document(st: _Study, se: _Series, sop_class: str, images: Sequence[Dataset]) -> Dataset:
    """SR-family common part: document series, content date/time, evidence and request."""
    ds = _base(st, se, sop_class, _uid(st.seed, "sop", se.uid, 0), 1)
    ds.ContentDate, ds.ContentTime = _da(st.when), _tm_plus(st.time, 120)
    ds.ReferencedPerformedProcedureStepSequence = []
    ds.CurrentRequestedProcedureEvidenceSequence = _evidence(st, images)
    ds.ReferencedRequestSequence = _request(st)
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    return ds


def _sr(st: _Study, se: _Series, images: Sequence[Dataset]) -> Dataset:
    """Basic Text SR report; its observation context repeats the patient's name, ID, birth date."""
    p = st.patient
    ds = _document(st, se, sop.BasicTextSRStorage, images)
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "VERIFIED"
    verifier = Dataset()
    verifier.VerifyingObserverName, verifier.VerifyingOrganization = READER, INSTITUTION
    verifier.VerificationDateTime = f"{_da(st.when)}{_tm_plus(st.time, 180)}"
    verifier.VerifyingObserverIdentificationCodeSequence = []
    ds.VerifyingObserverSequence = [verifier]
    ds.PerformedProcedureCodeSequence = [_code("24627-2", "LN", "CT Chest")]
    ds.ConceptNameCodeSequence = [_code("18748-4", "LN", "Diagnostic Imaging Report")]
    finding = _item("CONTAINS", "TEXT", _code("121071", "DCM", "Finding"), TextValue=(
        f"{_display_name(p)} (MRN {p.patient_id}): 6 mm nodule in the right upper lobe. "
        f"Compare with prior; call {p.phone} with results."))
    findings = _item("CONTAINS", "CONTAINER", _code("121070", "DCM", "Findings"),
                     ContinuityOfContent="SEPARATE", ContentSequence=[finding])
    ds.ContentSequence = [
        _item("HAS OBS CONTEXT", "PNAME", _code("121008", "DCM", "Person Observer Name"),
              PersonName=READER),
        _item("HAS OBS CONTEXT", "PNAME", _code("121029", "DCM", "Subject Name"),
              PersonName=p.name),
        _item("HAS OBS CONTEXT", "TEXT", _code("121030", "DCM", "Subject ID"),
              TextValue=p.patient_id),
        _item("HAS OBS CONTEXT", "DATE", _code("121031", "DCM", "Subject Birth Date"),
              Date=p.birth_date),
        findings,
        *(_image_item(i, _code("121080", "DCM", "Best illustration of finding")) for i in images),
    ]
    return ds


def _kos(st: _Study, se: _Series, images: Sequence[Dataset]) -> Dataset:
    """Key Object Selection (TID 2010) with a free-text description naming the patient."""
    ds = _document(st, se, sop.KeyObjectSelectionDocumentStorage, images)
    ds.ConceptNameCodeSequence = [_code("113000", "DCM", "Of Interest")]
    template = Dataset()
    template.MappingResource, template.TemplateIdentifier = "DCMR", "2010"
    ds.ContentTemplateSequence = [template]
    description = _item("CONTAINS", "TEXT", _code("113012", "DCM", "Key Object Description"),
                        TextValue=f"Key images for {_display_name(st.patient)}, tumour board")
    ds.ContentSequence = [description, *(_image_item(i) for i in images)]
    return ds


def _gsps(st: _Study, se: _Series, images: Sequence[Dataset]) -> Dataset:
    """Grayscale Softcopy Presentation State whose text annotation names the patient."""
    p, first = st.patient, images[0]
    ds = _base(st, se, sop.GrayscaleSoftcopyPresentationStateStorage,
               _uid(st.seed, "sop", se.uid, 0), 1)
    ds.BodyPartExamined = "CHEST"
    ds.ContentLabel, ds.ContentDescription = "NODULE", f"Nodule markup for {_display_name(p)}"
    ds.ContentCreatorName = READER
    ds.PresentationCreationDate = _da(st.when)
    ds.PresentationCreationTime = _tm_plus(st.time, 150)
    series: dict[str, list[Dataset]] = {}
    for image in images:
        series.setdefault(image.SeriesInstanceUID, []).append(
            _ref(image.SOPClassUID, image.SOPInstanceUID))
    ds.ReferencedSeriesSequence = []
    for series_uid, refs in series.items():
        item = Dataset()
        item.SeriesInstanceUID, item.ReferencedImageSequence = series_uid, refs
        ds.ReferencedSeriesSequence.append(item)
    area, layer, text, circle, annotation, voi = (Dataset() for _ in range(6))
    area.DisplayedAreaTopLeftHandCorner = [1, 1]
    area.DisplayedAreaBottomRightHandCorner = [first.Columns, first.Rows]
    area.PresentationSizeMode, area.PresentationPixelSpacing = "SCALE TO FIT", first.PixelSpacing
    ds.DisplayedAreaSelectionSequence = [area]
    layer.GraphicLayer, layer.GraphicLayerOrder = "FINDINGS", 1
    layer.GraphicLayerDescription = "Radiologist findings"
    ds.GraphicLayerSequence = [layer]
    cx, cy = first.Columns / 2.0, first.Rows / 3.0
    text.AnchorPointAnnotationUnits, text.AnchorPoint = "PIXEL", [cx + 8, cy - 8]
    text.AnchorPointVisibility = "Y"
    text.UnformattedTextValue = f"{_display_name(p)} {p.patient_id}: RUL nodule 6 mm"
    circle.GraphicAnnotationUnits, circle.GraphicDimensions = "PIXEL", 2
    circle.NumberOfGraphicPoints, circle.GraphicData = 2, [cx, cy, cx + 4, cy]
    circle.GraphicType, circle.GraphicFilled = "CIRCLE", "N"
    annotation.GraphicLayer = "FINDINGS"
    annotation.ReferencedImageSequence = [_ref(first.SOPClassUID, first.SOPInstanceUID)]
    annotation.TextObjectSequence, annotation.GraphicObjectSequence = [text], [circle]
    ds.GraphicAnnotationSequence = [annotation]
    ds.ImageRotation, ds.ImageHorizontalFlip = 0, "N"
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
    voi.WindowCenter, voi.WindowWidth = "40", "400"
    ds.SoftcopyVOILUTSequence = [voi]
    ds.PresentationLUTShape = "IDENTITY"
    return ds
