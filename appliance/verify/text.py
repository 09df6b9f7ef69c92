"""Free text that still looks like an identifier: flagged for a person to review.

Without the originals, verification cannot know whose name a text holds, only that it has the
*shape* of an identifier. The number, e-mail and date shapes come from the engine's own cleaner
(:mod:`policies.textclean`, "patterns that need no identifier"): telephone numbers, e-mail
addresses, ID-like tokens (5+ digits, SSNs) and, when the policy does not keep full dates,
dates. Names have no shape of their own; this module adds the two that are reliable enough:
a DICOM person name typed into text (``DOE^JOHN``) and a title before a capitalised word
(``Dr. Kildare``, ``Mrs Smith``). A person name (PN) value the policy kept, that is not one of
the engine's dummies or stage-1 pseudonyms, is flagged as a name too.

Everything here is a WARNING: text the engine cleaned keeps ``***`` where it removed something,
and what remains can be a false alarm ("Dr. Visit protocol"). The exact check is
``--originals``.
"""

from __future__ import annotations

import re
from functools import lru_cache

from policies.textclean import Identifiers, TextCleaner

_KIND_LABELS = {"email": "e-mail address", "phone": "telephone number", "id-pattern": "ID",
                "date": "date"}
_PN_IN_TEXT = re.compile(r"(?<![\w^])([^\W\d_][^\W\d_'\-]+)\^([^\W\d_][^\W\d_'\-]*)")
_TITLE_NAME = re.compile(r"\b(?:Dr|Mr|Mrs|Ms|Miss|Mx|Prof)\.?\s+[A-Z][a-z]+")
_PRODUCT_PN_PREFIXES = frozenset({"PSEUDO"})  # stage-1 pseudonym names: PSEUDO^<code>
_DUMMY_NAMES = frozenset({"", "ANONYMIZED", "ANONYMOUS"})


@lru_cache(maxsize=2)
def _cleaner(dates: bool) -> TextCleaner:
    return TextCleaner(Identifiers(), remove_all_dates=dates)


def text_kinds(text: str, *, dates: bool) -> list[str]:
    """The identifier shapes ``text`` holds, e.g. ``["name", "telephone number"]`` (unique)."""
    found: list[str] = []
    if not text or not any(ch.isalnum() for ch in text):
        return found
    for _start, _end, kind in _cleaner(dates).find(text):
        label = _KIND_LABELS.get(kind)
        if label is not None and label not in found:
            found.append(label)
    names = [m for m in _PN_IN_TEXT.finditer(text)
             if m.group(1).upper() not in _PRODUCT_PN_PREFIXES]
    if names or _TITLE_NAME.search(text):
        found.insert(0, "name")
    return found


def is_dummy_or_pseudonym_name(value: str) -> bool:
    """A PN the engine wrote: empty, a dummy, or a stage-1 ``PSEUDO^<code>`` pseudonym."""
    text = value.strip()
    if text.upper() in _DUMMY_NAMES:
        return True
    family = text.split("^", 1)[0].upper()
    return family in _PRODUCT_PN_PREFIXES
