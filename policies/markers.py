"""De-identification markers and the new File Meta Information (PS3.15 E.1.1, E.3).

Markers say what was done, and only what was done: CID 7050 codes are claimed for the options
the engine actually applied, appended to any earlier ones (a stage-2 pass adds to stage 1's), and
Longitudinal Temporal Information Modified states what happened to dates over *all* passes: a
later pass that keeps dates cannot make an earlier pass's shifted dates "UNMODIFIED" again.
"""

from __future__ import annotations

from functools import cache
from struct import pack

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID, ExplicitVRLittleEndian

from policies.model import BASIC_PROFILE_CODE, OPTION_CODES, Option, Policy

IMPLEMENTATION_CLASS_UID = UID("2.25.171993004421508446377291837432460913421")
IMPLEMENTATION_VERSION_NAME = "TCE_APPL_0_1"
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"

# Options whose effect the engine carries out itself. Clean Pixel Data and Clean Recognizable
# Visual Features are requested by some policies but not performed yet: never claimed.
APPLIED_OPTIONS = frozenset(OPTION_CODES) - {
    Option.CLEAN_PIXEL_DATA, Option.CLEAN_RECOGNIZABLE_VISUAL_FEATURES,
}

# Longitudinal Temporal Information Modified, from least to most changed.
_TEMPORAL_ORDER = ("UNMODIFIED", "MODIFIED", "REMOVED")

_PATIENT_IDENTITY_REMOVED = 0x00120062
_DEIDENTIFICATION_METHOD = 0x00120063
_DEIDENTIFICATION_METHOD_CODES = 0x00120064
_TEMPORAL_MODIFIED = 0x00280303
_CODE_VALUE, _CODING_SCHEME, _CODE_MEANING = 0x00080100, 0x00080102, 0x00080104


def claimed_codes(policy: Policy) -> list[tuple[str, str]]:
    """CID 7050 codes (value, meaning) for what ``policy`` makes the engine do."""
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


def _strings(value: object) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, bytes):
        value = value.decode("latin-1").rstrip("\x00 ")
        return [v for v in str(value).split("\\") if v]
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple) or hasattr(value, "__iter__"):
        return [str(v) for v in value if v]
    return [str(value)]


def _code_item(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item[_CODE_VALUE] = DataElement(_CODE_VALUE, "SH", value)
    item[_CODING_SCHEME] = DataElement(_CODING_SCHEME, "SH", "DCM")
    item[_CODE_MEANING] = DataElement(_CODE_MEANING, "LO", meaning)
    return item


def _encode_element(tag: int, vr: str, text: str, implicit: bool) -> bytes:
    data = text.encode("ascii")
    data += b" " * (len(data) % 2)
    if implicit:
        return pack("<HHL", tag >> 16, tag & 0xFFFF, len(data)) + data
    return pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode("ascii"), len(data)) + data


@cache
def _encoded_code_items(codes: tuple[tuple[str, str], ...], implicit: bool) -> bytes:
    """The items of a new De-identification Method Code Sequence, encoded little endian."""
    out = bytearray()
    for value, meaning in codes:
        body = (_encode_element(_CODE_VALUE, "SH", value, implicit)
                + _encode_element(_CODING_SCHEME, "SH", "DCM", implicit)
                + _encode_element(_CODE_MEANING, "LO", meaning, implicit))
        out += pack("<HHL", 0xFFFE, 0xE000, len(body)) + body
    return bytes(out)


def _put_text(ds: Dataset, tag: int, vr: str, values: list[str]) -> None:
    text = "\\".join(values)
    if text.isascii():
        data = text.encode("ascii") + b" " * (len(text) % 2)
        ds[tag] = RawDataElement(BaseTag(tag), vr, len(data), data, 0, False, True)
    else:
        ds[tag] = DataElement(tag, vr, values if len(values) > 1 else values[0])


def apply_markers(ds: Dataset, policy: Policy) -> None:
    """Set Patient Identity Removed and append the method text and CID 7050 codes.

    The new elements go in encoded (a dataset gets the same few values every time); an earlier
    pass's code sequence is parsed and extended instead.
    """
    _put_text(ds, _PATIENT_IDENTITY_REMOVED, "CS", ["YES"])
    existing = ds.get(_DEIDENTIFICATION_METHOD)
    methods = _strings(existing.value) if existing is not None else []
    text = method_text(policy)
    if text not in methods:
        methods.append(text)
    _put_text(ds, _DEIDENTIFICATION_METHOD, "LO", methods)
    codes = tuple(claimed_codes(policy))
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if _DEIDENTIFICATION_METHOD_CODES not in ds and little is not False:
        implicit = bool(implicit)
        data = _encoded_code_items(codes, implicit)
        ds[_DEIDENTIFICATION_METHOD_CODES] = RawDataElement(
            BaseTag(_DEIDENTIFICATION_METHOD_CODES), "SQ", len(data), data, 0, implicit, True)
    else:
        sequence = ds.get(_DEIDENTIFICATION_METHOD_CODES)
        items = list(sequence.value) if sequence is not None and sequence.VR == "SQ" else []
        present = {(str(item.get("CodeValue", "")), str(item.get("CodingSchemeDesignator", "")))
                   for item in items}
        for value, meaning in codes:
            if (value, "DCM") not in present:
                items.append(_code_item(value, meaning))
        ds[_DEIDENTIFICATION_METHOD_CODES] = DataElement(
            _DEIDENTIFICATION_METHOD_CODES, "SQ", Sequence(items))
    marker = temporal_marker(policy)
    if marker is not None:
        before = ds.get(_TEMPORAL_MODIFIED)
        earlier = _strings(before.value) if before is not None else []
        if earlier and earlier[0].strip() in _TEMPORAL_ORDER:
            marker = max(marker, earlier[0].strip(), key=_TEMPORAL_ORDER.index)
        _put_text(ds, _TEMPORAL_MODIFIED, "CS", [marker])


def is_dicomdir(ds: Dataset) -> bool:
    """A DICOMDIR (Media Storage Directory): rebuilt from its files, never de-identified."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and str(meta.get("MediaStorageSOPClassUID", "")) == DICOMDIR_SOP_CLASS:
        return True
    return 0x00041220 in ds  # Directory Record Sequence


def _uid_of(ds: Dataset, tag: int) -> str:
    elem = ds.get_item(tag)
    values = _strings(elem.value) if elem is not None else []
    return values[0].strip("\x00 ") if values else ""


def rebuild_file_meta(ds: Dataset) -> None:
    """Replace the File Meta Information and preamble with this product's own.

    Nothing of the sender's meta survives (source AE title, private information, implementation
    names that identify a site); the Media Storage SOP Instance UID follows the new SOP Instance
    UID so the two can never disagree. The preamble is always 128 zero bytes, so the dataset is
    written as a Part 10 file with nothing of the original preamble (which may hold a TIFF header
    or other application data).
    """
    old = getattr(ds, "file_meta", None)
    syntax = old.get("TransferSyntaxUID") if old is not None else None
    if syntax is None:
        syntax = ExplicitVRLittleEndian
    meta = FileMetaDataset()
    meta[0x00020001] = DataElement(0x00020001, "OB", b"\x00\x01")
    sop_class = _uid_of(ds, 0x00080016) or "1.2.840.10008.5.1.4.1.1.7"
    meta[0x00020002] = DataElement(0x00020002, "UI", sop_class)
    meta[0x00020003] = DataElement(0x00020003, "UI", _uid_of(ds, 0x00080018))
    meta[0x00020010] = DataElement(0x00020010, "UI", syntax)
    meta[0x00020012] = DataElement(0x00020012, "UI", IMPLEMENTATION_CLASS_UID)
    meta[0x00020013] = DataElement(0x00020013, "SH", IMPLEMENTATION_VERSION_NAME)
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128
