"""The de-identification engine: apply one compiled policy to one dataset, in place.

Both stages run this. The engine walks only what the policy acts on: for each element it looks
the tag up in the precompiled :class:`policies.annex_e.Plan` (a dict lookup, no decoding), and only
elements with an action are decoded. Sequences are always entered, at every depth, including
kept private sequences, because identifiers hide there.

Inside some sequences the profile is not enough, because their items hold free text the table
does not list (an SR TEXT item's Text Value, a graphic annotation's text). A sequence planned D
puts its items in *dummy* mode (every remaining free-text value becomes a dummy); a sequence
cleaned under Clean Structured Content or Clean Graphics puts them in *clean* mode (that text is
cleaned of the patient's identifiers instead). Coded values (Code Value, Coding Scheme Designator,
Code Meaning) are controlled terminology and stay.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import UID_dictionary

from policies import actions
from policies.annex_e import CleanKind, Plan, PlannedAction, compile_plan, keyword_or_tag
from policies.charset import ensure_encodable
from policies.keying import EngineKeys, code, keyed_uid, shift_days
from policies.markers import apply_markers, rebuild_file_meta
from policies.model import Op, Option, Policy, Rule
from policies.outcome import ActionRecord, Outcome, PolicyRefusal, Pseudonym
from policies.private import (
    SafePrivateTable,
    declared_safe,
    is_declared_safe,
    normalise_creator,
)
from policies.textclean import Identifiers, TextCleaner, identifiers_from

# Overlay bitmaps may hold burned-in text; Clean Graphics keeps one only if a detector says it
# holds none. The engine does no I/O, so the detector (OCR) is injected by the caller.
OverlayTextDetector = Callable[[Dataset, int], bool]

FREE_TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC", "PN"})
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


class Mode(Enum):
    NORMAL = "normal"
    DUMMY = "dummy"  # inside a sequence planned D
    CLEAN = "clean"  # inside a structured-content or graphics sequence being cleaned


class Deidentifier:
    """Apply ``policy`` under ``keys``; reuse one instance for many datasets.

    The instance caches UID mappings and compiled text cleaners, so consecutive instances of the
    same patient cost less. It holds no file handles and is safe to use from one thread.
    """

    def __init__(
        self,
        policy: Policy,
        keys: EngineKeys,
        *,
        safe_private: SafePrivateTable | None = None,
        overlay_text_detector: OverlayTextDetector | None = None,
    ) -> None:
        self.policy = policy
        self.keys = keys
        self.plan: Plan = compile_plan(policy)
        needs_safe = Option.RETAIN_SAFE_PRIVATE in policy.options
        self.safe_private = safe_private or (SafePrivateTable.bundled() if needs_safe else None)
        self.overlay_text_detector = overlay_text_detector
        self._uid_cache: dict[str, str] = {}
        self._cleaners: dict[Identifiers, TextCleaner] = {}

    def remap_uid(self, value: str) -> str:
        """The new UID for ``value``; well-known UIDs (pydicom's dictionary) stay as they are."""
        if not value or value in UID_dictionary:
            return value
        new = self._uid_cache.get(value)
        if new is None:
            if len(self._uid_cache) > 200_000:
                self._uid_cache.clear()
            new = keyed_uid(self.keys.uid, value, self.policy.parameters.uid_root)
            self._uid_cache[value] = new
        return new

    def cleaner_for(self, identifiers: Identifiers) -> TextCleaner:
        cleaner = self._cleaners.get(identifiers)
        if cleaner is None:
            if len(self._cleaners) > 256:
                self._cleaners.clear()
            cleaner = self._cleaners[identifiers] = TextCleaner(identifiers)
        return cleaner

    def check_refusals(self, ds: Dataset) -> None:
        """Raise :class:`PolicyRefusal` if this policy must not process ``ds``."""
        options = self.policy.options
        if Option.CLEAN_PIXEL_DATA in options and _flag(ds, "BurnedInAnnotation"):
            raise PolicyRefusal(
                "BurnedInAnnotation is YES and the policy requests Clean Pixel Data, which this "
                "release cannot perform: held for pixel cleaning or manual review")
        if (Option.CLEAN_RECOGNIZABLE_VISUAL_FEATURES in options
                and _flag(ds, "RecognizableVisualFeatures")):
            raise PolicyRefusal(
                "RecognizableVisualFeatures is YES and the policy requests Clean Recognizable "
                "Visual Features, which this release cannot perform")

    def deidentify(self, ds: Dataset) -> Outcome:
        """De-identify ``ds`` in place and return what was done (no original values)."""
        self.check_refusals(ds)
        run = _Run(self, ds)
        run.prepare()
        run.walk(ds, Mode.NORMAL, "")
        run.finish()
        return run.outcome


def _flag(ds: Dataset, keyword: str) -> bool:
    value = ds.get(keyword)
    return isinstance(value, str) and value.strip().upper() == "YES"


def _text_of(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value)
    return str(value)


class _Run:
    """State for one dataset: the patient's identifiers, date shift and the outcome."""

    def __init__(self, engine: Deidentifier, ds: Dataset) -> None:
        self.engine = engine
        self.plan = engine.plan
        self.policy = engine.policy
        self.params = engine.policy.parameters
        self.root = ds
        self.outcome = Outcome()
        self._identifiers: Identifiers | None = None
        self._cleaner: TextCleaner | None = None
        self._shift: int | None = None
        self._declared: tuple[frozenset[tuple[int, str]], frozenset[tuple[int, str, int]]] = (
            frozenset(), frozenset())
        self._sources: dict[str, str] = {}
        self._written_text: list[str] = []

    # -- setup and teardown -------------------------------------------------------------------
    def prepare(self) -> None:
        ds = self.root
        for override in self.policy.overrides:
            source = override.rule.source
            if source and source not in self._sources:
                self._sources[source] = _text_of(ds.get(source))
        if self.policy.options & {Option.CLEAN_DESCRIPTORS, Option.CLEAN_STRUCTURED_CONTENT,
                                  Option.CLEAN_GRAPHICS, Option.RETAIN_PATIENT_CHARACTERISTICS}:
            self._identifiers = identifiers_from(ds)
        self._patient_key = (_text_of(ds.get("PatientID")) or _text_of(ds.get("PatientName"))
                             or _text_of(ds.get("StudyInstanceUID")))
        if Option.RETAIN_SAFE_PRIVATE in self.policy.options and 0x00080300 in ds:
            self._declared = declared_safe(ds)
        if self.params.compute_age and not _text_of(ds.get("PatientAge")):
            birth, seen = _text_of(ds.get("PatientBirthDate")), _text_of(
                ds.get("StudyDate") or ds.get("ContentDate"))
            try:
                ds.PatientAge = actions.age_between(birth, seen)
                self.note(0x00101010, "PatientAge", "added", "computed from birth and study date")
            except actions.UnparseableValue:
                self.outcome.warnings.append("PatientAge missing and not computable")

    def finish(self) -> None:
        ds = self.root
        if self.policy.base_profile == "ps315-basic":
            self._ensure_dicomdir_keys(ds)
            apply_markers(ds, self.policy)
        if ensure_encodable(ds, self._written_text):
            self.outcome.charset_switched = True
        rebuild_file_meta(ds)
        out = self.outcome
        out.sop_instance_uid = _text_of(ds.get("SOPInstanceUID"))
        out.study_instance_uid = _text_of(ds.get("StudyInstanceUID"))
        out.series_instance_uid = _text_of(ds.get("SeriesInstanceUID"))
        out.sop_class_uid = _text_of(ds.get("SOPClassUID"))
        out.date_shift_days = self._shift

    def _ensure_dicomdir_keys(self, ds: Dataset) -> None:
        """Patient ID, Study Date, Study Time and Study ID are Type 1 DICOMDIR keys."""
        if "StudyInstanceUID" not in ds:
            return
        study = _text_of(ds.get("StudyInstanceUID"))
        defaults = {
            "PatientID": lambda: code(self.engine.keys.pseudonym, "D|PatientID",
                                      self._patient_key, 12),
            "StudyID": lambda: code(self.engine.keys.pseudonym, "D|StudyID", study, 10),
            "StudyDate": lambda: actions.DUMMY_DATE,
            "StudyTime": lambda: actions.DUMMY_TIME,
        }
        for keyword, make in defaults.items():
            if not _text_of(ds.get(keyword)):
                setattr(ds, keyword, make())
                self.note(0, keyword, "D", "Type 1 DICOMDIR key")

    # -- recording ----------------------------------------------------------------------------
    def note(self, tag: int, path: str, code_: str, note: str = "") -> None:
        self.outcome.actions.append(ActionRecord(path, tag, code_, note))

    @property
    def cleaner(self) -> TextCleaner:
        if self._cleaner is None:
            identifiers = self._identifiers or Identifiers()
            self._cleaner = self.engine.cleaner_for(identifiers)
        return self._cleaner

    @property
    def shift(self) -> int:
        if self._shift is None:
            self._shift = shift_days(self.engine.keys.date, self._patient_key,
                                     self.params.date_shift_max_days)
        return self._shift

    # -- the walk -----------------------------------------------------------------------------
    def walk(self, ds: Dataset, mode: Mode, prefix: str) -> None:
        plan = self.plan
        creators_seen = False
        for tag in list(ds.keys()):
            tag_int = int(tag)
            group = tag_int >> 16
            if group & 1:
                creators_seen = True
                self._private(ds, tag_int, mode, prefix)
                continue
            raw = ds.get_item(tag)
            vr = raw.VR if raw is not None else None
            planned = plan.for_public(tag_int, vr)
            if planned is None:
                if mode is not Mode.NORMAL and tag_int not in CODE_TAGS:
                    self._free_text(ds, tag_int, mode, prefix, vr)
                continue
            self._apply(ds, tag_int, planned, mode, prefix)
        if creators_seen:
            _drop_unused_creators(ds)

    def _free_text(self, ds: Dataset, tag: int, mode: Mode, prefix: str, vr: str | None) -> None:
        if vr is None:
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                return
        if vr not in FREE_TEXT_VRS:
            return
        elem = ds[tag]
        if mode is Mode.DUMMY:
            self._set(elem, actions.dummy_value(vr, elem.keyword, _text_of(elem.value),
                                                self.engine.keys.pseudonym))
            self.note(tag, prefix + keyword_or_tag(tag), "D", "free text in a D sequence")
        else:
            self._clean_text(elem, prefix + keyword_or_tag(tag))

    def _recurse(self, elem: DataElement, mode: Mode, prefix: str) -> None:
        name = prefix + keyword_or_tag(elem.tag)
        for index, item in enumerate(elem.value or ()):
            self.walk(item, mode, f"{name}[{index}].")

    def _apply(self, ds: Dataset, tag: int, planned: PlannedAction, mode: Mode,
               prefix: str) -> None:
        op = planned.op
        if op is Op.REMOVE:
            del ds[tag]
            self.note(tag, prefix + keyword_or_tag(tag), "X", planned.origin)
            return
        elem = ds[tag]
        path = prefix + keyword_or_tag(tag)
        if elem.VR == "SQ":
            self._apply_sequence(elem, planned, mode, prefix, path)
            return
        if op is Op.KEEP:
            if mode is not Mode.NORMAL and elem.VR in FREE_TEXT_VRS and tag not in CODE_TAGS:
                self._free_text(ds, tag, mode, prefix, elem.VR)
            return
        handler = _VALUE_HANDLERS[op]
        handler(self, elem, planned, path)

    def _apply_sequence(self, elem: DataElement, planned: PlannedAction, mode: Mode,
                        prefix: str, path: str) -> None:
        op = planned.op
        if op is Op.EMPTY:
            elem.value = Sequence()
            self.note(elem.tag, path, "Z", planned.origin)
        elif op is Op.DUMMY:
            self.note(elem.tag, path, "D", planned.origin)
            self._recurse(elem, Mode.DUMMY, prefix)
        elif op is Op.CLEAN and planned.clean in (CleanKind.STRUCTURED, CleanKind.GRAPHICS,
                                                   CleanKind.TEXT):
            self.note(elem.tag, path, "C", planned.origin)
            self._recurse(elem, Mode.CLEAN if mode is Mode.NORMAL else mode, prefix)
        elif op in (Op.KEEP, Op.UID, Op.CLEAN):
            self._recurse(elem, mode, prefix)
        else:  # named overrides on a sequence make no sense: remove, to be safe
            elem.value = Sequence()
            self.note(elem.tag, path, "Z", f"{op.value} not applicable to a sequence")

    # -- value handlers -----------------------------------------------------------------------
    def _set(self, elem: DataElement, value: object) -> None:
        elem.value = value
        if isinstance(value, str) and not value.isascii():
            self._written_text.append(value)

    def _empty(self, elem: DataElement, planned: PlannedAction, path: str) -> None:
        elem.value = None
        self.note(elem.tag, path, "Z", planned.origin)

    def _dummy(self, elem: DataElement, planned: PlannedAction, path: str) -> None:
        if elem.VR == "UI":
            self._uid(elem, planned, path)
            return
        original = _text_of(elem.value)
        self._set(elem, actions.dummy_value(elem.VR, elem.keyword, original,
                                            self.engine.keys.pseudonym))
        self.note(elem.tag, path, "D", planned.origin)

    def _uid(self, elem: DataElement, planned: PlannedAction, path: str) -> None:
        if elem.VR != "UI":
            self._dummy(elem, planned, path)
            return
        value = elem.value
        if isinstance(value, MultiValue | list):
            new_values = [self._map_uid(str(v)) for v in value]
            elem.value = new_values
        elif value:
            elem.value = self._map_uid(str(value))
        self.note(elem.tag, path, "U", planned.origin)

    def _map_uid(self, old: str) -> str:
        new = self.engine.remap_uid(old)
        if new != old:
            self.outcome.uid_map[old] = new
        return new

    def _clean(self, elem: DataElement, planned: PlannedAction, path: str) -> None:
        kind = planned.clean
        if kind is CleanKind.DATE or elem.VR in ("DA", "DT", "TM"):
            self._modify_dates(elem, planned, path, self.params.date_mode)
        elif kind is CleanKind.DEVICE and elem.VR == "AE":
            self._set(elem, "AE" + code(self.engine.keys.pseudonym, "AE", _text_of(elem.value), 14))
            self.note(elem.tag, path, "C", planned.origin)
        elif elem.VR in ("OB", "OW", "OF", "UN") and kind is CleanKind.GRAPHICS:
            self._clean_overlay(elem, planned, path)
        elif elem.VR in FREE_TEXT_VRS or elem.VR in ("AE", "CS", "UR"):
            self._clean_text(elem, path, planned.origin)
        # numeric and other binary values are kept: cleaning applies to text

    def _clean_overlay(self, elem: DataElement, planned: PlannedAction, path: str) -> None:
        detector = self.engine.overlay_text_detector
        group = elem.tag >> 16
        if detector is not None and not detector(self.root, group):
            self.note(elem.tag, path, "C", "overlay kept: no text detected")
            return
        reason = "text detected in overlay" if detector else "no overlay text detector"
        _remove_overlay(self.root, group)
        self.note(elem.tag, path, "X", f"overlay removed: {reason}")

    def _clean_text(self, elem: DataElement, path: str, origin: str = "clean text") -> None:
        if elem.value in (None, ""):
            return
        if elem.VR == "PN":
            new_pn = self.cleaner.clean(_text_of(elem.value))
            if new_pn != _text_of(elem.value):
                self._set(elem, new_pn)
                self.note(elem.tag, path, "C", origin)
            return
        values = list(elem.value) if isinstance(elem.value, MultiValue) else [elem.value]
        cleaned = [actions.fit(self.cleaner.clean(str(v)), elem.VR) for v in values]
        if cleaned != [str(v) for v in values]:
            self._set(elem, cleaned if len(cleaned) > 1 else cleaned[0])
            self.note(elem.tag, path, "C", origin)

    def _modify_dates(self, elem: DataElement, planned: PlannedAction, path: str,
                      mode: actions.DateMode) -> None:
        values = list(elem.value) if isinstance(elem.value, MultiValue) else [elem.value]
        try:
            new = [actions.modify_date(elem.VR, str(v or ""), mode, self.shift) for v in values]
        except actions.UnparseableValue:
            elem.value = None
            self.note(elem.tag, path, "Z", "date not parseable, emptied")
            return
        elem.value = new if len(new) > 1 else new[0]
        self.note(elem.tag, path, "C", planned.origin)

    def _replace(self, elem: DataElement, planned: PlannedAction, path: str) -> None:
        self._set(elem, planned.rule.value or "")
        self.note(elem.tag, path, "replace", "override")

    def _hash(self, elem: DataElement, planned: PlannedAction, path: str) -> None:
        original = _text_of(elem.value)
        if original:
            length = planned.rule.length or self.params.pseudonym_length
            value = code(self.engine.keys.pseudonym, elem.keyword or str(elem.tag), original,
                         length)
            self._set(elem, actions.fit(value, elem.VR))
        self.note(elem.tag, path, "hash", "override")

    def _pseudonym(self, elem: DataElement, planned: PlannedAction, path: str) -> None:
        rule = planned.rule
        domain = rule.source or elem.keyword or f"{elem.tag:08X}"
        original = self._sources.get(rule.source, "") if rule.source else ""
        original = original or _text_of(elem.value)
        if not original:
            self.note(elem.tag, path, "pseudonym", "empty, left empty")
            return
        length = rule.length or self.params.pseudonym_length
        value = actions.fit((rule.prefix or "") + code(self.engine.keys.pseudonym, domain,
                                                       original, length), elem.VR)
        self._set(elem, value)
        self.outcome.pseudonyms.append(Pseudonym(elem.keyword or path, value, original))
        self.note(elem.tag, path, "pseudonym", "override")

    def _date_shift(self, elem: DataElement, planned: PlannedAction, path: str) -> None:
        self._modify_dates(elem, planned, path, actions.DateMode.SHIFT)

    def _date_coarsen(self, elem: DataElement, planned: PlannedAction, path: str) -> None:
        self._modify_dates(elem, planned, path,
                           planned.rule.granularity or actions.DateMode.YEAR)

    def _age_band(self, elem: DataElement, planned: PlannedAction, path: str) -> None:
        width = planned.rule.width or self.params.age_band_years
        try:
            elem.value = actions.band_age(_text_of(elem.value), width, self.params.age_cap_years)
            self.note(elem.tag, path, "age_band", "override")
        except actions.UnparseableValue:
            elem.value = None
            self.note(elem.tag, path, "Z", "age not parseable, emptied")

    # -- private attributes -------------------------------------------------------------------
    def _private(self, ds: Dataset, tag: int, mode: Mode, prefix: str) -> None:
        group, element = tag >> 16, tag & 0xFFFF
        path = prefix + f"({group:04X},{element:04X})"
        if group in (0x0001, 0x0003, 0x0005, 0x0007, 0xFFFF) or element < 0x0010:
            del ds[tag]
            self.note(tag, path, "X", "illegal private group or element")
            return
        if element <= 0x00FF:
            return  # Private Creator: kept or dropped with its block, after the walk
        creator_elem = ds.get((group << 16) | (element >> 8))
        creator = normalise_creator(_text_of(creator_elem.value)) if creator_elem else ""
        offset = element & 0xFF
        planned = self.plan.for_private(group, creator, offset) or self.plan.private_default
        if planned.clean is CleanKind.PRIVATE:
            if not creator or not self._is_safe(group, creator, offset):
                del ds[tag]
                self.note(tag, path, "X", "private, not known safe")
                return
            planned = PlannedAction(Rule(Op.KEEP), "K", planned.origin)
        if not creator and planned.op is not Op.REMOVE:
            del ds[tag]
            self.note(tag, path, "X", "private element without a creator")
            return
        self._apply(ds, tag, planned, mode, prefix)

    def _is_safe(self, group: int, creator: str, offset: int) -> bool:
        table = self.engine.safe_private
        if table is not None and table.is_safe(group, creator, offset):
            return True
        return is_declared_safe(self._declared, group, creator, offset)


_VALUE_HANDLERS: dict[Op, Callable[[_Run, DataElement, PlannedAction, str], None]] = {
    Op.EMPTY: _Run._empty,
    Op.DUMMY: _Run._dummy,
    Op.UID: _Run._uid,
    Op.CLEAN: _Run._clean,
    Op.REPLACE: _Run._replace,
    Op.HASH: _Run._hash,
    Op.PSEUDONYM: _Run._pseudonym,
    Op.DATE_SHIFT: _Run._date_shift,
    Op.DATE_COARSEN: _Run._date_coarsen,
    Op.AGE_BAND: _Run._age_band,
}


def _drop_unused_creators(ds: Dataset) -> None:
    """Remove Private Creator elements whose block no longer holds any element."""
    used: set[tuple[int, int]] = set()
    creators: list[int] = []
    for tag in ds.keys():
        tag_int = int(tag)
        group, element = tag_int >> 16, tag_int & 0xFFFF
        if not group & 1:
            continue
        if 0x0010 <= element <= 0x00FF:
            creators.append(tag_int)
        elif element >= 0x1000:
            used.add((group, element >> 8))
    for tag_int in creators:
        if (tag_int >> 16, tag_int & 0xFF) not in used:
            del ds[tag_int]


def _remove_overlay(ds: Dataset, group: int) -> None:
    for tag in [t for t in ds.keys() if int(t) >> 16 == group]:
        del ds[tag]
