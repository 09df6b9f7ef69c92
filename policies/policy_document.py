"""A parsed policy document (plain data) → validated, digested :class:`~policies.model.Policy`.

Why this is its own module: it is the schema of a policy file (top-level keys, options,
parameters, override targets and rules) and the normalised form the digest is taken over, so
that equivalent spellings approve the same policy while any change of meaning needs a new
approval. Where the document comes from (a file, a built-in) is :mod:`policies.loader`'s concern.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

from pydicom.datadict import keyword_dict

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
from policies.policy_checks import (
    PolicyError,
    _check_keys,
    _choice,
    _fail,
    _hex,
    _int,
    _Invalid,
    _keyword_tag,
    _show,
    _str,
    _suggest,
    _unknown,
    parse_tag,
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


def parse_policy(document: object, source: str = "<memory>") -> Policy:
    """Validate an already-parsed policy document (a mapping) and return the digested Policy."""
    try:
        return _parse(document, source)
    except _Invalid as exc:
        raise PolicyError(source, exc.path, exc.problem) from None
