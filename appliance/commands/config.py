"""``tce config reference``: every setting of ``tce.yaml``, as the README's reference tables.

The tables are generated from the settings model (:func:`appliance.settings.describe_settings`,
which ``tce init`` also writes its comments from), so the README cannot describe a setting that
does not exist or miss one that does: a test keeps the README's block equal to
:func:`reference_markdown`, the way ``tce policy explain --readme`` keeps the policy table.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
from dataclasses import is_dataclass

from appliance.settings import describe_settings, iter_model

TOP_LEVEL_INTRO = "Every node reads these, whatever its role."
# A "<" that CommonMark would take for the start of an HTML tag (``<b>``, ``</x``); a
# placeholder such as ``<work_dir>`` is not one, so it stays readable in the raw file.
_TAG_START = re.compile(r"<(?=/?[A-Za-z][A-Za-z0-9-]*[\s/>])")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "config", help="describe the settings of tce.yaml",
        description="Describe the settings tce.yaml accepts (this version's settings model).")
    sub = parser.add_subparsers(title="config commands", metavar="ACTION", required=True)
    reference = sub.add_parser(
        "reference", help="every setting with its type, default and meaning (Markdown)",
        description="Print one Markdown table per section of tce.yaml (top level, stage1,"
                    " stage2, receiver): key, type, default and meaning of every setting. The"
                    " README's configuration reference is this output.")
    reference.set_defaults(func=run_reference)


def run_reference(args: argparse.Namespace) -> int:
    sys.stdout.write(reference_markdown())
    return 0


def _cell(text: str) -> str:
    """``text`` safe inside a Markdown table cell."""
    return _TAG_START.sub(r"\\<", text.replace("|", r"\|"))


def _sections() -> list[tuple[str, str]]:
    """(section key, one-line description) of each top-level section, in model order."""
    found = []
    for key, _field, tp in iter_model():
        if "." not in key and is_dataclass(tp):
            doc = inspect.getdoc(tp) or ""
            found.append((key, doc.splitlines()[0] if doc else ""))
    return found


def reference_markdown() -> str:
    """The configuration reference: a table for the top level and one for each section."""
    rows = describe_settings()
    sections = _sections()
    groups: list[tuple[str, str, list[tuple[str, str, str, str]]]] = [
        ("Top level", TOP_LEVEL_INTRO, [r for r in rows if "." not in r[0]])]
    for name, doc in sections:
        intro = f"{doc}\nUsed when `role` is `{name}` or `all`."
        groups.append((f"`{name}:`", intro, [r for r in rows if r[0].startswith(f"{name}.")]))
    out: list[str] = []
    for title, intro, members in groups:
        out += [f"#### {title}", "", _cell(intro), "",
                "| Setting | Type | Default | Meaning |", "|---|---|---|---|"]
        out += [f"| `{key}` | {kind} | `{default}` | {_cell(doc)} |"
                for key, kind, default, doc in members]
        out.append("")
    return "\n".join(out)
