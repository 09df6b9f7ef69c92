"""The errors a policy reports, and the checks of single values that produce them.

Why this is its own module: an approval signs off a policy, so every problem must be reported as
"<source>: <key path>: <problem>" with the value as the user wrote it and, where one is close,
the spelling they probably meant. The YAML reader (:mod:`policies.policy_yaml`) and the document
validator (:mod:`policies.policy_document`) share this vocabulary with :mod:`policies.loader`;
underscore names are shared among those modules only. parse_tag is public: it reads a tag as
users write it, a keyword or hex.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

from pydicom.datadict import keyword_dict, tag_for_keyword


class PolicyError(ValueError):
    """A policy that cannot be loaded; ``str()`` is ``"<source>: <key path>: <problem>"``."""

    def __init__(self, source: str, path: str, problem: str) -> None:
        self.source, self.path, self.problem = source, path, problem
        super().__init__(f"{source}: {path}: {problem}" if path else f"{source}: {problem}")


class _Invalid(Exception):
    """Raised deep in validation with the key path; turned into a PolicyError at the top."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(problem)
        self.path, self.problem = path, problem


def _fail(path: str, problem: str) -> NoReturn:
    raise _Invalid(path, problem)


class _YamlInt(int):
    """An integer as YAML read it, with the text it was written as.

    YAML 1.1 reads ``0043`` as octal 35 and ``39`` as decimal, while DICOM people mean hex; the
    text lets the validator refuse such numbers for tags, groups and elements instead of
    silently addressing the wrong attribute.
    """

    text: str


# --- small checks -----------------------------------------------------------------------------


def _show(value: object) -> str:
    """A value as the user wrote it in YAML, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, _YamlInt):
        return value.text
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _suggest(word: str, choices: Iterable[str]) -> str:
    choices = list(choices)
    folded = {c.casefold(): c for c in choices}
    close = [folded[word.casefold()]] if word.casefold() in folded else []
    close = close or difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _unknown(problem: str, word: str, choices: Iterable[str], label: str = "expected one of",
             ) -> str:
    """``problem``, a suggestion when one is close, and the valid choices."""
    choices = list(choices)
    hint = _suggest(word, choices)
    listing = f"{label}: {', '.join(choices)}"
    return f"{problem}{hint} ({listing})" if hint else f"{problem}; {listing}"


def _check_keys(mapping: Mapping[Any, Any], allowed: tuple[str, ...], path: str) -> None:
    for key in mapping:
        if key not in allowed:
            _fail(path, _unknown(f"unknown key {_show(key)}", str(key), allowed))


def _str(value: object, path: str, *, non_empty: bool = False) -> str:
    if not isinstance(value, str):
        hint = f'; quote it: "{_show(value)}"' if isinstance(value, int | float) else ""
        _fail(path, f"expected a string, got {_show(value)}{hint}")
    if non_empty and not value.strip():
        _fail(path, "must not be empty")
    return value


def _int(value: object, path: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(path, f"expected an integer, got {_show(value)}")
    if not low <= value <= high:
        _fail(path, f"must be between {low} and {high}, got {_show(value)}")
    return int(value)


def _choice(value: object, path: str, choices: tuple[str, ...], what: str) -> str:
    text = _str(value, path)
    if text not in choices:
        _fail(path, _unknown(f"unknown {what} {text!r}", text, choices))
    return text


def _hex(value: object, path: str, digits: int, what: str) -> int:
    """A hex number given as a string, or an int that is unambiguous (not read by YAML)."""
    if isinstance(value, _YamlInt) and not value.text.lower().startswith("0x"):
        _fail(path, f"the unquoted number {value.text} is not read as hex by YAML; "
                    f'quote it: "{value.text}"')
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    text = _str(value, path).strip()
    if not re.fullmatch(f"(0[xX])?[0-9A-Fa-f]{{{digits}}}", text):
        _fail(path, f"expected {what} as {digits} hex digits, got {_show(value)}")
    return int(text, 16)


def _keyword_tag(word: str) -> int | None:
    """The tag of a data dictionary keyword (pydicom's dictionary holds one empty keyword)."""
    return tag_for_keyword(word) if re.fullmatch("[A-Za-z][A-Za-z0-9]*", word) else None


def parse_tag(text: str | int) -> int:
    """A tag from a keyword, ``(GGGG,EEEE)``, ``GGGG,EEEE``, ``GGGGEEEE`` (hex) or an int."""
    if isinstance(text, bool) or not isinstance(text, str | int):
        raise ValueError(f"expected a keyword or a tag such as '(0010,0010)', got {_show(text)}")
    if isinstance(text, int):
        if not 0 <= text <= 0xFFFFFFFF:
            raise ValueError(f"tag {text:#x} is out of range")
        return int(text)
    stripped = text.strip()
    match = re.fullmatch(r"\(?\s*([0-9A-Fa-f]{4})\s*,\s*([0-9A-Fa-f]{4})\s*\)?", stripped)
    match = match or re.fullmatch(r"([0-9A-Fa-f]{4})([0-9A-Fa-f]{4})", stripped)
    if match and stripped.startswith("(") == stripped.endswith(")"):
        return int(match.group(1) + match.group(2), 16)
    tag = _keyword_tag(stripped)
    if tag is None:
        hint = _suggest(stripped, keyword_dict)
        raise ValueError(f"unknown keyword or malformed tag {text!r}{hint}; "
                         "expected a DICOM keyword or a tag such as '(0010,0010)'")
    return tag
