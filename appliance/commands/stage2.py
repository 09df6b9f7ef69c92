"""``tce stage2 import | jobs | job | preview | approve | reject | retry | export | serve``.

The research-side node. Media come in (``import``), each study waits as a job until a privacy
officer previews and approves a policy for it (``preview``, ``approve``, ``reject``), then it is
anonymized and sent to the Receiver (``export``, or ``serve`` which also watches for media).
Every decision is an audit event; ``jobs`` and ``job ID`` show states, counts and history.

``export`` and ``serve`` live in :mod:`stage2_export_manager.exporter` and
:mod:`stage2_export_manager.scheduler`; they are imported when run, so the other commands work
(and ``tce --help`` lists these) even where those modules are missing.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from appliance.cli import CommandError, load_settings

# Heavy modules (SQLAlchemy, pydicom, the engine) are imported inside the commands, so that
# every other 'tce' command starts without them.


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "stage2", help="research side: import media, approve per study, export",
        description="Stage 2 imports stage-1 PDI media, holds each study until a policy is"
                    " approved for it, then anonymizes it and sends it to the Receiver.")
    sub = parser.add_subparsers(title="stage2 commands", metavar="ACTION", required=True)

    imp = sub.add_parser("import", help="import PDI media (DICOMDIR, else a folder scan)",
                         description="Copy the instances of MEDIA into the stage-2 store and"
                         " make one job per study, pending approval. The medium is only read."
                         " Media that still carry direct identifiers are refused.")
    imp.add_argument("media", type=Path, metavar="MEDIA", help="media folder, mount or DICOMDIR")
    imp.set_defaults(func=run_import)

    jobs = sub.add_parser("jobs", help="list jobs: study, patient pseudonym, state, policy")
    jobs.add_argument("--state", action="append", default=[], metavar="STATE",
                      help="only jobs in this state (repeatable), e.g. PENDING_APPROVAL")
    jobs.set_defaults(func=run_jobs)

    job = sub.add_parser("job", help="one job: state, counts, policy, approver, history")
    job.add_argument("job", metavar="ID", help="job id or study UID")
    job.set_defaults(func=run_job)

    preview = sub.add_parser("preview", help="what a policy would change in a study",
                             description="For a sample instance of each series: every attribute"
                             " the policy would change (before and after), the age band, the"
                             " date shift, and warnings. Values go to this terminal only.")
    preview.add_argument("study", metavar="STUDY", help="job id or study UID")
    preview.add_argument("--policy", required=True, metavar="P",
                         help="built-in policy id or policy YAML file")
    preview.set_defaults(func=run_preview)

    approve = sub.add_parser("approve", help="approve a policy for a study (or all pending)",
                             description="Bind the study's job to the policy's id, version,"
                             " sha256 digest and source. If the policy file changes later,"
                             " export refuses until it is approved again.")
    approve.add_argument("study", metavar="STUDY", nargs="?", help="job id or study UID")
    approve.add_argument("--all-pending", action="store_true",
                         help="approve every job pending approval")
    approve.add_argument("--policy", required=True, metavar="P",
                         help="built-in policy id or policy YAML file")
    approve.add_argument("--approver", required=True, metavar="NAME", help="who decides")
    approve.add_argument("--reason", metavar="TEXT", help="why (recorded with the decision)")
    approve.add_argument("--delay-until", metavar="ISO-TIME",
                         help="hold the export until then (TCE delay for reason), e.g."
                              " 2026-12-01T08:00; without a zone it is local time")
    approve.set_defaults(func=run_approve)

    reject = sub.add_parser("reject", help="reject a study: it will not be exported")
    reject.add_argument("study", metavar="STUDY", help="job id or study UID")
    reject.add_argument("--reason", required=True, metavar="TEXT", help="why (recorded)")
    reject.add_argument("--by", "--approver", dest="by", metavar="NAME",
                        help="who decides (default: the login name)")
    reject.set_defaults(func=run_reject)

    retry = sub.add_parser("retry", help="send a FAILED job again (attempts reset)")
    retry.add_argument("job", metavar="JOB", help="job id or study UID")
    retry.add_argument("--by", metavar="NAME", help="who asks (default: the login name)")
    retry.set_defaults(func=run_retry)

    export = sub.add_parser("export", help="anonymize and send approved, due jobs now")
    export.add_argument("--study", metavar="S", help="only this job id or study UID")
    export.add_argument("--to", metavar="AE@HOST:PORT",
                        help="send to this Receiver instead of the configured one")
    export.set_defaults(func=run_export)

    serve = sub.add_parser("serve", help="run the scheduler (watch media, export, retry, apply"
                                         " retention) and the C-ECHO SCP until SIGTERM/SIGINT",
                           description="The SCP answers C-ECHO only (Verification SOP Class):"
                           " studies reach stage 2 on media, never by C-STORE.")
    serve.add_argument("--ae-title", "-aet",
                       help="AE title to answer C-ECHO to and to call the Receiver with"
                            " (overrides stage2.ae_title)")
    serve.add_argument("--bind", help="address to listen on (overrides config)")
    serve.add_argument("--port", type=int, help="TCP port (overrides config)")
    serve.set_defaults(func=run_serve)


def _open(args: argparse.Namespace) -> tuple[Any, Any]:
    from appliance.db import default_url, open_database, session_factory

    settings = load_settings(args)
    url = settings.database_url or default_url(settings.work_dir)
    return settings, session_factory(open_database(url))


def _policy(ref: str) -> Any:
    from policies.loader import PolicyError, resolve_policy

    try:
        return resolve_policy(ref)
    except PolicyError as exc:
        raise CommandError(str(exc)) from None


def run_import(args: argparse.Namespace) -> int:
    from appliance.logging import configure_logging
    from stage2_export_manager.importer import ImportStatus, import_media

    settings, sessions = _open(args)
    configure_logging(settings)
    media: Path = args.media
    if not media.exists():
        raise CommandError(f"{media} does not exist: give the media folder, mount or DICOMDIR")
    try:
        result = import_media(settings, sessions, media, actor=_user())
    except OSError as exc:
        raise CommandError(f"import of {media} failed: {exc}") from exc
    if result.via == "folder scan":
        print(f"tce: warning: no usable DICOMDIR on {media}: scanned the folder instead",
              file=sys.stderr)
    for problem in result.problems:
        print(f"tce: warning: {problem}", file=sys.stderr)
    if result.status is ImportStatus.EMPTY:
        raise CommandError(f"no readable DICOM instances on {media}; nothing imported")
    if result.status is ImportStatus.REFUSED:
        raise CommandError(
            f"refused {media}: {result.reason}. Nothing was copied, no job was created and the"
            f" medium was not changed (quarantine record {result.quarantine_item_id})")
    if result.status is ImportStatus.ALREADY_IMPORTED:
        print(f"{media} already imported (media import {result.media_import_id}):"
              " nothing to do")
        return 0
    via = "the DICOMDIR" if result.via == "DICOMDIR" else "a folder scan"
    print(f"imported {result.instances} instances of {result.studies} studies"
          f" ({result.patients} patients) from {media} via {via}"
          f" (media import {result.media_import_id})")
    if result.known:
        print(f"  {result.known} instances were already held by earlier jobs and were skipped")
    if result.new_jobs:
        print(f"  new jobs pending approval: {', '.join(map(str, result.new_jobs))}")
    if result.extended_jobs:
        print(f"  instances added to pending jobs: {', '.join(map(str, result.extended_jobs))}")
    print("  next: tce stage2 jobs; tce stage2 preview STUDY --policy P;"
          " tce stage2 approve STUDY --policy P --approver NAME")
    return 0


def run_jobs(args: argparse.Namespace) -> int:
    from appliance.models import JobState
    from stage2_export_manager.jobs import format_jobs, list_jobs

    try:
        states = [JobState(s.upper()) for s in args.state]
    except ValueError:
        raise CommandError(f"unknown state in {args.state}; states are"
                           f" {', '.join(s.value for s in JobState)}") from None
    _, sessions = _open(args)
    with sessions() as session:
        jobs = list_jobs(session, states)
        if states and not jobs:
            print(f"no jobs in state {' or '.join(s.value for s in states)}")
        else:
            print(format_jobs(jobs))
    return 0


def _find(session: Any, ref: str, *, lock: bool = False) -> Any:
    from stage2_export_manager.approval import ApprovalError, find_job

    try:
        return find_job(session, ref, lock=lock)
    except ApprovalError as exc:
        raise CommandError(str(exc)) from None


def run_job(args: argparse.Namespace) -> int:
    from stage2_export_manager.jobs import format_job

    _, sessions = _open(args)
    with sessions() as session:
        print(format_job(session, _find(session, args.job)))
    return 0


def run_preview(args: argparse.Namespace) -> int:
    from appliance.keys import KeyRing
    from stage2_export_manager.preview import format_preview, preview_job

    settings, sessions = _open(args)
    policy = _policy(args.policy)
    keys = KeyRing.load(settings.key_ring).engine_keys()
    with sessions() as session:
        job = _find(session, args.study)
        text = format_preview(preview_job(job, policy, keys))
    print(text)  # terminal only: never logged
    return 0


def run_approve(args: argparse.Namespace) -> int:
    from appliance.db import session_scope
    from stage2_export_manager.approval import ApprovalError, approve, parse_when
    from stage2_export_manager.jobs import pending_jobs

    if bool(args.study) == bool(args.all_pending):
        raise CommandError("give either STUDY or --all-pending")
    delay = None
    if args.delay_until:
        try:
            delay = parse_when(args.delay_until)
        except ValueError:
            raise CommandError(f"--delay-until {args.delay_until!r} is not an ISO 8601 time,"
                               " e.g. 2026-12-01T08:00 or 2026-12-01T08:00+01:00") from None
    _, sessions = _open(args)
    policy = _policy(args.policy)
    done = []
    try:
        with session_scope(sessions) as session:
            jobs = (pending_jobs(session, lock=True) if args.all_pending
                    else [_find(session, args.study, lock=True)])
            for job in jobs:
                approve(session, job, policy, args.approver, reason=args.reason,
                        delay_until=delay)
                done.append((job.id, job.study_instance_uid, job.state.value, job.delay_until))
    except ApprovalError as exc:
        raise CommandError(str(exc)) from None
    if not done:
        print("no jobs pending approval")
    for job_id, study, state, until in done:
        when = f" until {until.isoformat(timespec='minutes')}" if until else ""
        print(f"job {job_id} ({study}): {state}{when} with {policy.id} v{policy.version}"
              f" (sha256 {policy.digest[:12]}) by {args.approver}")
    return 0


def run_reject(args: argparse.Namespace) -> int:
    from appliance.db import session_scope
    from stage2_export_manager.approval import ApprovalError, reject

    _, sessions = _open(args)
    try:
        with session_scope(sessions) as session:
            job = reject(session, _find(session, args.study, lock=True), args.by or _user(),
                         args.reason)
    except ApprovalError as exc:
        raise CommandError(str(exc)) from None
    print(f"job {job.id} ({job.study_instance_uid}): REJECTED")
    return 0


def run_retry(args: argparse.Namespace) -> int:
    from appliance.db import session_scope
    from stage2_export_manager.approval import ApprovalError, retry

    _, sessions = _open(args)
    try:
        with session_scope(sessions) as session:
            job = retry(session, _find(session, args.job, lock=True), args.by or _user())
    except ApprovalError as exc:
        raise CommandError(str(exc)) from None
    print(f"job {job.id} ({job.study_instance_uid}): APPROVED again, attempts reset;"
          " it is sent at the next export")
    return 0


def _missing(module: str, exc: ImportError) -> CommandError:
    return CommandError(f"this installation has no {module} ({exc}); 'tce stage2 export' and"
                        " 'tce stage2 serve' are not available yet")


def run_export(args: argparse.Namespace) -> int:
    try:
        from stage2_export_manager.exporter import export_due, parse_peer
    except ImportError as exc:
        raise _missing("stage2_export_manager.exporter", exc) from None
    from appliance.keys import KeyRing
    from appliance.logging import configure_logging

    settings, sessions = _open(args)
    configure_logging(settings)
    peer = None
    if args.to:
        try:
            peer = parse_peer(args.to)
        except ValueError as exc:
            raise CommandError(f"--to {args.to!r}: {exc}") from None
    keyring = KeyRing.load(settings.key_ring)
    summary = export_due(settings, sessions, keyring, to=peer, study=args.study)
    print(summary)
    failed = getattr(summary, "exit_status", None)
    if failed is None:
        failed = 1 if getattr(summary, "failed", 0) else 0
    return int(failed)


def run_serve(args: argparse.Namespace) -> int:
    try:
        from stage2_export_manager.scheduler import serve
    except ImportError as exc:
        raise _missing("stage2_export_manager.scheduler", exc) from None
    from appliance.logging import configure_logging
    from appliance.settings import check_ae_title, check_port

    settings = load_settings(args)
    config = settings.stage2
    # The overrides replace the settings themselves, so the heartbeat, the SCP and the exports
    # all use the one AE title (stage 2 has a single title for calling and for being called).
    config = replace(config, ae_title=args.ae_title or config.ae_title,
                     bind=args.bind or config.bind, port=args.port or config.port)
    problem = check_ae_title(config.ae_title) or check_port(config.port)
    if problem:
        raise CommandError(f"cannot start stage 2: {problem}")
    settings = replace(settings, stage2=config)
    configure_logging(settings)
    try:
        return int(serve(settings) or 0)
    except OSError as exc:
        raise CommandError(f"cannot start stage 2: {exc}") from exc
