"""UIDs: is this one remapped, and does every reference resolve inside the verified set?

Recognising a remapped UID. The engine maps every instance UID with
:func:`policies.keying.keyed_uid`: under the default root the result is ``2.25.<decimal>``
whose 128 bits carry the RFC 9562 UUIDv8 version (``8``) and variant (``10``) bits. Nothing
else in a de-identified file has that structure by accident, while UIDs a modality makes do
not (vendor roots, or ``2.25`` UUIDv4s), so the structure alone tells a remapped UID from an
original one. Under another ``uid_root`` only the root prefix can be checked. Well-known UIDs
(pydicom's dictionary: SOP classes, transfer syntaxes, coding schemes...) and the product's
Implementation Class UID are never remapped and always fine.

References. Every Referenced SOP Instance UID is collected with where it sits: inside a
hierarchical reference (an item naming a Series Instance UID, as in Current Requested Procedure
Evidence, GSPS Referenced Series and KOS/SR evidence) or free-standing (Source Image Sequence,
Referenced Image Sequence, SR IMAGE items). After all files are read:

* a reference that names an instance of the set resolves;
* a reference whose series IS in the set but whose instance is not, is an integrity ERROR: the
  series was de-identified, so its instances were remapped with it and should be here;
* any other unresolved reference (its series is not here, or it names no series) is a WARNING:
  it may point at a prior study or a series that was never sent, which cannot resolve;
* references to non-storage SOP classes (MPPS, study management) are not instances of any set
  and are skipped; so are series and study references outside the set (warnings).

A reference UID that is not remapped at all is reported once, by the UID check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pydicom.uid import UID_dictionary  # type: ignore[attr-defined]

from appliance.verify.findings import Check, Findings
from policies.markers import IMPLEMENTATION_CLASS_UID

_UID_SYNTAX = re.compile(r"^(0|[1-9]\d*)(\.(0|[1-9]\d*))*$")
_VERSION_MASK = 0xF << 76  # byte 6, high nibble, of the 128-bit value
_VERSION_8 = 0x8 << 76
_VARIANT_MASK = 0b11 << 62  # byte 8, top two bits
_VARIANT_RFC = 0b10 << 62


def is_valid_uid(value: str) -> bool:
    return 0 < len(value) <= 64 and bool(_UID_SYNTAX.match(value))


def is_well_known(value: str) -> bool:
    return value in UID_dictionary or value == IMPLEMENTATION_CLASS_UID


def is_uuid_uid(value: str) -> bool:
    """``2.25.<decimal>`` holding a 128-bit number: a UUID-derived UID (PS3.5 B.2)."""
    if not value.startswith("2.25.") or not is_valid_uid(value):
        return False
    return int(value[5:]) < 1 << 128


def is_remapped(value: str, root: str) -> bool:
    """Whether ``value`` has the structure :func:`policies.keying.keyed_uid` gives it."""
    if not is_valid_uid(value):
        return False
    if root == "2.25":
        if not is_uuid_uid(value):
            return False
        number = int(value[5:])
        return (number & _VERSION_MASK == _VERSION_8
                and number & _VARIANT_MASK == _VARIANT_RFC)
    return value.startswith(root + ".") and value[len(root) + 1:].isdigit()


def check_uid(findings: Findings, file: str, path: str, value: str, *, remap_expected: bool,
              root: str) -> bool:
    """Report an invalid UID, or one the policy remaps that is not remapped; True if fine."""
    if is_well_known(value):
        return True
    if not is_valid_uid(value):
        findings.error(Check.UID, file, path, "not a valid UID (PS3.5 9.1)")
        return False
    if remap_expected and not is_remapped(value, root):
        findings.error(Check.UID, file, path,
                       f"UID not remapped: outside this product's scheme ({root}.… from a keyed"
                       " hash) and not a well-known UID")
        return False
    return True


def is_storage_class(uid: str) -> bool:
    """True unless ``uid`` is a well-known SOP class that is not a Storage SOP class."""
    entry = UID_dictionary.get(uid)
    if entry is None:
        return True  # private or unknown: it may well be stored
    name, kind = str(entry[0]), str(entry[1])
    return kind != "SOP Class" or "Storage" in name or "Directory" in name


@dataclass(frozen=True)
class Reference:
    uid: str
    series: str | None  # Series Instance UID of the enclosing hierarchical item, if any
    file: str
    path: str


@dataclass
class References:
    """The instances, series and studies of the set, and every reference to them."""

    instances: dict[str, str] = field(default_factory=dict)  # SOP Instance UID -> file
    series: set[str] = field(default_factory=set)
    studies: set[str] = field(default_factory=set)
    to_instances: list[Reference] = field(default_factory=list)
    to_series: list[Reference] = field(default_factory=list)
    to_studies: list[Reference] = field(default_factory=list)
    unremapped: set[str] = field(default_factory=set)  # already reported by the UID check

    def add_instance(self, findings: Findings, uid: str, series: str, study: str,
                     file: str) -> None:
        if uid:
            first = self.instances.setdefault(uid, file)
            if first != file:
                findings.error(Check.FILE, file, "SOPInstanceUID",
                               f"the same SOP Instance UID as {first}: two files for one"
                               " instance")
        if series:
            self.series.add(series)
        if study:
            self.studies.add(study)

    def resolve(self, findings: Findings) -> None:
        """Report what does not resolve, as the module docstring decides."""
        for ref in self.to_instances:
            if ref.uid in self.instances or ref.uid in self.unremapped:
                continue
            if ref.series is not None and ref.series in self.series:
                findings.error(Check.REFERENCE, ref.file, ref.path,
                               "references an instance of a series in this set that is not in"
                               " the set (broken or inconsistently remapped reference)")
            else:
                findings.warning(Check.REFERENCE, ref.file, ref.path,
                                 "references an instance outside this set (a prior study or a"
                                 " series not exported?)")
        for ref in self.to_series:
            if ref.uid not in self.series and ref.uid not in self.unremapped:
                findings.warning(Check.REFERENCE, ref.file, ref.path,
                                 "references a series outside this set")
        for ref in self.to_studies:
            if ref.uid not in self.studies and ref.uid not in self.unremapped:
                findings.warning(Check.REFERENCE, ref.file, ref.path,
                                 "references a study outside this set")
