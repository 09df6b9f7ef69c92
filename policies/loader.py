"""YAML policy files → validated, digested :class:`Policy` objects.

A policy is what an approval signs off, so the loader is strict: an unknown key, a misspelt
action or an ambiguous number is an error that names the file, the key path and the problem,
never a silent default. The digest is taken over a normalised form of the document, so that
equivalent spellings (``keep`` or ``K``, ``PatientName`` or ``(0010,0010)``) approve the same
policy, while any change of meaning needs a new approval.

This module finds and reads policies (files, built-ins, a name that may be either);
:mod:`policies.policy_yaml` reads the YAML, :mod:`policies.policy_document` validates the
document and :mod:`policies.policy_checks` holds the error type and value checks. The public
names are all importable from here.
"""

from __future__ import annotations

import os
from importlib import resources

from policies.model import Policy
from policies.policy_checks import PolicyError, _unknown, parse_tag
from policies.policy_document import parse_policy
from policies.policy_yaml import _read_yaml

__all__ = [
    "PolicyError",
    "builtin_policy_names",
    "load_builtin",
    "load_policy",
    "parse_policy",
    "parse_tag",
    "resolve_policy",
]


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
