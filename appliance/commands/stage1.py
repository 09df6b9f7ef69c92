"""``tce stage1 serve | studies | complete | media write``: the hospital-side node."""

from __future__ import annotations

import argparse
from pathlib import Path

from appliance.cli import CommandError, load_settings

# Heavy modules (SQLAlchemy, pynetdicom) are imported inside the commands, so that every other
# 'tce' command starts without them.


def _add_listen(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ae-title", "-aet", help="AE title to answer to (overrides config)")
    parser.add_argument("--bind", help="address to listen on (overrides config)")
    parser.add_argument("--port", type=int, help="TCP port (overrides config)")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("stage1", help="hospital side: C-STORE SCP and PDI media",
                                   description="Stage 1 receives from modalities and PACS, "
                                   "pseudonymizes with its policy and writes IHE PDI media.")
    sub = parser.add_subparsers(title="stage1 commands", metavar="ACTION", required=True)
    serve = sub.add_parser("serve", help="run the C-STORE/C-ECHO SCP until SIGTERM/SIGINT")
    _add_listen(serve)
    serve.set_defaults(func=run_serve)
    studies = sub.add_parser("studies", help="list studies (pseudonymized UIDs) and states")
    studies.set_defaults(func=run_studies)
    complete = sub.add_parser("complete", help="mark studies complete now (skip quiet period)")
    complete.add_argument("--study", action="append", default=[], metavar="UID")
    complete.set_defaults(func=run_complete)
    media = sub.add_parser("media", help="IHE PDI media")
    media_sub = media.add_subparsers(title="media commands", metavar="ACTION", required=True)
    write = media_sub.add_parser("write", help="write a DICOMDIR file-set to OUT")
    write.add_argument("out", type=Path, metavar="OUT", nargs="?",
                       help="folder (USB stick, CD staging); default: a new dated folder under"
                            " stage1.media_dir")
    which = write.add_mutually_exclusive_group()
    which.add_argument("--all-complete", action="store_true",
                       help="every complete study (the default)")
    which.add_argument("--all", action="store_true",
                       help="every study received so far, once its queued work is done")
    write.add_argument("--study", action="append", default=[], metavar="UID",
                       help="only these studies (repeatable)")
    write.add_argument("--volume-bytes", type=int, default=None,
                       help="size limit per volume (default: stage1.media_volume_bytes)")
    write.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    write.set_defaults(func=run_media_write)


def run_serve(args: argparse.Namespace) -> int:
    from appliance.logging import configure_logging
    from stage1_modality.app import Listen, Stage1Node

    settings = load_settings(args)
    configure_logging(settings)
    config = settings.stage1
    listen = Listen(args.ae_title or config.ae_title, args.bind or config.bind,
                    args.port or config.port)
    try:
        node = Stage1Node(settings, listen)
        return node.serve()
    except OSError as exc:  # port in use, another node on this work_dir, unwritable folders
        raise CommandError(f"cannot start stage 1: {exc}") from exc


def run_studies(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from appliance.db import open_database, session_factory
    from appliance.models import Node, Study

    settings = load_settings(args)
    sessions = session_factory(open_database(settings.db_url))
    with sessions() as session:
        rows = session.scalars(select(Study).where(Study.node == Node.STAGE1)
                               .order_by(Study.first_received_at)).all()
        for study in rows:
            print(f"{study.new_study_instance_uid}  {study.state.value:<14} "
                  f"{study.instance_count:>5} instances  patient {study.patient_pseudonym or '-'}")
    if not rows:
        print("no studies received yet")
    return 0


def run_complete(args: argparse.Namespace) -> int:
    from appliance.db import open_database, session_factory
    from stage1_modality.service import complete_quiet_studies, finish_pending

    settings = load_settings(args)
    sessions = session_factory(open_database(settings.db_url))
    finish_pending(settings, sessions, args.study or None)
    done = complete_quiet_studies(sessions, 0, args.study or None)
    print(f"{len(done)} studies marked complete")
    return 0


def run_media_write(args: argparse.Namespace) -> int:
    from appliance.db import open_database, session_factory
    from appliance.logging import configure_logging
    from pdi.model import (
        MediaError,  # stage1_modality.media's MediaError is a subclass
        MediaOptions,
        dated_folder,
    )
    from stage1_modality.media import Selection, write_selected

    settings = load_settings(args)
    configure_logging(settings)
    if args.out is None:
        args.out = dated_folder(settings.stage1.media_dir)
    sessions = session_factory(open_database(settings.db_url))
    options = MediaOptions(volume_bytes=args.volume_bytes or settings.stage1.media_volume_bytes)
    selection = Selection(tuple(args.study), include_receiving=args.all)
    try:
        volumes = write_selected(settings, sessions, args.out, selection, options,
                                 overwrite=args.overwrite)
    except (MediaError, FileExistsError, ValueError, TimeoutError) as exc:
        message = str(exc)
        if "overwrite" in message and not args.overwrite:
            message += " (pass --overwrite to replace what is there)"
        raise CommandError(message) from exc
    for volume in volumes:
        print(f"wrote {volume.path}: {len(volume.studies)} studies, {volume.instances} instances,"
              f" {volume.bytes / 1e6:.1f} MB, profile {volume.profile}")
    return 0
