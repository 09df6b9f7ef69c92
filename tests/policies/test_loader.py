"""policies.loader: YAML policy files → Policy, digests, and the errors users see."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from policies.loader import (
    PolicyError,
    builtin_policy_names,
    load_builtin,
    load_policy,
    parse_policy,
    parse_tag,
    resolve_policy,
)
from policies.model import DateMode, Op, Option, Parameters, Target

BUILTIN_DIR = Path(__file__).resolve().parents[2] / "policies" / "builtin"

BASE_YAML = """\
# A research policy used by these tests.
id: test-policy
version: "1"
description: A policy for the loader tests.
base_profile: ps315-basic
options: [retain_safe_private, clean_descriptors]
parameters:
  age_band_years: 5
overrides:
  - tag: PatientName
    action: pseudonym
    prefix: PSN
  - private_creator: GEMS_PARM_01
    group: "0043"
    element: "39"
    action: keep
"""
BASE: dict[str, Any] = yaml.safe_load(BASE_YAML)
OVR, PRIV = BASE["overrides"]  # the public and the private override of BASE


def doc(**changes: Any) -> dict[str, Any]:
    """The base document with top-level keys replaced (None deletes the key)."""
    document = copy.deepcopy(BASE)
    for key, value in changes.items():
        if value is None:
            document.pop(key, None)
        else:
            document[key] = value
    return document


def with_override(*overrides: dict[str, Any]) -> dict[str, Any]:
    return doc(overrides=list(overrides))


def write(tmp_path: Path, content: str | dict[str, Any], name: str = "my.yaml") -> Path:
    path = tmp_path / name
    text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path) -> str:
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    return str(info.value)


# --- built-ins --------------------------------------------------------------------------------


def test_builtin_names_are_the_shipped_files() -> None:
    names = builtin_policy_names()
    assert names == sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))
    assert {"ps315-basic", "research-age-band-5y", "safe-harbor", "stage1-pseudonymize"} <= set(
        names)


@pytest.mark.parametrize("name", builtin_policy_names())
def test_every_builtin_loads_with_a_digest(name: str) -> None:
    policy = load_builtin(name)
    assert policy.id == name
    assert re.fullmatch("[0-9a-f]{64}", policy.digest)
    assert policy.source == f"builtin:{name}"
    # The same file loaded by path is the same policy.
    assert load_policy(BUILTIN_DIR / f"{name}.yaml").digest == policy.digest


def test_builtin_digests_differ() -> None:
    digests = {load_builtin(n).digest for n in builtin_policy_names()}
    assert len(digests) == len(builtin_policy_names())


def test_builtin_contents() -> None:
    stage1 = load_builtin("stage1-pseudonymize")
    rules = {o.target.tag: o.rule for o in stage1.overrides}
    name = rules[0x00100010]
    assert (name.op, name.prefix, name.source) == (Op.PSEUDONYM, "PSEUDO^", "PatientID")
    assert rules[0x00100030].op is Op.KEEP
    assert stage1.has(Option.RETAIN_LONG_FULL_DATES)
    assert stage1.parameters == Parameters()

    harbor = load_builtin("safe-harbor")
    assert harbor.parameters.date_mode is DateMode.YEAR
    assert harbor.parameters.age_band_years == 1
    assert harbor.parameters.compute_age is True
    assert not harbor.has(Option.RETAIN_SAFE_PRIVATE)

    basic = load_builtin("ps315-basic")
    assert (basic.options, basic.overrides, basic.base_profile) == (frozenset(), (), "ps315-basic")


def test_unknown_builtin_lists_the_available_ones() -> None:
    with pytest.raises(PolicyError) as info:
        load_builtin("safe-harbour")
    message = str(info.value)
    assert "unknown built-in policy 'safe-harbour'; did you mean 'safe-harbor'?" in message
    for name in builtin_policy_names():
        assert name in message


def test_resolve_policy_takes_an_id_or_a_path(tmp_path: Path) -> None:
    assert resolve_policy("safe-harbor").id == "safe-harbor"
    path = write(tmp_path, BASE_YAML)
    policy = resolve_policy(str(path))
    assert (policy.id, policy.source) == ("test-policy", str(path))
    with pytest.raises(PolicyError) as info:
        resolve_policy("research-age-band")
    message = str(info.value)
    assert message.startswith("research-age-band: neither a built-in policy nor a policy file")
    assert "did you mean 'research-age-band-5y'?" in message
    with pytest.raises(PolicyError, match="neither a built-in policy nor a policy file"):
        resolve_policy(str(tmp_path))  # a directory is not a policy file


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(PolicyError) as info:
        load_policy(missing)
    assert str(info.value).startswith(f"{missing}: cannot read policy file")


# --- what a loaded policy holds ---------------------------------------------------------------


def test_loaded_policy_fields(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, BASE_YAML))
    assert (policy.id, policy.version, policy.base_profile) == ("test-policy", "1", "ps315-basic")
    assert policy.options == {Option.RETAIN_SAFE_PRIVATE, Option.CLEAN_DESCRIPTORS}
    assert policy.parameters == Parameters(age_band_years=5)
    public, private = policy.overrides
    assert public.target == Target(tag=0x00100010)
    assert (public.rule.op, public.rule.prefix, public.rule.length) == (Op.PSEUDONYM, "PSN", None)
    assert private.target == Target(private_creator="GEMS_PARM_01", group=0x0043, element=0x39)
    assert private.rule.op is Op.KEEP


def test_rule_parameters_are_read() -> None:
    policy = parse_policy(with_override(
        {"tag": "PatientAge", "action": "age_band", "width": 10},
        {"tag": "StudyDate", "action": "date_coarsen", "granularity": "year-month"},
        {"tag": "InstitutionName", "action": "replace", "value": "ANON"},
        {"tag": "PatientID", "action": "hash", "length": 16},
        {"private_creator": "SIEMENS CSA HEADER", "group": 0x29, "action": "X"},
    ))
    rules = [o.rule for o in policy.overrides]
    assert rules[0].width == 10
    assert rules[1].granularity is DateMode.YEAR_MONTH
    assert rules[2].value == "ANON"
    assert rules[3].length == 16
    assert rules[4].op is Op.REMOVE
    assert policy.overrides[4].target == Target(private_creator="SIEMENS CSA HEADER", group=0x29)
    assert policy.source == "<memory>"


def test_python_ints_are_taken_as_numbers() -> None:
    """Only YAML's unquoted numbers are ambiguous; ints built in Python are exact."""
    policy = parse_policy(with_override(
        {"tag": 0x00100020, "action": "K"},
        {"private_creator": "GEMS_PARM_01", "group": 0x0043, "element": 0x39, "action": "X"}))
    assert [o.target for o in policy.overrides] == [
        Target(tag=0x00100020), Target(private_creator="GEMS_PARM_01", group=0x43, element=0x39)]
    with pytest.raises(PolicyError, match=r"^<memory>: overrides\[0\]\.tag: .*out of range"):
        parse_policy(with_override({"tag": 0x1_0010_0010, "action": "K"}))


def test_version_may_be_an_integer() -> None:
    assert parse_policy(doc(version=3)).version == "3"


# --- digest -----------------------------------------------------------------------------------


def test_digest_ignores_comments_key_order_and_spelling(tmp_path: Path) -> None:
    reference = load_policy(write(tmp_path, BASE_YAML)).digest
    respelled = """\
overrides:   # same meaning, other spellings
  - action: pseudonym
    prefix: PSN
    tag: "(0010,0010)"
  - element: xx39
    action: K
    group: 0x0043
    private_creator: "  GEMS_PARM_01"
parameters: {pseudonym_length: 10, age_band_years: 5, date_mode: shift}
options:
  - clean_descriptors
  - retain_safe_private
base_profile: ps315-basic
description: >-
  A policy for the
  loader tests.
version: 1
id: test-policy
"""
    assert load_policy(write(tmp_path, respelled, "other.yaml")).digest == reference


@pytest.mark.parametrize("spelling", [
    "PatientName", "(0010,0010)", "0010,0010", "00100010", "(0010, 0010)", 0x00100010])
def test_digest_same_for_each_tag_spelling(spelling: str | int) -> None:
    respelled = dict(OVR, tag=spelling)
    assert parse_policy(doc(overrides=[respelled])).digest == parse_policy(
        doc(overrides=[OVR])).digest


@pytest.mark.parametrize("element", ["39", "xx39", "XX39", "0x39", 0x39])
def test_digest_same_for_each_element_spelling(element: str | int) -> None:
    respelled = dict(PRIV, element=element)
    assert parse_policy(doc(overrides=[respelled])).digest == parse_policy(
        doc(overrides=[PRIV])).digest


CHANGES: dict[str, dict[str, Any]] = {
    "action": doc(overrides=[{"tag": "PatientName", "action": "hash"}, PRIV]),
    "private action": doc(overrides=[OVR, dict(PRIV, action="X")]),
    "rule parameter": doc(overrides=[dict(OVR, prefix="ID"), PRIV]),
    "rule length": doc(overrides=[dict(OVR, length=10), PRIV]),
    "target": doc(overrides=[dict(OVR, tag="PatientID"), PRIV]),
    "element": doc(overrides=[OVR, dict(PRIV, element="3A")]),
    "block-wide": doc(overrides=[OVR, {k: v for k, v in PRIV.items() if k != "element"}]),
    "group": doc(overrides=[OVR, dict(PRIV, group="0045")]),
    "creator": doc(overrides=[OVR, dict(PRIV, private_creator="GEMS_PARM_02")]),
    "override removed": doc(overrides=[OVR]),
    "override order": doc(overrides=[PRIV, OVR]),
    "option added": doc(options=[*BASE["options"], "retain_uids"]),
    "option removed": doc(options=["retain_safe_private"]),
    "age band": doc(parameters={"age_band_years": 10}),
    "age cap": doc(parameters={"age_band_years": 5, "age_cap_years": None}),
    "date mode": doc(parameters={"age_band_years": 5, "date_mode": "year"}),
    "shift": doc(parameters={"age_band_years": 5, "date_shift_max_days": 30}),
    "compute age": doc(parameters={"age_band_years": 5, "compute_age": True}),
    "pseudonym length": doc(parameters={"age_band_years": 5, "pseudonym_length": 12}),
    "uid root": doc(parameters={"age_band_years": 5, "uid_root": "1.2.3"}),
    "base profile": doc(base_profile="none"),
    "version": doc(version="2"),
    "id": doc(id="other-policy"),
    "description": doc(description="Another description."),
}


@pytest.mark.parametrize("change", CHANGES)
def test_digest_changes_with_meaning(change: str) -> None:
    assert parse_policy(CHANGES[change]).digest != parse_policy(doc()).digest


# --- errors: each names the file, the key path and the problem ----------------------------------

ERRORS: list[tuple[str, str | dict[str, Any], str, str]] = [
    # unknown keys at each level
    ("top key", doc(overides=[]), "(top level)",
     "unknown key 'overides'; did you mean 'overrides'?"),
    ("parameter key", doc(parameters={"age_band": 5}), "parameters",
     "unknown key 'age_band'; did you mean 'age_band_years'?"),
    ("override key", with_override(dict(OVR, prefx="A")), "overrides[0]",
     "unknown key 'prefx'; did you mean 'prefix'?"),
    # actions
    ("unknown action", with_override({"tag": "PatientID", "action": "kep"}), "overrides[0].action",
     "unknown action 'kep'; did you mean 'keep'?"),
    ("unknown action list", with_override({"tag": "PatientID", "action": "zzz"}),
     "overrides[0].action", "unknown action 'zzz'; expected one of: keep, remove"),
    ("compound X/Z", with_override({"tag": "PatientID", "action": "X/Z"}), "overrides[0].action",
     "'X/Z' is a compound PS3.15 code"),
    ("compound Z/D", with_override({"tag": "PatientID", "action": "Z/D"}), "overrides[0].action",
     "pick one code: Z or D"),
    ("compound X/Z/U*", with_override({"tag": "StudyInstanceUID", "action": "X/Z/U*"}),
     "overrides[0].action", "pick one code: X or Z or U"),
    ("action not a string", with_override({"tag": "PatientID", "action": ["K"]}),
     "overrides[0].action", "expected a string, got a list"),
    # tags
    ("bad keyword", with_override({"tag": "PatientNme", "action": "K"}), "overrides[0].tag",
     "unknown keyword or malformed tag 'PatientNme'; did you mean 'PatientName'?"),
    ("bad hex", with_override({"tag": "(0010,001G)", "action": "K"}), "overrides[0].tag",
     "unknown keyword or malformed tag '(0010,001G)'"),
    ("odd group in tag", with_override({"tag": "(0009,1001)", "action": "K"}), "overrides[0].tag",
     "(0009,1001) is in an odd (private) group"),
    ("unquoted tag", "id: a\nversion: 1\ndescription: d\nbase_profile: none\n"
     "overrides:\n  - tag: 00100010\n    action: K\n", "overrides[0].tag",
     'the unquoted number 00100010 is not read as hex by YAML; quote it: "00100010"'),
    # private form
    ("even group", with_override(dict(PRIV, group="0010")), "overrides[0].group",
     "group 0010 cannot hold private attributes"),
    ("reserved odd group", with_override(dict(PRIV, group="0003")), "overrides[0].group",
     "group 0003 cannot hold private attributes"),
    ("malformed group", with_override(dict(PRIV, group="43")), "overrides[0].group",
     "expected a group as 4 hex digits, got '43'"),
    ("unquoted octal group", BASE_YAML.replace('group: "0043"', "group: 0043"),
     "overrides[1].group", 'quote it: "0043"'),
    ("unquoted element", BASE_YAML.replace('element: "39"', "element: 39"),
     "overrides[1].element", 'quote it: "39"'),
    ("element too large", BASE_YAML.replace('element: "39"', "element: 0x100"),
     "overrides[1].element", "element offset must be 0-255 (00-FF), got 256"),
    ("malformed element", with_override(dict(PRIV, element="1039")), "overrides[0].element",
     "expected an element offset (00-FF) as 2 hex digits, got '1039'"),
    ("empty creator", with_override(dict(PRIV, private_creator=" ")),
     "overrides[0].private_creator", "must not be empty"),
    ("group without creator", with_override({"group": "0043", "action": "K"}), "overrides[0]",
     "missing target"),
    ("private without group", with_override({"private_creator": "X", "action": "K"}),
     "overrides[0]", "missing required key 'group'"),
    ("group with tag", with_override(dict(OVR, group="0043")), "overrides[0].group",
     "'group' belongs to a private target"),
    ("tag and creator", with_override(dict(PRIV, tag="PatientID")), "overrides[0]",
     "give either 'tag' or 'private_creator', not both"),
    # type errors
    ("int as word", doc(parameters={"age_band_years": "five"}), "parameters.age_band_years",
     "expected an integer, got 'five'"),
    ("bool is not int", doc(parameters={"age_band_years": True}), "parameters.age_band_years",
     "expected an integer, got true"),
    ("int out of range", doc(parameters={"age_band_years": 0}), "parameters.age_band_years",
     "must be between 1 and 50, got 0"),
    ("cap out of range", doc(parameters={"age_cap_years": 151}), "parameters.age_cap_years",
     "must be between 1 and 150"),
    ("shift out of range", doc(parameters={"date_shift_max_days": 0}),
     "parameters.date_shift_max_days", "must be between 1 and 36500"),
    ("pseudonym length", doc(parameters={"pseudonym_length": 3}), "parameters.pseudonym_length",
     "must be between 4 and 32, got 3"),
    ("compute_age", doc(parameters={"compute_age": "yes"}), "parameters.compute_age",
     "expected true or false, got 'yes'"),
    ("date mode", doc(parameters={"date_mode": "years"}), "parameters.date_mode",
     "unknown date mode 'years'; did you mean 'year'?"),
    ("uid root float", "id: a\nversion: 1\ndescription: d\nbase_profile: none\n"
     "parameters:\n  uid_root: 2.25\n", "parameters.uid_root",
     'expected a string, got 2.25; quote it: "2.25"'),
    ("uid root leading zero", doc(parameters={"uid_root": "1.02.3"}), "parameters.uid_root",
     "not a valid UID root: '1.02.3'"),
    ("uid root too long", doc(parameters={"uid_root": "1.2.3.4.5.6.7.8.9.10.11.12"}),
     "parameters.uid_root", "not a valid UID root"),
    ("parameters not a mapping", doc(parameters=[5]), "parameters",
     "expected a mapping, got a list"),
    ("options not a list", doc(options="clean_descriptors"), "options",
     "expected a list of options, got 'clean_descriptors'"),
    ("overrides not a list", doc(overrides={"tag": "PatientID"}), "overrides",
     "expected a list of overrides, got a mapping"),
    ("override not a mapping", doc(overrides=["PatientID"]), "overrides[0]",
     "expected a mapping with 'tag' or 'private_creator', got 'PatientID'"),
    ("id not a string", doc(id=5), "id", "expected a string, got 5"),
    ("bad id", doc(id="My Policy"), "id", "'My Policy' is not a valid policy id"),
    ("version float", doc(version=1.5), "version", "expected a string or an integer, got 1.5"),
    ("empty description", doc(description="  "), "description", "must not be empty"),
    ("base profile", doc(base_profile="ps315"), "base_profile",
     "unknown profile 'ps315'; did you mean 'ps315-basic'?"),
    ("length range", with_override(dict(OVR, length=65)), "overrides[0].length",
     "must be between 4 and 64, got 65"),
    ("value not a string", with_override({"tag": "StudyID", "action": "replace", "value": 7}),
     "overrides[0].value", 'expected a string, got 7; quote it: "7"'),
    ("source keyword", with_override(dict(OVR, source="PatientId")), "overrides[0].source",
     "unknown DICOM keyword 'PatientId'; did you mean 'PatientID'?"),
    ("empty source", with_override(dict(OVR, source="")), "overrides[0].source",
     "unknown DICOM keyword ''"),
    ("granularity", with_override(
        {"tag": "StudyDate", "action": "date_coarsen", "granularity": "shift"}),
     "overrides[0].granularity", "unknown granularity 'shift'; expected one of: year, year-month"),
    # missing required keys
    *[(f"missing {key}", doc(**{key: None}), "(top level)", f"missing required key '{key}'")
      for key in ("id", "version", "description", "base_profile")],
    ("missing action", with_override({"tag": "PatientID"}), "overrides[0]",
     "missing required key 'action'"),
    ("replace without value", with_override({"tag": "StudyID", "action": "replace"}),
     "overrides[0]", "action 'replace' requires 'value'"),
    ("coarsen without granularity", with_override({"tag": "StudyDate", "action": "date_coarsen"}),
     "overrides[0]", "action 'date_coarsen' requires 'granularity'"),
    # parameters given to an action that does not take them
    ("prefix for keep", with_override({"tag": "PatientID", "action": "keep", "prefix": "A"}),
     "overrides[0].prefix", "'prefix' does not apply to action 'keep'; it is used only by: "
     "pseudonym"),
    ("width for hash", with_override({"tag": "PatientID", "action": "hash", "width": 5}),
     "overrides[0].width", "'width' does not apply to action 'hash'"),
    ("value for K", with_override({"tag": "PatientID", "action": "K", "value": "x"}),
     "overrides[0].value", "'value' does not apply to action 'K'"),
    # duplicates
    ("duplicate tag", with_override(OVR, {"tag": "(0010,0010)", "action": "X"}), "overrides[1]",
     "duplicate target (0010,0010) (also overrides[0])"),
    ("duplicate private", with_override(PRIV, dict(PRIV, element="xx39", action="X")),
     "overrides[1]", 'duplicate target (0043,xx39) "GEMS_PARM_01" (also overrides[0])'),
    ("duplicate option", doc(options=["clean_descriptors", "clean_descriptors"]), "options[1]",
     "duplicate option 'clean_descriptors'"),
    ("unknown option", doc(options=["clean_descriptors", "retain_uid"]), "options[1]",
     "unknown option 'retain_uid'; did you mean 'retain_uids'?"),
    ("both date options", doc(options=["retain_long_full_dates", "retain_long_modified_dates"]),
     "options[1]", "retain_long_full_dates and retain_long_modified_dates are mutually exclusive"),
    # YAML itself
    ("yaml syntax", BASE_YAML.replace("  - tag: PatientName", "  - tag: [PatientName"),
     "line 11, column 11", "invalid YAML: while parsing a flow sequence: expected ',' or ']'"),
    ("yaml duplicate key", BASE_YAML + "id: again\n", "line 17, column 1",
     "found duplicate key 'id'"),
    ("empty file", "# nothing here\n", "(top level)", "got an empty document"),
    ("not a mapping", "- id: a\n", "(top level)", "expected a mapping of policy keys, got a list"),
]


@pytest.mark.parametrize(("content", "key_path", "problem"),
                         [case[1:] for case in ERRORS], ids=[case[0] for case in ERRORS])
def test_error_names_file_key_and_problem(
        tmp_path: Path, content: str | dict[str, Any], key_path: str, problem: str) -> None:
    path = write(tmp_path, content)
    message = error_of(path)
    assert message.startswith(f"{path}: {key_path}: "), message
    assert problem in message, message


def test_error_carries_its_parts(tmp_path: Path) -> None:
    path = write(tmp_path, doc(parameters={"age_band_years": "five"}))
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert (info.value.source, info.value.path) == (str(path), "parameters.age_band_years")
    assert isinstance(info.value, ValueError)


def test_parse_policy_errors_name_the_given_source() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(doc(options=["retain_uid"]), source="upload.yaml")
    assert str(info.value) == (
        "upload.yaml: options[0]: unknown option 'retain_uid'; did you mean 'retain_uids'? "
        "(expected one of: " + ", ".join(o.value for o in Option) + ")")


# --- parse_tag --------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "PatientName", "(0010,0010)", "0010,0010", "00100010", " (0010, 0010) ", 0x00100010])
def test_parse_tag_forms(text: str | int) -> None:
    assert parse_tag(text) == 0x00100010


def test_parse_tag_hex_is_case_insensitive() -> None:
    assert parse_tag("(7fe0,0010)") == parse_tag("7FE00010") == parse_tag("PixelData")


@pytest.mark.parametrize(("text", "problem"), [
    ("PatientNme", "did you mean 'PatientName'?"),
    ("(0010,0010", "malformed tag '(0010,0010'"),
    ("0010,00100", "malformed tag"),
    ("", "malformed tag"),  # pydicom's dictionary maps the empty keyword to (300A,0782)
    (-1, "out of range"),
    (0x1_0000_0000, "out of range"),
])
def test_parse_tag_errors(text: str | int, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        parse_tag(text)
