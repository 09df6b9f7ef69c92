"""The folded form in which free text and identifiers are compared.

Why this is its own module: folding (NFKC, accents dropped for Latin, Greek and Cyrillic, case
folding; see "How text is compared" in :mod:`policies.textclean`) is applied both when the
regexes are built from identifiers and to every text searched, and the cleaner needs the map from
folded positions back to the original text so that it replaces exactly the characters that hit.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

# Marks that combine with the character before them; a cluster is folded as one unit so that a
# decomposed "e\u0301" folds like "é", and half-width "ｶﾞ" like "ガ".
_COMBINING = (
    "\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f\u3099\u309a\uff9e\uff9f"
)
_SEGMENT = re.compile(rf"[\x00-\x7f]+(?![{_COMBINING}])|.[{_COMBINING}]*", re.S)


@lru_cache(maxsize=8192)
def _fold_cluster(cluster: str) -> str:
    composed = unicodedata.normalize("NFKC", cluster)
    decomposed = unicodedata.normalize("NFKD", composed)
    if decomposed:
        code = ord(decomposed[0])
        # Latin, IPA, Greek, Cyrillic, Armenian and their extended blocks: accents are noise.
        if code < 0x0530 or 0x1E00 <= code < 0x2000:
            return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return composed.casefold()


def _fold_with_map(text: str) -> tuple[str, list[int] | None, list[int] | None]:
    """Fold text; for non-ASCII text also give, per folded character, its original span."""
    if text.isascii():
        return text.lower(), None, None
    parts: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    for match in _SEGMENT.finditer(text):
        segment = match.group()
        start, end = match.span()
        if segment.isascii():
            parts.append(segment.lower())
            starts.extend(range(start, end))
            ends.extend(range(start + 1, end + 1))
        else:
            folded = _fold_cluster(segment)
            parts.append(folded)
            starts.extend([start] * len(folded))
            ends.extend([end] * len(folded))
    return "".join(parts), starts, ends


def fold(text: str) -> str:
    """The folded form in which text and identifiers are compared."""
    return _fold_with_map(text)[0]
