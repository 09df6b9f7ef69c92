"""``tce policy list | show P | check FILE | explain P``: inspect the policies the engine runs.

A privacy officer approves a policy by id, version and digest; these commands show exactly what
that policy does before anyone approves it. ``explain --readme`` prints the README's comparison
table, and a test keeps the README equal to it.
"""

from __future__ import annotations

import argparse
import json
import sys

from appliance.settings import ConfigError
from policies.explain import compare_markdown, explain, format_markdown, format_text
from policies.loader import PolicyError, builtin_policy_names, load_builtin, resolve_policy
from policies.model import Policy

README_POLICIES = ("ps315-basic", "stage1-pseudonymize", "research-age-band-5y", "safe-harbor")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "policy", help="list, show, check and explain de-identification policies",
        description="Policies are YAML files: built-in ones by id, your own by path.")
    sub = parser.add_subparsers(title="policy commands", metavar="ACTION", required=True)
    listing = sub.add_parser("list", help="the built-in policies with version and digest")
    listing.set_defaults(func=run_list)
    show = sub.add_parser("show", help="print a policy's YAML source and digest")
    show.add_argument("policy", metavar="P", help="built-in id or YAML path")
    show.set_defaults(func=run_show)
    check = sub.add_parser("check", help="validate a policy file; exit 2 with the error if bad")
    check.add_argument("file", metavar="FILE")
    check.set_defaults(func=run_check)
    explain_parser = sub.add_parser("explain", help="what the policy does to each attribute")
    explain_parser.add_argument("policy", metavar="P", nargs="?", help="built-in id or YAML path")
    explain_parser.add_argument("--markdown", action="store_true", help="a Markdown table")
    explain_parser.add_argument("--json", action="store_true", help="JSON rows")
    explain_parser.add_argument("--readme", action="store_true",
                                help="the README's comparison table of the built-in policies")
    explain_parser.set_defaults(func=run_explain)


def _load(name: str) -> Policy:
    try:
        return resolve_policy(name)
    except PolicyError as exc:
        raise PolicyUsageError(str(exc)) from exc


class PolicyUsageError(ConfigError):
    """The named policy does not exist or does not load: bad usage, exit status 2."""


def run_list(args: argparse.Namespace) -> int:
    for name in builtin_policy_names():
        policy = load_builtin(name)
        print(f"{policy.id:<24} v{policy.version:<4} {policy.digest[:16]}  "
              f"{policy.description.splitlines()[0][:70]}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    policy = _load(args.policy)
    print(f"# {policy.id} v{policy.version} sha256:{policy.digest} ({policy.source})")
    source = policy.source
    if source.startswith("builtin:"):
        from importlib import resources
        text = resources.files("policies.builtin").joinpath(f"{policy.id}.yaml").read_text()
    else:
        with open(source, encoding="utf-8") as handle:
            text = handle.read()
    sys.stdout.write(text)
    return 0


def run_check(args: argparse.Namespace) -> int:
    try:
        policy = resolve_policy(args.file)
    except PolicyError as exc:
        print(f"tce: error: {exc}", file=sys.stderr)
        return 2
    print(f"ok: {policy.id} v{policy.version} sha256:{policy.digest}")
    return 0


def run_explain(args: argparse.Namespace) -> int:
    if args.readme:
        sys.stdout.write(readme_table())
        return 0
    if not args.policy:
        print("tce: error: name a policy (built-in id or YAML path), or use --readme",
              file=sys.stderr)
        return 2
    policy = _load(args.policy)
    rows = explain(policy)
    if args.json:
        json.dump([row.__dict__ for row in rows], sys.stdout, indent=1)
        sys.stdout.write("\n")
    elif args.markdown:
        sys.stdout.write(format_markdown(policy, rows))
    else:
        sys.stdout.write(format_text(policy, rows))
    return 0


def readme_table() -> str:
    return compare_markdown([load_builtin(name) for name in README_POLICIES])
