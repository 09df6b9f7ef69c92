"""De-identification markers and the new File Meta Information (PS3.15 E.1.1, E.3).

Markers say what was done, and only what was done: CID 7050 codes are claimed for the options
the engine actually applied, appended to any earlier ones (a stage-2 pass adds to stage 1's), and
Longitudinal Temporal Information Modified states what happened to dates.
"""

from __future__ import annotations

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, UID

from policies.model import BASIC_PROFILE_CODE, OPTION_CODES, Option, Policy

IMPLEMENTATION_CLASS_UID = UID("2.25.171993004421508446377291837432460913421")
IMPLEMENTATION_VERSION_NAME = "TCE_APPL_0_1"

# Options whose effect the engine carries out itself. Clean Pixel Data and Clean Recognizable
# Visual Features are requested by some policies but not performed yet: never claimed.
APPLIED_OPTIONS = frozenset(OPTION_CODES) - {
    Option.CLEAN_PIXEL_DATA, Option.CLEAN_RECOGNIZABLE_VISUAL_FEATURES,
}


def claimed_codes(policy: Policy) -> list[tuple[str, str]]:
    codes = [BASIC_PROFILE_CODE] if policy.base_profile == "ps315-basic" else []
    codes += [OPTION_CODES[o] for o in sorted(policy.options & APPLIED_OPTIONS)]
    return codes


def method_text(policy: Policy) -> str:
    """De-identification Method (LO, at most 64 characters): product, policy id, version, digest."""
    text = f"tce {policy.id} v{policy.version} {policy.digest[:12]}".strip()
    return text[:64]


def temporal_marker(policy: Policy) -> str | None:
    if policy.base_profile != "ps315-basic":
        return None
    if Option.RETAIN_LONG_FULL_DATES in policy.options:
        return "UNMODIFIED"
    if Option.RETAIN_LONG_MODIFIED_DATES in policy.options:
        return "MODIFIED"
    return "REMOVED"


def apply_markers(ds: Dataset, policy: Policy) -> None:
    """Set Patient Identity Removed and append the method text and CID 7050 codes."""
    ds.PatientIdentityRemoved = "YES"
    existing = ds.get("DeidentificationMethod")
    methods: list[str] = []
    if isinstance(existing, str | bytes) and existing:
        methods = [existing.decode("latin-1") if isinstance(existing, bytes) else existing]
    elif existing:
        methods = [str(value) for value in existing if value]
    text = method_text(policy)
    if text not in methods:
        methods.append(text)
    ds.DeidentificationMethod = methods if len(methods) > 1 else methods[0]
    sequence = ds.get("DeidentificationMethodCodeSequence")
    items = list(sequence.value) if sequence is not None and sequence.value else []
    present = {(item.get("CodeValue"), item.get("CodingSchemeDesignator")) for item in items}
    for value, meaning in claimed_codes(policy):
        if (value, "DCM") in present:
            continue
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        items.append(item)
    ds.DeidentificationMethodCodeSequence = Sequence(items)
    marker = temporal_marker(policy)
    if marker is not None:
        ds.LongitudinalTemporalInformationModified = marker


def rebuild_file_meta(ds: Dataset) -> None:
    """Replace the File Meta Information and preamble with this product's own.

    Nothing of the sender's meta survives (source AE title, private information, implementation
    names that identify a site); the Media Storage SOP Instance UID follows the new SOP Instance
    UID so the two can never disagree.
    """
    old = getattr(ds, "file_meta", None)
    syntax = old.get("TransferSyntaxUID") if old is not None else None
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", UID("1.2.840.10008.5.1.4.1.1.7"))
    meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", "")
    meta.TransferSyntaxUID = syntax or ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    ds.file_meta = meta
    if hasattr(ds, "preamble"):
        ds.preamble = b"\x00" * 128
