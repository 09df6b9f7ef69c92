"""The fictional hospital behind the sample: patients, staff, equipment, studies and series.

Why this is its own module: the image and document builders and the answer key
(:mod:`appliance.synthetic.oracle`) must agree on who the patients are and which identifiers were
planted, so those are defined once, here. So is `_h`, the seeded SHA-256 hash that every value in
the package derives from. Names with a leading underscore are shared inside this package only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, datetime, timedelta

UID_ROOT = "1.2.826.0.1.3680043.10.999."
INSTITUTION = "Saint Elsewhere General Hospital"
INSTITUTION_ADDRESS = "5 Westphall Avenue, Boston, MA 02115"
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
