"""What one de-identification did, in a form safe to report.

:class:`Outcome` lists the action applied to each attribute by path and tag, never by value, so
it can go into reports, audit events and logs. The two exceptions are held apart and named as
sensitive: the pseudonyms issued (with their originals, for the caller to seal under the key
ring) and the UID map (original to new, for the same reason).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple


class PolicyRefusal(Exception):
    """The policy will not process this instance (e.g. burned-in text under Clean Pixel Data).

    Callers quarantine the instance with ``str(exc)`` as the reason; it never holds PHI.
    """


class ActionRecord(NamedTuple):
    """One action on one attribute. A tuple, because a CT instance produces dozens of them."""

    path: str  # e.g. "ReferencedSeriesSequence[0].SeriesInstanceUID"
    tag: int
    code: str  # "X", "Z", "D", "U", "C", "K", "pseudonym", ...
    note: str = ""


@dataclass(frozen=True)
class Pseudonym:
    """A pseudonym issued for an original value. ``original`` is PHI: seal it, never log it."""

    keyword: str
    pseudonym: str
    original: str


@dataclass
class Outcome:
    sop_instance_uid: str = ""
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    sop_class_uid: str = ""
    actions: list[ActionRecord] = field(default_factory=list)
    pseudonyms: list[Pseudonym] = field(default_factory=list)
    uid_map: dict[str, str] = field(default_factory=dict)  # sensitive: original -> new
    date_shift_days: int | None = None
    warnings: list[str] = field(default_factory=list)
    charset_switched: bool = False

    def counts(self) -> dict[str, int]:
        """Number of attributes per action code."""
        return dict(Counter(record.code for record in self.actions))

    def by_attribute(self) -> dict[str, dict[str, int]]:
        """For reports: action counts per attribute path with sequence indexes folded."""
        table: dict[str, Counter[str]] = {}
        for record in self.actions:
            name = _fold_indexes(record.path)
            table.setdefault(name, Counter())[record.code] += 1
        return {name: dict(counter) for name, counter in sorted(table.items())}


def _fold_indexes(path: str) -> str:
    out, skipping = [], False
    for char in path:
        if char == "[":
            skipping = True
            out.append("[*]")
        elif char == "]":
            skipping = False
        elif not skipping:
            out.append(char)
    return "".join(out)
