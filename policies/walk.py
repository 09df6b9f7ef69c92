"""The walk: every element of a dataset, at every depth, looked up in the compiled plan.

For each element the walk asks the precompiled :class:`policies.annex_e.Plan` (a dict lookup, no
decoding) and only elements with an action are decoded. Sequences are entered at every depth,
including kept private sequences, because identifiers hide there; a kept sequence that pydicom
still holds as bytes is first read by :mod:`policies.rawscan`, and entered only if something in
it needs doing.

Inside some sequences the profile is not enough, because their items hold free text the table
does not list (an SR TEXT item's Text Value, a graphic annotation's text). A sequence planned D
puts its items in *dummy* mode (every remaining free-text value becomes a dummy); a sequence
cleaned under Clean Structured Content or Clean Graphics puts them in *clean* mode (that text is
cleaned of the patient's identifiers instead). Coded values (Code Value, Coding Scheme Designator,
Code Meaning) are controlled terminology and stay, except inside Person Identification Code
Sequence, where the code *is* the person's identifier.

Free text the table does not list at all (Content Description, Frame Comments, ...) is kept, as
PS3.15 says, but swept: a value that holds one of the patient's own identifiers (a byte search
for the name's words, the IDs, the birth date; :mod:`policies.sweep`) is cleaned like a
descriptor.
"""

from __future__ import annotations

from enum import Enum

from pydicom.datadict import DicomDictionary, tag_for_keyword  # type: ignore[attr-defined]
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from policies import actions
from policies.annex_e import CleanKind, Plan, PlannedAction, keyword_or_tag
from policies.charset import AnyElement, encodings_of, raw_text
from policies.model import Op, Option, Policy, Rule
from policies.private import SafePrivateTable, is_declared_safe, normalise_creator
from policies.rawscan import ENTER, NEEDED, NOTHING, sequence_needs_walk
from policies.sweep import SweepTokens
from policies.values import FREE_TEXT_VRS, VALUE_HANDLERS, ValueActions

# Coded values are controlled terminology, not free text: kept inside dummy and clean modes.
CODE_TAGS = frozenset(
    tag_for_keyword(keyword) or 0 for keyword in (
        "CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "CodeMeaning",
        "LongCodeValue", "URNCodeValue", "ContextIdentifier", "ContextUID", "MappingResource",
        "MappingResourceName", "ContextGroupVersion", "ContextGroupLocalVersion", "ValueType",
        "RelationshipType", "ContinuityOfContent", "TemplateIdentifier", "NumericValue",
        "FloatingPointValue", "RationalNumeratorValue", "RationalDenominatorValue",
        "GraphicType", "BoundingBoxAnnotationUnits", "AnchorPointAnnotationUnits",
        "GraphicAnnotationUnits", "GraphicLayer", "TextStyleSequence", "LineStyleSequence",
    )
)
# Sequences whose codes identify a person: under D their code values become dummies too.
IDENTIFYING_CODE_SEQUENCES = frozenset({
    0x00401101,  # Person Identification Code Sequence
    0x00080082,  # Institution Code Sequence
})
ILLEGAL_PRIVATE_GROUPS = frozenset({0x0001, 0x0003, 0x0005, 0x0007, 0xFFFF})
KEEP_SAFE = PlannedAction(Rule(Op.KEEP), "K", "retain_safe_private: known safe")
_UNDEFINED_LENGTH = 0xFFFFFFFF
_ITEM_TAG_BYTES = b"\xfe\xff\x00\xe0"


class Mode(Enum):
    NORMAL = "normal"
    DUMMY = "dummy"  # inside a sequence planned D
    DUMMY_ALL = "dummy-all"  # inside an identifying code sequence planned D: codes too
    CLEAN = "clean"  # inside a structured-content or graphics sequence being cleaned


class Walker(ValueActions):
    """The walk over one dataset; :class:`policies.engine._Run` supplies the state."""

    plan: Plan
    policy: Policy
    root: Dataset
    safe_private: SafePrivateTable | None
    declared: tuple[frozenset[tuple[int, str]], frozenset[tuple[int, str, int]]]
    sweep: SweepTokens | None
    pending_groups: list[int]
    walked: dict[int, Dataset]

    def walk(self, ds: Dataset, mode: Mode, prefix: str) -> None:
        plan = self.plan
        public, kept, kept_text = plan.public, plan.kept_untouched, plan.kept_text
        sweep = self.sweep if mode is Mode.NORMAL else None
        outer_pending, self.pending_groups = self.pending_groups, []
        outer_encodings = self.encodings
        if ds is not self.root and 0x00080005 in ds:
            self.encodings = encodings_of(ds, self.encodings)
        creators: dict[int, str] | None = None
        for tag, elem in list(ds.items()):
            tag_int = int(tag)
            if tag_int & 0x10000:
                if creators is None:
                    creators = private_creators(ds, self.encodings)
                self._private(ds, tag, elem, mode, prefix, creators)
                continue
            planned = public.get(tag_int)
            if planned is None:
                if tag_int not in kept:
                    planned = plan.for_public(tag_int, elem.VR)
                if planned is None:
                    if mode is not Mode.NORMAL:
                        self._free_text(ds, tag, elem, element_vr(tag_int, elem.VR), mode, prefix)
                    elif sweep is not None and tag_int in kept_text:
                        elem = loaded_element(ds, tag, elem)
                        if sweep.hit(elem.value):
                            self.clean_text(ds, tag, elem, element_vr(tag_int, elem.VR),
                                            prefix + keyword_or_tag(tag_int),
                                            "kept text held a patient identifier")
                    continue
            self._apply(ds, tag, elem, planned, mode, prefix)
        if creators is not None:
            _drop_unused_creators(ds)
        for group in self.pending_groups:
            for tag in [t for t in ds.keys() if t >> 16 == group]:  # noqa: SIM118
                del ds[tag]
        self.pending_groups, self.encodings = outer_pending, outer_encodings

    def _free_text(self, ds: Dataset, tag: BaseTag, elem: AnyElement, vr: str, mode: Mode,
                   prefix: str) -> None:
        tag_int = int(tag)
        if vr not in FREE_TEXT_VRS:
            return
        elem = loaded_element(ds, tag, elem)
        if tag_int in CODE_TAGS and mode is not Mode.DUMMY_ALL:
            # Controlled terminology stays, unless a (local) code names the patient.
            if self.sweep is not None and self.sweep.hit(elem.value):
                self.clean_text(ds, tag, elem, vr, prefix + keyword_or_tag(tag_int),
                                "code text held a patient identifier")
            return
        path = prefix + keyword_or_tag(tag_int)
        if mode is Mode.CLEAN:
            self.clean_text(ds, tag, elem, vr, path, "free text in a cleaned sequence")
            return
        keyword = keyword_or_tag(tag_int)
        self.put(ds, tag, vr, actions.dummy_value(vr, keyword, raw_text(elem, self.encodings),
                                                  self.keys.pseudonym))
        self.note(tag_int, path, "D", "free text in a D sequence")

    def _apply(self, ds: Dataset, tag: BaseTag, elem: AnyElement, planned: PlannedAction,
               mode: Mode, prefix: str) -> None:
        op = planned.op
        tag_int = int(tag)
        if op is Op.REMOVE:
            del ds[tag]
            self.note(tag_int, prefix + keyword_or_tag(tag_int), "X", planned.origin)
            if tag_int & 0xFFFF == 0x3000 and 0x6000 <= tag_int >> 16 <= 0x60FF:
                self.pending_groups.append(tag_int >> 16)  # the rest of the overlay goes too
            return
        elem = loaded_element(ds, tag, elem)
        vr = element_vr(tag_int, elem.VR)
        if " or " in vr:  # ambiguous (US or SS, OB or OW): pydicom resolves it from the dataset
            elem = ds[tag]
            vr = elem.VR
        if vr == "SQ" or (vr == "UN" and looks_like_sequence(elem)):
            if op is Op.KEEP and mode is Mode.NORMAL and not self._needs_walk(elem):
                return
            self._apply_sequence(ds, tag, planned, mode, prefix)
            return
        if op is Op.KEEP:
            if mode is not Mode.NORMAL:
                self._free_text(ds, tag, elem, vr, mode, prefix)
            return
        VALUE_HANDLERS[op](self, ds, tag, elem, vr, planned, prefix + keyword_or_tag(tag_int))

    def _apply_sequence(self, ds: Dataset, tag: BaseTag, planned: PlannedAction, mode: Mode,
                        prefix: str) -> None:
        op, tag_int = planned.op, int(tag)
        path = prefix + keyword_or_tag(tag_int)
        if op is Op.EMPTY:
            ds[tag] = DataElement(tag, "SQ", Sequence())
            self.note(tag_int, path, "Z", planned.origin)
        elif op is Op.DUMMY:
            self.note(tag_int, path, "D", planned.origin)
            inner = Mode.DUMMY_ALL if tag_int in IDENTIFYING_CODE_SEQUENCES else Mode.DUMMY
            self._recurse(ds, tag, Mode.DUMMY_ALL if mode is Mode.DUMMY_ALL else inner, path)
        elif op is Op.CLEAN and planned.clean in (CleanKind.STRUCTURED, CleanKind.GRAPHICS,
                                                   CleanKind.TEXT):
            self.note(tag_int, path, "C", planned.origin)
            self._recurse(ds, tag, Mode.CLEAN if mode is Mode.NORMAL else mode, path)
        elif op in (Op.KEEP, Op.UID, Op.CLEAN):
            self._recurse(ds, tag, mode, path)
        else:  # a value override (replace, hash, ...) cannot apply to a sequence: empty it
            ds[tag] = DataElement(tag, "SQ", Sequence())
            self.note(tag_int, path, "Z", f"{op.value} not applicable to a sequence")

    def _needs_walk(self, elem: AnyElement) -> bool:
        """Whether a kept sequence holds anything to act on (read from its bytes if still raw)."""
        if isinstance(elem, DataElement):
            return True
        return sequence_needs_walk(elem.value, elem.is_implicit_VR, elem.is_little_endian,
                                   self._ask)

    def _ask(self, tag: int, vr: str | None, value: bytes | None) -> int:
        """:func:`sequence_needs_walk`'s question: what the NORMAL-mode walk would do here."""
        plan = self.plan
        if tag & 0x10000:
            if plan.basic or plan.private_overrides:
                return NEEDED
            return ENTER if vr == "SQ" or (value or b"")[:4] == _ITEM_TAG_BYTES else NOTHING
        planned = plan.public.get(tag)
        if planned is None:
            if tag not in plan.kept_untouched:
                planned = plan.for_public(tag, vr)
            if planned is None:
                sweep = self.sweep
                hit = sweep is not None and tag in plan.kept_text and sweep.hit(value)
                return NEEDED if hit else NOTHING
        if planned.op is not Op.KEEP:
            return NEEDED
        return ENTER if element_vr(tag, vr) == "SQ" else NOTHING

    def _recurse(self, ds: Dataset, tag: BaseTag, mode: Mode, path: str) -> None:
        value = ds[tag].value
        if not isinstance(value, Sequence):
            return
        for index, item in enumerate(value):
            # An item object shared by two sequences (datasets built in memory) is walked once:
            # a second pass would remap its already remapped UIDs.
            if id(item) not in self.walked:
                self.walked[id(item)] = item  # held, so that no other item reuses the id
                self.walk(item, mode, f"{path}[{index}].")

    # -- private attributes -------------------------------------------------------------------
    def _private(self, ds: Dataset, tag: BaseTag, elem: AnyElement, mode: Mode, prefix: str,
                 creators: dict[int, str]) -> None:
        tag_int = int(tag)
        group, element = tag_int >> 16, tag_int & 0xFFFF
        if group in ILLEGAL_PRIVATE_GROUPS or element < 0x0010:
            del ds[tag]
            self.note(tag_int, f"{prefix}({group:04X},{element:04X})", "X",
                      "illegal private group or element")
            return
        if element <= 0x00FF:
            return  # Private Creator: kept or dropped with its block, after the walk
        creator = creators.get((group << 8) | (element >> 8), "")
        offset = element & 0xFF
        planned = self.plan.for_private(group, creator, offset) or self.plan.private_default
        if planned.clean is CleanKind.PRIVATE:
            planned = KEEP_SAFE if creator and self._is_safe(group, creator, offset) else (
                self.plan.private_remove)
        if planned.op is Op.REMOVE or not creator:
            del ds[tag]
            reason = planned.origin if creator else "private element without a creator"
            self.note(tag_int, f"{prefix}({group:04X},{element:04X})", "X", reason)
            return
        if planned.op is Op.KEEP:
            self._keep_private(ds, tag, elem, mode, prefix)
            return
        if elem.VR in (None, "UN") and not looks_like_sequence(elem):
            elem = ds[tag]  # pydicom's private dictionary may know the VR
        self._apply(ds, tag, elem, planned, mode, prefix)

    def _keep_private(self, ds: Dataset, tag: BaseTag, elem: AnyElement, mode: Mode,
                      prefix: str) -> None:
        """A kept private element: enter it if it is a sequence, remap it if it is a UID, and
        clean it (remove it, if its VR is unknown) if it names the patient."""
        vr = elem.VR
        path = f"{prefix}({int(tag) >> 16:04X},{int(tag) & 0xFFFF:04X})"
        if vr is None or vr == "UN":
            if not looks_like_sequence(elem):
                if self._swept_out(elem, mode):  # opaque bytes naming the patient: removed
                    del ds[tag]
                    self.note(tag, path, "X", "kept private value held a patient identifier")
                return
            elem = ds[tag]
            vr = elem.VR
        if vr in FREE_TEXT_VRS and self._swept_out(elem, mode):
            self.clean_text(ds, tag, elem, vr, path, "kept private text held a patient identifier")
        elif vr == "SQ":
            if mode is not Mode.NORMAL or self._needs_walk(elem):
                self._recurse(ds, tag, mode, path)
        elif vr == "UI" and self.plan.basic and Option.RETAIN_UIDS not in self.policy.options:
            self.uid(ds, tag, elem, vr, KEEP_SAFE, path)
        elif mode is not Mode.NORMAL and vr in FREE_TEXT_VRS:
            self._free_text(ds, tag, elem, vr, mode, prefix)

    def _swept_out(self, elem: AnyElement, mode: Mode) -> bool:
        """Whether a kept value holds one of the patient's identifiers (normal mode only)."""
        return mode is Mode.NORMAL and self.sweep is not None and self.sweep.hit(elem.value)

    def _is_safe(self, group: int, creator: str, offset: int) -> bool:
        table = self.safe_private
        if table is not None and table.is_safe(group, creator, offset):
            return True
        return is_declared_safe(self.declared, group, creator, offset)


# The element helpers below are public because :mod:`appliance.verify.walk`, which must decide
# exactly as this walk does, reads elements through them too.


def element_vr(tag: int, vr: str | None) -> str:
    """The element's VR: as encoded, else (implicit VR, UN) from the data dictionary."""
    if vr and vr != "UN":
        return vr
    entry = DicomDictionary.get(tag)
    return entry[0] if entry is not None else (vr or "UN")


def loaded_element(ds: Dataset, tag: BaseTag, elem: AnyElement) -> AnyElement:
    """The element with its value: a deferred one (read with ``defer_size``) is read now."""
    if elem.value is None and isinstance(elem, RawDataElement) and elem.length:
        return ds[tag]
    return elem


def looks_like_sequence(elem: AnyElement) -> bool:
    """Whether an element may hold items: SQ, or raw bytes of undefined length or that start
    with an Item tag (a private or UN sequence pydicom has not parsed)."""
    if elem.VR == "SQ":
        return True
    if isinstance(elem, DataElement):
        return False
    value = elem.value
    return elem.length == _UNDEFINED_LENGTH or (
        isinstance(value, bytes) and value[:4] == _ITEM_TAG_BYTES)


def private_creators(ds: Dataset, encodings: list[str]) -> dict[int, str]:
    """Private Creator of every block in ``ds``, by ``group << 8 | block``, normalised."""
    found: dict[int, str] = {}
    for tag, elem in ds.items():
        tag_int = int(tag)
        if tag_int & 0x10000 and 0x10 <= tag_int & 0xFFFF <= 0xFF:
            creator = normalise_creator(raw_text(elem, encodings))
            found[((tag_int >> 16) << 8) | (tag_int & 0xFF)] = creator
    return found


def _drop_unused_creators(ds: Dataset) -> None:
    """Remove Private Creator elements whose block no longer holds any element."""
    used: set[int] = set()
    creators: list[BaseTag] = []
    for tag in ds.keys():  # noqa: SIM118  (iterating a Dataset converts every element)
        tag_int = int(tag)
        if not tag_int & 0x10000:
            continue
        element = tag_int & 0xFFFF
        if 0x0010 <= element <= 0x00FF:
            creators.append(tag)
        elif element >= 0x1000:
            used.add(((tag_int >> 16) << 8) | (element >> 8))
    for tag in creators:
        if ((int(tag) >> 16) << 8) | (int(tag) & 0xFF) not in used:
            del ds[tag]
