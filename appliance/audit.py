"""Audit events: who did what, when, to which pseudonymized subject, under which policy.

Audit rows are kept for as long as the research project and are shown to reviewers, so they
must never carry an original identifier. :func:`record_audit` refuses detail keys that name an
identifying attribute, using the same deny-list as the logs (:func:`appliance.logging.is_phi_key`)
so the two cannot drift apart. Unlike the log processor, which blanks the value and carries on,
an audit write with such a key is a programming error and raises: silently dropping a field
would leave a hole in the record that nobody notices.

Values are still the caller's responsibility: pass new UIDs, job ids, counts and digests only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from sqlalchemy.orm import Session

from appliance.logging import is_phi_key
from appliance.models import AuditEvent, Node

_ACTION = re.compile(r"[a-z0-9_]+(\.[a-z0-9_]+)+")


class PolicyLike(Protocol):
    """What an audit event records of a :class:`policies.model.Policy`."""

    @property
    def id(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def digest(self) -> str: ...


class PHIRefusedError(ValueError):
    """Audit details named an identifying attribute; nothing was recorded."""


def _phi_keys(value: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            if is_phi_key(str(key)):
                yield f"{prefix}{key}"
            else:
                yield from _phi_keys(inner, f"{prefix}{key}.")
    elif isinstance(value, (list, tuple)):
        for index, inner in enumerate(value):
            yield from _phi_keys(inner, f"{prefix}{index}.")


def record_audit(session: Session, node: Node | str, action: str, subject: str | None,
                 actor: str = "system", policy: PolicyLike | None = None,
                 **details: Any) -> AuditEvent:
    """Add an :class:`AuditEvent` to ``session`` (committed with the caller's transaction).

    ``action`` is dotted lower case (``instance.received``, ``study.approved``); ``subject`` is
    a new UID or a job id. ``details`` become a JSON object; keys naming PHI, at any depth,
    raise :class:`PHIRefusedError` and nothing is added.
    """
    refused = list(_phi_keys(details))
    if refused:
        raise PHIRefusedError(f"audit event {action!r} refused: detail key(s) {refused} name"
                              " identifying attributes; record pseudonymized values, counts and"
                              " ids under neutral names instead")
    if not _ACTION.fullmatch(action):
        raise ValueError(f"audit action {action!r} must be dotted lower case, e.g."
                         " 'study.approved'")
    event = AuditEvent(
        node=Node(node), action=action, subject=subject, actor=actor,
        policy_id=policy.id if policy is not None else None,
        policy_version=str(policy.version) if policy is not None else None,
        policy_digest=policy.digest if policy is not None else None,
        details=json.dumps(details, sort_keys=True, default=str, ensure_ascii=False),
    )
    session.add(event)
    return event


def audit_details(event: AuditEvent) -> dict[str, Any]:
    """The details of an event as a dict."""
    loaded = json.loads(event.details or "{}")
    return loaded if isinstance(loaded, dict) else {}
