"""Audit events record who, what, which subject and policy, and refuse PHI-named details."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text

from appliance.audit import PHIRefusedError, audit_details, record_audit
from appliance.db import session_scope
from appliance.models import AuditEvent, Node
from policies.loader import load_builtin


def count(engine: Engine) -> int:
    with session_scope(engine) as session:
        return session.execute(select(func.count(AuditEvent.id))).scalar_one()


def test_an_approval_is_recorded_with_its_policy(db_engine: Engine) -> None:
    policy = load_builtin("research-age-band-5y")
    with session_scope(db_engine) as session:
        record_audit(session, "stage2", "study.approved", "2.25.123", actor="dr.reviewer",
                     policy=policy, job_id=7, instance_count=42, delay_until=None)
    with db_engine.connect() as conn:
        row = conn.execute(text("SELECT node, actor, action, subject, policy_id, policy_version,"
                                " policy_digest, details FROM audit_events")).one()
    assert row[:7] == ("stage2", "dr.reviewer", "study.approved", "2.25.123", policy.id,
                       policy.version, policy.digest)
    assert json.loads(row[7]) == {"delay_until": None, "instance_count": 42, "job_id": 7}


def test_system_events_need_no_policy(db_engine: Engine) -> None:
    with session_scope(db_engine) as session:
        event = record_audit(session, Node.STAGE1, "instance.received", "2.25.9",
                             calling_ae="CT01", size_bytes=5120)
    with session_scope(db_engine) as session:
        stored = session.get(AuditEvent, event.id)
        assert stored is not None
        assert stored.actor == "system" and stored.policy_digest is None
        assert stored.at.tzinfo is not None
        assert audit_details(stored) == {"calling_ae": "CT01", "size_bytes": 5120}


@pytest.mark.parametrize("details", [
    {"PatientName": "DOE^JANE"},
    {"patient_id": "MRN123"},
    {"sop_instance_uid_original": "1.2.3.4"},
    {"counts": {"ok": 3, "PatientBirthDate": "19700101"}},
    {"items": [{"AccessionNumber": "A1"}]},
], ids=["keyword", "snake", "original-suffix", "nested", "in-list"])
def test_phi_named_details_are_refused_and_nothing_is_written(db_engine: Engine,
                                                              details: dict[str, Any]) -> None:
    with pytest.raises(PHIRefusedError, match="identifying attributes") as caught, \
            session_scope(db_engine) as session:
        record_audit(session, "stage1", "instance.received", "2.25.1", **details)
    value = json.dumps(details)
    for secret in ("DOE^JANE", "MRN123", "1.2.3.4", "19700101", "A1"):
        if secret in value:
            assert secret not in str(caught.value)  # the error names keys, never values
    assert count(db_engine) == 0


def test_actions_are_dotted_lower_case(db_engine: Engine) -> None:
    with pytest.raises(ValueError, match="dotted lower case"), \
            session_scope(db_engine) as session:
        record_audit(session, "stage2", "Approved", "job-1")
    with pytest.raises(ValueError, match="stage3"), session_scope(db_engine) as session:
        record_audit(session, "stage3", "study.approved", "job-1")
    assert count(db_engine) == 0
