"""``tce receiver serve | studies | media write``: the sink for anonymized studies."""

from __future__ import annotations

import argparse
from pathlib import Path

from appliance.cli import CommandError, load_settings

# Heavy modules (SQLAlchemy, pynetdicom) are imported inside the commands, so that every other
# 'tce' command starts without them.


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("receiver", help="Receiver: C-STORE SCP for anonymized studies",
                                   description="The Receiver stores what stage 2 exports, as"
                                   " received, under study/series folders named by UID, and can"
                                   " write it as IHE PDI media.")
    sub = parser.add_subparsers(title="receiver commands", metavar="ACTION", required=True)
    serve = sub.add_parser("serve", help="run the C-STORE/C-ECHO SCP until SIGTERM/SIGINT")
    serve.add_argument("--ae-title", "-aet", help="AE title to answer to (overrides config)")
    serve.add_argument("--bind", help="address to listen on (overrides config)")
    serve.add_argument("--port", type=int, help="TCP port (overrides config)")
    serve.set_defaults(func=run_serve)
    studies = sub.add_parser("studies", help="list received studies (UIDs, counts, states)")
    studies.set_defaults(func=run_studies)
    media = sub.add_parser("media", help="IHE PDI media")
    media_sub = media.add_subparsers(title="media commands", metavar="ACTION", required=True)
    write = media_sub.add_parser("write", help="write received studies as a DICOMDIR file-set")
    write.add_argument("out", type=Path, metavar="OUT", nargs="?",
                       help="folder (USB stick, CD staging); default: a new dated folder under"
                            " receiver.media_dir")
    write.add_argument("--study", action="append", default=[], metavar="UID",
                       help="only this study (repeatable; default: every received study)")
    write.add_argument("--volume-bytes", type=int, default=None,
                       help="size limit per volume (default: 700000000, a CD-R)")
    write.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    write.set_defaults(func=run_media_write)


def run_serve(args: argparse.Namespace) -> int:
    from appliance.logging import configure_logging
    from appliance.settings import check_ae_title, check_port
    from receiver.app import Listen, ReceiverNode

    settings = load_settings(args)
    configure_logging(settings)
    config = settings.receiver
    listen = Listen(args.ae_title or config.ae_title, args.bind or config.bind,
                    args.port or config.port)
    problem = check_ae_title(listen.ae_title) or check_port(listen.port)
    if problem:
        raise CommandError(f"cannot start the Receiver: {problem}")
    try:
        node = ReceiverNode(settings, listen)
        return node.serve()
    except OSError as exc:
        raise CommandError(f"cannot start the Receiver on {listen.bind}:{listen.port}: {exc}")\
            from exc


def run_studies(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from appliance.db import open_database, session_factory
    from appliance.models import Node, Study

    settings = load_settings(args)
    engine = open_database(settings.db_url)
    try:
        with session_factory(engine)() as session:
            rows = session.scalars(select(Study).where(Study.node == Node.RECEIVER)
                                   .order_by(Study.first_received_at, Study.id)).all()
    finally:
        engine.dispose()
    for study in rows:
        last = study.last_received_at.isoformat(timespec="seconds").replace("+00:00", "Z")
        print(f"{study.new_study_instance_uid}  {study.state.value:<14} "
              f"{study.instance_count:>5} instances  last received {last}")
    if not rows:
        print("no studies received yet")
    return 0


def run_media_write(args: argparse.Namespace) -> int:
    from appliance.db import open_database, session_factory
    from appliance.logging import configure_logging
    from appliance.settings import ConfigError
    from pdi.model import MediaError, MediaOptions, dated_folder
    from receiver.media import write_received

    settings = load_settings(args)
    configure_logging(settings)
    if args.out is None:
        args.out = dated_folder(settings.receiver.media_dir)
    try:
        options = MediaOptions() if args.volume_bytes is None else \
            MediaOptions(volume_bytes=args.volume_bytes)
    except ValueError as exc:
        raise ConfigError(f"--volume-bytes: {exc}") from None
    engine = open_database(settings.db_url)
    try:
        volumes = write_received(session_factory(engine), args.out, args.study, options,
                                 overwrite=args.overwrite)
    except (MediaError, OSError) as exc:
        message = str(exc)
        if "overwrite" in message and not args.overwrite:
            message += " (pass --overwrite to replace what is there)"
        raise CommandError(message) from exc
    finally:
        engine.dispose()
    for volume in volumes:
        print(f"wrote {volume.path}: {len(volume.studies)} studies, {volume.instances} instances,"
              f" {volume.bytes / 1e6:.1f} MB, profile {volume.profile}")
    return 0
