"""PS3.15 Table E.1-1 as data, compiled into a per-tag plan for one policy.

The table (DICOM 2026c, 656 rows) ships as ``policies/data/ps315_table_e1_1.json``. A policy picks
the Basic Profile and a set of options; :func:`compile_plan` resolves, once per policy, what
happens to every tag pydicom's dictionary knows, so the engine touches only the elements the
policy acts on instead of walking and deciding element by element.

Resolution rules (documented in the README, "How actions are resolved"):

1. Start from the Basic Profile cell. For each option in force, in the order of
   :data:`policies.model.OPTION_COLUMN_ORDER`, a non-empty cell replaces the action.
2. Compound codes become one code. We do not know each attribute's Type in every IOD, so we keep
   the attribute present whenever the compound allows it, which is valid whatever the Type:
   ``X/Z`` -> Z; ``X/D`` and ``X/Z/D`` -> D (for a sequence: its items are kept and everything
   in them becomes a dummy, as for Content Sequence D, so a Type 1 sequence stays valid and no
   item is invented); ``Z/D`` -> D for attributes that are Type 1 in some IOD or a DICOMDIR key
   (:data:`TYPE1_KEYWORDS`), else Z; ``X/Z/U*`` -> keep the sequence, remap every UID inside
   and apply the profile to its items.
3. DICOMDIR rule: Patient ID, Study Date, Study Time and Study ID are Type 1 keys of the
   PATIENT and STUDY directory records, so a Z for them becomes D. IOD rule: the few attributes
   the table removes although an IOD requires them (:data:`IOD_REQUIRED_KEYWORDS`) get D.
4. Attributes the table does not list are handled by VR, as PS3.15 E.1.1 advises: UI values are
   remapped (U) unless structural; DA/DT/TM follow the date rule of the options in force; PN
   values are emptied; sequences are kept and their items cleaned; other VRs are kept, and
   kept free text (:data:`SWEPT_TEXT_VRS`) is swept for the patient's identifiers by the engine.
   Unknown public attributes with a text VR are removed.
5. Policy overrides win over all of the above.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from functools import cache, lru_cache
from importlib import resources

from pydicom.datadict import DicomDictionary, keyword_for_tag  # type: ignore[attr-defined]

from policies.model import OPTION_COLUMN_ORDER, Op, Option, Override, Policy, Rule
from policies.private import normalise_creator

TYPE1_KEYWORDS = frozenset({
    "PatientID", "StudyDate", "StudyTime", "StudyID", "ContentDate", "ContentTime",
})
DICOMDIR_TYPE1_KEYWORDS = frozenset({"PatientID", "StudyDate", "StudyTime", "StudyID"})
# Attributes Table E.1-1 removes (X) although an IOD requires them: removing them leaves an
# invalid object (dciodvfy reports it), so they get a dummy (D) instead. Presentation Creation
# Date and Time are Type 1 in every presentation state; Requested Procedure ID is Type 2 in the
# Referenced Request Sequence of SR and KOS documents.
IOD_REQUIRED_KEYWORDS = frozenset({
    "PresentationCreationDate", "PresentationCreationTime", "RequestedProcedureID",
})

# UIDs that name kinds of things, not instances: never remapped whatever their value.
STRUCTURAL_UID_KEYWORDS = frozenset({
    "SOPClassUID", "MediaStorageSOPClassUID", "ReferencedSOPClassUID", "AffectedSOPClassUID",
    "RequestedSOPClassUID", "TransferSyntaxUID", "ReferencedTransferSyntaxUIDInFile",
    "ReferencedSOPClassUIDInFile", "CodingSchemeUID", "ContextGroupExtensionCreatorUID",
    "MappingResourceUID", "TemplateExtensionCreatorUID", "PrivateInformationCreatorUID",
    "ImplementationClassUID", "RelatedGeneralSOPClassUID", "OriginalSpecializedSOPClassUID",
    "SOPClassesInStudy", "SOPClassesSupported", "ReferencedColorPaletteInstanceUID",
    "ContextUID", "CodeSetExtensionCreatorUID", "InstanceCreatorUID",
    "ReferencedRelatedGeneralSOPClassUIDInFile", "RTVCommunicationSOPClassUID",
    "StoredInstanceTransferSyntaxUID", "AvailableTransferSyntaxUID", "FlowTransferSyntaxUID",
    "TemplateExtensionOrganizationUID", "MACCalculationTransferSyntaxUID",
    "EncryptedContentTransferSyntaxUID", "PertinentSOPClassesInStudy",
    "PertinentSOPClassesInSeries",
})
STRUCTURAL_UID_TAGS = frozenset(
    tag for tag, entry in DicomDictionary.items() if entry[4] in STRUCTURAL_UID_KEYWORDS
)

# Free-text VRs of attributes the table does not list. PS3.15 keeps them, but identifiers leak
# into them ("Nodule markup for John Doe" in Content Description), so the engine sweeps them for
# the patient's own identifiers (see engine).
SWEPT_TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC"})

# Attributes PS3.15 E.1.1 tells us to remove whatever the table says, each for a stated reason.
ALWAYS_REMOVE: dict[int, str] = {
    0xFFFAFFFA: "Digital Signatures Sequence: signatures no longer match and name the signer",
    0x4FFE0001: "MAC Parameters Sequence: goes with the removed signatures",
    0x04000500: "Encrypted Attributes Sequence: carries the original identifiers",
    0x04000561: "Original Attributes Sequence: carries the original values",
    0x00880200: "Icon Image Sequence: a thumbnail of uncleaned pixels",
}


# De-identification markers written by an earlier pass (stage 1): provenance, never cleaned.
MARKER_TAGS = frozenset({0x00120062, 0x00120063, 0x00120064, 0x00280303})


class CleanKind(StrEnum):
    """What C means for the attribute, decided by the table column that set it."""

    DATE = "date"  # Retain Longitudinal Temporal Information with Modified Dates
    TEXT = "text"  # Clean Descriptors, or a characteristic to clean (Allergies)
    STRUCTURED = "structured"  # Clean Structured Content: recurse, cleaning text items
    GRAPHICS = "graphics"  # Clean Graphics: annotation text cleaned, overlays checked
    DEVICE = "device"  # Retain Device Identity C: AE titles become keyed stand-ins
    PRIVATE = "private"  # Retain Safe Private: keep only the known-safe elements


_CLEAN_KIND_BY_OPTION: dict[Option, CleanKind] = {
    Option.RETAIN_LONG_MODIFIED_DATES: CleanKind.DATE,
    Option.CLEAN_DESCRIPTORS: CleanKind.TEXT,
    Option.RETAIN_PATIENT_CHARACTERISTICS: CleanKind.TEXT,
    Option.CLEAN_STRUCTURED_CONTENT: CleanKind.STRUCTURED,
    Option.CLEAN_GRAPHICS: CleanKind.GRAPHICS,
    Option.RETAIN_DEVICE_IDENTITY: CleanKind.DEVICE,
    Option.RETAIN_SAFE_PRIVATE: CleanKind.PRIVATE,
}


@dataclass(frozen=True)
class TableRow:
    """One row of Table E.1-1; ``tag`` is None for the pattern rows (see ``pattern``)."""

    tag: int | None
    pattern: str | None
    name: str
    keyword: str | None
    basic: str
    cells: tuple[tuple[Option, str], ...]
    retired: bool
    in_std_comp_iod: bool


@dataclass(frozen=True)
class PlannedAction:
    """What the engine does to one attribute, and why (for explain, outcomes and audit)."""

    rule: Rule
    code: str  # resolved code or override name, e.g. "X", "D", "U", "pseudonym"
    origin: str  # e.g. "basic Z/D", "retain_uids", "override", "VR UI"
    clean: CleanKind | None = None

    @property
    def op(self) -> Op:
        return self.rule.op


@cache
def load_table() -> tuple[TableRow, ...]:
    """Table E.1-1 rows from the bundled JSON (parsed once per process)."""
    text = resources.files("policies.data").joinpath("ps315_table_e1_1.json").read_text("utf-8")
    rows = []
    for raw in json.loads(text):
        group, element = raw["tag"].strip("()").split(",")
        is_pattern = not all(c in "0123456789abcdefABCDEF" for c in group + element)
        cells = tuple(
            (option, raw[option.value]) for option in OPTION_COLUMN_ORDER if raw[option.value]
        )
        rows.append(TableRow(
            tag=None if is_pattern else int(group + element, 16),
            pattern=raw["tag"] if is_pattern else None,
            name=raw["name"],
            keyword=raw["keyword"],
            basic=raw["basic"],
            cells=cells,
            retired=bool(raw["retired"]),
            in_std_comp_iod=bool(raw["in_std_comp_iod"]),
        ))
    return tuple(rows)


def _vr_of(tag: int) -> str:
    entry = DicomDictionary.get(tag)
    return entry[0] if entry else "UN"


def resolve_code(code: str, keyword: str | None, vr: str) -> str:
    """Turn a (possibly compound) PS3.15 code into the single code this product applies."""
    if code == "X/Z":
        resolved = "Z"
    elif code in ("X/D", "X/Z/D"):
        resolved = "D"
    elif code == "Z/D":
        resolved = "D" if keyword in TYPE1_KEYWORDS else "Z"
    elif code == "X/Z/U*":
        resolved = "U"
    else:
        resolved = code
    if resolved == "Z" and keyword in DICOMDIR_TYPE1_KEYWORDS:
        resolved = "D"
    return resolved


def _row_action(row: TableRow, options: frozenset[Option], vr: str) -> PlannedAction:
    code, origin, clean = row.basic, f"basic {row.basic}", None
    for option, cell in row.cells:
        if option in options:
            code, origin = cell, option.value
            clean = _CLEAN_KIND_BY_OPTION.get(option) if cell == "C" else None
    resolved = resolve_code(code, row.keyword, vr)
    if resolved == "X" and row.keyword in IOD_REQUIRED_KEYWORDS:
        resolved = "D"
    if resolved != code:
        origin = f"{origin} -> {resolved}"
    if resolved == "C" and clean is None:
        clean = CleanKind.TEXT
    return PlannedAction(Rule(Op(resolved)), resolved, origin, clean)


def date_action(options: frozenset[Option], origin: str) -> PlannedAction:
    """The rule for DA/DT/TM attributes the table does not list (PS3.15 E.1.1: handle by VR)."""
    if Option.RETAIN_LONG_FULL_DATES in options:
        return PlannedAction(Rule(Op.KEEP), "K", f"{origin}, retain_long_full_dates")
    if Option.RETAIN_LONG_MODIFIED_DATES in options:
        return PlannedAction(Rule(Op.CLEAN), "C", f"{origin}, retain_long_modified_dates",
                             CleanKind.DATE)
    return PlannedAction(Rule(Op.DUMMY), "D", origin)


def vr_default(tag: int, vr: str, options: frozenset[Option]) -> PlannedAction | None:
    """Action for a public attribute not in Table E.1-1, or None to keep it untouched."""
    if vr == "UI":
        if tag in STRUCTURAL_UID_TAGS:
            return None
        if Option.RETAIN_UIDS in options:
            return PlannedAction(Rule(Op.KEEP), "K", "VR UI, retain_uids")
        return PlannedAction(Rule(Op.UID), "U", "VR UI")
    if vr in ("DA", "DT", "TM"):
        return date_action(options, f"VR {vr}")
    if vr == "PN":
        return PlannedAction(Rule(Op.EMPTY), "Z", "VR PN")
    if vr == "SQ":
        return PlannedAction(Rule(Op.KEEP), "K", "VR SQ")
    return None


@dataclass(frozen=True)
class Plan:
    """Everything the engine needs to know about one policy, precomputed."""

    policy: Policy
    public: dict[int, PlannedAction]
    curves: PlannedAction  # (50xx,xxxx)
    overlay_data: PlannedAction  # (60xx,3000)
    overlay_comments: PlannedAction  # (60xx,4000)
    private_default: PlannedAction  # (gggg,eeee) odd
    private_overrides: dict[tuple[int, str, int | None], PlannedAction]
    kept_untouched: frozenset[int]  # tags whose plan is "keep, nothing to do" (not in public)
    # Kept free-text attributes (not in Table E.1-1): swept for the patient's own identifiers.
    kept_text: frozenset[int] = frozenset()
    basic: bool = True
    private_remove: PlannedAction = PlannedAction(Rule(Op.REMOVE), "X", "private, not known safe")

    def for_public(self, tag: int, vr: str | None) -> PlannedAction | None:
        """The planned action for an even-group tag; None means keep as is."""
        planned = self.public.get(tag)
        if planned is not None or tag in self.kept_untouched:
            return planned
        group = tag >> 16
        if 0x5000 <= group <= 0x50FF:
            return self.curves
        if 0x6000 <= group <= 0x60FF and not group & 1:
            element = tag & 0xFFFF
            if element == 0x3000:
                return self.overlay_data
            if element == 0x4000:
                return self.overlay_comments
            if element == 0x0022:  # Overlay Description: free text, cleaned like comments
                return self.overlay_comments
            return None
        if group == 0x0004:
            return PlannedAction(Rule(Op.REMOVE), "X", "group 0004 outside a DICOMDIR")
        if tag & 0xFFFF == 0:
            return PlannedAction(Rule(Op.REMOVE), "X", "group length")
        if not self.basic:
            return None
        # Unknown public attribute: decide on the encoded VR; unknown text is unsafe.
        vr = vr or "UN"
        default = vr_default(tag, vr, self.policy.options)
        if default is not None:
            return default
        if vr in ("LO", "SH", "ST", "LT", "UT", "UC", "UR", "AE", "UN", "OB", "OW"):
            return PlannedAction(Rule(Op.REMOVE), "X", "unknown attribute with text VR")
        return None

    def for_private(self, group: int, creator: str, offset: int) -> PlannedAction | None:
        """Override for a private element, if the policy has one (element beats block)."""
        if not self.private_overrides:
            return None
        return (self.private_overrides.get((group, creator, offset))
                or self.private_overrides.get((group, creator, None)))


def _override_action(override: Override) -> PlannedAction:
    op = override.rule.op
    clean = CleanKind.TEXT if op is Op.CLEAN else None
    return PlannedAction(override.rule, op.value, "override", clean)


@cache
def compile_plan(policy: Policy) -> Plan:
    """Resolve every tag's action for ``policy`` (cached per policy object)."""
    options = policy.options
    public: dict[int, PlannedAction] = {}
    kept: set[int] = set()
    basic = policy.base_profile == "ps315-basic"
    patterns: dict[str, PlannedAction] = {}
    if basic:
        for row in load_table():
            if row.tag is None:
                assert row.pattern is not None
                patterns[row.pattern] = _row_action(row, options, "OW")
                continue
            public[row.tag] = _row_action(row, options, _vr_of(row.tag))
        for tag, entry in DicomDictionary.items():
            if tag in public or tag >> 16 in (0x0002, 0x0004) or tag & 0xFFFF == 0:
                continue
            if "x" in f"{tag:08x}":  # pragma: no cover - repeaters are not in DicomDictionary
                continue
            default = vr_default(tag, entry[0], options)
            if default is None:
                kept.add(tag)
            else:
                public[tag] = default
        for tag, reason in ALWAYS_REMOVE.items():
            public[tag] = PlannedAction(Rule(Op.REMOVE), "X", reason)
    else:
        # Nothing to do but the overrides; sequences are still entered so that an override
        # reaches its attribute at every depth.
        for tag, entry in DicomDictionary.items():
            if tag >> 16 in (0x0002, 0x0004):
                continue
            if entry[0] == "SQ":
                public[tag] = PlannedAction(Rule(Op.KEEP), "K", "base profile none")
            else:
                kept.add(tag)
    keep = PlannedAction(Rule(Op.KEEP), "K", "base profile none")
    remove_private = PlannedAction(Rule(Op.REMOVE), "X", "basic X (private)")
    private_default = keep if not basic else (
        PlannedAction(Rule(Op.CLEAN), "C", "retain_safe_private", CleanKind.PRIVATE)
        if Option.RETAIN_SAFE_PRIVATE in options else remove_private
    )
    private_overrides: dict[tuple[int, str, int | None], PlannedAction] = {}
    for override in policy.overrides:
        target = override.target
        if target.tag is not None:
            public[target.tag] = _override_action(override)
            kept.discard(target.tag)
        else:
            assert target.group is not None and target.private_creator is not None
            key = (target.group, normalise_creator(target.private_creator), target.element)
            private_overrides[key] = _override_action(override)
    kept_text = frozenset(
        tag for tag in kept
        if basic and DicomDictionary[tag][0] in SWEPT_TEXT_VRS and tag not in MARKER_TAGS
    )
    return Plan(
        policy=policy,
        public=public,
        curves=patterns.get("(50xx,xxxx)", keep),
        overlay_data=patterns.get("(60xx,3000)", keep),
        overlay_comments=patterns.get("(60xx,4000)", keep),
        private_default=private_default,
        private_overrides=private_overrides,
        kept_untouched=frozenset(kept),
        kept_text=kept_text,
        basic=basic,
    )


@lru_cache(maxsize=4096)
def keyword_or_tag(tag: int) -> str:
    """A readable name for reports: the keyword, else ``(GGGG,EEEE)``."""
    return keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
