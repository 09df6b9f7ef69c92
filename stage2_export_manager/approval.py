"""Per-study approval: bind a stage-2 job to one exact policy, and check that binding at export.

An approval is a privacy officer's decision about *this* policy text for *this* study. It records
the policy id, version, sha256 digest (of the canonical form, see :mod:`policies.loader`) and
where the policy came from (a built-in id, or the absolute path of a YAML file). Export reloads
the policy from that source through :func:`approved_policy` and refuses to run when the digest
differs: someone edited the file after approval, and what would be sent is no longer what was
approved. Comments and key order do not change the digest, so only a change of meaning needs a
new approval.
"""

from __future__ import annotations

import os
from typing import Protocol

from policies.loader import PolicyError, builtin_policy_names, load_builtin, load_policy
from policies.model import Policy

BUILTIN_PREFIX = "builtin:"


class PolicyChanged(Exception):
    """The approved policy cannot be used as approved; the job needs a new approval.

    The message names the job, the policy id and source, never a patient value.
    """


class ApprovedJob(Protocol):
    """What :func:`approved_policy` reads of a :class:`appliance.models.Job`."""

    id: int
    policy_id: str | None
    policy_digest: str | None
    policy_source: str | None


def policy_source(policy: Policy) -> str:
    """What a job records as the source: a built-in id, else the file's absolute path."""
    if policy.source.startswith(BUILTIN_PREFIX):
        return policy.source.removeprefix(BUILTIN_PREFIX)
    return os.path.abspath(policy.source)


def load_source(source: str) -> Policy:
    """Load a policy from what :func:`policy_source` recorded; raises PolicyError."""
    name = source.removeprefix(BUILTIN_PREFIX)
    if os.sep not in name and name in builtin_policy_names():
        return load_builtin(name)
    return load_policy(source)


def approved_policy(job: ApprovedJob) -> Policy:
    """The policy ``job`` was approved with, reloaded from its source and checked by digest.

    Raises :class:`PolicyChanged` when the job has no approval, when the source can no longer
    be read or parsed, or when its digest differs from the approved one.
    """
    if not job.policy_source or not job.policy_digest:
        raise PolicyChanged(f"job {job.id} has no approved policy: approve it first")
    try:
        policy = load_source(job.policy_source)
    except PolicyError as exc:
        raise PolicyChanged(
            f"job {job.id}: the approved policy {job.policy_id} ({job.policy_source}) cannot be"
            f" loaded any more ({exc.problem}): approve again") from None
    if policy.digest != job.policy_digest:
        raise PolicyChanged(
            f"job {job.id}: policy file changed after approval: approve again"
            f" ({job.policy_id} from {job.policy_source}: approved digest"
            f" {job.policy_digest[:12]}, now {policy.digest[:12]})")
    return policy
