"""The answer key: every identifying string and UID planted in a set of sample datasets.

Why this is its own module: a de-identification test has to know what must be gone from its
output. planted_phi lists the strings from the same fixtures the builders plant them from, and
original_uids collects the UIDs from the datasets themselves, so the key cannot drift from the
sample.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from pydicom._uid_dict import UID_dictionary
from pydicom.dataset import Dataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

from appliance.synthetic.fixtures import (
    EQUIPMENT,
    INSTITUTION,
    INSTITUTION_ADDRESS,
    OPERATOR,
    PERFORMER,
    READER,
    SamplePatient,
    _referrer,
    _study_count,
    _study_tokens,
)


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
