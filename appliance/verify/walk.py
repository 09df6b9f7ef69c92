"""Every element of a de-identified file, at every depth, checked against the compiled plan.

This walk mirrors :mod:`policies.walk` decision for decision, so that it expects exactly what the
engine does: the same :class:`policies.annex_e.Plan` lookup per tag, the same modes inside
sequences (a sequence planned D puts its items' free text in *dummy* mode, one cleaned under
Clean Structured Content or Clean Graphics in *clean* mode, coded values stay), the same private
attribute rules (creator, group and offset; known-safe table and the file's own declarations)
and the same UID rules. Where the engine would have removed, emptied or replaced a value, a
value that is there, or not of the replacement's form, is an ERROR. Kept and cleaned free text
is only pattern-checked (WARNINGs, :mod:`appliance.verify.text`).

Values are decoded from the raw bytes with the dataset's character set, as the engine reads
them; large values stay deferred (the header is read with ``defer_size``), so Pixel Data is
never loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from appliance.verify.findings import Check, Findings
from appliance.verify.forms import check_dummy, check_value_form
from appliance.verify.text import is_dummy_or_pseudonym_name, text_kinds
from appliance.verify.uids import Reference, References, check_uid, is_storage_class
from policies.annex_e import MARKER_TAGS, CleanKind, Plan, PlannedAction, keyword_or_tag
from policies.charset import AnyElement, encodings_of, raw_strings
from policies.model import Op, Option, Policy
from policies.private import SafePrivateTable, is_declared_safe
from policies.values import FREE_TEXT_VRS
from policies.walk import (
    CODE_TAGS,
    IDENTIFYING_CODE_SEQUENCES,
    ILLEGAL_PRIVATE_GROUPS,
    KEEP_SAFE,
    Mode,
    element_vr,
    loaded_element,
    looks_like_sequence,
    private_creators,
)

_SPECIFIC_CHARACTER_SET = 0x00080005
_REFERENCED_SOP_CLASS_UID = 0x00081150
_REFERENCED_SOP_INSTANCE_UID = 0x00081155
_STUDY_INSTANCE_UID = 0x0020000D
_SERIES_INSTANCE_UID = 0x0020000E
_REMAP_OPS = frozenset({Op.UID, Op.DUMMY, Op.HASH, Op.PSEUDONYM})
_NOT_SCANNED = MARKER_TAGS | {_SPECIFIC_CHARACTER_SET}
_TYPE1_KEY_TAGS = frozenset({0x00100020, 0x00200010})  # Patient ID, Study ID
Declared = tuple[frozenset[tuple[int, str]], frozenset[tuple[int, str, int]]]


@dataclass(frozen=True)
class FileContext:
    """What the walk of one file needs: where to report, and what the policy says."""

    file: str
    policy: Policy
    plan: Plan
    findings: Findings
    refs: References
    safe_private: SafePrivateTable | None
    declared: Declared


class DatasetChecker:
    """Walk one dataset (a file's, or a DICOMDIR record's) and report what the plan forbids."""

    def __init__(self, ctx: FileContext) -> None:
        self.ctx = ctx
        self.file = ctx.file
        self.findings = ctx.findings
        self.plan = ctx.plan
        self.params = ctx.policy.parameters
        self.root = self.params.uid_root
        options = ctx.policy.options
        self.private_ui_remapped = ctx.plan.basic and Option.RETAIN_UIDS not in options
        self.dates_in_text = Option.RETAIN_LONG_FULL_DATES not in options

    def check(self, ds: Dataset) -> None:
        self.walk(ds, Mode.NORMAL, "", encodings_of(ds), None, top=True)

    # -- the walk -----------------------------------------------------------------------------
    def walk(self, ds: Dataset, mode: Mode, prefix: str, encodings: list[str],
             series: str | None, *, top: bool) -> None:
        if not top:
            if _SPECIFIC_CHARACTER_SET in ds:
                encodings = encodings_of(ds, encodings)
            series = _first(ds, _SERIES_INSTANCE_UID, encodings) or series
        creators: dict[int, str] | None = None
        creator_tags: list[int] = []
        used_blocks: set[int] = set()
        for tag in list(ds.keys()):  # ds.items() would convert every element
            elem = ds.get_item(tag, keep_deferred=True)
            tag_int = int(tag)
            if tag_int & 0x10000:
                group, element = tag_int >> 16, tag_int & 0xFFFF
                path = f"{prefix}({group:04X},{element:04X})"
                if group in ILLEGAL_PRIVATE_GROUPS or element < 0x0010:
                    self.findings.error(Check.PRIVATE, self.file, path,
                                        "illegal private element (the engine removes these)")
                elif element <= 0x00FF:
                    creator_tags.append(tag_int)
                else:
                    if creators is None:
                        creators = private_creators(ds, encodings)
                    used_blocks.add((group << 8) | (element >> 8))
                    self._private(ds, tag, elem, creators, mode, path, encodings, series)
                continue
            if not tag_int & 0xFFFF:
                continue  # a group length: the engine drops them, but it holds no value
            path = prefix + keyword_or_tag(tag_int)
            vr = element_vr(tag_int, elem.VR)
            planned = self.plan.for_public(tag_int, elem.VR)
            if planned is None:
                self._unplanned(ds, tag, elem, vr, mode, path, encodings, series, top)
            else:
                self._apply(ds, tag, elem, vr, planned, mode, path, encodings, series, top)
        for tag_int in creator_tags:
            if ((tag_int >> 16) << 8) | (tag_int & 0xFF) not in used_blocks:
                self.findings.error(Check.PRIVATE, self.file,
                                    f"{prefix}({tag_int >> 16:04X},{tag_int & 0xFFFF:04X})",
                                    "Private Creator of an empty block (the engine drops these)")

    def _apply(self, ds: Dataset, tag: BaseTag, elem: AnyElement, vr: str,
               planned: PlannedAction, mode: Mode, path: str, encodings: list[str],
               series: str | None, top: bool) -> None:
        op = planned.op
        if op is Op.REMOVE:
            self.findings.error(Check.REMOVED, self.file, path,
                                f"present although the policy removes it (X, {planned.origin})")
            return
        if " or " in vr:  # ambiguous (US or SS, OB or OW): pydicom resolves it from the dataset
            elem = ds[tag]
            vr = elem.VR
        if vr == "SQ" or (vr == "UN" and looks_like_sequence(elem)):
            self._sequence(ds, tag, planned, mode, path, encodings, series)
        elif op is Op.KEEP or (vr == "UI" and op not in _REMAP_OPS and op is not Op.EMPTY):
            if mode is Mode.NORMAL or vr == "UI":
                self._kept(ds, tag, elem, vr, path, encodings, series, top)
            else:
                self._free_text(ds, tag, elem, vr, mode, path, encodings)
        elif op is Op.EMPTY:
            if not _is_empty(elem):
                self.findings.error(Check.EMPTIED, self.file, path,
                                    f"holds a value although the policy empties it (Z,"
                                    f" {planned.origin})")
        elif vr == "UI":
            self._uid(ds, tag, elem, path, encodings, series, top,
                      remap=op in _REMAP_OPS)
        else:
            values = raw_strings(loaded_element(ds, tag, elem), encodings, vr)
            type1_key = top and int(tag) in _TYPE1_KEY_TAGS
            if not check_value_form(self.findings, self.file, path, vr, values, planned,
                                    self.params, type1_key=type1_key) and op is Op.CLEAN:
                self._scan(vr, values, path)

    def _sequence(self, ds: Dataset, tag: BaseTag, planned: PlannedAction, mode: Mode,
                  path: str, encodings: list[str], series: str | None) -> None:
        value = ds[tag].value
        if not isinstance(value, Sequence):
            return
        op, tag_int = planned.op, int(tag)
        if op is Op.EMPTY:
            if len(value):
                self.findings.error(Check.EMPTIED, self.file, path,
                                    f"sequence holds items although the policy empties it (Z,"
                                    f" {planned.origin})")
            return
        if op is Op.DUMMY:
            inner = Mode.DUMMY_ALL if tag_int in IDENTIFYING_CODE_SEQUENCES else Mode.DUMMY
            mode = Mode.DUMMY_ALL if mode is Mode.DUMMY_ALL else inner
        elif op is Op.CLEAN and planned.clean in (CleanKind.STRUCTURED, CleanKind.GRAPHICS,
                                                   CleanKind.TEXT):
            mode = Mode.CLEAN if mode is Mode.NORMAL else mode
        elif op not in (Op.KEEP, Op.UID, Op.CLEAN):
            if len(value):
                self.findings.error(Check.FORM, self.file, path,
                                    f"sequence holds items although {op.value} empties a"
                                    " sequence")
            return
        for index, item in enumerate(value):
            self.walk(item, mode, f"{path}[{index}].", encodings, series, top=False)

    def _unplanned(self, ds: Dataset, tag: BaseTag, elem: AnyElement, vr: str, mode: Mode,
                   path: str, encodings: list[str], series: str | None, top: bool) -> None:
        if vr == "UI":
            self._uid(ds, tag, elem, path, encodings, series, top, remap=False)
        elif vr == "SQ":
            value = ds[tag].value
            for index, item in enumerate(value if isinstance(value, Sequence) else []):
                self.walk(item, mode, f"{path}[{index}].", encodings, series, top=False)
        elif mode is Mode.NORMAL:
            self._kept(ds, tag, elem, vr, path, encodings, series, top)
        else:
            self._free_text(ds, tag, elem, vr, mode, path, encodings)

    def _free_text(self, ds: Dataset, tag: BaseTag, elem: AnyElement, vr: str, mode: Mode,
                   path: str, encodings: list[str]) -> None:
        """Free text inside a D or cleaned sequence: a dummy, or cleaned text (codes stay)."""
        if vr not in FREE_TEXT_VRS:
            return
        values = raw_strings(loaded_element(ds, tag, elem), encodings, vr)
        if int(tag) in CODE_TAGS and mode is not Mode.DUMMY_ALL:
            return  # coded values are controlled terminology; the engine keeps them
        if mode is Mode.CLEAN:
            self._scan(vr, values, path)
        else:
            check_dummy(self.findings, self.file, path, vr, values,
                        "free text inside a sequence the policy replaces with dummies")

    def _kept(self, ds: Dataset, tag: BaseTag, elem: AnyElement, vr: str, path: str,
              encodings: list[str], series: str | None, top: bool) -> None:
        if vr == "UI":
            self._uid(ds, tag, elem, path, encodings, series, top, remap=False)
        elif vr in FREE_TEXT_VRS and int(tag) not in _NOT_SCANNED and int(tag) not in CODE_TAGS:
            self._scan(vr, raw_strings(loaded_element(ds, tag, elem), encodings, vr), path)

    def _scan(self, vr: str, values: list[str], path: str) -> None:
        """Pattern-check kept or cleaned text: WARNINGs for a person to review."""
        kinds: list[str] = []
        for value in values:
            if vr == "PN":
                if not is_dummy_or_pseudonym_name(value):
                    kinds.append("name")
                continue
            kinds += [k for k in text_kinds(value, dates=self.dates_in_text) if k not in kinds]
        if kinds:
            what = " and ".join(f"{'an' if k[0] in 'aeiouAEIOU' else 'a'} {k}"
                                for k in dict.fromkeys(kinds))
            self.findings.warning(Check.FREE_TEXT, self.file, path,
                                  f"text looks like it holds {what}; review it")

    def _uid(self, ds: Dataset, tag: BaseTag, elem: AnyElement, path: str,
             encodings: list[str], series: str | None, top: bool, *, remap: bool) -> None:
        tag_int = int(tag)
        refs = self.ctx.refs
        for value in raw_strings(loaded_element(ds, tag, elem), encodings, "UI"):
            value = value.strip("\x00 ")
            if not value:
                continue
            if not check_uid(self.findings, self.file, path, value, remap_expected=remap,
                             root=self.root):
                refs.unremapped.add(value)
            if top:
                continue
            if tag_int == _REFERENCED_SOP_INSTANCE_UID:
                if is_storage_class(_first(ds, _REFERENCED_SOP_CLASS_UID, encodings)):
                    refs.to_instances.append(Reference(value, series, self.file, path))
            elif tag_int == _SERIES_INSTANCE_UID:
                refs.to_series.append(Reference(value, None, self.file, path))
            elif tag_int == _STUDY_INSTANCE_UID:
                refs.to_studies.append(Reference(value, None, self.file, path))

    # -- private attributes -------------------------------------------------------------------
    def _private(self, ds: Dataset, tag: BaseTag, elem: AnyElement, creators: dict[int, str],
                 mode: Mode, path: str, encodings: list[str], series: str | None) -> None:
        tag_int = int(tag)
        group, element = tag_int >> 16, tag_int & 0xFFFF
        creator = creators.get((group << 8) | (element >> 8), "")
        offset = element & 0xFF
        plan = self.plan
        planned = plan.for_private(group, creator, offset) or plan.private_default
        if planned.clean is CleanKind.PRIVATE:
            planned = KEEP_SAFE if creator and self._is_safe(group, creator, offset) else (
                plan.private_remove)
        if not creator:
            self.findings.error(Check.PRIVATE, self.file, path,
                                "private attribute without a Private Creator")
        elif planned.op is Op.REMOVE:
            self.findings.error(Check.PRIVATE, self.file, path,
                                f"private attribute the policy does not keep ({planned.origin})")
        elif planned.op is Op.KEEP:
            self._kept_private(ds, tag, elem, mode, path, encodings, series)
        else:
            if elem.VR in (None, "UN") and not looks_like_sequence(elem):
                elem = ds[tag]  # pydicom's private dictionary may know the VR
            self._apply(ds, tag, elem, element_vr(tag_int, elem.VR), planned, mode, path, encodings,
                        series, False)

    def _kept_private(self, ds: Dataset, tag: BaseTag, elem: AnyElement, mode: Mode,
                      path: str, encodings: list[str], series: str | None) -> None:
        vr = elem.VR
        if vr is None or vr == "UN":
            if not looks_like_sequence(elem):
                return  # opaque bytes: only the --originals byte scan can look inside
            elem = ds[tag]
            vr = elem.VR
        if vr == "SQ":
            value = elem.value if isinstance(elem, DataElement) else ds[tag].value
            for index, item in enumerate(value if isinstance(value, Sequence) else []):
                self.walk(item, mode, f"{path}[{index}].", encodings, series, top=False)
        elif vr == "UI":
            self._uid(ds, tag, elem, path, encodings, series, False,
                      remap=self.private_ui_remapped)
        elif vr in FREE_TEXT_VRS:
            if mode is Mode.NORMAL:
                self._scan(vr, raw_strings(loaded_element(ds, tag, elem), encodings, vr), path)
            else:
                self._free_text(ds, tag, elem, vr, mode, path, encodings)

    def _is_safe(self, group: int, creator: str, offset: int) -> bool:
        table = self.ctx.safe_private
        if table is not None and table.is_safe(group, creator, offset):
            return True
        return is_declared_safe(self.ctx.declared, group, creator, offset)


def _is_empty(elem: AnyElement) -> bool:
    if isinstance(elem, RawDataElement):
        return elem.length == 0
    value = elem.value
    return value is None or value == "" or value == b"" or (
        isinstance(value, list | tuple | Sequence) and len(value) == 0)


def _first(ds: Dataset, tag: int, encodings: list[str]) -> str:
    values = raw_strings(ds.get_item(tag), encodings)
    return values[0].strip("\x00 ") if values else ""
