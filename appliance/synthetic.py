"""Synthetic, IOD-plausible DICOM studies with PHI planted where anonymizers tend to miss it.

Why this exists: the README quick start, the demo, the benchmarks and most tests need input that
looks like a real hospital export (several character sets, nested sequences, private blocks,
SR/KOS/GSPS that reference images, overlays, burned-in text, odd file names) without ever
touching a real patient. Every value is derived from the seed through SHA-256 (never `random`
or `hash()`), so one seed gives byte-identical files on every machine and Python version.
"""

from __future__ import annotations

import hashlib
import sys
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
from pydicom import uid as sop
from pydicom._uid_dict import UID_dictionary
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels.utils import pack_bits
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

UID_ROOT = "1.2.826.0.1.3680043.10.999."
INSTITUTION = "Saint Elsewhere General Hospital"
INSTITUTION_ADDRESS = "5 Westphall Avenue, Boston, MA 02115"
NOTES_FILE = "notes.txt"  # non-DICOM file dropped by the "nested" layout
TRUNCATED_FILE = "PAT00001/STU00001/IMG99999.dcm"  # truncated Part 10 file ("nested" layout)
READER = "Zhivago^Yuri"  # reading radiologist, SR verifier, GSPS content creator
OPERATOR = "Ratched^Mildred"
PERFORMER = "Pierce^Hawkeye"
REFERRERS = ("Welby^Marcus", "Kildare^James", "Quinn^Michaela", "Casey^Benjamin")


@dataclass(frozen=True)
class _Equipment:
    manufacturer: str
    model: str
    station: str
    serial: str
    ae_title: str
    software: str


CT_GE = _Equipment("GE MEDICAL SYSTEMS", "LightSpeed VCT", "ELSWCT01", "CT7741093", "ELSW_CT01",
                   "07MW18.4")
CT_PHILIPS = _Equipment("Philips", "Brilliance 64", "ELSWCT02", "PH0043311", "ELSW_CT02", "4.1.6")
MR_SIEMENS = _Equipment("SIEMENS", "MAGNETOM Skyra", "ELSWMR01", "MR5520871", "ELSW_MR01",
                        "syngo MR E11")
WORKSTATION = _Equipment("ACME Imaging", "ViewStation", "ELSWWS07", "WS0099213", "ELSW_WS07",
                         "2.3.1")
EQUIPMENT = (CT_GE, CT_PHILIPS, MR_SIEMENS, WORKSTATION)


@dataclass(frozen=True)
class SamplePatient:
    name: str
    patient_id: str
    birth_date: str
    sex: str
    other_ids: tuple[str, ...]
    address: str
    phone: str
    charset: str


# (name, sex, address, phone) per character-set slot; the seed rotates through each pool.
_POOLS: dict[str, tuple[tuple[str, str, str, str], ...]] = {
    "": (("Doe^John", "M", "12 Elm Street, Springfield, MA 01101", "+1-617-555-0134"),
         ("Roe^Richard", "M", "48 Birch Lane, Quincy, MA 02169", "+1-617-555-0188"),
         ("Smithers^Alice", "F", "7 Harbor Road, Salem, MA 01970", "+1-978-555-0102")),
    "ISO_IR 100": (("Müller^Jürgen", "M", "Hauptstraße 12, 80331 München", "+49 89 5550172"),
                   ("Schäfer^Björn", "M", "Lindenallee 3, 50667 Köln", "+49 221 5550148"),
                   ("Köhler^Käthe", "F", "Große Gasse 9, 90403 Nürnberg", "+49 911 5550123")),
    "ISO_IR 192": (("Παπαδοπούλου^Ελένη", "F", "Οδός Ερμού 15, 10563 Αθήνα", "+30 21 5550194"),
                   ("Wiśniewska^Małgorzata", "F", "ul. Złota 44, 00-120 Łódź", "+48 42 5550161"),
                   ("Κωνσταντίνου^Γιώργος", "M", "Οδός Αιόλου 8, 10551 Αθήνα", "+30 21 5550177")),
    "ISO 2022 IR 6\\ISO 2022 IR 87": (
        ("Yamada^Tarou=山田^太郎=やまだ^たろう", "M", "東京都千代田区丸の内一丁目",
         "+81 3 5550 1234"),
        ("Suzuki^Hanako=鈴木^花子=すずき^はなこ", "F", "大阪府大阪市北区梅田二丁目",
         "+81 6 5550 4321"),
        ("Tanaka^Ichirou=田中^一郎=たなか^いちろう", "M", "京都府京都市中京区", "+81 75 555 0987")),
}


def _h(seed: int, *labels: object) -> int:
    """A stable 64-bit number for (seed, labels): the only source of variation in this module."""
    text = "|".join(str(x) for x in (seed, *labels))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _uid(seed: int, *labels: object) -> str:
    return UID_ROOT + str(_h(seed, "uid", *labels))


def _da(d: date) -> str:
    return d.strftime("%Y%m%d")


def _tm_plus(tm: str, minutes: float) -> str:
    t = datetime(2000, 1, 1, int(tm[:2]), int(tm[2:4]), int(tm[4:6])) + timedelta(minutes=minutes)
    return t.strftime("%H%M%S")


def _study_date(seed: int, patient_id: str, number: int) -> date:
    first = date(2022, 1, 3) + timedelta(days=_h(seed, "study-date", patient_id) % 900)
    return first + timedelta(days=(45 + _h(seed, "gap", patient_id) % 200) * (number - 1))


def _study_count(patient: SamplePatient) -> int:
    """The default-repertoire patient has two studies, so longitudinal consistency is testable."""
    return 2 if patient.charset == "" else 1


def sample_patients(seed: int = 0) -> list[SamplePatient]:
    """Four patients, one per character set; the first one is aged 90 or over at both studies."""
    patients = []
    for slot, (charset, pool) in enumerate(_POOLS.items()):
        name, sex, address, phone = pool[seed % len(pool)]
        pid = f"EL{_h(seed, 'pid', slot) % 10_000_000:07d}"
        first = _study_date(seed, pid, 1)
        years = 92 + _h(seed, "old", slot) % 3 if slot == 0 else 24 + _h(seed, "age", slot) % 55
        month, day = 1 + _h(seed, "bm", slot) % 12, 1 + _h(seed, "bd", slot) % 28
        birth = date(first.year - years, month, day)
        others: tuple[str, ...] = (f"INS{_h(seed, 'ins', slot) % 100_000_000:08d}",)
        if slot == 1:
            others += (f"KV{_h(seed, 'kv', slot) % 1_000_000_000:09d}",)
        patients.append(SamplePatient(name, pid, _da(birth), sex, others, address, phone, charset))
    return patients


def _study_tokens(patient: SamplePatient, number: int) -> dict[str, str]:
    """Per-study identifiers, derived from the patient so planted_phi() can list them."""
    digits = patient.patient_id[2:]
    return {"AccessionNumber": f"ACC{digits}{number}", "StudyID": f"S{digits}{number}",
            "RequestedProcedureID": f"RP{digits}{number}",
            "ScheduledProcedureStepID": f"SPS{digits}{number}",
            "PlacerOrderNumberImagingServiceRequest": f"PO{digits}{number}",
            "FillerOrderNumberImagingServiceRequest": f"FO{digits}{number}"}


def _referrer(patient: SamplePatient) -> str:
    return REFERRERS[_h(0, "referrer", patient.patient_id) % len(REFERRERS)]


def _display_name(patient: SamplePatient) -> str:
    """How a person would type the name into free text ("John Doe", plus kanji if any)."""
    groups = patient.name.split("=")
    family, given = [*groups[0].split("^"), ""][:2]
    text = f"{given} {family}"
    if len(groups) > 1 and groups[1]:
        text += f" ({groups[1].replace('^', '')})"
    return text


@dataclass(frozen=True)
class _Study:
    patient: SamplePatient
    seed: int
    number: int
    uid: str
    when: date
    time: str
    description: str

    @property
    def tokens(self) -> dict[str, str]:
        return _study_tokens(self.patient, self.number)

    @property
    def age(self) -> str:
        b = datetime.strptime(self.patient.birth_date, "%Y%m%d").date()
        years = self.when.year - b.year - ((self.when.month, self.when.day) < (b.month, b.day))
        return f"{years:03d}Y"


@dataclass(frozen=True)
class _Series:
    uid: str
    number: int
    modality: str
    description: str
    equipment: _Equipment
    age: bool = True  # False: PatientAge left out on purpose (one series), so compute_age is tested


def _make_study(patient: SamplePatient, seed: int, number: int, description: str,
                study_uid: str | None = None) -> _Study:
    when = _study_date(seed, patient.patient_id, number)
    h = _h(seed, "study-time", patient.patient_id, number)
    tm = f"{7 + h % 11:02d}{h // 11 % 60:02d}{h // 660 % 60:02d}"
    uid = study_uid or _uid(seed, "study", patient.patient_id, number)
    text = f"{description} for {_display_name(patient)}"
    return _Study(patient, seed, number, uid, when, tm, text)


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


def _noise(n: int, key: int, amplitude: int) -> np.ndarray:
    """Integer noise from a splitmix-style hash: identical on every numpy version, unlike RNGs."""
    x = np.arange(n, dtype=np.uint64) + np.uint64(key % 2**63)
    x ^= x >> np.uint64(31)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(29)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(32)
    return (x % np.uint64(2 * amplitude + 1)).astype(np.int32) - amplitude


def _phantom(rows: int, cols: int, z: float, key: int, mr: bool = False) -> np.ndarray:
    """A chest-like slice: body, lungs, heart and spine (HU for CT, arbitrary signal for MR)."""
    y, x = np.ogrid[-1:1:rows * 1j, -1:1:cols * 1j]
    img = np.full((rows, cols), 0 if mr else -1000, np.int32)
    img[(x / 0.86) ** 2 + (y / 0.64) ** 2 <= 1] = 620 if mr else 40
    for cx in (-0.42, 0.42):
        img[((x - cx) / 0.27) ** 2 + ((y + 0.05) / (0.4 - 0.02 * z)) ** 2 <= 1] = 60 if mr else -820
    img[((x + 0.08) / (0.2 + 0.01 * z)) ** 2 + ((y - 0.02) / 0.18) ** 2 <= 1] = 900 if mr else 45
    img[(x / 0.1) ** 2 + ((y - 0.46) / 0.1) ** 2 <= 1] = 250 if mr else 700
    img += _noise(rows * cols, key, 12).reshape(rows, cols)
    return np.clip(img if mr else img + 1024, 0, 4095).astype(np.uint16)


# 5x7 glyphs (HD44780 style), 7 rows of 5 bits each, for burned-in text and overlays.
_FONT = {c: bytes.fromhex(h) for c, h in {
    "0": "0e11131519110e", "1": "040c040404040e", "2": "0e11010204081f", "3": "1f02040201110e",
    "4": "02060a121f0202", "5": "1f101e0101110e", "6": "0608101e11110e", "7": "1f010204080808",
    "8": "0e11110e11110e", "9": "0e11110f01020c", "A": "0e1111111f1111", "B": "1e11111e11111e",
    "C": "0e11101010110e", "D": "1c12111111121c", "E": "1f10101e10101f", "F": "1f10101e101010",
    "G": "0e11101711110f", "H": "1111111f111111", "I": "0e04040404040e", "J": "0702020202120c",
    "K": "11121418141211", "L": "1010101010101f", "M": "111b1515111111", "N": "11111915131111",
    "O": "0e11111111110e", "P": "1e11111e101010", "Q": "0e11111115120d", "R": "1e11111e141211",
    "S": "0f10100e01011e", "T": "1f040404040404", "U": "1111111111110e", "V": "11111111110a04",
    "W": "1111111515150a", "X": "11110a040a1111", "Y": "1111110a040404", "Z": "1f01020408101f",
    "-": "0000001f000000", "/": "00010204081000", ":": "000c0c000c0c00", ".": "00000000000c0c",
    ",": "00000000000c08", " ": "00000000000000",
}.items()}


def _text_mask(lines: Sequence[str], rows: int, cols: int, scale: int = 2) -> np.ndarray:
    """Render ASCII-folded text into a boolean mask, top left, the way modalities burn it in."""
    mask = np.zeros((rows, cols), bool)
    for li, line in enumerate(lines):
        folded = unicodedata.normalize("NFKD", line).encode("ascii", "ignore").decode().upper()
        for ci, ch in enumerate(folded):
            top, left = (4 + li * 9 * scale), (4 + ci * 6 * scale)
            if top + 7 * scale > rows or left + 5 * scale > cols:
                break
            for r, bits in enumerate(_FONT.get(ch, _FONT[" "])):
                for c in range(5):
                    if bits >> (4 - c) & 1:
                        mask[top + r * scale: top + (r + 1) * scale,
                             left + c * scale: left + (c + 1) * scale] = True
    return mask


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


def make_sample_study_set(seed: int = 0, small: bool = True) -> list[Dataset]:
    """Four patients, five studies (the first patient has two), 22 instances of 7 SOP classes."""
    size, sc_size = (64, 256) if small else (512, 512)
    p0, p1, p2, p3 = sample_patients(seed)

    def series(st: _Study, number: int, modality: str, description: str, eq: _Equipment,
               age: bool = True) -> _Series:
        return _Series(_uid(seed, "series", st.uid, number), number, modality, description, eq,
                       age)

    s1 = _make_study(p0, seed, 1, "CT chest")
    ct_a = [_ct(s1, series(s1, 1, "CT", "Chest 5mm", CT_GE), i, size, size, overlay=i == 0)
            for i in range(3)]
    thin = series(s1, 2, "CT", "Chest 1.25mm recon", CT_GE, age=False)
    ct_b = [_ct(s1, thin, i, size, size, derived_from=ct_a[i:i + 1]) for i in range(2)]
    captures = series(s1, 3, "OT", "Key screen captures", WORKSTATION)
    sc = [_sc(s1, captures, 0, sc_size, ct_a[1], burned=True),
          _sc(s1, captures, 1, sc_size, ct_a[2])]
    report = _sr(s1, series(s1, 4, "SR", "Radiology report", WORKSTATION), ct_a[:2])
    kos = _kos(s1, series(s1, 5, "KO", "Key images", WORKSTATION), [ct_a[1], ct_b[0]])
    gsps = _gsps(s1, series(s1, 6, "PR", "Annotations", WORKSTATION), ct_a)
    s2 = _make_study(p0, seed, 2, "MR chest")
    mr_followup = [_mr(s2, series(s2, 1, "MR", "T1 SE axial", MR_SIEMENS), i, size, size)
                   for i in range(3)]
    s3 = _make_study(p1, seed, 1, "CT chest")
    ct_de = [_ct(s3, series(s3, 1, "CT", "Thorax 5mm", CT_PHILIPS), i, size, size)
             for i in range(2)]
    s4 = _make_study(p2, seed, 1, "CT chest")
    ct_utf = [_ct(s4, series(s4, 1, "CT", "Chest 5mm", CT_GE), i, size, size) for i in range(3)]
    enhanced = _enhanced_ct(s4, series(s4, 2, "CT", "Chest volume", CT_GE), ct_utf)
    s5 = _make_study(p3, seed, 1, "MR chest")
    mr_jp = [_mr(s5, series(s5, 1, "MR", "T2 TSE axial", MR_SIEMENS), i, size, size)
             for i in range(2)]
    sc_jp = _sc(s5, series(s5, 2, "OT", "Screen capture", WORKSTATION), 0, sc_size, mr_jp[0])
    return [*ct_a, *ct_b, *sc, report, kos, gsps, *mr_followup, *ct_de, *ct_utf, enhanced,
            *mr_jp, sc_jp]


def _save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_datasets(datasets: Iterable[Dataset], out_dir: Path, layout: str = "flat") -> list[Path]:
    """Write Part 10 files; return the complete DICOM files only, in input order.

    "nested" mimics a real export: PATnnnnn/STUnnnnn/ folders, file names that repeat across
    folders, one study without ".dcm" extensions, plus NOTES_FILE (not DICOM) and TRUNCATED_FILE
    (a cut-off copy of the first instance) that importers must reject without crashing.
    """
    if layout not in ("flat", "nested"):
        raise ValueError(f"layout must be 'flat' or 'nested', not {layout!r}")
    out_dir = Path(out_dir)
    items = list(datasets)
    if layout == "flat":
        return [_save(ds, out_dir / f"IMG{n:05d}.dcm") for n, ds in enumerate(items, 1)]
    patients: dict[str, dict[str, list[int]]] = {}
    for n, ds in enumerate(items):
        studies = patients.setdefault(str(ds.PatientID), {})
        studies.setdefault(str(ds.StudyInstanceUID), []).append(n)
    paths: dict[int, Path] = {}
    folder_index = 0
    for pi, studies in enumerate(patients.values(), 1):
        for si, members in enumerate(studies.values(), 1):
            suffix = "" if folder_index == 1 else ".dcm"
            folder = out_dir / f"PAT{pi:05d}" / f"STU{si:05d}"
            for k, n in enumerate(members, 1):
                paths[n] = _save(items[n], folder / f"IMG{k:05d}{suffix}")
            folder_index += 1
    if items:
        first = paths[0].read_bytes()
        pixel_value = first.find(b"\xe0\x7f\x10\x00") + 12  # PixelData: tag, VR, 0000, length
        cut = pixel_value + (len(first) - pixel_value) // 2  # an interrupted copy
        (out_dir / TRUNCATED_FILE).parent.mkdir(parents=True, exist_ok=True)
        (out_dir / TRUNCATED_FILE).write_bytes(first[:cut])
        notes = f"Transfer notes: CD for {items[0].PatientName} ({items[0].PatientID}) burned\n"
        (out_dir / NOTES_FILE).write_text(notes, encoding="utf-8")
    return [paths[n] for n in range(len(items))]


def write_sample(out_dir: Path, seed: int = 0, small: bool = True,
                 layout: str = "nested") -> list[Path]:
    return write_datasets(make_sample_study_set(seed, small), out_dir, layout)


def _name_parts(name: str) -> list[str]:
    """The PN, each component group and each component long enough to search for safely."""
    parts = [name]
    for group in name.split("="):
        parts.append(group)
        for component in group.split("^"):
            cjk = any(unicodedata.east_asian_width(ch) == "W" for ch in component)
            if len(component) >= (2 if cjk else 3):  # 2-character kanji names are still names
                parts.append(component)
    return parts


def planted_phi(patients: Iterable[SamplePatient]) -> list[str]:
    """Every identifying string planted for these patients plus the hospital's own identifiers.

    Dates (birth date, study dates) and original UIDs are not listed: dates are quasi-identifiers
    kept by stage 1, and original_uids() covers UIDs.
    """
    found: list[str] = []
    for p in patients:
        found += [*_name_parts(p.name), p.patient_id, *p.other_ids, p.address, p.phone]
        found += _name_parts(_referrer(p))
        if p.charset.endswith("IR 87"):
            found.append(p.name.split("=")[1].replace("^", ""))
        for number in range(1, _study_count(p) + 1):
            found += _study_tokens(p, number).values()
    found += [INSTITUTION, INSTITUTION_ADDRESS]
    for person in (READER, OPERATOR, PERFORMER):
        found += _name_parts(person)
    for eq in EQUIPMENT:
        found += [eq.station, eq.serial, eq.ae_title]
    return list(dict.fromkeys(s for s in found if s))


def original_uids(datasets: Iterable[Dataset]) -> set[str]:
    """Every UI value (file meta, nested, private) except well-known UIDs from pydicom's table."""
    found: set[str] = set()
    for ds in datasets:
        elements = list(ds.iterall())
        if hasattr(ds, "file_meta"):
            elements += list(ds.file_meta.iterall())
        for elem in elements:
            if elem.VR == "UI" and elem.value:
                values = elem.value if elem.VM > 1 else [elem.value]
                found.update(str(v) for v in values if v)
    return {u for u in found if u not in UID_dictionary and u != PYDICOM_IMPLEMENTATION_UID}


def main_sample(out_dir: str, seed: int = 0) -> int:
    """`tce sample OUT`: write the nested sample; prints counts only, never patient data."""
    try:
        paths = write_sample(Path(out_dir), seed=seed)
    except OSError as exc:
        print(f"error: cannot write the sample to {out_dir}: {exc.strerror or exc}. "
              "Choose a writable directory.", file=sys.stderr)
        return 1
    print(f"wrote {len(paths)} DICOM files (plus {NOTES_FILE} and one truncated file) "
          f"to {out_dir}")
    return 0
