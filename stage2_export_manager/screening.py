"""Screening: does a file look like stage-1 output, or does it still name the patient?

Stage 2 must never hold what stage 1 should have removed: a medium that was not written by
stage 1, or by a misconfigured stage 1, carries direct identifiers to a site that has no
business seeing them. The importer therefore screens every instance before it copies anything,
and refuses the whole medium when one instance fails (see :mod:`stage2_export_manager.importer`).

The rules are deliberately conservative (a false refusal costs a phone call; a false acceptance
leaks a name) and they report attribute *names*, never values:

* PatientIdentityRemoved (0012,0062) must be ``YES``: every PS3.15 de-identifier sets it;
* none of :data:`DIRECT_IDENTIFIERS` may hold a value (stage 1 removes or empties them);
* a non-empty PatientName must look like a pseudonym (:func:`looks_pseudonymous`);
* every private attribute, at any depth, must be on the bundled safe list (PS3.15 Table
  E.3.10-1 and the TCIA knowledge base) or declared safe in (0008,0300), the same test stage 1
  applies under Retain Safe Private.

Free text is not screened here: stage 1 cleans descriptors, and what a stage-2 policy would keep
is shown by ``tce stage2 preview`` for a person to judge.
"""

from __future__ import annotations

import re
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from policies.private import SafePrivateTable, declared_safe, is_declared_safe, private_creator_of

# Attributes that the stage-1 policy (ps315-basic and its options) removes or empties: a value
# here means the file did not come out of stage 1, or stage 1 was misconfigured.
DIRECT_IDENTIFIERS: tuple[str, ...] = (
    "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames", "PatientBirthName",
    "PatientMotherBirthName", "PatientAddress", "PatientTelephoneNumbers", "MedicalRecordLocator",
    "ResponsiblePerson", "ReferringPhysicianName", "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers", "InstitutionAddress",
)
# Words a pseudonymizer writes into PatientName besides a code.
PSEUDONYM_MARKERS = frozenset({"PSEUDO", "PSEUDONYM", "ANON", "ANONYMOUS", "ANONYMIZED",
                               "DEIDENTIFIED", "REMOVED", "SUBJECT", "PATIENT", "CASE"})
_CODE = re.compile(r"[A-Z0-9_-]{4,64}")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple | MultiValue):
        return "\\".join(str(v) for v in value).strip("\\ ")
    return str(value).strip()


def looks_pseudonymous(name: str, patient_id: str) -> bool:
    """Whether a PatientName value looks like what a pseudonymizer writes, not a real name.

    Conservative on purpose: every non-empty component must be a marker word (``PSEUDO``,
    ``ANON``...) or an upper-case code of 4+ letters/digits that holds a digit or is part of the
    PatientID. ``PSEUDO^S5B0J3WYSC`` passes; ``Doe^John``, ``DOE^JOHN`` and ``Müller`` do not.
    """
    for group in str(name).split("="):
        for component in group.split("^"):
            word = component.strip()
            if not word or word in PSEUDONYM_MARKERS:
                continue
            if not _CODE.fullmatch(word):
                return False
            if not any(c.isdigit() for c in word) and word not in patient_id:
                return False
    return True


def _private_refusals(ds: Dataset, table: SafePrivateTable,
                      declared: tuple[Any, Any], out: set[str]) -> None:
    for elem in ds:
        tag = int(elem.tag)
        group, element = tag >> 16, tag & 0xFFFF
        if elem.VR == "SQ":
            for item in elem.value or []:
                _private_refusals(item, table, declared, out)
        if group % 2 == 0 or element < 0x1000:
            continue  # public, group length or Private Creator element
        creator = private_creator_of(ds, tag)
        offset = element & 0xFF
        if creator is None or not (table.is_safe(group, creator, offset)
                                   or is_declared_safe(declared, group, creator, offset)):
            label = f'"{creator}"' if creator else "without a creator"
            out.add(f"private attribute ({group:04X},xx{offset:02X}) {label} not on the safe list")


def screen(ds: Dataset, table: SafePrivateTable | None = None) -> list[str]:
    """Why ``ds`` cannot have come out of stage 1, as attribute names (never values).

    Refused when PatientIdentityRemoved is not ``YES``; when one of :data:`DIRECT_IDENTIFIERS`
    holds a value; when PatientName is non-empty and does not look pseudonymous
    (:func:`looks_pseudonymous`); or when a private attribute is neither on the bundled safe
    list (PS3.15 E.3.10-1, TCIA) nor declared safe in (0008,0300).
    """
    reasons: list[str] = []
    if _text(ds.get("PatientIdentityRemoved", "")).upper() != "YES":
        reasons.append("PatientIdentityRemoved is not YES")
    for keyword in DIRECT_IDENTIFIERS:
        value = ds.get(keyword)
        if len(value) if isinstance(value, Sequence) else _text(value):
            reasons.append(f"{keyword} present")
    name = _text(ds.get("PatientName", ""))
    if name and not looks_pseudonymous(name, _text(ds.get("PatientID", ""))):
        reasons.append("PatientName does not look like a pseudonym")
    private: set[str] = set()
    _private_refusals(ds, table or SafePrivateTable.bundled(), declared_safe(ds), private)
    return reasons + sorted(private)
