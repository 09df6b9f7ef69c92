"""Say, in words, what a policy does to each attribute.

``tce policy explain`` prints this, and the README's policy tables are generated from it (a test
regenerates them and compares), so the documentation cannot drift from the engine's plan.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydicom._dicom_dict import DicomDictionary
from pydicom.datadict import keyword_for_tag

from policies import actions
from policies.annex_e import CleanKind, Plan, PlannedAction, compile_plan, load_table
from policies.model import DateMode, Op, Policy


@dataclass(frozen=True)
class ExplainRow:
    tag: str  # "(0010,0010)" or a pattern such as "(60xx,3000)"
    name: str
    code: str
    effect: str
    origin: str


def _vr(tag: int | None) -> str:
    if tag is None:
        return ""
    entry = DicomDictionary.get(tag)
    return entry[0] if entry else ""


_DUMMIES = {
    "DA": f"dummy date {actions.DUMMY_DATE}", "TM": f"dummy time {actions.DUMMY_TIME}",
    "DT": f"dummy date-time {actions.DUMMY_DATETIME}", "PN": f"dummy name {actions.DUMMY_TEXT}",
    "SQ": "items kept, their free text replaced with dummies",
}


def effect(planned: PlannedAction, policy: Policy, tag: int | None = None) -> str:
    """A short description of what ``planned`` does under ``policy`` to ``tag``."""
    params = policy.parameters
    rule = planned.rule
    op = planned.op
    vr = _vr(tag)
    if op is Op.KEEP:
        return "kept; items cleaned by the profile" if vr == "SQ" else "kept"
    if op is Op.REMOVE:
        return "removed"
    if op is Op.EMPTY:
        return "emptied (no items)" if vr == "SQ" else "emptied (zero length)"
    if op is Op.DUMMY:
        if vr in _DUMMIES:
            return _DUMMIES[vr]
        keyword = keyword_for_tag(tag) if tag is not None else ""
        if keyword and keyword.endswith(("ID", "Number", "Identifier")):
            return "keyed dummy code (consistent per value)"
        return f"dummy value {actions.DUMMY_TEXT}"
    if op is Op.UID:
        if vr == "SQ":
            return "kept; UIDs inside remapped, items cleaned"
        return "remapped to a keyed 2.25 UID (references follow)"
    if op is Op.REPLACE:
        return f"replaced with {rule.value!r}"
    if op is Op.HASH:
        return "replaced with keyed hash"
    if op is Op.PSEUDONYM:
        source = f" of {rule.source}" if rule.source else ""
        return f"keyed pseudonym{source}, prefix {rule.prefix or ''!r}"
    if op is Op.DATE_SHIFT:
        return f"shifted per patient (up to {params.date_shift_max_days} days)"
    if op is Op.DATE_COARSEN:
        return f"reduced to {(rule.granularity or DateMode.YEAR).value}"
    if op is Op.AGE_BAND:
        cap = f", {params.age_cap_years}+ aggregated" if params.age_cap_years else ""
        return f"{rule.width or params.age_band_years}-year band{cap}"
    return _clean_effect(planned, policy)


def _clean_effect(planned: PlannedAction, policy: Policy) -> str:
    kind = planned.clean
    if kind is CleanKind.DATE:
        mode = policy.parameters.date_mode
        if mode is DateMode.SHIFT:
            return (f"dates shifted per patient (up to {policy.parameters.date_shift_max_days}"
                    " days); times kept")
        return f"dates reduced to {mode.value}; times kept"
    if kind is CleanKind.STRUCTURED:
        return "items kept; free text cleaned of identifiers, names replaced"
    if kind is CleanKind.GRAPHICS:
        return "kept; text cleaned, overlays with text removed"
    if kind is CleanKind.DEVICE:
        return "replaced with a keyed stand-in"
    if kind is CleanKind.PRIVATE:
        return "kept only if known safe (PS3.15 E.3.10-1, TCIA KB, (0008,0300))"
    return "free text cleaned of the patient's identifiers"


def _tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def explain(policy: Policy) -> list[ExplainRow]:
    """One row per Table E.1-1 row (basic profile) and per override, in table order."""
    plan = compile_plan(policy)
    rows: list[ExplainRow] = []
    seen: set[int] = set()
    if policy.base_profile == "ps315-basic":
        for row in load_table():
            if row.tag is None:
                assert row.pattern is not None
                planned = _pattern_action(plan, row.pattern)
                rows.append(ExplainRow(row.pattern, row.name, planned.code,
                                       effect(planned, policy), planned.origin))
                continue
            seen.add(row.tag)
            planned_or_none = plan.public.get(row.tag)
            if planned_or_none is None:
                continue
            rows.append(ExplainRow(_tag_text(row.tag), row.name, planned_or_none.code,
                                   effect(planned_or_none, policy, row.tag),
                                   planned_or_none.origin))
    for override in policy.overrides:
        target = override.target
        if target.tag is not None and target.tag in seen:
            continue
        planned = PlannedAction(override.rule, override.rule.op.value, "override")
        name = keyword_for_tag(target.tag) if target.tag is not None else target.describe()
        rows.append(ExplainRow(target.describe(), name or target.describe(), planned.code,
                               effect(planned, policy, target.tag), "override"))
    return sorted(rows, key=lambda r: r.tag)


def _pattern_action(plan: Plan, pattern: str) -> PlannedAction:
    if pattern.startswith("(50"):
        return plan.curves
    if pattern == "(60xx,3000)":
        return plan.overlay_data
    if pattern == "(60xx,4000)":
        return plan.overlay_comments
    return plan.private_default


def format_text(policy: Policy, rows: Iterable[ExplainRow]) -> str:
    lines = [f"{policy.id} v{policy.version} sha256:{policy.digest}", policy.description, ""]
    for row in rows:
        lines.append(f"{row.tag:<13} {row.code:<10} {row.name[:44]:<44} {row.effect}")
    return "\n".join(lines) + "\n"


def format_markdown(policy: Policy, rows: Iterable[ExplainRow]) -> str:
    lines = [
        f"### `{policy.id}` v{policy.version}", "", policy.description, "",
        f"Digest: `{policy.digest}`", "",
        "| Tag | Attribute | Action | Effect | Why |", "|---|---|---|---|---|",
    ]
    lines += [f"| {r.tag} | {r.name} | {r.code} | {r.effect} | {r.origin} |" for r in rows]
    return "\n".join(lines) + "\n"


# The attributes the README's comparison table shows, one per kind of identifier.
KEY_ATTRIBUTES: tuple[tuple[str, int | str], ...] = (
    ("Patient's Name", 0x00100010), ("Patient ID", 0x00100020),
    ("Patient's Birth Date", 0x00100030), ("Patient's Age", 0x00101010),
    ("Patient's Sex", 0x00100040), ("Other Patient IDs Sequence", 0x00101002),
    ("Patient's Address", 0x00101040), ("Accession Number", 0x00080050),
    ("Study ID", 0x00200010), ("Study Date", 0x00080020), ("Study Time", 0x00080030),
    ("Acquisition DateTime", 0x0008002A), ("Study Instance UID", 0x0020000D),
    ("SOP Instance UID", 0x00080018), ("Frame of Reference UID", 0x00200052),
    ("Referenced SOP Instance UID", 0x00081155), ("Referring Physician's Name", 0x00080090),
    ("Institution Name", 0x00080080), ("Station Name", 0x00081010),
    ("Device Serial Number", 0x00181000), ("Study Description", 0x00081030),
    ("Series Description", 0x0008103E), ("Image Comments", 0x00204000),
    ("Content Sequence (SR)", 0x0040A730), ("Graphic Annotation Sequence", 0x00700001),
    ("Overlay Data", "(60xx,3000)"), ("Private attributes", "(gggg,eeee)"),
)


def compare_markdown(policies: list[Policy]) -> str:
    """The README table: key attributes down, policies across, the action in each cell."""
    header = "| Attribute | " + " | ".join(f"`{p.id}`" for p in policies) + " |"
    lines = [header, "|---|" + "---|" * len(policies)]
    for label, key in KEY_ATTRIBUTES:
        cells = []
        for policy in policies:
            plan = compile_plan(policy)
            planned = (plan.public.get(key) if isinstance(key, int)
                       else _pattern_action(plan, key))
            tag = key if isinstance(key, int) else None
            cells.append("K: kept" if planned is None else
                         f"{planned.code}: {effect(planned, policy, tag)}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
