"""``tce quarantine``: an operator finds what a running stage-1 node refused, reads why, and
releases it; ``tce status`` stops counting it, the audit trail says who, and ``--delete`` removes
the stored copy (which still holds what the original held)."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from appliance.models import AuditEvent
from tests.appliance.test_status import send_without_uid, status
from tests.stage1_modality import conftest as stage1_fixtures
from tests.stage1_modality.harness import SUCCESS, NodeFactory

nodes = stage1_fixtures.nodes  # the stage-1 node fixture (needs dcmtk; SIGTERM at teardown)


def test_list_show_release_and_delete(nodes: NodeFactory, tmp_path: Path) -> None:
    node = nodes.folder("quarantine")
    running = nodes.start(node)
    for _ in range(2):
        assert send_without_uid(running.port, tmp_path) not in (SUCCESS, None)

    listed = node.tce("quarantine", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    items = json.loads(listed.stdout)
    assert len(items) == 2 and {i["node"] for i in items} == {"stage1"}
    assert all("SOP Instance UID" in i["reason"] or "SOPInstanceUID" in i["reason"]
               for i in items), items
    assert "no-uid" not in listed.stdout  # opaque stored names, never the original file name
    first, second = items[0]["id"], items[1]["id"]
    stored = node.settings.quarantine_dir / items[0]["stored"]
    assert stored.is_file()

    shown = node.tce("quarantine", "show", str(first))
    assert shown.returncode == 0 and f"id           {first}" in shown.stdout
    assert str(stored) in shown.stdout

    unknown = node.tce("quarantine", "release", str(first), "999999", "--by", "pat")
    assert unknown.returncode == 1 and "999999" in unknown.stderr
    assert len(json.loads(node.tce("quarantine", "list", "--json").stdout)) == 2  # all or none

    released = node.tce("quarantine", "release", str(first), "--by", "privacy officer")
    assert released.returncode == 0, released.stderr
    assert stored.is_file()  # released is not deleted
    _code, report = status(node.tce)
    assert report["nodes"][0]["counts"]["quarantined"] == 1

    deleted = node.tce("quarantine", "release", str(second), "--by", "pat", "--delete")
    assert deleted.returncode == 0 and "deleted" in deleted.stdout
    second_stored = node.settings.quarantine_dir / items[1]["stored"]
    assert not second_stored.exists() and not Path(f"{second_stored}.reason.json").exists()
    assert "nothing in quarantine awaiting release" in node.tce("quarantine", "list").stdout
    everything = json.loads(node.tce("quarantine", "list", "--all", "--json").stdout)
    assert [(i["id"], i["released_by"]) for i in everything] == [
        (first, "privacy officer"), (second, "pat")]
    with node.engine.connect() as conn:
        events = conn.execute(select(AuditEvent.actor, AuditEvent.subject).where(
            AuditEvent.action == "quarantine.released")).all()
    assert sorted(events) == sorted([("privacy officer", str(first)), ("pat", str(second))])
    _code, report = status(node.tce)
    assert report["nodes"][0]["counts"]["quarantined"] == 0
    assert running.stop() == 0
