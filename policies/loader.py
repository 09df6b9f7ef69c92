"""YAML policy files → validated, digested :class:`Policy` objects.

A policy is what an approval signs off, so the loader is strict: an unknown key, a misspelt
action or an ambiguous number is an error that names the file, the key path and the problem,
never a silent default. The digest is taken over a normalised form of the document, so that
equivalent spellings (``keep`` or ``K``, ``PatientName`` or ``(0010,0010)``) approve the same
policy, while any change of meaning needs a new approval.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Callable, Hashable, Iterable, Mapping
from importlib import resources
from typing import Any, NoReturn

import yaml
from pydicom.datadict import keyword_dict, tag_for_keyword

from policies.model import (
    OP_ALIASES,
    DateMode,
    Op,
    Option,
    Override,
    Parameters,
    Policy,
    Rule,
    Target,
    canonical_digest,
)

_TOP_KEYS = ("id", "version", "description", "base_profile", "options", "parameters", "overrides")
_REQUIRED_KEYS = ("id", "version", "description", "base_profile")
_BASE_PROFILES = ("ps315-basic", "none")
_ID_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_UID_ROOT_RE = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_TARGET_KEYS = ("tag", "private_creator", "group", "element")
# Which rule parameters each operation takes; the other operations take none.
_RULE_PARAMS: dict[Op, tuple[str, ...]] = {
    Op.PSEUDONYM: ("prefix", "length", "source"),
    Op.HASH: ("length",),
    Op.REPLACE: ("value",),
    Op.DATE_COARSEN: ("granularity",),
    Op.AGE_BAND: ("width",),
}
_REQUIRED_PARAMS: dict[Op, tuple[str, ...]] = {
    Op.REPLACE: ("value",),
    Op.DATE_COARSEN: ("granularity",),
}
_ALL_PARAMS = ("prefix", "length", "source", "value", "granularity", "width")
_OVERRIDE_KEYS = (*_TARGET_KEYS, "action", *_ALL_PARAMS)


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


# --- YAML reading -----------------------------------------------------------------------------


class _YamlInt(int):
    """An integer as YAML read it, with the text it was written as.

    YAML 1.1 reads ``0043`` as octal 35 and ``39`` as decimal, while DICOM people mean hex; the
    text lets the validator refuse such numbers for tags, groups and elements instead of
    silently addressing the wrong attribute.
    """

    text: str


class _PolicyLoader(yaml.SafeLoader):
    """SafeLoader that keeps integer spellings and refuses duplicate mapping keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            key = self.construct_object(key_node)
            if key in seen:  # plain scalars (str, int, bool, date, ...) are hashable
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark,
                    f"found duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _construct_int(loader: yaml.SafeLoader, node: yaml.Node) -> _YamlInt:
    assert isinstance(node, yaml.ScalarNode)
    value = _YamlInt(loader.construct_yaml_int(node))
    value.text = str(node.value)
    return value


_PolicyLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def _read_yaml(text: str, source: str) -> object:
    try:
        return yaml.load(text, Loader=_PolicyLoader)  # a SafeLoader: builds plain data only
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(YAML)"
        problem = ": ".join(p for p in (exc.context, exc.problem) if p)
        raise PolicyError(source, where, f"invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise PolicyError(source, "(YAML)", f"invalid YAML: {exc}") from None


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


# --- the document -----------------------------------------------------------------------------


def _options(value: object) -> list[Option]:
    if not isinstance(value, list):
        _fail("options", f"expected a list of options, got {_show(value)}")
    names = tuple(o.value for o in Option)
    found: list[Option] = []
    for i, item in enumerate(value):
        option = Option(_choice(item, f"options[{i}]", names, "option"))
        if option in found:
            _fail(f"options[{i}]", f"duplicate option '{option}'")
        found.append(option)
        if {Option.RETAIN_LONG_FULL_DATES, Option.RETAIN_LONG_MODIFIED_DATES} <= set(found):
            _fail(f"options[{i}]", "retain_long_full_dates and retain_long_modified_dates are "
                                   "mutually exclusive (PS3.15 Annex E); choose one")
    return found


def _uid_root(value: object, path: str) -> str:
    text = _str(value, path)
    if len(text) > 24 or not _UID_ROOT_RE.fullmatch(text):
        _fail(path, f"not a valid UID root: {text!r}; expected at most 24 characters of digits "
                    "and dots, no empty components and no leading zeros, e.g. \"2.25\"")
    return text


_PARAM_CHECKS: dict[str, Callable[[object, str], object]] = {
    "age_band_years": lambda v, p: _int(v, p, 1, 50),
    "age_cap_years": lambda v, p: None if v is None else _int(v, p, 1, 150),
    "date_mode": lambda v, p: DateMode(_choice(v, p, tuple(DateMode), "date mode")),
    "date_shift_max_days": lambda v, p: _int(v, p, 1, 36500),
    "compute_age": lambda v, p: v if isinstance(v, bool) else _fail(
        p, f"expected true or false, got {_show(v)}"),
    "pseudonym_length": lambda v, p: _int(v, p, 4, 32),
    "uid_root": _uid_root,
}
assert set(_PARAM_CHECKS) == {f.name for f in dataclasses.fields(Parameters)}


def _parameters(value: object) -> Parameters:
    if not isinstance(value, Mapping):
        _fail("parameters", f"expected a mapping, got {_show(value)}")
    _check_keys(value, tuple(_PARAM_CHECKS), "parameters")
    checked = {key: _PARAM_CHECKS[key](item, f"parameters.{key}") for key, item in value.items()}
    return Parameters(**checked)  # type: ignore[arg-type]  # each check returns its field's type


def _target(item: Mapping[str, object], path: str) -> Target:
    if "tag" in item:
        if "private_creator" in item:
            _fail(path, "give either 'tag' or 'private_creator', not both")
        for key in ("group", "element"):
            if key in item:
                _fail(f"{path}.{key}", f"'{key}' belongs to a private target; use it with "
                                       "'private_creator' (a public attribute is named by 'tag')")
        raw = item["tag"]
        try:
            tag = parse_tag(raw if isinstance(raw, str) else _hex(raw, f"{path}.tag", 8, "a tag"))
        except ValueError as exc:
            _fail(f"{path}.tag", str(exc))
        if (tag >> 16) % 2:
            _fail(f"{path}.tag", f"({tag >> 16:04X},{tag & 0xFFFF:04X}) is in an odd (private) "
                                 "group; name private attributes by 'private_creator' and 'group'")
        return Target(tag=tag)
    if "private_creator" not in item:
        _fail(path, "missing target: give 'tag' (a public attribute) or 'private_creator' with "
                    "'group' (a private block)")
    creator = _str(item["private_creator"], f"{path}.private_creator", non_empty=True).strip()
    if len(creator) > 64 or "\\" in creator or not creator.isprintable():
        _fail(f"{path}.private_creator", f"not a valid private creator (LO) value: {creator!r}")
    if "group" not in item:
        _fail(path, "missing required key 'group' (the odd group of the private block)")
    group = _hex(item["group"], f"{path}.group", 4, "a group")
    if group % 2 == 0 or group <= 0x0007 or group >= 0xFFFF:
        _fail(f"{path}.group", f"group {group:04X} cannot hold private attributes; expected an odd "
                               "group other than 0001-0007 and FFFF")
    element = None
    if "element" in item:
        raw = item["element"]
        if isinstance(raw, str) and re.fullmatch("[xX]{2}[0-9A-Fa-f]{2}", raw.strip()):
            raw = raw.strip()[2:]
        element = _hex(raw, f"{path}.element", 2, "an element offset (00-FF)")
        if not 0 <= element <= 0xFF:
            _fail(f"{path}.element", f"element offset must be 0-255 (00-FF), got {element}")
    return Target(private_creator=creator, group=group, element=element)


def _rule(item: Mapping[str, object], path: str) -> Rule:
    if "action" not in item:
        _fail(path, "missing required key 'action'")
    action = _str(item["action"], f"{path}.action", non_empty=True)
    if "/" in action or action.endswith("*"):
        codes = " or ".join(c.rstrip("*") for c in action.split("/"))
        _fail(f"{path}.action", f"'{action}' is a compound PS3.15 code, which only Table E.1-1 "
                                f"uses; an override must pick one code: {codes}")
    if action not in OP_ALIASES:
        _fail(f"{path}.action", _unknown(f"unknown action {action!r}", action, OP_ALIASES))
    op = OP_ALIASES[action]
    takes = _RULE_PARAMS.get(op, ())
    for key in _ALL_PARAMS:
        if key in item and key not in takes:
            users = [a for a, o in OP_ALIASES.items() if key in _RULE_PARAMS.get(o, ())]
            _fail(f"{path}.{key}", f"'{key}' does not apply to action '{action}'; "
                                   f"it is used only by: {', '.join(users)}")
    for key in _REQUIRED_PARAMS.get(op, ()):
        if key not in item:
            _fail(path, f"action '{action}' requires '{key}'")
    fields: dict[str, Any] = {}
    if "value" in item:
        fields["value"] = _str(item["value"], f"{path}.value")
    if "prefix" in item:
        fields["prefix"] = _str(item["prefix"], f"{path}.prefix")
    if "length" in item:
        fields["length"] = _int(item["length"], f"{path}.length", 4, 64)
    if "width" in item:
        fields["width"] = _int(item["width"], f"{path}.width", 1, 50)
    if "source" in item:
        source = _str(item["source"], f"{path}.source").strip()
        if _keyword_tag(source) is None:
            _fail(f"{path}.source", f"unknown DICOM keyword {source!r}"
                                    f"{_suggest(source, keyword_dict)}")
        fields["source"] = source
    if "granularity" in item:
        modes = (DateMode.YEAR.value, DateMode.YEAR_MONTH.value)
        fields["granularity"] = DateMode(
            _choice(item["granularity"], f"{path}.granularity", modes, "granularity"))
    return Rule(op=op, **fields)


def _overrides(value: object) -> list[Override]:
    if not isinstance(value, list):
        _fail("overrides", f"expected a list of overrides, got {_show(value)}")
    found: dict[Target, int] = {}
    result: list[Override] = []
    for i, item in enumerate(value):
        path = f"overrides[{i}]"
        if not isinstance(item, Mapping):
            _fail(path, f"expected a mapping with 'tag' or 'private_creator', got {_show(item)}")
        _check_keys(item, _OVERRIDE_KEYS, path)
        target = _target(item, path)
        rule = _rule(item, path)
        if target in found:
            _fail(path, f"duplicate target {target.describe()} (also overrides[{found[target]}])")
        found[target] = i
        result.append(Override(target, rule))
    return result


def _normalised(policy: Policy) -> dict[str, Any]:
    """The document the digest is taken over: one spelling for each meaning."""
    params = {f.name: getattr(policy.parameters, f.name) for f in dataclasses.fields(Parameters)}
    overrides = []
    for override in policy.overrides:
        t, rule = override.target, override.rule
        entry: dict[str, Any] = (
            {"tag": t.describe()} if t.tag is not None else {
                "private_creator": t.private_creator, "group": f"{t.group or 0:04X}",
                "element": None if t.element is None else f"{t.element:02X}"})
        entry.update({f.name: getattr(rule, f.name) for f in dataclasses.fields(Rule)
                      if getattr(rule, f.name) is not None})
        overrides.append(entry)
    return {
        "id": policy.id, "version": policy.version,
        "description": " ".join(policy.description.split()),  # re-wrapping is not a change
        "base_profile": policy.base_profile, "options": sorted(policy.options),
        "parameters": params, "overrides": overrides,
    }


def _parse(document: object, source: str) -> Policy:
    if not isinstance(document, Mapping):
        what = "an empty document" if document is None else _show(document)
        _fail("(top level)", f"expected a mapping of policy keys, got {what}")
    _check_keys(document, _TOP_KEYS, "(top level)")
    for key in _REQUIRED_KEYS:
        if key not in document:
            _fail("(top level)", f"missing required key '{key}'")
    policy_id = _str(document["id"], "id")
    if not _ID_RE.fullmatch(policy_id):
        _fail("id", f"{policy_id!r} is not a valid policy id; expected lower-case letters, digits, "
                    "'.', '_' and '-' (up to 64, starting with a letter or digit)")
    version = document["version"]
    if isinstance(version, bool) or not isinstance(version, str | int):
        _fail("version", f"expected a string or an integer, got {_show(version)}")
    version = str(int(version)) if isinstance(version, int) else version.strip()
    if not version:
        _fail("version", "must not be empty")
    policy = Policy(
        id=policy_id,
        version=version,
        description=_str(document["description"], "description", non_empty=True).strip(),
        base_profile=_choice(document["base_profile"], "base_profile", _BASE_PROFILES, "profile"),
        options=frozenset(_options(document["options"]) if "options" in document else ()),
        parameters=_parameters(document.get("parameters", {})),
        overrides=tuple(_overrides(document.get("overrides", []))),
        source=source,
    )
    return dataclasses.replace(policy, digest=canonical_digest(_normalised(policy)))


# --- public API -------------------------------------------------------------------------------


def parse_policy(document: object, source: str = "<memory>") -> Policy:
    """Validate an already-parsed policy document (a mapping) and return the digested Policy."""
    try:
        return _parse(document, source)
    except _Invalid as exc:
        raise PolicyError(source, exc.path, exc.problem) from None


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read and validate a YAML policy file; errors name the path as given."""
    source = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(source, "", f"cannot read policy file: {exc}") from None
    return parse_policy(_read_yaml(text, source), source)


def builtin_policy_names() -> list[str]:
    """The ids of the policies shipped in ``policies/builtin`` (each file is named by its id)."""
    files = resources.files("policies.builtin").iterdir()
    return sorted(f.name.removesuffix(".yaml") for f in files if f.name.endswith(".yaml"))


def load_builtin(name: str) -> Policy:
    """Load a shipped policy by id."""
    names = builtin_policy_names()
    source = f"builtin:{name}"
    if name not in names:
        raise PolicyError(source, "", _unknown(f"unknown built-in policy {name!r}", name, names,
                                               "available"))
    text = resources.files("policies.builtin").joinpath(f"{name}.yaml").read_text("utf-8")
    policy = parse_policy(_read_yaml(text, source), source)
    if policy.id != name:
        raise PolicyError(source, "id", f"id {policy.id!r} does not match the file name {name!r}")
    return policy


def resolve_policy(name_or_path: str) -> Policy:
    """A built-in policy by id, else a YAML policy file by path."""
    names = builtin_policy_names()
    if name_or_path in names:
        return load_builtin(name_or_path)
    if os.path.isfile(name_or_path):
        return load_policy(name_or_path)
    problem = "neither a built-in policy nor a policy file"
    raise PolicyError(name_or_path, "", _unknown(problem, name_or_path, names, "built-in policies"))
