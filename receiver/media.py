"""Write studies the Receiver holds as IHE PDI media (``tce receiver media write OUT``).

The Receiver's files are already de-identified and final, so a medium is just a File-set of the
stored files, written by :func:`pdi.writer.write_media` (staged, fsynced, re-read, then renamed
into place). Which files go on it comes from the database, not from a folder scan: the index is
what was acknowledged, so a stray file in the store never ends up on a medium. Each volume is
recorded as a :class:`~appliance.models.Media` row with its studies, and as a ``media.written``
audit event.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from appliance.audit import record_audit
from appliance.logging import get_logger
from appliance.models import Instance, InstanceState, Media, MediaStudy, Node, Study, StudyState
from pdi.model import MediaError as PdiMediaError
from pdi.model import MediaOptions, VolumeResult
from pdi.writer import write_media

NODE = Node.RECEIVER
LOG = get_logger("tce.receiver.media")
_ON_MEDIA = (InstanceState.STORED, InstanceState.EXPORTED)


class MediaError(PdiMediaError):
    """Nothing to write, or an unknown study was asked for; nothing was written."""


def select_studies(sessions: sessionmaker[Session], studies: Sequence[str] = ()) -> list[str]:
    """Study Instance UIDs to write: ``studies`` (all must be known), or every received study."""
    with sessions() as session:
        query = select(Study.new_study_instance_uid).where(Study.node == NODE)
        if studies:
            found = set(session.scalars(query.where(
                Study.new_study_instance_uid.in_(list(studies)))))
            missing = sorted(set(studies) - found)
            if missing:
                raise MediaError(f"unknown study UID(s): {', '.join(missing)} (see 'tce receiver"
                                 " studies')")
            return list(dict.fromkeys(studies))
        return list(session.scalars(query.order_by(Study.first_received_at, Study.id)))


def files_of(sessions: sessionmaker[Session], studies: Sequence[str]) -> list[Path]:
    """The stored files of ``studies``, in arrival order; raises if one has gone missing."""
    with sessions() as session:
        paths = [Path(p) for p in session.scalars(select(Instance.store_path).where(
            Instance.node == NODE, Instance.state.in_(_ON_MEDIA),
            Instance.new_study_instance_uid.in_(list(studies))).order_by(Instance.id)) if p]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise MediaError(f"{len(missing)} indexed file(s) are missing from the store, e.g."
                         f" {missing[0]}; nothing was written")
    return paths


def write_received(sessions: sessionmaker[Session], out: Path, studies: Sequence[str] = (),
                   options: MediaOptions | None = None, *,
                   overwrite: bool = False) -> list[VolumeResult]:
    """Write ``studies`` (default: all received) to ``out`` and record the media written."""
    chosen = select_studies(sessions, studies)
    if not chosen:
        raise MediaError("the Receiver holds no study yet; nothing was written")
    files = files_of(sessions, chosen)
    if not files:
        raise MediaError("the selected studies hold no stored instance; nothing was written")
    volumes = write_media(files, out, options or MediaOptions(), overwrite=overwrite)
    now = datetime.now(UTC)
    with sessions.begin() as session:
        for volume in volumes:
            media = Media(node=NODE, path=str(volume.path), volume=volume.path.name,
                          file_set_uid=volume.file_set_uid, profile=volume.profile,
                          instance_count=volume.instances, study_count=len(volume.studies),
                          bytes=volume.bytes, created_at=now)
            media.studies = [MediaStudy(study_uid=uid) for uid in dict.fromkeys(volume.studies)]
            session.add(media)
            record_audit(session, NODE, "media.written", volume.file_set_uid,
                         studies=len(volume.studies), instances=volume.instances,
                         bytes=volume.bytes, profile=volume.profile)
        for study in session.scalars(select(Study).where(
                Study.node == NODE, Study.new_study_instance_uid.in_(chosen))):
            study.state, study.media_written_at = StudyState.MEDIA_WRITTEN, now
    LOG.info("receiver.media_written", volumes=len(volumes), studies=len(chosen),
             instances=sum(v.instances for v in volumes))
    return volumes
