"""What each action does to one element's value: the engine's value handlers.

Every handler reads the value it needs from the element as it stands (raw bytes are decoded
here, not converted by pydicom) and writes a *new* element in its place. Elements are never
changed in place: a caller's own references, and the engine's snapshot of the original patient
identifiers, keep seeing the original values.

Each handler records what it did by path and action code, never by value.
"""

from __future__ import annotations

from collections.abc import Callable

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag

from policies import actions
from policies.annex_e import DICOMDIR_TYPE1_KEYWORDS, CleanKind, PlannedAction, keyword_or_tag
from policies.charset import AnyElement, raw_strings, raw_text
from policies.keying import EngineKeys, code
from policies.model import DateMode, Op, Parameters
from policies.outcome import Outcome, Pseudonym
from policies.textclean import TextCleaner

FREE_TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC", "PN"})
_INT_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV", "AT"})
_FLOAT_VRS = frozenset({"FL", "FD"})
_BYTE_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})
# VRs a keyed code (upper-case letters and digits) is valid in; others get a keyed UID or a dummy.
_CODE_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UN"})
_RAW_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST",
                           "TM", "UC", "UI", "UR", "UT"})


def uid_values(elem: AnyElement) -> list[str]:
    """The UIDs an element holds (a UI value may be multi-valued), padding removed."""
    value = elem.value
    if value is None or value == "" or value == b"":
        return []
    if isinstance(value, bytes):
        return [v.strip("\x00 ") for v in value.decode("ascii", "replace").split("\\")]
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _ascii_bytes(vr: str, value: object) -> bytes | None:
    """The encoded value for a string VR, if ``value`` is ASCII text (or empty); else None."""
    return ascii_encoded(vr, value) if vr in _RAW_TEXT_VRS else None


def ascii_encoded(vr: str, value: object) -> bytes | None:
    """``value`` (None, a str, or a list of them) encoded and padded as pydicom writes a string
    of VR ``vr`` when every character is ASCII; None when it is not ASCII text."""
    if value is None:
        return b""
    if isinstance(value, str):
        text = value
    elif isinstance(value, list | MultiValue) and all(isinstance(v, str) for v in value):
        text = "\\".join(value)
    else:
        return None
    if not text.isascii():
        return None
    data = text.encode("ascii")
    if len(data) % 2:
        data += b"\x00" if vr == "UI" else b" "
    return data


def _coerce(vr: str, text: str) -> object:
    """A replacement given as text, as the value type the VR needs."""
    if vr in _INT_VRS:
        return int(text)
    if vr in _FLOAT_VRS:
        return float(text)
    if vr in _BYTE_VRS:
        data = text.encode("utf-8")
        return data + b"\x00" * (len(data) % 2)
    return text


class ValueActions:
    """The value handlers; the engine's per-dataset run provides the state they use."""

    keys: EngineKeys
    params: Parameters
    outcome: Outcome
    encodings: list[str]
    written_text: list[str]
    sources: dict[str, str]
    remap: Callable[[str], str]
    overlay_removal: Callable[[int, str], bool]

    # -- provided by the engine ---------------------------------------------------------------
    def note(self, tag: int, path: str, code_: str, note: str = "") -> None:
        raise NotImplementedError

    @property
    def shift(self) -> int:
        raise NotImplementedError

    @property
    def cleaner(self) -> TextCleaner:
        raise NotImplementedError

    # -- writing ------------------------------------------------------------------------------
    def put(self, ds: Dataset, tag: BaseTag, vr: str, value: object) -> None:
        """Replace the element with a new one holding ``value``.

        ASCII text (UIDs, dates, codes, dummies: nearly every value the engine writes) goes in
        already encoded, as pydicom itself holds values it has read, so that neither setting
        nor writing it costs a conversion. Anything else becomes a regular element.
        """
        encoded = _ascii_bytes(vr, value)
        if encoded is not None:
            ds[tag] = RawDataElement(tag, vr, len(encoded), encoded, 0, False, True)
            return
        if vr == "UN" and isinstance(value, str):
            value = _coerce("UN", value)
        ds[tag] = DataElement(tag, vr, value)
        if isinstance(value, str):
            if not value.isascii():
                self.written_text.append(value)
        elif isinstance(value, list):
            self.written_text.extend(v for v in value if isinstance(v, str) and not v.isascii())

    # -- handlers -----------------------------------------------------------------------------
    def empty(self, ds: Dataset, tag: BaseTag, elem: AnyElement, vr: str,
              planned: PlannedAction, path: str) -> None:
        self.put(ds, tag, vr, None)
        self.note(tag, path, "Z", planned.origin)

    def dummy(self, ds: Dataset, tag: BaseTag, elem: AnyElement, vr: str,
              planned: PlannedAction, path: str) -> None:
        if vr == "UI":
            self.uid(ds, tag, elem, vr, planned, path)
            return
        keyword = keyword_or_tag(tag)
        original = raw_text(elem, self.encodings) if vr in FREE_TEXT_VRS or vr == "CS" else ""
        if not original and keyword in DICOMDIR_TYPE1_KEYWORDS and vr != "DA" and vr != "TM":
            self.note(tag, path, "D", "empty Type 1 key: keyed value added at the end")
            return  # the engine writes a keyed value, not one constant shared by every patient
        self.put(ds, tag, vr, actions.dummy_value(vr, keyword, original, self.keys.pseudonym))
        self.note(tag, path, "D", planned.origin)

    def uid(self, ds: Dataset, tag: BaseTag, elem: AnyElement, vr: str,
            planned: PlannedAction, path: str) -> None:
        if vr != "UI":
            self.dummy(ds, tag, elem, vr, planned, path)
            return
        old = uid_values(elem)
        if old:
            new = [self.remap(value) for value in old]
            self.put(ds, tag, vr, new[0] if len(new) == 1 else new)
        self.note(tag, path, "U", planned.origin)

    def clean(self, ds: Dataset, tag: BaseTag, elem: AnyElement, vr: str,
              planned: PlannedAction, path: str) -> None:
        kind = planned.clean
        if kind is CleanKind.DATE or vr in ("DA", "DT", "TM"):
            self.modify_dates(ds, tag, elem, vr, planned, path, self.params.date_mode)
        elif kind is CleanKind.DEVICE and vr == "AE":
            stand_in = "AE" + code(self.keys.pseudonym, "AE", raw_text(elem, self.encodings), 14)
            self.put(ds, tag, vr, stand_in)
            self.note(tag, path, "C", planned.origin)
        elif vr in _BYTE_VRS and kind is CleanKind.GRAPHICS:
            if self.overlay_removal(tag, path):
                return
            self.note(tag, path, "C", "graphic data kept: not an overlay bitmap")
        elif vr in FREE_TEXT_VRS or vr in ("AE", "CS", "UR"):
            self.clean_text(ds, tag, elem, vr, path, planned.origin)
        # numeric values carry no identifying text: cleaning keeps them

    def clean_text(self, ds: Dataset, tag: BaseTag, elem: AnyElement, vr: str, path: str,
                   origin: str) -> None:
        values = raw_strings(elem, self.encodings, vr)
        if not values:
            return
        cleaner = self.cleaner
        cleaned = [actions.fit(cleaner.clean(v), vr) for v in values]
        if cleaned != values:
            self.put(ds, tag, vr, cleaned if len(cleaned) > 1 else cleaned[0])
            self.note(tag, path, "C", origin)

    def modify_dates(self, ds: Dataset, tag: BaseTag, elem: AnyElement, vr: str,
                     planned: PlannedAction, path: str, mode: DateMode) -> None:
        values = raw_strings(elem, self.encodings, vr)
        if not values:
            return
        try:
            new = [actions.modify_date(vr, v, mode, self.shift) for v in values]
        except actions.UnparseableValue:
            # Nothing sensible can be derived from an unparseable date; keeping it would leak.
            self.put(ds, tag, vr, None)
            self.note(tag, path, "Z", "date not parseable, emptied")
            return
        self.put(ds, tag, vr, new if len(new) > 1 else new[0])
        self.note(tag, path, "C", planned.origin)

    def replace(self, ds: Dataset, tag: BaseTag, elem: AnyElement, vr: str,
                planned: PlannedAction, path: str) -> None:
        try:
            value = _coerce(vr, planned.rule.value or "")
        except ValueError:
            self.put(ds, tag, vr, None)
            self.note(tag, path, "Z", f"replacement is not a valid {vr} value, emptied")
            return
        self.put(ds, tag, vr, value)
        self.note(tag, path, "replace", "override")

    def hash(self, ds: Dataset, tag: BaseTag, elem: AnyElement, vr: str,
             planned: PlannedAction, path: str) -> None:
        if vr not in _CODE_VRS:
            self.uid(ds, tag, elem, vr, planned, path)  # a keyed UID, or a dummy
            return
        original = raw_text(elem, self.encodings)
        if original:
            length = planned.rule.length or self.params.pseudonym_length
            value = code(self.keys.pseudonym, keyword_or_tag(tag), original, length)
            self.put(ds, tag, vr, actions.fit(value, vr))
        self.note(tag, path, "hash", "override")

    def pseudonym(self, ds: Dataset, tag: BaseTag, elem: AnyElement, vr: str,
                  planned: PlannedAction, path: str) -> None:
        if vr not in _CODE_VRS:
            self.uid(ds, tag, elem, vr, planned, path)  # a keyed UID, or a dummy
            return
        rule = planned.rule
        keyword = keyword_or_tag(tag)
        domain = rule.source or keyword
        own = raw_text(elem, self.encodings)
        basis = (self.sources.get(rule.source, "") if rule.source else "") or own
        if not basis:
            self.note(tag, path, "pseudonym", "empty, left empty")
            return
        length = rule.length or self.params.pseudonym_length
        value = actions.fit((rule.prefix or "") + code(self.keys.pseudonym, domain, basis,
                                                       length), vr)
        self.put(ds, tag, vr, value)
        # The value derives from the source (a name from the Patient ID, so that every spelling
        # of one patient's name gets one pseudonym), but what it replaced is this element's own
        # value: that is the original to seal, and the one a leak scan must look for.
        self.outcome.pseudonyms.append(Pseudonym(keyword, value, own or basis))
        self.note(tag, path, "pseudonym", "override")

    def date_shift(self, ds: Dataset, tag: BaseTag, elem: AnyElement, vr: str,
                   planned: PlannedAction, path: str) -> None:
        self.modify_dates(ds, tag, elem, vr, planned, path, DateMode.SHIFT)

    def date_coarsen(self, ds: Dataset, tag: BaseTag, elem: AnyElement, vr: str,
                     planned: PlannedAction, path: str) -> None:
        self.modify_dates(ds, tag, elem, vr, planned, path,
                          planned.rule.granularity or DateMode.YEAR)

    def age_band(self, ds: Dataset, tag: BaseTag, elem: AnyElement, vr: str,
                 planned: PlannedAction, path: str) -> None:
        width = planned.rule.width or self.params.age_band_years
        text = raw_text(elem, self.encodings)
        if not text:
            return
        try:
            self.put(ds, tag, vr, actions.band_age(text, width, self.params.age_cap_years))
            self.note(tag, path, "age_band", "override")
        except actions.UnparseableValue:
            self.put(ds, tag, vr, None)
            self.note(tag, path, "Z", "age not parseable, emptied")


Handler = Callable[[ValueActions, Dataset, BaseTag, AnyElement, str, PlannedAction, str], None]

VALUE_HANDLERS: dict[Op, Handler] = {
    Op.EMPTY: ValueActions.empty,
    Op.DUMMY: ValueActions.dummy,
    Op.UID: ValueActions.uid,
    Op.CLEAN: ValueActions.clean,
    Op.REPLACE: ValueActions.replace,
    Op.HASH: ValueActions.hash,
    Op.PSEUDONYM: ValueActions.pseudonym,
    Op.DATE_SHIFT: ValueActions.date_shift,
    Op.DATE_COARSEN: ValueActions.date_coarsen,
    Op.AGE_BAND: ValueActions.age_band,
}
