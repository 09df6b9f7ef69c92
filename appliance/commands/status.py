"""``tce status [--json] [--max-age S] [--require-running] [--echo]``: is each node alive, and
how much work does it hold?

Reads the configuration's database only (see :mod:`appliance.status` for the states and what
each count means), so it works while the node runs, after it stopped, and from a second shell or
a container healthcheck. Exit status, for monitoring: 0 when every heartbeat found is alive or
cleanly stopped, 1 when one is stale or its process is gone (or, with ``--require-running``, a
node of this configuration's role is not alive; with ``--echo``, a node did not answer C-ECHO),
2 for a configuration error.

``--echo`` finds each node where its heartbeat row says it listens (AE title and port, written by
the node's ``serve``; the host from the row, or the node's ``bind`` when the row is from this
host). Every node listens: stage 1 and the Receiver with their C-STORE/C-ECHO SCPs, stage 2 with
its Verification-only SCP.
"""

from __future__ import annotations

import argparse
import json
import socket
import time
from datetime import UTC, datetime
from typing import Any

from appliance.cli import load_settings

WILDCARD_BINDS = ("", "0.0.0.0", "::")
ECHO_TIMEOUT = 10.0


def _seconds(text: str) -> float:
    """argparse type: a positive number of seconds (bad usage exits 2)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be a positive number of seconds")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "status", help="heartbeat and counts of each node (exit 1 if a node is stale or dead)",
        description="For each node of this configuration's database: its heartbeat (alive,"
                    " stale, dead, stopped or absent; pid, AE title, port) and its counts:"
                    " instances received, pending, quarantined, exported, failed and the age of"
                    " the oldest pending one. Exit status 0 when every heartbeat is alive or"
                    " cleanly stopped, 1 when one is stale or dead, 2 for a configuration"
                    " error.")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    # No default here: importing appliance.heartbeat for it would load SQLAlchemy into every
    # tce command, since the CLI builds all subcommand parsers at start.
    parser.add_argument("--max-age", type=_seconds, metavar="SECONDS",
                        help="a heartbeat older than this is stale (default: 6 missed beats,"
                             " 30 s)")
    parser.add_argument("--require-running", action="store_true",
                        help="also exit 1 unless every node of this configuration's role is"
                             " alive (for a container healthcheck)")
    parser.add_argument("--echo", action="store_true",
                        help="also C-ECHO each alive node (stage 1, stage 2, Receiver) at the"
                             " AE title and port of its heartbeat; exit 1 if one does not"
                             " answer")
    parser.add_argument("--calling-ae", default="TCE_STATUS", metavar="AET",
                        help="calling AE title for --echo (default TCE_STATUS; the node's"
                             " allowed_callers must accept it)")
    parser.set_defaults(func=run)


def echo(host: str, port: int, called: str, calling: str,
         timeout: float = ECHO_TIMEOUT) -> dict[str, Any]:
    """C-ECHO the node: its status and round-trip time, or why no association was made."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = timeout
    started = time.perf_counter()
    assoc = ae.associate(host, port, ae_title=called)
    if not assoc.is_established:
        why = "association rejected" if assoc.is_rejected else "no association"
        return {"ok": False, "host": host, "port": port, "error": why}
    try:
        answer = assoc.send_c_echo()
    finally:
        assoc.release()
    status = int(answer.Status) if "Status" in answer else None
    return {"ok": status == 0, "host": host, "port": port, "status": status,
            "ms": round((time.perf_counter() - started) * 1000, 1)}


def _echo_host(settings: Any, node: str, beat_host: str | None) -> str:
    """Where the node listens, as seen from here."""
    if beat_host and beat_host != socket.gethostname():
        return beat_host
    bind = str(getattr(getattr(settings, node, None), "bind", "") or "")
    return "127.0.0.1" if bind in WILDCARD_BINDS or node not in settings.roles else bind


def run(args: argparse.Namespace) -> int:
    from appliance.db import open_database, session_factory
    from appliance.heartbeat import STALE_AFTER
    from appliance.models import Node
    from appliance.status import collect

    if args.max_age is None:
        args.max_age = STALE_AFTER
    settings = load_settings(args)
    engine = open_database(settings.db_url)
    now = datetime.now(UTC)
    try:
        with session_factory(engine)() as session:
            nodes = collect(session, {Node(r) for r in settings.roles}, now, args.max_age)
    finally:
        engine.dispose()
    report: list[dict[str, Any]] = [n.as_dict() for n in nodes]
    problems = [f"{n.node}: heartbeat {n.heartbeat.state}" for n in nodes if not n.healthy]
    if args.require_running:
        problems += [f"{n.node}: not running ({n.heartbeat.state})" for n in nodes
                     if n.node in settings.roles and n.heartbeat.state != "alive"]
    if args.echo:
        for entry in report:
            beat = entry["heartbeat"]
            if beat["state"] == "alive" and beat["port"] and beat["ae_title"]:
                host = _echo_host(settings, entry["node"], beat["host"])
                entry["echo"] = echo(host, beat["port"], beat["ae_title"], args.calling_ae)
                if not entry["echo"]["ok"]:
                    problems.append(f"{entry['node']}: no C-ECHO answer from"
                                    f" {beat['ae_title']}@{host}:{beat['port']}"
                                    f" ({entry['echo'].get('error') or entry['echo']})")
    if args.json:
        print(json.dumps({"config": str(settings.path), "checked_at": now.isoformat(
            timespec="seconds"), "max_age_seconds": args.max_age, "ok": not problems,
            "problems": problems, "nodes": report}, indent=2))
    else:
        print(format_report(report, now))
        for problem in problems:
            print(f"problem: {problem}")
    return 1 if problems else 0


def _heartbeat_line(beat: dict[str, Any]) -> str:
    state = beat["state"]
    if state == "absent":
        return "absent (never served with this database)"
    where = f"pid {beat['pid']} on {beat['host']}"
    if beat["ae_title"]:
        where += f", {beat['ae_title']}" + (f" port {beat['port']}" if beat["port"] else "")
    if state == "stopped":
        return f"stopped at {beat['stopped_at']} ({where})"
    return f"{state}, last beat {beat['age_seconds']:g} s ago ({where}, since {beat['started_at']})"


def _age_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:g} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def format_report(report: list[dict[str, Any]], now: datetime) -> str:
    lines = [f"status at {now.isoformat(timespec='seconds')}"]
    for entry in report:
        counts = entry["counts"]
        lines.append(f"{entry['node']:<9} {_heartbeat_line(entry['heartbeat'])}")
        if "echo" in entry:
            answer = entry["echo"]
            lines.append(f"{'':<9} C-ECHO: " + (f"status 0x{answer['status']:04X} in"
                                                 f" {answer['ms']:g} ms" if answer["ok"]
                                                 else f"failed ({answer.get('error', '')})"))
        lines.append(
            f"{'':<9} received {counts['received']}, pending {counts['pending']} (oldest"
            f" {_age_text(counts['oldest_pending_seconds'])}), quarantined"
            f" {counts['quarantined']}, exported {counts['exported']}, failed {counts['failed']}")
        detail = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts["detail"].items()
                           if v and not k.startswith("jobs_"))
        jobs = ", ".join(f"{k[5:].upper()} {v}" for k, v in counts["detail"].items()
                         if v and k.startswith("jobs_"))
        if detail:
            lines.append(f"{'':<9} ({detail})")
        if jobs:
            lines.append(f"{'':<9} jobs: {jobs}")
    return "\n".join(lines)
