"""``tce quarantine list | show | release``: what the nodes refused, and closing each case.

Every node records the files it refuses (truncated or undecodable datasets, instances a policy
will not process, media that still carry identifiers) as quarantine items: an opaque copy in
``quarantine_dir`` with a reason file, and a database row. ``tce status`` counts the rows nobody
has released yet, so an operator needs a way to look at them and to say "handled": ``release``
stamps who and when, records an audit event, and with ``--delete`` also removes the stored copy
(it still holds whatever PHI the original held). Releasing never re-processes anything: the fix
is to send or import a corrected file again.

Listings show the reason, the stage and the opaque stored name, never original file names or
values; ``show`` adds the technical detail kept in the reason file.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from appliance.cli import CommandError, load_settings


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "quarantine", help="list, inspect and release what the nodes refused",
        description="Quarantine items of this configuration's nodes: refused files and media,"
                    " each with a reason. Releasing marks an item handled (who, when, audit"
                    " event); it does not process the file.")
    sub = parser.add_subparsers(title="quarantine commands", metavar="ACTION", required=True)
    listing = sub.add_parser("list", help="items not yet released (oldest first)")
    listing.add_argument("--all", action="store_true", help="released items too")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=run_list)
    show = sub.add_parser("show", help="one item, with the technical detail of its reason file")
    show.add_argument("id", type=int, metavar="ID")
    show.set_defaults(func=run_show)
    release = sub.add_parser("release", help="mark items handled (audit event)")
    release.add_argument("ids", type=int, nargs="+", metavar="ID")
    release.add_argument("--by", required=True, metavar="NAME",
                         help="who handled them (recorded in the audit trail)")
    release.add_argument("--delete", action="store_true",
                         help="also delete the stored copy and its reason file")
    release.set_defaults(func=run_release)


def _open(args: argparse.Namespace) -> tuple[Any, Any, set[Any]]:
    from appliance.db import open_database, session_factory
    from appliance.models import Node

    settings = load_settings(args)
    engine = open_database(settings.db_url)
    return engine, session_factory(engine), {Node(role) for role in settings.roles}


def _row(item: Any) -> dict[str, Any]:
    return {"id": item.id, "node": item.node.value, "at": item.at.isoformat(timespec="seconds"),
            "stage": item.stage, "reason": item.reason, "size_bytes": item.size_bytes,
            "sha256": item.sha256, "stored": Path(item.stored_path).name,
            "released_at": item.released_at.isoformat(timespec="seconds")
            if item.released_at else None, "released_by": item.released_by}


def run_list(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from appliance.models import QuarantineItem

    engine, sessions, nodes = _open(args)
    try:
        with sessions() as session:
            query = select(QuarantineItem).where(QuarantineItem.node.in_(nodes))
            if not args.all:
                query = query.where(QuarantineItem.released_at.is_(None))
            rows = [_row(item) for item in session.scalars(query.order_by(QuarantineItem.id))]
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("nothing in quarantine" + ("" if args.all else " awaiting release"))
        return 0
    for row in rows:
        released = f"  released {row['released_at']} by {row['released_by']}" \
            if row["released_at"] else ""
        print(f"{row['id']:>5}  {row['node']:<8} {row['at']}  {row['stage']:<10}"
              f" {row['size_bytes']:>10} B  {row['reason']}{released}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from appliance.models import QuarantineItem
    from appliance.quarantine import read_reason

    engine, sessions, nodes = _open(args)
    try:
        with sessions() as session:
            item = session.get(QuarantineItem, args.id)
            if item is None or item.node not in nodes:
                raise CommandError(f"no quarantine item {args.id} for this configuration"
                                   " (see 'tce quarantine list --all')")
            row = _row(item)
            stored = Path(item.stored_path)
    finally:
        engine.dispose()
    for key, value in row.items():
        print(f"{key:<12} {value if value is not None else '-'}")
    print(f"{'file':<12} {stored if stored.exists() else '(deleted)'}")
    try:
        detail = read_reason(stored).detail
    except (OSError, ValueError, KeyError):
        detail = ""
    if detail:
        print(f"{'detail':<12} {detail}")
    return 0


def run_release(args: argparse.Namespace) -> int:
    from appliance.audit import record_audit
    from appliance.models import QuarantineItem
    from appliance.quarantine import REASON_SUFFIX

    by = args.by.strip()
    if not by:
        raise CommandError("--by must name who handled the items")
    engine, sessions, nodes = _open(args)
    deleted: list[Path] = []
    try:
        with sessions.begin() as session:
            items = [session.get(QuarantineItem, item_id) for item_id in args.ids]
            unknown = [i for i, item in zip(args.ids, items, strict=True)
                       if item is None or item.node not in nodes]
            if unknown:  # all or nothing: a typo must not release half of a list
                raise CommandError("no quarantine item(s) " + ", ".join(map(str, unknown))
                                   + " for this configuration; nothing released")
            now = datetime.now(UTC)
            for item in items:
                assert item is not None
                if item.released_at is None:
                    item.released_at, item.released_by = now, by
                record_audit(session, item.node, "quarantine.released", str(item.id), actor=by,
                             stage=item.stage, sha256=item.sha256, deleted=args.delete)
                if args.delete:
                    deleted.append(Path(item.stored_path))
    finally:
        engine.dispose()
    for stored in deleted:  # after the commit: a failed commit must not lose the evidence
        stored.unlink(missing_ok=True)
        Path(f"{stored}{REASON_SUFFIX}").unlink(missing_ok=True)
    print(f"released {len(args.ids)} item(s)" + (", stored copies deleted" if deleted else ""))
    return 0
