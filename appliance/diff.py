"""Before/after rows of one de-identification, for previews on an operator's terminal.

Used by ``tce deidentify --dry-run`` and ``tce stage2 preview``. The rows hold values: they are
printed for the person who runs the command and never logged or written to a report.
"""

from __future__ import annotations

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from policies.annex_e import keyword_or_tag
from policies.outcome import Outcome

PREVIEW_WIDTH = 48


def diff_rows(before: Dataset, after: Dataset, outcome: Outcome,
              ) -> list[tuple[str, str, str, str]]:
    """(attribute path, action code, before, after) for every attribute that changed."""
    codes = {record.path: record.code for record in outcome.actions}
    rows: list[tuple[str, str, str, str]] = []
    _diff(before, after, "", codes, rows)
    return rows


def _diff(before: Dataset, after: Dataset, prefix: str, codes: dict[str, str],
          rows: list[tuple[str, str, str, str]]) -> None:
    for tag in sorted(set(before.keys()) | set(after.keys())):
        old, new = before.get(tag), after.get(tag)
        path = prefix + keyword_or_tag(int(tag))
        if (old is not None and new is not None and old.VR == "SQ" and new.VR == "SQ"
                and len(old.value) == len(new.value) and len(old.value)):
            for i, (item_old, item_new) in enumerate(zip(old.value, new.value, strict=True)):
                _diff(item_old, item_new, f"{path}[{i}].", codes, rows)
            continue
        if old is not None and new is not None and _same(old, new):
            continue
        code = codes.get(path) or ("added" if old is None else "removed" if new is None
                                   else "changed")
        rows.append((path, code, _show(old), _show(new)))


def _same(a: DataElement, b: DataElement) -> bool:
    if a.VR == "SQ" or b.VR == "SQ":
        return a.VR == b.VR and len(a.value) == len(b.value) == 0
    return bool(a.value == b.value)


def _show(elem: DataElement | None) -> str:
    if elem is None:
        return "(absent)"
    value = elem.value
    if elem.VR == "SQ":
        return f"<{len(value)} item(s)>"
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if value is None or value == "":
        return "(empty)"
    text = "\\".join(str(v) for v in value) if isinstance(value, MultiValue) else str(value)
    return text if len(text) <= PREVIEW_WIDTH else text[:PREVIEW_WIDTH - 1] + "…"
